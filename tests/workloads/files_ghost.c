/*
 * files_ghost: a deleted-but-open regular file (--file PATH, default
 * files_ghost.data in the cwd), mode 0640, SIZE pattern bytes:
 *   fd A  O_RDWR, offset 1234
 *   fd B  dup(A): shares A's description
 *   fd C  O_RDONLY, its own description, offset 77
 * then PATH is unlinked. After restore: A and C refer to one unlinked
 * file (nlink 0, same inode) with the same contents and mode, A and B
 * still share their offset, the fd links read "PATH (deleted)", nothing
 * exists at PATH, and a write through A is seen through C.
 */
#include "zdtm.h"

#define SIZE (3 * 4096 + 123)
#define SEED 4242

static void check_link(int fd, const char *want)
{
	char p[64], got[4096];
	ssize_t n;

	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	n = readlink(p, got, sizeof(got) - 1);
	if (n < 0)
		pfail("readlink %s", p);
	got[n] = 0;
	if (strcmp(got, want))
		fail("fd %d links to \"%s\", expected \"%s\"", fd, got, want);
}

int main(int argc, char **argv)
{
	static uint8_t buf[SIZE];
	char deleted[4096];
	const char *path;
	struct stat sa, sc;
	int a, b, c;
	long bad;

	test_init(argc, argv);
	path = test_arg("--file");
	if (!path)
		path = "files_ghost.data";

	a = open(path, O_RDWR | O_CREAT | O_TRUNC, 0640);
	if (a < 0)
		pfail("open %s", path);
	if (fchmod(a, 0640))
		pfail("fchmod");
	fill_pattern(buf, SIZE, SEED, 0);
	if (write(a, buf, SIZE) != SIZE)
		pfail("write");
	if (lseek(a, 1234, SEEK_SET) != 1234)
		pfail("lseek A");
	b = dup(a);
	c = open(path, O_RDONLY);
	if (b < 0 || c < 0)
		pfail("dup / open");
	if (lseek(c, 77, SEEK_SET) != 77)
		pfail("lseek C");
	if (unlink(path))
		pfail("unlink %s", path);
	/* The link the kernel shows for a deleted file. */
	{
		char p[64];
		ssize_t n;

		snprintf(p, sizeof(p), "/proc/self/fd/%d", a);
		n = readlink(p, deleted, sizeof(deleted) - 1);
		if (n < 0)
			pfail("readlink");
		deleted[n] = 0;
		if (!strstr(deleted, " (deleted)"))
			fail("the link of the unlinked file is %s", deleted);
	}

	test_daemon();
	test_waitsig();

	if (fstat(a, &sa) || fstat(c, &sc))
		pfail("fstat");
	if (sa.st_nlink != 0)
		fail("the file has %lu links, expected 0", (unsigned long)sa.st_nlink);
	if (sa.st_ino != sc.st_ino || sa.st_dev != sc.st_dev)
		fail("fds A and C refer to different files");
	if (sa.st_size != SIZE)
		fail("size %lld, expected %d", (long long)sa.st_size, SIZE);
	if ((sa.st_mode & 07777) != 0640)
		fail("mode %o, expected 640", sa.st_mode & 07777);
	if (access(path, F_OK) == 0)
		fail("%s exists after restore", path);
	check_link(a, deleted);
	check_link(b, deleted);
	check_link(c, deleted);
	if (lseek(a, 0, SEEK_CUR) != 1234 || lseek(b, 0, SEEK_CUR) != 1234)
		fail("offset of A/B is not 1234");
	if (lseek(c, 0, SEEK_CUR) != 77)
		fail("offset of C is not 77");
	memset(buf, 0, SIZE);
	if (pread(c, buf, SIZE, 0) != SIZE)
		pfail("pread");
	bad = check_pattern(buf, SIZE, SEED, 0);
	if (bad >= 0)
		fail("contents differ at offset %ld", bad);
	/* A and B share one offset; C sees A's writes. */
	if (read(b, buf, 10) != 10)
		pfail("read B");
	if (lseek(a, 0, SEEK_CUR) != 1244)
		fail("a read through B did not move A's offset");
	if (write(a, "GHOST", 5) != 5)
		pfail("write A");
	if (pread(c, buf, 5, 1244) != 5 || memcmp(buf, "GHOST", 5))
		fail("a write through A is not seen through C");
	pass();
}
