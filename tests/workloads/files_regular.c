/*
 * files_regular: three open file descriptions of one regular file (--file
 * PATH, default files_regular.data in the cwd):
 *   fd A  O_RDWR, 8192 bytes written, offset moved to 3000
 *   fd B  O_WRONLY|O_APPEND
 *   fd C  O_RDONLY|O_CLOEXEC, offset 5000
 * After restore: same fd numbers, offsets, F_GETFL (minus O_LARGEFILE),
 * F_GETFD and /proc/self/fd links; reads continue at the offsets and the
 * append goes to the end.
 * --lenient: the harness changed the file on purpose (restore with
 * --ignore-file-changes); skip the checks of the file's size and content.
 */
#include "zdtm.h"

#define SIZE 8192
#define SEED 8192

struct fdstate {
	int fd;
	off_t off;
	int fl, fd_flags;
	char link[4096];
};

static void get(struct fdstate *s, int fd)
{
	char p[64];
	ssize_t n;

	s->fd = fd;
	s->off = lseek(fd, 0, SEEK_CUR);
	if (s->off < 0)
		pfail("lseek fd %d", fd);
	s->fl = fcntl(fd, F_GETFL);
	s->fd_flags = fcntl(fd, F_GETFD);
	if (s->fl < 0 || s->fd_flags < 0)
		pfail("fcntl fd %d", fd);
	s->fl &= ~O_LARGEFILE;
	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	n = readlink(p, s->link, sizeof(s->link) - 1);
	if (n < 0)
		pfail("readlink %s", p);
	s->link[n] = 0;
}

static void compare(const struct fdstate *b, const char *name)
{
	struct fdstate a;

	get(&a, b->fd);
	if (a.off != b->off)
		fail("fd %d (%s): offset %lld, expected %lld", b->fd, name, (long long)a.off,
		     (long long)b->off);
	if (a.fl != b->fl)
		fail("fd %d (%s): F_GETFL %#o, expected %#o", b->fd, name, a.fl, b->fl);
	if (a.fd_flags != b->fd_flags)
		fail("fd %d (%s): F_GETFD %#x, expected %#x", b->fd, name, a.fd_flags, b->fd_flags);
	if (strcmp(a.link, b->link))
		fail("fd %d (%s): /proc/self/fd link %s, expected %s", b->fd, name, a.link, b->link);
}

int main(int argc, char **argv)
{
	static uint8_t buf[SIZE];
	struct fdstate sa, sb, sc;
	const char *path;
	int a, b, c, lenient;
	struct stat st;

	test_init(argc, argv);
	path = test_arg("--file");
	if (!path)
		path = "files_regular.data";
	lenient = test_flag("--lenient");

	a = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (a < 0)
		pfail("open %s O_RDWR", path);
	fill_pattern(buf, SIZE, SEED, 0);
	if (write(a, buf, SIZE) != SIZE)
		pfail("write");
	if (lseek(a, 3000, SEEK_SET) != 3000)
		pfail("lseek");
	b = open(path, O_WRONLY | O_APPEND);
	if (b < 0)
		pfail("open O_WRONLY|O_APPEND");
	c = open(path, O_RDONLY | O_CLOEXEC);
	if (c < 0)
		pfail("open O_RDONLY|O_CLOEXEC");
	if (lseek(c, 5000, SEEK_SET) != 5000)
		pfail("lseek");
	get(&sa, a);
	get(&sb, b);
	get(&sc, c);
	if (!(sb.fl & O_APPEND) || !(sc.fd_flags & FD_CLOEXEC) || (sa.fd_flags & FD_CLOEXEC))
		fail("unexpected flags before the dump");

	test_daemon();
	test_waitsig();

	compare(&sa, "O_RDWR");
	compare(&sb, "O_WRONLY|O_APPEND");
	compare(&sc, "O_RDONLY|O_CLOEXEC");
	if (fstat(a, &st))
		pfail("fstat");
	if (!lenient && st.st_size != SIZE)
		fail("file size %lld, expected %d", (long long)st.st_size, SIZE);

	/* Reads continue where they were; the append goes to the end. */
	uint8_t r[100];
	if (read(a, r, 100) != 100)
		pfail("read fd A");
	if (!lenient && check_pattern(r, 100, SEED, 3000) >= 0)
		fail("fd A read wrong data at offset 3000");
	if (lseek(a, 0, SEEK_CUR) != 3100)
		fail("fd A offset did not advance to 3100");
	if (read(c, r, 100) != 100)
		pfail("read fd C");
	if (!lenient && check_pattern(r, 100, SEED, 5000) >= 0)
		fail("fd C read wrong data at offset 5000");
	if (write(b, "APPENDED", 8) != 8)
		pfail("append via fd B");
	if (fstat(a, &st))
		pfail("fstat");
	if (!lenient && st.st_size != SIZE + 8)
		fail("after the append the size is %lld, expected %d", (long long)st.st_size,
		     SIZE + 8);
	if (pread(a, r, 8, st.st_size - 8) != 8 || memcmp(r, "APPENDED", 8))
		fail("appended data not at the end of the file");
	if (write(a, "XY", 2) != 2)
		pfail("write fd A");
	if (pread(c, r, 2, 3100) != 2 || memcmp(r, "XY", 2))
		fail("write via fd A did not land at offset 3100");
	if (lseek(c, 0, SEEK_CUR) != 5100)
		fail("fd C offset did not advance to 5100");
	pass();
}
