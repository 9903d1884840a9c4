/*
 * mem_vmflags: VMA flags set by mlock, mlock2(MLOCK_ONFAULT) and madvise,
 * each on its own private anonymous area (4 pages, gaps between areas so
 * that none merges with a neighbour), filled with a pattern:
 *   lo  mlock               lf  mlock2(MLOCK_ONFAULT), one page touched
 *   dc  MADV_DONTFORK       dd  MADV_DONTDUMP
 *   hg  MADV_HUGEPAGE       nh  MADV_NOHUGEPAGE
 *   wf  MADV_WIPEONFORK     mg  MADV_MERGEABLE
 *   sr  MADV_SEQUENTIAL     rr  MADV_RANDOM
 *   gu  MADV_GUARD_INSTALL on the second page (kernels that have it)
 * --no-guard leaves the guard region out.
 * Flags the kernel refuses here (no THP, no KSM, no guard regions) are
 * left out. After restore: each area's smaps VmFlags and Locked lines as
 * before, its contents, and the flags in practice: a forked child sees
 * the wipe-on-fork area zero and cannot touch the don't-fork area, the
 * guard page faults while its neighbours read back.
 */
#include "zdtm.h"

#include <setjmp.h>
#include <sys/mman.h>
#include <sys/wait.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif

#define PG 4096ul
#define PAGES 4
#define STRIDE (16 * PG)

enum { LO, LF, DC, DD, HG, NH, WF, MG, SR, RR, GU, NAREAS };
static const char *names[NAREAS] = { "lo", "lf", "dc", "dd", "hg", "nh",
				     "wf", "mg", "sr", "rr", "gu" };
static const int advice[NAREAS] = { -1, -1, MADV_DONTFORK, MADV_DONTDUMP,
				    MADV_HUGEPAGE, MADV_NOHUGEPAGE,
				    MADV_WIPEONFORK, MADV_MERGEABLE,
				    MADV_SEQUENTIAL, MADV_RANDOM,
				    MADV_GUARD_INSTALL };

static uint8_t *area[NAREAS];
static int used[NAREAS];
static char flags_before[NAREAS][256], locked_before[NAREAS][64];

static sigjmp_buf fault_jmp;
static volatile sig_atomic_t faulted;

static void segv_handler(int sig)
{
	(void)sig;
	faulted = 1;
	siglongjmp(fault_jmp, 1);
}

static int probe(volatile uint8_t *p)
{
	faulted = 0;
	if (sigsetjmp(fault_jmp, 1) == 0)
		(void)*p;
	return faulted;
}

/* The smaps field "key" of the mapping that starts at addr. */
static void smaps_field(void *addr, const char *key, char *out, size_t size)
{
	static char buf[1 << 21];
	char *p = buf;
	int in = 0;
	size_t klen = strlen(key);

	read_file("/proc/self/smaps", buf, sizeof(buf));
	while (*p) {
		char *e = strchr(p, '\n');
		unsigned long s, en;

		if (e)
			*e = 0;
		if (sscanf(p, "%lx-%lx ", &s, &en) == 2 && strchr(p, ' ') &&
		    strchr(p, '-') < strchr(p, ' '))
			in = (s == (unsigned long)addr);
		else if (in && strncmp(p, key, klen) == 0 && p[klen] == ':') {
			snprintf(out, size, "%s", p + klen + 1);
			return;
		}
		if (!e)
			break;
		p = e + 1;
	}
	fail("no %s line for the mapping at %p", key, addr);
}

