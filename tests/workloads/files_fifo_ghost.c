/*
 * files_fifo_ghost: a deleted FIFO with queued data. mkfifo PATH (--file,
 * default files_fifo_ghost.fifo in the cwd, mode 0640), fd A O_RDWR,
 * fd B O_RDONLY|O_NONBLOCK, "queued bytes" written through A, then PATH
 * is unlinked. After restore: A and B are one unlinked FIFO (nlink 0,
 * same inode, mode 0640), their links read "PATH (deleted)", nothing is
 * at PATH, B reads the queued bytes, and a write through A is read
 * through B.
 */
#include "zdtm.h"

static const char msg[] = "queued bytes";

int main(int argc, char **argv)
{
	char link0[4096], got[4096], p[64], buf[64];
	struct stat sa, sb;
	const char *path;
	ssize_t n;
	int a, b;

	test_init(argc, argv);
	path = test_arg("--file");
	if (!path)
		path = "files_fifo_ghost.fifo";
	if (mkfifo(path, 0640) || chmod(path, 0640))
		pfail("mkfifo %s", path);
	a = open(path, O_RDWR);
	b = open(path, O_RDONLY | O_NONBLOCK);
	if (a < 0 || b < 0)
		pfail("open %s", path);
	if (write(a, msg, sizeof(msg)) != sizeof(msg))
		pfail("write");
	if (unlink(path))
		pfail("unlink");
	snprintf(p, sizeof(p), "/proc/self/fd/%d", a);
	n = readlink(p, link0, sizeof(link0) - 1);
	if (n < 0)
		pfail("readlink");
	link0[n] = 0;

	test_daemon();
	test_waitsig();

	if (fstat(a, &sa) || fstat(b, &sb))
		pfail("fstat");
	if (!S_ISFIFO(sa.st_mode) || sa.st_nlink != 0)
		fail("fd A: mode %o, nlink %lu (want an unlinked FIFO)", sa.st_mode,
		     (unsigned long)sa.st_nlink);
	if (sa.st_ino != sb.st_ino || sa.st_dev != sb.st_dev)
		fail("fds A and B are not one FIFO");
	if ((sa.st_mode & 07777) != 0640)
		fail("mode %o, expected 640", sa.st_mode & 07777);
	if (access(path, F_OK) == 0)
		fail("%s exists after restore", path);
	n = readlink(p, got, sizeof(got) - 1);
	if (n < 0)
		pfail("readlink");
	got[n] = 0;
	if (strcmp(got, link0))
		fail("fd A links to \"%s\", expected \"%s\"", got, link0);
	if (read(b, buf, sizeof(buf)) != sizeof(msg) || memcmp(buf, msg, sizeof(msg)))
		fail("the queued bytes did not come back");
	if (write(a, "more", 4) != 4 || read(b, buf, 4) != 4 || memcmp(buf, "more", 4))
		fail("a write through A is not read through B");
	pass();
}
