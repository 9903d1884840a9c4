/*
 * mem_anon_private: private anonymous mappings with different protections,
 * placed apart from everything else so the kernel cannot merge them with
 * unrelated neighbours:
 *   A  8 pages RW, written
 *   R  4 pages written, then mprotect(PROT_READ)
 *   G  5 pages: 2 RW | 1 PROT_NONE guard | 2 RW, written around the guard
 *   Z  4 pages RW never touched (must read back as zeroes)
 * After restore: contents, the /proc/self/maps lines of the area, and the
 * protections in practice (writing R and touching the guard fault).
 */
#include "zdtm.h"

#include <setjmp.h>
#include <sys/mman.h>

#define PG 4096ul
#define A_OFF 0
#define A_PAGES 8
#define R_OFF (24 * PG)
#define R_PAGES 4
#define G_OFF (48 * PG)
#define G_PAGES 5
#define Z_OFF (72 * PG)
#define Z_PAGES 4
#define AREA (96 * PG)

static sigjmp_buf fault_jmp;
static volatile sig_atomic_t faulted;

static void segv_handler(int sig)
{
	(void)sig;
	faulted = 1;
	siglongjmp(fault_jmp, 1);
}

/* Returns 1 if the access faulted. */
static int probe(volatile uint8_t *p, int write)
{
	faulted = 0;
	if (sigsetjmp(fault_jmp, 1) == 0) {
		if (write)
			*p = *p;
		else
			(void)*p;
	}
	return faulted;
}

static uint8_t *map_at(uint8_t *want, size_t len)
{
	void *p = mmap(want, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (p == MAP_FAILED)
		pfail("mmap at %p", (void *)want);
	if (p != want)
		fail("mmap returned %p, wanted %p", p, (void *)want);
	return p;
}

int main(int argc, char **argv)
{
	static char maps_before[8192], maps_after[8192];
	struct sigaction sa;
	uint8_t *base, *a, *r, *g, *z;
	int lines;

	test_init(argc, argv);

	/* Find a free area far from the usual mmap zone, then leave gaps. */
	base = mmap((void *)0x200000000000ul, AREA, PROT_NONE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (base == MAP_FAILED)
		pfail("mmap probe");
	if (munmap(base, AREA))
		pfail("munmap");

	a = map_at(base + A_OFF, A_PAGES * PG);
	r = map_at(base + R_OFF, R_PAGES * PG);
	g = map_at(base + G_OFF, G_PAGES * PG);
	z = map_at(base + Z_OFF, Z_PAGES * PG);

	fill_pattern(a, A_PAGES * PG, 1, 0);
	fill_pattern(r, R_PAGES * PG, 2, 0);
	if (mprotect(r, R_PAGES * PG, PROT_READ))
		pfail("mprotect R");
	fill_pattern(g, 2 * PG, 3, 0);
	fill_pattern(g + 3 * PG, 2 * PG, 4, 0);
	if (mprotect(g + 2 * PG, PG, PROT_NONE))
		pfail("mprotect guard");

	lines = maps_lines((unsigned long)base, (unsigned long)(base + AREA),
			   maps_before, sizeof(maps_before));
	if (lines != 6)
		fail("expected 6 maps lines for the area, got %d:\n%s", lines, maps_before);

	test_daemon();
	test_waitsig();

	maps_lines((unsigned long)base, (unsigned long)(base + AREA),
		   maps_after, sizeof(maps_after));
	if (strcmp(maps_before, maps_after))
		fail("maps lines changed.\nbefore:\n%safter:\n%s", maps_before, maps_after);

	long bad;
	if ((bad = check_pattern(a, A_PAGES * PG, 1, 0)) >= 0)
		fail("region A differs at offset %ld", bad);
	if ((bad = check_pattern(r, R_PAGES * PG, 2, 0)) >= 0)
		fail("read-only region R differs at offset %ld", bad);
	if ((bad = check_pattern(g, 2 * PG, 3, 0)) >= 0)
		fail("region G (below the guard) differs at offset %ld", bad);
	if ((bad = check_pattern(g + 3 * PG, 2 * PG, 4, 0)) >= 0)
		fail("region G (above the guard) differs at offset %ld", bad);
	for (size_t i = 0; i < Z_PAGES * PG; i++)
		if (z[i])
			fail("untouched region Z has a non-zero byte at offset %zu", i);

	/* The protections must hold in practice. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = segv_handler;
	sa.sa_flags = SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSEGV, &sa, NULL))
		pfail("sigaction(SIGSEGV)");
	if (probe(a + 5, 1) || probe(g + 4 * PG + 7, 1) || probe(z + 9, 1))
		fail("writing a RW region faulted");
	if (probe(r + PG + 1, 0))
		fail("reading the read-only region faulted");
	if (!probe(r + PG + 1, 1))
		fail("writing the read-only region did not fault");
	if (!probe(g + 2 * PG + 1, 0))
		fail("reading the PROT_NONE guard page did not fault");
	signal(SIGSEGV, SIG_DFL);

	/* Private and writable after restore. */
	fill_pattern(a, A_PAGES * PG, 11, 0);
	if (check_pattern(a, A_PAGES * PG, 11, 0) >= 0)
		fail("region A is not writable after restore");
	pass();
}
