/*
 * mem_anon_shared: a MAP_SHARED|MAP_ANONYMOUS region written before the
 * dump. After restore: contents intact, still "rw-s" in /proc/self/maps,
 * and really shared: a forked child's write is seen by the parent and the
 * parent's write by the child.
 */
#include "zdtm.h"

#include <sys/mman.h>
#include <sys/wait.h>

#define PG 4096ul
#define PAGES 16

static void perms_of(uint8_t *p, char *out)
{
	char lines[4096];

	if (maps_lines((unsigned long)p, (unsigned long)p + PAGES * PG, lines, sizeof(lines)) != 1)
		fail("expected one maps line for the shared region, got:\n%s", lines);
	if (sscanf(lines, "%*x-%*x %4s", out) != 1)
		fail("unparsable maps line %s", lines);
}

int main(int argc, char **argv)
{
	uint8_t *p;
	char perms[8];
	pid_t child;
	int status;

	test_init(argc, argv);

	p = mmap(NULL, PAGES * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		pfail("mmap");
	/* Leave two pages untouched: they must read back as zeroes. */
	fill_pattern(p, 10 * PG, 55, 0);
	fill_pattern(p + 12 * PG, 4 * PG, 56, 0);
	perms_of(p, perms);
	if (strcmp(perms, "rw-s"))
		fail("shared region has perms %s before the dump", perms);

	test_daemon();
	test_waitsig();

	perms_of(p, perms);
	if (strcmp(perms, "rw-s"))
		fail("shared region has perms %s after restore, expected rw-s", perms);
	long bad;
	if ((bad = check_pattern(p, 10 * PG, 55, 0)) >= 0)
		fail("shared region differs at offset %ld", bad);
	if ((bad = check_pattern(p + 12 * PG, 4 * PG, 56, 0)) >= 0)
		fail("shared region differs at offset %ld", 12 * PG + bad);
	for (size_t i = 10 * PG; i < 12 * PG; i++)
		if (p[i])
			fail("untouched shared page has a non-zero byte at offset %zu", i);

	child = fork();
	if (child < 0)
		pfail("fork");
	if (child == 0) {
		/* Child: see the parent's data, write our own. */
		if (check_pattern(p, 10 * PG, 55, 0) >= 0)
			_exit(2);
		fill_pattern(p + 3 * PG, PG, 77, 0);
		memcpy(p + 11 * PG, "child-was-here", 15);
		_exit(0);
	}
	if (waitpid(child, &status, 0) != child)
		pfail("waitpid");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail("child failed (status 0x%x): it did not see the parent's data", status);
	if (check_pattern(p + 3 * PG, PG, 77, 0) >= 0)
		fail("the child's write to page 3 is not visible: the region is not shared");
	if (memcmp(p + 11 * PG, "child-was-here", 15))
		fail("the child's write to page 11 is not visible: the region is not shared");
	pass();
}
