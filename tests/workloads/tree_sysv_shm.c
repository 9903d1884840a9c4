/*
 * tree_sysv_shm: System V shared memory attached by a parent and its child.
 * Segment A (IPC_PRIVATE) stays alive; segment B (with a key) is marked for
 * removal (IPC_RMID) while attached. After the restore both are attached at
 * the same addresses with the same ids, hold their contents, are still one
 * copy (a write by the child is seen by the parent), and B is still marked
 * for removal.
 */
#include "zdtm.h"
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/wait.h>

#define LEN_A (32 * 4096)
#define LEN_B (8 * 4096)

int main(int argc, char **argv)
{
	struct shmid_ds ds;
	int go[2], st;

	test_init(argc, argv);
	int a = shmget(IPC_PRIVATE, LEN_A, IPC_CREAT | 0600);
	if (a < 0)
		pfail("shmget A");
	key_t key = 0x7a000000 | (getpid() & 0xffffff);
	int b = shmget(key, LEN_B, IPC_CREAT | IPC_EXCL | 0640);
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
	if (shmctl(b, IPC_RMID, NULL))
		pfail("IPC_RMID B");
	fill_pattern(pa, LEN_A, 5, 0);
	fill_pattern(pb, LEN_B, 6, 0);
	if (pipe(go))
		pfail("pipe");
	pid_t c = fork();
	if (c < 0)
		pfail("fork");
	if (c == 0) {
		char x;
		if (read(go[0], &x, 1) != 1)
			_exit(10);
		if (check_pattern(pa, LEN_A, 5, 0) >= 0 || check_pattern(pb, LEN_B, 6, 0) >= 0)
			_exit(11);
		memset(pa + 4096, 0x5a, 4096);
		memset(pb + 4096, 0x6b, 4096);
		_exit(0);
	}
	test_daemon();
	test_waitsig();

	int failed = 0;
	char why[256] = "";
	if (shmctl(a, IPC_STAT, &ds) || ds.shm_segsz != LEN_A)
		failed = snprintf(why, sizeof(why), "segment A (id %d) is gone or resized", a);
	else if (shmctl(b, IPC_STAT, &ds) || ds.shm_segsz != LEN_B)
		failed = snprintf(why, sizeof(why), "segment B (id %d) is gone or resized", b);
	else if (!(ds.shm_perm.mode & SHM_DEST))
		failed = snprintf(why, sizeof(why), "segment B is no longer marked for removal");
	else if (check_pattern(pa, LEN_A, 5, 0) >= 0 || check_pattern(pb, LEN_B, 6, 0) >= 0)
		failed = snprintf(why, sizeof(why), "segment contents differ");
	if (!failed) {
		if (write(go[1], "g", 1) != 1)
			pfail("write go");
		if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st))
			failed = snprintf(why, sizeof(why), "child failed: status %#x", st);
		else if (pa[4096] != 0x5a || pa[8191] != 0x5a || pb[4096] != 0x6b)
			failed = snprintf(why, sizeof(why), "the child's writes are not visible: not one copy");
	}
	shmctl(a, IPC_RMID, NULL);
	if (failed)
		fail("%s", why);
	pass();
}
