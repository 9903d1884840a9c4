/*
 * mem_sysv_key: System V segments with a key.
 *   K  key 0x7b00PPPP-ish, alive: after restore shmget(key, 0, 0) finds
 *      the same id.
 *   R  another key, marked for removal (IPC_RMID) while attached: after
 *      restore still marked, shmget(key) does not find it (the key was
 *      freed as IPC_RMID frees it), and its mapping is still named
 *      /SYSV<key> (deleted), as the kernel named it at creation.
 * Both hold their pattern and are still shared memory.
 */
#include "zdtm.h"
#include <sys/ipc.h>
#include <sys/shm.h>

#define LEN (4 * 4096)

static int k_id = -1;

static void cleanup(void)
{
	if (k_id >= 0)
		shmctl(k_id, IPC_RMID, NULL);
}

static void check_name(const void *p, key_t key)
{
	char lines[4096], want[64];

	if (maps_lines((unsigned long)p, (unsigned long)p + 1, lines, sizeof(lines)) != 1)
		fail("no single maps line at %p", p);
	snprintf(want, sizeof(want), " /SYSV%08x (deleted)\n", (unsigned)key);
	if (!strstr(lines, want))
		fail("segment at %p: maps says \"%s\", expected a name ending \"%s\"", p, lines, want);
}

int main(int argc, char **argv)
{
	struct shmid_ds ds;

	test_init(argc, argv);
	key_t kk = 0x7b000000 | (getpid() & 0xffffff);
	key_t rk = 0x7c000000 | (getpid() & 0xffffff);
	k_id = shmget(kk, LEN, IPC_CREAT | IPC_EXCL | 0600);
	if (k_id < 0)
		pfail("shmget K");
	atexit(cleanup);
	int r = shmget(rk, LEN, IPC_CREAT | IPC_EXCL | 0640);
	if (r < 0)
		pfail("shmget R");
	uint8_t *pk = shmat(k_id, NULL, 0);
	uint8_t *pr = shmat(r, NULL, 0);
	if (pk == (void *)-1 || pr == (void *)-1) {
		shmctl(r, IPC_RMID, NULL);
		pfail("shmat");
	}
	if (shmctl(r, IPC_RMID, NULL))
		pfail("IPC_RMID R");
	fill_pattern(pk, LEN, 41, 0);
	fill_pattern(pr, LEN, 42, 0);
	check_name(pk, kk);
	check_name(pr, rk);

	test_daemon();
	test_waitsig();

	int got = shmget(kk, 0, 0);
	if (got != k_id)
		fail("shmget(%#x) gives %d, the segment is %d", (unsigned)kk, got, k_id);
	if (shmget(rk, 0, 0) >= 0 || errno != ENOENT)
		fail("shmget(%#x) finds the removed segment (or fails otherwise: %m)", (unsigned)rk);
	if (shmctl(r, IPC_STAT, &ds) || !(ds.shm_perm.mode & SHM_DEST))
		fail("segment R (id %d) is gone or no longer marked for removal", r);
	if (check_pattern(pk, LEN, 41, 0) >= 0 || check_pattern(pr, LEN, 42, 0) >= 0)
		fail("segment contents differ");
	check_name(pk, kk);
	check_name(pr, rk);
	uint8_t *q = shmat(k_id, NULL, 0);
	if (q == (void *)-1)
		pfail("second shmat of K");
	pk[7] ^= 0xff;
	if (q[7] != pk[7])
		fail("K: a write is not seen through a second attach");
	shmdt(q);
	pass();
}
