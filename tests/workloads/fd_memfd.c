/* fd_memfd: a memfd keeps its name, contents, size, offset and seals. */
#include "zdtm.h"
#include <sys/mman.h>

#define LEN (3 * 4096 + 100)

int main(int argc, char **argv)
{
	static uint8_t buf[LEN + 16];
	char link[256], path[64];

	test_init(argc, argv);
	int fd = memfd_create("zdtm-memfd", MFD_ALLOW_SEALING);
	if (fd < 0)
		pfail("memfd_create");
	fill_pattern(buf, LEN, 9, 0);
	if (write(fd, buf, LEN) != LEN)
		pfail("write");
	if (lseek(fd, 1234, SEEK_SET) != 1234)
		pfail("lseek");
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW))
		pfail("seals");
	test_daemon();
	test_waitsig();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ssize_t l = readlink(path, link, sizeof(link) - 1);
	link[l > 0 ? l : 0] = 0;
	if (strcmp(link, "/memfd:zdtm-memfd (deleted)"))
		fail("memfd is now %s", link);
	if (lseek(fd, 0, SEEK_CUR) != 1234)
		fail("offset lost");
	if (fcntl(fd, F_GET_SEALS) != (F_SEAL_SHRINK | F_SEAL_GROW))
		fail("seals are %#x", fcntl(fd, F_GET_SEALS));
	memset(buf, 0, LEN);
	if (pread(fd, buf, LEN + 10, 0) != LEN)
		fail("size changed");
	long bad = check_pattern(buf, LEN, 9, 0);
	if (bad >= 0)
		fail("contents differ at %ld", bad);
	if (ftruncate(fd, 10) != -1 || errno != EPERM)
		fail("F_SEAL_SHRINK not enforced");
	pass();
}