static int has_flag(const char *flags, const char *f)
{
	size_t n = strlen(f);

	for (const char *p = flags; (p = strstr(p, f)); p++)
		if ((p == flags || p[-1] == ' ') && (p[n] == ' ' || p[n] == 0))
			return 1;
	return 0;
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	uint8_t *base;

	test_init(argc, argv);
	base = mmap((void *)0x210000000000ul, NAREAS * STRIDE, PROT_NONE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (base == MAP_FAILED)
		pfail("mmap probe");
	munmap(base, NAREAS * STRIDE);
	for (int i = 0; i < NAREAS; i++) {
		void *want = base + i * STRIDE;
		area[i] = mmap(want, PAGES * PG, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (area[i] != want)
			pfail("mmap area %s", names[i]);
		if (i != LF)
			fill_pattern(area[i], PAGES * PG, 40 + i, 0);
		int r;
		if (i == GU && test_flag("--no-guard"))
			continue;
		if (i == LO)
			r = mlock(area[i], PAGES * PG);
		else if (i == LF)
			r = syscall(SYS_mlock2, area[i], PAGES * PG, MLOCK_ONFAULT);
		else if (i == GU)
			r = madvise(area[i] + PG, PG, advice[i]);
		else
			r = madvise(area[i], PAGES * PG, advice[i]);
		if (r) {
			if (errno != EINVAL || i == LO || i == LF || i == DC || i == DD ||
			    i == WF || i == SR || i == RR)
				pfail("setting %s", names[i]);
			printf("%s: not supported by this kernel, left out\n", names[i]);
			continue;
		}
		used[i] = 1;
		if (i == LF)
			fill_pattern(area[i] + 2 * PG, PG, 40 + i, 0);
		smaps_field(area[i], "VmFlags", flags_before[i], sizeof(flags_before[i]));
		smaps_field(area[i], "Locked", locked_before[i], sizeof(locked_before[i]));
		if (i != GU && !has_flag(flags_before[i], i == LF ? smaps_lockonfault_name() : names[i]))
			fail("area %s: VmFlags without %s: %s", names[i], names[i],
			     flags_before[i]);
	}

	test_daemon();
	test_waitsig();

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = segv_handler;
	sa.sa_flags = SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSEGV, &sa, NULL))
		pfail("sigaction(SIGSEGV)");
	for (int i = 0; i < NAREAS; i++) {
		char now[256], locked[64];
		long bad;

		if (!used[i])
			continue;
		smaps_field(area[i], "VmFlags", now, sizeof(now));
		if (strcmp(now, flags_before[i]))
			fail("area %s: VmFlags were%s, now%s", names[i], flags_before[i], now);
		smaps_field(area[i], "Locked", locked, sizeof(locked));
		if (strcmp(locked, locked_before[i]))
			fail("area %s: Locked was%s, now%s", names[i], locked_before[i], locked);
		if (i == LF) {
			if ((bad = check_pattern(area[i] + 2 * PG, PG, 40 + i, 0)) >= 0)
				fail("area lf differs at offset %ld", bad);
			continue;
		}
		if (i == GU) {
			if (!probe(area[i] + PG + 8))
				fail("the guard page of area gu can be read after restore");
			if ((bad = check_pattern(area[i], PG, 40 + i, 0)) >= 0 ||
			    (bad = check_pattern(area[i] + 2 * PG, 2 * PG, 40 + i, 2 * PG)) >= 0)
				fail("area gu differs near offset %ld", bad);
			continue;
		}
		if ((bad = check_pattern(area[i], PAGES * PG, 40 + i, 0)) >= 0)
			fail("area %s differs at offset %ld", names[i], bad);
	}
	signal(SIGSEGV, SIG_DFL);

	/* In practice: a child gets wipe-on-fork memory zero, and no
	 * don't-fork memory at all. */
	pid_t c = fork();
	if (c < 0)
		pfail("fork");
	if (c == 0) {
		signal(SIGSEGV, SIG_DFL);
		for (size_t i = 0; i < PAGES * PG; i++)
			if (area[WF][i])
				_exit(2);
		(void)*(volatile uint8_t *)area[DC];
		_exit(0);
	}
	int st;
	if (waitpid(c, &st, 0) != c)
		pfail("waitpid");
	if (WIFEXITED(st) && WEXITSTATUS(st) == 2)
		fail("the wipe-on-fork area is not zero in a child");
	if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSEGV)
		fail("a child touching the don't-fork area did not get SIGSEGV (status %#x)", st);
	pass();
}
