/*
 * mem_file_private: a file (--file PATH, default mem_file_private.data in
 * the cwd) of 8 known pages, mapped MAP_PRIVATE RW with some pages written
 * (copy-on-write), plus a second read-only private mapping of the same file
 * at a non-zero offset. The fd is closed: only the mappings hold the file.
 * After restore: written pages hold the new data, untouched pages equal the
 * file, the maps lines are unchanged and the file itself was not modified.
 */
#include "zdtm.h"

#include <sys/mman.h>

#define PG 4096ul
#define PAGES 8
#define FILE_SEED 31337

static int page_written(size_t pg)
{
	return pg == 1 || pg == 4 || pg == 7;
}

static void check_file(const char *path, const char *when)
{
	static uint8_t buf[PAGES * PG];
	struct stat st;
	int fd = open(path, O_RDONLY);
	long bad;

	if (fd < 0)
		pfail("open %s %s", path, when);
	if (fstat(fd, &st))
		pfail("fstat");
	if (st.st_size != PAGES * PG)
		fail("%s: size %lld %s, expected %lu", path, (long long)st.st_size, when, PAGES * PG);
	if (pread(fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf))
		pfail("pread %s", path);
	if ((bad = check_pattern(buf, sizeof(buf), FILE_SEED, 0)) >= 0)
		fail("%s was modified (offset %ld) %s", path, bad, when);
	close(fd);
}

int main(int argc, char **argv)
{
	static uint8_t buf[PAGES * PG];
	static char maps_before[4096], maps_after[4096];
	char ro_before[1024], ro_after[1024];
	const char *path;
	uint8_t *m, *ro;
	int fd;

	test_init(argc, argv);
	path = test_arg("--file");
	if (!path)
		path = "mem_file_private.data";

	fill_pattern(buf, sizeof(buf), FILE_SEED, 0);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		pfail("create %s", path);
	if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
		pfail("write %s", path);
	if (fsync(fd))
		pfail("fsync");

	m = mmap(NULL, PAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED)
		pfail("mmap private RW");
	ro = mmap(NULL, 3 * PG, PROT_READ, MAP_PRIVATE, fd, 2 * PG);
	if (ro == MAP_FAILED)
		pfail("mmap private RO at offset");
	close(fd);

	for (size_t pg = 0; pg < PAGES; pg++)
		if (page_written(pg))
			fill_pattern(m + pg * PG, PG, 500 + pg, 0);
	/* Read (fault in) an untouched page too. */
	if (check_pattern(m + 2 * PG, PG, FILE_SEED, 2 * PG) >= 0)
		fail("untouched page 2 does not match the file before the dump");

	maps_lines((unsigned long)m, (unsigned long)m + PAGES * PG, maps_before, sizeof(maps_before));
	maps_lines((unsigned long)ro, (unsigned long)ro + 3 * PG, ro_before, sizeof(ro_before));
	check_file(path, "before the dump");

	test_daemon();
	test_waitsig();

	maps_lines((unsigned long)m, (unsigned long)m + PAGES * PG, maps_after, sizeof(maps_after));
	maps_lines((unsigned long)ro, (unsigned long)ro + 3 * PG, ro_after, sizeof(ro_after));
	if (strcmp(maps_before, maps_after))
		fail("RW mapping's maps lines changed.\nbefore:\n%safter:\n%s", maps_before, maps_after);
	if (strcmp(ro_before, ro_after))
		fail("RO mapping's maps lines changed.\nbefore:\n%safter:\n%s", ro_before, ro_after);

	for (size_t pg = 0; pg < PAGES; pg++) {
		long bad;
		if (page_written(pg))
			bad = check_pattern(m + pg * PG, PG, 500 + pg, 0);
		else
			bad = check_pattern(m + pg * PG, PG, FILE_SEED, pg * PG);
		if (bad >= 0)
			fail("%s page %zu differs at offset %ld", page_written(pg) ? "written" : "untouched",
			     pg, bad);
	}
	long bad = check_pattern(ro, 3 * PG, FILE_SEED, 2 * PG);
	if (bad >= 0)
		fail("read-only mapping at file offset %lu differs at offset %ld", 2 * PG, bad);
	check_file(path, "after restore");

	/* Still private: writing now does not reach the file. */
	memset(m + 5 * PG, 0xee, PG);
	check_file(path, "after writing the private mapping");
	pass();
}
