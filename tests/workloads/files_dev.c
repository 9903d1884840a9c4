/*
 * files_dev: character devices at chosen fds: /dev/null O_RDWR at 10,
 * /dev/zero O_RDONLY at 11, /dev/urandom O_RDONLY|O_NONBLOCK at 12. After
 * restore the fds point to the same devices (link, st_rdev, flags) and
 * behave: null swallows writes and reads EOF, zero reads zeroes, urandom
 * reads random bytes.
 */
#include "zdtm.h"

#include <sys/sysmacros.h>

static const struct {
	int fd;
	const char *path;
	int flags;
} devs[] = {
	{ 10, "/dev/null", O_RDWR },
	{ 11, "/dev/zero", O_RDONLY },
	{ 12, "/dev/urandom", O_RDONLY | O_NONBLOCK },
};
#define NDEV 3

int main(int argc, char **argv)
{
	dev_t rdev[NDEV];
	int fl[NDEV];

	test_init(argc, argv);
	for (int i = 0; i < NDEV; i++) {
		struct stat st;
		int fd = open(devs[i].path, devs[i].flags);

		if (fd < 0)
			pfail("open %s", devs[i].path);
		if (dup2(fd, devs[i].fd) != devs[i].fd)
			pfail("dup2 %d", devs[i].fd);
		close(fd);
		if (fstat(devs[i].fd, &st))
			pfail("fstat");
		rdev[i] = st.st_rdev;
		fl[i] = fcntl(devs[i].fd, F_GETFL) & ~O_LARGEFILE;
	}

	test_daemon();
	test_waitsig();

	for (int i = 0; i < NDEV; i++) {
		char p[64], link[256];
		struct stat st;
		ssize_t n;

		snprintf(p, sizeof(p), "/proc/self/fd/%d", devs[i].fd);
		n = readlink(p, link, sizeof(link) - 1);
		if (n < 0)
			pfail("readlink %s (fd %d lost?)", p, devs[i].fd);
		link[n] = 0;
		if (strcmp(link, devs[i].path))
			fail("fd %d -> %s, expected %s", devs[i].fd, link, devs[i].path);
		if (fstat(devs[i].fd, &st))
			pfail("fstat fd %d", devs[i].fd);
		if (!S_ISCHR(st.st_mode) || st.st_rdev != rdev[i])
			fail("fd %d: not the character device %u:%u", devs[i].fd, major(rdev[i]),
			     minor(rdev[i]));
		int f = fcntl(devs[i].fd, F_GETFL) & ~O_LARGEFILE;
		if (f != fl[i])
			fail("fd %d (%s): F_GETFL %#o, expected %#o", devs[i].fd, devs[i].path, f, fl[i]);
	}

	uint8_t buf[4096], buf2[64];
	if (write(10, "discard me", 10) != 10)
		pfail("write /dev/null");
	if (read(10, buf, sizeof(buf)) != 0)
		fail("read from /dev/null did not return EOF");
	memset(buf, 0xff, sizeof(buf));
	if (read(11, buf, sizeof(buf)) != sizeof(buf))
		pfail("read /dev/zero");
	for (size_t i = 0; i < sizeof(buf); i++)
		if (buf[i])
			fail("/dev/zero gave a non-zero byte");
	if (write(11, "x", 1) != -1)
		fail("fd 11 (/dev/zero O_RDONLY) is writable");
	memset(buf, 0, 64);
	if (read(12, buf, 64) != 64 || read(12, buf2, 64) != 64)
		pfail("read /dev/urandom");
	if (!memcmp(buf, buf2, 64))
		fail("/dev/urandom returned the same 64 bytes twice");
	pass();
}
