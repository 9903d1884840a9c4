/*
 * mem_mlockall [--onfault]: mlockall(MCL_FUTURE) (with MCL_ONFAULT) after
 * an area A was mapped, so A is not locked but every later mapping is.
 * Area B, mapped after, is locked (and filled). After restore: A still
 * unlocked, B locked with its contents, and a mapping made now is locked
 * as before ("lo", and "lf" with --onfault, in its smaps VmFlags; "??"
 * before Linux 6.2, which has no name for VM_LOCKONFAULT).
 */
#include "zdtm.h"

#include <sys/mman.h>

#ifndef MCL_ONFAULT
#define MCL_ONFAULT 4
#endif

#define LEN (4 * 4096ul)

static void vmflags(void *addr, char *out, size_t size)
{
	static char buf[1 << 21];
	char *p = buf;
	int in = 0;

	read_file("/proc/self/smaps", buf, sizeof(buf));
	while (*p) {
		char *e = strchr(p, '\n');
		unsigned long s, en;

		if (e)
			*e = 0;
		if (sscanf(p, "%lx-%lx ", &s, &en) == 2 && strchr(p, '-') < strchr(p, ' '))
			in = s <= (unsigned long)addr && (unsigned long)addr < en;
		else if (in && !strncmp(p, "VmFlags:", 8)) {
			snprintf(out, size, " %s ", p + 8);
			return;
		}
		if (!e)
			break;
		p = e + 1;
	}
	fail("no VmFlags for %p", addr);
}

static int locked(void *addr, const char *flag)
{
	char f[300], pat[8];

	vmflags(addr, f, sizeof(f));
	snprintf(pat, sizeof(pat), " %s ", flag);
	return strstr(f, pat) != NULL;
}

int main(int argc, char **argv)
{
	int onfault;
	uint8_t *a, *b, *c;

	test_init(argc, argv);
	onfault = test_flag("--onfault");
	a = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED)
		pfail("mmap A");
	fill_pattern(a, LEN, 61, 0);
	if (mlockall(MCL_FUTURE | (onfault ? MCL_ONFAULT : 0)))
		pfail("mlockall");
	b = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (b == MAP_FAILED)
		pfail("mmap B");
	fill_pattern(b, LEN, 62, 0);
	if (locked(a, "lo") || !locked(b, "lo") || locked(b, smaps_lockonfault_name()) != onfault)
		fail("unexpected VmFlags before the dump");

	test_daemon();
	test_waitsig();

	if (locked(a, "lo"))
		fail("area A (mapped before mlockall) is locked after restore");
	if (!locked(b, "lo") || locked(b, smaps_lockonfault_name()) != onfault)
		fail("area B lost its lock flags");
	if (check_pattern(a, LEN, 61, 0) >= 0 || check_pattern(b, LEN, 62, 0) >= 0)
		fail("contents differ");
	c = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (c == MAP_FAILED)
		pfail("mmap C");
	if (!locked(c, "lo"))
		fail("a new mapping is not locked after restore: mlockall(MCL_FUTURE) was lost");
	if (locked(c, smaps_lockonfault_name()) != onfault)
		fail("a new mapping's MCL_ONFAULT differs after restore");
	munlockall();
	pass();
}
