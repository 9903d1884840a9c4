/*
 * mem_files_refuse --kind KIND: a file-backed mapping cairn refuses to
 * dump, at the address it prints ("addr 0x..."), then waits; the refused
 * dump must leave it unharmed, and it checks the mapping on SIGTERM.
 *   memfd-private  a memfd mapped MAP_PRIVATE, fd closed
 *   memfd-open     a memfd mapped MAP_SHARED while its fd stays open
 *   memfd-sealed   a memfd sealed F_SEAL_FUTURE_WRITE, mapped read-only
 *   memfd-partial  a memfd of 4 pages of which 1 is mapped, fd closed
 */
#include "zdtm.h"
#include <sys/mman.h>

#define PG 4096ul

int main(int argc, char **argv)
{
	const char *kind;
	uint8_t *p;
	size_t size = 2 * PG, len = 2 * PG;
	int prot = PROT_READ | PROT_WRITE, flags = MAP_SHARED, keep = 0, seal = 0;

	test_init(argc, argv);
	kind = test_arg("--kind");
	if (!kind)
		fail("usage: --kind memfd-private|memfd-open|memfd-sealed|memfd-partial");
	if (!strcmp(kind, "memfd-private"))
		flags = MAP_PRIVATE;
	else if (!strcmp(kind, "memfd-open"))
		keep = 1;
	else if (!strcmp(kind, "memfd-sealed"))
		seal = 1, prot = PROT_READ;
	else if (!strcmp(kind, "memfd-partial"))
		size = 4 * PG, len = PG;
	else
		fail("unknown kind %s", kind);
	int fd = memfd_create("cairn-refuse", MFD_ALLOW_SEALING);
	if (fd < 0 || ftruncate(fd, size))
		pfail("memfd");
	{
		static uint8_t buf[4 * PG];
		fill_pattern(buf, size, 61, 0);
		if (pwrite(fd, buf, size, 0) != (ssize_t)size)
			pfail("pwrite");
	}
	if (seal && fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE))
		pfail("F_ADD_SEALS");
	p = mmap(NULL, len, prot, flags, fd, 0);
	if (p == MAP_FAILED)
		pfail("mmap");
	if (!keep)
		close(fd);
	printf("addr %#lx\n", (unsigned long)p);
	fflush(stdout);

	test_daemon();
	test_waitsig();

	if (check_pattern(p, len, 61, 0) >= 0)
		fail("the mapping changed");
	pass();
}
