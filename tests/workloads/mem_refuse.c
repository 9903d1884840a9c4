/*
 * mem_refuse --kind KIND: a mapping cairn refuses to dump, at the address
 * it prints ("addr 0x..."), then waits; the refused dump must leave it
 * unharmed, and it checks the mapping still works on SIGTERM.
 *   sealed  an anonymous area sealed with mseal (Linux 6.10+)
 *   pkey    an anonymous area with a memory protection key (pkey_mprotect)
 * Prints "unsupported-kernel" and passes when the kernel lacks the call.
 */
#include "zdtm.h"

#include <sys/mman.h>

#ifndef SYS_mseal
#define SYS_mseal 462
#endif

int main(int argc, char **argv)
{
	const char *kind;
	uint8_t *p = NULL;

	test_init(argc, argv);
	kind = test_arg("--kind");
	if (!kind)
		fail("usage: --kind sealed|pkey");
	if (!strcmp(kind, "sealed")) {
		p = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			pfail("mmap");
		fill_pattern(p, 4 * 4096, 7, 0);
		if (syscall(SYS_mseal, p, 4 * 4096, 0)) {
			if (errno == ENOSYS || errno == EINVAL) {
				printf("unsupported-kernel\n");
				fflush(stdout);
			} else {
				pfail("mseal");
			}
		}
		printf("addr %#lx\n", (unsigned long)p);
	} else if (!strcmp(kind, "pkey")) {
		p = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			pfail("mmap");
		fill_pattern(p, 4 * 4096, 7, 0);
		long key = syscall(SYS_pkey_alloc, 0, 0);
		if (key < 0 || syscall(SYS_pkey_mprotect, p, 4 * 4096,
				       PROT_READ | PROT_WRITE, key)) {
			printf("unsupported-kernel\n");
			fflush(stdout);
		}
		printf("addr %#lx\n", (unsigned long)p);
	} else {
		fail("unknown kind %s", kind);
	}
	fflush(stdout);

	test_daemon();
	test_waitsig();

	if (p && check_pattern(p, 4 * 4096, 7, 0) >= 0)
		fail("sealed area changed");
	pass();
}
