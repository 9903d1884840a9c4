/*
 * mem_sysv_odd: System V shared memory segments whose size is not a
 * multiple of the page size (PostgreSQL 15 keeps a 56-byte one).
 *   A  56 bytes, IPC_PRIVATE, marked for removal while attached
 *   B  3 pages + 100 bytes, IPC_PRIVATE, removed by the workload at exit
 * Both are filled with a pattern up to their size. After restore: the same
 * ids at the same addresses, shm_segsz exactly as created (IPC_STAT), the
 * contents, zero bytes past the size in the last page, and still shared
 * memory (a second attach sees a write through the first).
 */
#include "zdtm.h"
#include <sys/ipc.h>
#include <sys/shm.h>

#define PG 4096ul
#define LEN_A 56ul
#define LEN_B (3 * PG + 100)

static void check_seg(const char *name, int id, uint8_t *p, size_t len, uint32_t seed)
{
	struct shmid_ds ds;
	long bad;

	if (shmctl(id, IPC_STAT, &ds))
		pfail("IPC_STAT %s (id %d)", name, id);
	if (ds.shm_segsz != len)
		fail("segment %s: shm_segsz %zu, created with %zu", name, (size_t)ds.shm_segsz, len);
	if ((bad = check_pattern(p, len, seed, 0)) >= 0)
		fail("segment %s differs at offset %ld", name, bad);
	size_t end = (len + PG - 1) / PG * PG;
	for (size_t i = len; i < end; i++)
		if (p[i])
			fail("segment %s: byte %zu past its size is %u", name, i, p[i]);
	uint8_t *q = shmat(id, NULL, 0);
	if (q == (void *)-1)
		pfail("second shmat of %s", name);
	p[len - 1] ^= 0xff;
	if (q[len - 1] != p[len - 1])
		fail("segment %s: a write is not seen through a second attach", name);
	p[len - 1] ^= 0xff;
	shmdt(q);
}

int main(int argc, char **argv)
{
	test_init(argc, argv);
	int a = shmget(IPC_PRIVATE, LEN_A, IPC_CREAT | 0600);
	if (a < 0)
		pfail("shmget A");
	int b = shmget(IPC_PRIVATE, LEN_B, IPC_CREAT | 0640);
	if (b < 0) {
		shmctl(a, IPC_RMID, NULL);
		pfail("shmget B");
	}
	uint8_t *pa = shmat(a, NULL, 0);
	uint8_t *pb = shmat(b, NULL, 0);
	if (pa == (void *)-1 || pb == (void *)-1) {
		shmctl(a, IPC_RMID, NULL);
		shmctl(b, IPC_RMID, NULL);
		pfail("shmat");
	}
	if (shmctl(a, IPC_RMID, NULL))
		pfail("IPC_RMID A");
	fill_pattern(pa, LEN_A, 21, 0);
	fill_pattern(pb, LEN_B, 22, 0);

	test_daemon();
	test_waitsig();

	check_seg("B", b, pb, LEN_B, 22);
	if (shmctl(b, IPC_RMID, NULL))
		pfail("IPC_RMID B");
	check_seg("A", a, pa, LEN_A, 21);
	pass();
}
