/*
 * tree_shm_anon: one MAP_SHARED|MAP_ANONYMOUS region shared by two processes.
 *
 * The root maps 5 pages before forking and fills page 0; C fills page 1 and
 * raises a flag in page 3; the root sees page 1 before readiness. After the
 * go the root checks pages 0 and 1, fills page 2 and sends the go to C; C
 * checks pages 0, 1 and 2 (the root's write after restore must be visible)
 * and fills page 4; after C exits the root must see page 4: one copy of the
 * region, not one per process. Both check that the mapping is still at the
 * same address and shared ("s" in /proc/self/maps).
 */
#include "tree.h"

#include <sys/mman.h>
#include <sys/wait.h>

#define NPAGES 5

static uint8_t *shm;
static long pg;

static void check_page(int n, uint32_t seed, const char *who, const char *when)
{
	long bad = check_pattern(shm + n * pg, pg, seed, 0);

	if (bad >= 0)
		fail("%s %s: page %d byte %ld is 0x%02x, expected 0x%02x", who, when, n, bad,
		     shm[n * pg + bad], zdtm_pattern(seed, bad));
}

static void check_mapping(const char *who)
{
	char lines[4096], perms[8];
	unsigned long s, e;

	if (maps_lines((unsigned long)shm, (unsigned long)shm + NPAGES * pg, lines,
		       sizeof(lines)) != 1)
		fail("%s: the region %p is not one mapping any more:\n%s", who, (void *)shm, lines);
	if (sscanf(lines, "%lx-%lx %4s", &s, &e, perms) != 3)
		fail("%s: cannot parse %s", who, lines);
	if (s != (unsigned long)shm || e != (unsigned long)shm + NPAGES * pg ||
	    strcmp(perms, "rw-s"))
		fail("%s: the region is now %s (expected %p-%p rw-s)", who, lines, (void *)shm,
		     (void *)(shm + NPAGES * pg));
}

static void __attribute__((noreturn)) child(pid_t root)
{
	pid_t pid = getpid();

	fill_pattern(shm + pg, pg, 22, 0);
	__atomic_store_n((int *)(shm + 3 * pg), 1, __ATOMIC_SEQ_CST);
	test_waitsig();

	if (getpid() != pid || getppid() != root)
		fail("C: getpid() %d getppid() %d, expected %d/%d", getpid(), getppid(), pid, root);
	check_mapping("C");
	check_page(0, 21, "C", "after the go");
	check_page(1, 22, "C", "after the go");
	check_page(2, 23, "C", "after the go (written by the root after restore)");
	fill_pattern(shm + 4 * pg, pg, 24, 0);
	exit(0);
}

int main(int argc, char **argv)
{
	pid_t c, me;
	int i;

	test_init(argc, argv);
	me = getpid();
	pg = sysconf(_SC_PAGESIZE);
	shm = mmap(NULL, NPAGES * pg, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shm == MAP_FAILED)
		pfail("mmap");
	fill_pattern(shm, pg, 21, 0);
	c = xfork();
	if (c == 0)
		child(me);
	for (i = 0; !__atomic_load_n((int *)(shm + 3 * pg), __ATOMIC_SEQ_CST); i++) {
		if (i > 10000)
			fail("C did not raise its flag in the shared page within 10 s");
		usleep(1000);
	}
	check_page(1, 22, "root", "before the dump (written by C)");
	check_mapping("root before the dump");

	test_daemon();
	test_waitsig();

	check_mapping("root after the go");
	check_page(0, 21, "root", "after the go");
	check_page(1, 22, "root", "after the go");
	fill_pattern(shm + 2 * pg, pg, 23, 0);
	if (kill(c, SIGTERM))
		pfail("kill(C, SIGTERM)");
	expect_exit(c, "C", 0);
	if (check_pattern(shm + 4 * pg, pg, 24, 0) >= 0)
		fail("page 4, written by C after restore, does not reach the root: the region is no "
		     "longer shared (two copies)");
	expect_no_children();
	pass();
}
