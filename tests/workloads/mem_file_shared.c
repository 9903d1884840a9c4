/*
 * mem_file_shared: a file (--file PATH, default mem_file_shared.data) of 4
 * known pages mapped MAP_SHARED RW (fd closed). One write goes through the
 * mapping before the dump (and is msync'ed); after restore another write
 * goes through the mapping, msync, and read(2) of the file finds both.
 */
#include "zdtm.h"

#include <sys/mman.h>

#define PG 4096ul
#define PAGES 4
#define FILE_SEED 4711
#define BEFORE "written-through-the-mapping-before-the-dump"
#define AFTER "written-through-the-mapping-after-restore"
#define BEFORE_OFF 100
#define AFTER_OFF (2 * PG + 300)

int main(int argc, char **argv)
{
	static uint8_t buf[PAGES * PG], expect[PAGES * PG];
	char perms[8], lines[1024];
	const char *path;
	uint8_t *m;
	int fd;

	test_init(argc, argv);
	path = test_arg("--file");
	if (!path)
		path = "mem_file_shared.data";

	fill_pattern(buf, sizeof(buf), FILE_SEED, 0);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		pfail("create %s", path);
	if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
		pfail("write %s", path);
	m = mmap(NULL, PAGES * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		pfail("mmap shared");
	close(fd);

	memcpy(m + BEFORE_OFF, BEFORE, sizeof(BEFORE));
	if (msync(m, PAGES * PG, MS_SYNC))
		pfail("msync before the dump");

	test_daemon();
	test_waitsig();

	if (maps_lines((unsigned long)m, (unsigned long)m + PAGES * PG, lines, sizeof(lines)) != 1 ||
	    sscanf(lines, "%*x-%*x %4s", perms) != 1 || strcmp(perms, "rw-s"))
		fail("the shared file mapping is not a single rw-s mapping after restore:\n%s", lines);

	memcpy(expect, buf, sizeof(buf));
	memcpy(expect + BEFORE_OFF, BEFORE, sizeof(BEFORE));
	if (memcmp(m, expect, sizeof(expect)))
		fail("mapping content differs after restore");

	memcpy(m + AFTER_OFF, AFTER, sizeof(AFTER));
	if (msync(m, PAGES * PG, MS_SYNC))
		pfail("msync after restore");
	memcpy(expect + AFTER_OFF, AFTER, sizeof(AFTER));

	fd = open(path, O_RDONLY);
	if (fd < 0)
		pfail("open %s after restore", path);
	if (read(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
		pfail("read %s", path);
	close(fd);
	if (memcmp(buf + BEFORE_OFF, BEFORE, sizeof(BEFORE)))
		fail("the file lacks the write made through the mapping before the dump");
	if (memcmp(buf + AFTER_OFF, AFTER, sizeof(AFTER)))
		fail("the file lacks the write made through the mapping after restore: "
		     "the mapping is not shared with the file");
	if (memcmp(buf, expect, sizeof(expect)))
		fail("the file content differs elsewhere");
	pass();
}
