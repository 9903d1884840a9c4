/*
 * files_dev_ghost: a deleted device node held open. mknod PATH (--file,
 * default files_dev_ghost.null in the cwd) as a character device 1:3
 * (/dev/null's), mode 0620, open it O_RDWR as fd A, unlink PATH. After
 * restore: fd A is an unlinked character device 1:3 with mode 0620, its
 * link reads "PATH (deleted)", nothing is at PATH, and it acts as null
 * (writes succeed, reads give end of file).
 */
#include "zdtm.h"
#include <sys/sysmacros.h>

int main(int argc, char **argv)
{
	char link0[4096], got[4096], p[64], buf[8];
	const char *path;
	struct stat st;
	ssize_t n;
	int a;

	test_init(argc, argv);
	path = test_arg("--file");
	if (!path)
		path = "files_dev_ghost.null";
	/* --kmsg (fds3): a node of /dev/kmsg (1:11), whose read position is
	 * per open: the dump must refuse it; the original just passes. */
	if (test_flag("--kmsg")) {
		if (mknod(path, S_IFCHR | 0600, makedev(1, 11)) || (a = open(path, O_RDONLY)) < 0 ||
		    unlink(path))
			pfail("kmsg node");
		test_daemon();
		test_waitsig();
		pass();
	}
	if (mknod(path, S_IFCHR | 0620, makedev(1, 3)) || chmod(path, 0620))
		pfail("mknod %s", path);
	a = open(path, O_RDWR);
	if (a < 0)
		pfail("open %s", path);
	if (unlink(path))
		pfail("unlink");
	snprintf(p, sizeof(p), "/proc/self/fd/%d", a);
	n = readlink(p, link0, sizeof(link0) - 1);
	if (n < 0)
		pfail("readlink");
	link0[n] = 0;

	test_daemon();
	test_waitsig();

	if (fstat(a, &st))
		pfail("fstat");
	if (!S_ISCHR(st.st_mode) || major(st.st_rdev) != 1 || minor(st.st_rdev) != 3)
		fail("fd A is not the device 1:3 (mode %o)", st.st_mode);
	if (st.st_nlink != 0)
		fail("nlink %lu, expected 0", (unsigned long)st.st_nlink);
	if ((st.st_mode & 07777) != 0620)
		fail("mode %o, expected 620", st.st_mode & 07777);
	if (access(path, F_OK) == 0)
		fail("%s exists after restore", path);
	n = readlink(p, got, sizeof(got) - 1);
	if (n < 0)
		pfail("readlink");
	got[n] = 0;
	if (strcmp(got, link0))
		fail("fd A links to \"%s\", expected \"%s\"", got, link0);
	if (write(a, "x", 1) != 1 || read(a, buf, 1) != 0)
		fail("fd A does not act as /dev/null");
	if ((fcntl(a, F_GETFL) & O_ACCMODE) != O_RDWR)
		fail("fd A is not O_RDWR");
	pass();
}
