/*
 * tree_posix_shm: a POSIX shared memory object (/dev/shm) mapped MAP_SHARED
 * by a parent and its child. After the restore both still see one copy: a
 * write by the child is read by the parent, and the object's contents from
 * before the dump are intact.
 */
#include "zdtm.h"
#include <sys/mman.h>
#include <sys/wait.h>

#define LEN (64 * 4096)

int main(int argc, char **argv)
{
	char name[64];
	int go[2], st;

	test_init(argc, argv);
	snprintf(name, sizeof(name), "/zdtm-posix-shm-%d", getpid());
	int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0)
		pfail("shm_open");
	if (ftruncate(fd, LEN))
		pfail("ftruncate");
	uint8_t *p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		pfail("mmap");
	close(fd);
	fill_pattern(p, LEN, 77, 0);
	if (pipe(go))
		pfail("pipe");
	pid_t c = fork();
	if (c < 0)
		pfail("fork");
	if (c == 0) {
		char x;
		if (read(go[0], &x, 1) != 1)
			_exit(10);
		if (check_pattern(p, LEN, 77, 0) >= 0)
			_exit(11);
		memset(p + 5 * 4096, 0xa5, 4096);
		_exit(0);
	}
	test_daemon();
	test_waitsig();
	long bad = check_pattern(p, LEN, 77, 0);
	if (bad >= 0)
		fail("contents differ at offset %ld", bad);
	if (write(go[1], "g", 1) != 1)
		pfail("write go");
	if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st))
		fail("child failed: status %#x", st);
	for (int i = 0; i < 4096; i++)
		if (p[5 * 4096 + i] != 0xa5)
			fail("the child's write is not visible to the parent at byte %d", i);
	shm_unlink(name);
	pass();
}
