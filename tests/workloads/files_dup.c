/*
 * files_dup: one open file description behind three fds (the original, a
 * dup() and a dup2() to fd 100, the latter FD_CLOEXEC), and a separate
 * open() of the same file. After restore the three dups still share one
 * offset (lseek on one moves the others) and status flags, the fd flags
 * stay per-fd, and the separate open keeps its own offset.
 */
#include "zdtm.h"

int main(int argc, char **argv)
{
	static uint8_t buf[4096];
	const char *path;
	int fd, d, fd100, sep, fl, fl_d, fl_100;
	char l1[256], l2[256], p[64];

	test_init(argc, argv);
	path = test_arg("--file");
	if (!path)
		path = "files_dup.data";
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		pfail("open %s", path);
	fill_pattern(buf, sizeof(buf), 1, 0);
	if (write(fd, buf, sizeof(buf)) != sizeof(buf))
		pfail("write");
	d = dup(fd);
	if (d < 0)
		pfail("dup");
	if (dup2(fd, 100) != 100)
		pfail("dup2");
	fd100 = 100;
	if (fcntl(fd100, F_SETFD, FD_CLOEXEC))
		pfail("F_SETFD");
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(d, F_SETFL, fl | O_NONBLOCK)) /* shared: visible via all three */
		pfail("F_SETFL");
	if (lseek(d, 777, SEEK_SET) != 777)
		pfail("lseek");
	sep = open(path, O_RDONLY);
	if (sep < 0)
		pfail("open separately");
	if (lseek(sep, 55, SEEK_SET) != 55)
		pfail("lseek");

	test_daemon();
	test_waitsig();

	if (lseek(fd100, 0, SEEK_CUR) != 777 || lseek(fd, 0, SEEK_CUR) != 777 ||
	    lseek(d, 0, SEEK_CUR) != 777)
		fail("offsets after restore: fd %lld dup %lld fd100 %lld, expected 777",
		     (long long)lseek(fd, 0, SEEK_CUR), (long long)lseek(d, 0, SEEK_CUR),
		     (long long)lseek(fd100, 0, SEEK_CUR));
	if (lseek(sep, 0, SEEK_CUR) != 55)
		fail("the separate open's offset is %lld, expected 55",
		     (long long)lseek(sep, 0, SEEK_CUR));

	if (lseek(fd, 1234, SEEK_SET) != 1234)
		pfail("lseek");
	if (lseek(d, 0, SEEK_CUR) != 1234 || lseek(fd100, 0, SEEK_CUR) != 1234)
		fail("lseek on fd %d did not move its dups (dup at %lld, fd 100 at %lld): "
		     "the description is no longer shared", fd, (long long)lseek(d, 0, SEEK_CUR),
		     (long long)lseek(fd100, 0, SEEK_CUR));
	if (lseek(sep, 0, SEEK_CUR) != 55)
		fail("lseek on fd %d moved the separately opened fd %d", fd, sep);
	if (lseek(fd100, 2000, SEEK_SET) != 2000 || lseek(fd, 0, SEEK_CUR) != 2000)
		fail("lseek on fd 100 did not move fd %d", fd);

	fl = fcntl(fd, F_GETFL);
	fl_d = fcntl(d, F_GETFL);
	fl_100 = fcntl(fd100, F_GETFL);
	if (fl != fl_d || fl != fl_100 || !(fl & O_NONBLOCK) || (fl & O_ACCMODE) != O_RDWR)
		fail("status flags differ or lost: %#o %#o %#o", fl, fl_d, fl_100);
	if (fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) || (fcntl(fd100, F_GETFL) & O_NONBLOCK))
		fail("F_SETFL on fd %d does not reach fd 100", fd);
	if (fcntl(fd100, F_GETFD) != FD_CLOEXEC || fcntl(fd, F_GETFD) != 0 || fcntl(d, F_GETFD) != 0)
		fail("fd flags: fd %d %#x, dup %#x, fd 100 %#x (expected 0, 0, FD_CLOEXEC)", fd,
		     fcntl(fd, F_GETFD), fcntl(d, F_GETFD), fcntl(fd100, F_GETFD));
	if ((fcntl(sep, F_GETFL) & O_ACCMODE) != O_RDONLY)
		fail("the separate fd is no longer O_RDONLY");
	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	ssize_t n1 = readlink(p, l1, sizeof(l1) - 1);
	ssize_t n2 = readlink("/proc/self/fd/100", l2, sizeof(l2) - 1);
	if (n1 < 0 || n2 < 0)
		pfail("readlink");
	l1[n1] = l2[n2] = 0;
	if (strcmp(l1, l2))
		fail("fd %d -> %s but fd 100 -> %s", fd, l1, l2);

	uint8_t r[16];
	if (pread(fd100, r, 16, 100) != 16 || check_pattern(r, 16, 1, 100) >= 0)
		fail("fd 100 reads wrong data");
	pass();
}
