/*
 * cow_late_fork: copy-on-write sharing with a child forked between two
 * layers of a chain (a migration's pre-dump round and its final dump).
 *
 * The root maps --mib N (default 64) MiB of private anonymous memory,
 * fills it with a pattern and forks E (early); then it writes its pidfile
 * and watches the pagemap entry of the area's first page. When a pre-dump
 * arms dirty tracking there (soft-dirty bit 55 cleared by clear_refs, or
 * uffd-wp bit 57 set) it forks L (late). Neither child writes the area, so
 * every page of it is shared copy-on-write by all three at the final dump;
 * E's pages lie in the pre-dump's layer with the root's, L's are stored
 * whole by the next layer while the root's stay in the pre-dump's.
 *
 * After SIGTERM the root checks that L was forked, then, for E and for L,
 * that every page of the area has the root's page frame in the child
 * (/proc/PID/pagemap: frame numbers need CAP_SYS_ADMIN; 2% slack for
 * compaction moving a page between the two reads), then tells the
 * children to check the pattern of every page themselves.
 */
#include "tree.h"

#include <sys/mman.h>

#define PG 4096ul

static uint8_t *area;
static size_t size;

/* The pagemap entries of the area's pages in process `pid`. */
static void pagemap_of(pid_t pid, uint64_t *out, size_t pages)
{
	char path[64];
	int fd;
	size_t want = pages * 8, got = 0;

	snprintf(path, sizeof(path), "/proc/%d/pagemap", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		pfail("open %s", path);
	while (got < want) {
		ssize_t n = pread(fd, (char *)out + got, want - got,
				  (off_t)((uintptr_t)area / PG * 8 + got));
		if (n <= 0)
			pfail("read %s", path);
		got += (size_t)n;
	}
	close(fd);
}

static uint64_t pfn(uint64_t e)
{
	return (e >> 63) ? (e & ((1ull << 55) - 1)) : 0;
}

/* Whether the first page was soft-dirty at the start (no soft-dirty in
 * the kernel: never). */
static int soft_dirty0;

/* Whether a pre-dump armed dirty tracking on the area's first page. */
static int tracking_armed(void)
{
	uint64_t e;

	pagemap_of(getpid(), &e, 1);
	return (soft_dirty0 && !(e & (1ull << 55))) || (e & (1ull << 57));
}

static void child(const char *who)
{
	long bad;

	test_waitsig();
	bad = check_pattern(area, size, 7, 0);
	if (bad >= 0)
		fail("%s: byte %ld of the area differs from the pattern", who, bad);
	exit(0);
}

static void expect_shared(pid_t c, const char *who, uint64_t *mine, uint64_t *theirs)
{
	size_t pages = size / PG, same = 0;

	pagemap_of(getpid(), mine, pages);
	pagemap_of(c, theirs, pages);
	for (size_t i = 0; i < pages; i++)
		if (pfn(mine[i]) && pfn(mine[i]) == pfn(theirs[i]))
			same++;
	if (same < pages - pages / 50)
		fail("%s (pid %d) shares %zu of the area's %zu pages with the root (copy-on-write "
		     "sharing lost)",
		     who, c, same, pages);
	test_msg("%s shares %zu of %zu pages", who, same, pages);
}

int main(int argc, char **argv)
{
	const char *mib = NULL;
	pid_t e, l = 0;
	uint64_t *mine, *theirs, first;

	test_init(argc, argv);
	mib = test_arg("--mib");
	size = (mib ? strtoul(mib, NULL, 10) : 64) << 20;
	area = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED)
		pfail("mmap %zu", size);
	fill_pattern(area, size, 7, 0);
	mine = malloc(size / PG * 8);
	theirs = malloc(size / PG * 8);
	if (!mine || !theirs)
		fail("malloc");
	pagemap_of(getpid(), &first, 1);
	if (!pfn(first))
		fail("page frame numbers are not visible in /proc/PID/pagemap (needs CAP_SYS_ADMIN)");
	soft_dirty0 = !!(first & (1ull << 55));
	if (tracking_armed())
		fail("the area's first page is write-protected (uffd-wp) before any pre-dump");

	e = xfork();
	if (e == 0)
		child("E");
	test_daemon();
	while (!test_sigterm_received) {
		if (!l && tracking_armed()) {
			l = xfork();
			if (l == 0)
				child("L");
			test_msg("dirty tracking armed: forked L (pid %d)", l);
		}
		usleep(l ? 100000 : 200);
	}
	if (!l)
		fail("no pre-dump armed dirty tracking before SIGTERM: L was never forked");
	expect_shared(e, "E", mine, theirs);
	expect_shared(l, "L", mine, theirs);
	if (check_pattern(area, size, 7, 0) >= 0)
		fail("root: the area differs from the pattern");
	if (kill(e, SIGTERM) || kill(l, SIGTERM))
		pfail("kill SIGTERM");
	expect_exit(e, "E", 0);
	expect_exit(l, "L", 0);
	expect_no_children();
	pass();
}
