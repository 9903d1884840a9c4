/*
 * mem_deleted_map: mappings of deleted files, shared by a parent and its
 * child.
 *   A  /dev/shm/cairn-mdm-PID (as MPICH/UCX do), 3 pages + 100 bytes,
 *      mapped MAP_SHARED read-write twice (offset 0, 4 pages; offset 1
 *      page, 2 pages), fd closed, unlinked. The child inherits both.
 *   B  mem_deleted_map.tmp-PID in the cwd, sparse (1 MiB, data at 0 and
 *      512 KiB), mapped MAP_PRIVATE read-write, one page written (copied
 *      on write), fd closed, unlinked.
 *   C  mem_deleted_map.fd-PID in the cwd, 2 pages, mapped MAP_SHARED and
 *      its fd kept open, unlinked.
 * After restore (parent): contents as before; st_size, nlink 0 and mode
 * of A (through map_files) and C (fstat); a write through one mapping of
 * A is seen through the other; a write(2) to C's fd is seen in its
 * mapping (same file); the maps lines name the files "(deleted)" as
 * before; B holds the written page and the file's bytes elsewhere. Then
 * the child checks it sees the parent's writes to A and C and writes
 * back, which the parent must see (one file, not copies).
 */
#include "zdtm.h"
#include <sys/mman.h>
#include <sys/wait.h>

#define PG 4096ul
#define A_SIZE (3 * PG + 100)
#define B_SIZE (1ul << 20)
#define C_SIZE (2 * PG)

static char a_name[256], b_name[4200], c_name[4200], cwd[4000];

static void check_named(const void *addr, const char *path)
{
	char lines[4096], want[4400];

	if (maps_lines((unsigned long)addr, (unsigned long)addr + 1, lines, sizeof(lines)) != 1)
		fail("no single maps line at %p", addr);
	snprintf(want, sizeof(want), " %s (deleted)\n", path);
	if (!strstr(lines, want))
		fail("mapping at %p: maps says \"%s\", expected a name ending \"%s\"", addr, lines,
		     want);
}

static void check_stat(const char *what, struct stat *st, off_t size, mode_t mode)
{
	if (st->st_size != size)
		fail("%s: st_size %ld, expected %ld", what, (long)st->st_size, (long)size);
	if (st->st_nlink != 0)
		fail("%s: nlink %lu, expected 0 (still deleted)", what, (unsigned long)st->st_nlink);
	if ((st->st_mode & 07777) != mode)
		fail("%s: mode %o, expected %o", what, st->st_mode & 07777, mode);
}

static void stat_mapping(const void *addr, size_t len, struct stat *st)
{
	char p[128];

	snprintf(p, sizeof(p), "/proc/self/map_files/%lx-%lx", (unsigned long)addr,
		 (unsigned long)addr + len);
	if (stat(p, st))
		pfail("stat %s", p);
}

int main(int argc, char **argv)
{
	int go[2], st, fd, c;
	uint8_t *a1, *a2, *b, *pc;
	struct stat sa, sc, sa2;

	test_init(argc, argv);
	if (!getcwd(cwd, sizeof(cwd)))
		pfail("getcwd");
	snprintf(a_name, sizeof(a_name), "/dev/shm/cairn-mdm-%d", getpid());
	snprintf(b_name, sizeof(b_name), "%s/mem_deleted_map.tmp-%d", cwd, getpid());
	snprintf(c_name, sizeof(c_name), "%s/mem_deleted_map.fd-%d", cwd, getpid());

	fd = open(a_name, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0)
		pfail("open %s", a_name);
	if (fchmod(fd, 0640) || ftruncate(fd, A_SIZE))
		pfail("size %s", a_name);
	a1 = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	a2 = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, PG);
	if (a1 == MAP_FAILED || a2 == MAP_FAILED)
		pfail("mmap A");
	close(fd);
	unlink(a_name);
	fill_pattern(a1, A_SIZE, 31, 0);

	fd = open(b_name, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0)
		pfail("open %s", b_name);
	if (ftruncate(fd, B_SIZE))
		pfail("ftruncate B");
	{
		static uint8_t buf[2 * PG];
		fill_pattern(buf, sizeof(buf), 32, 0);
		if (pwrite(fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf) ||
		    pwrite(fd, buf, sizeof(buf), B_SIZE / 2) != (ssize_t)sizeof(buf))
			pfail("pwrite B");
	}
	b = mmap(NULL, B_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (b == MAP_FAILED)
		pfail("mmap B");
	close(fd);
	unlink(b_name);
	memset(b + PG, 0x5c, PG); /* private copy of page 1 */

	c = open(c_name, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (c < 0)
		pfail("open %s", c_name);
	if (ftruncate(c, C_SIZE))
		pfail("ftruncate C");
	pc = mmap(NULL, C_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, c, 0);
	if (pc == MAP_FAILED)
		pfail("mmap C");
	unlink(c_name);
	fill_pattern(pc, C_SIZE, 33, 0);

	if (pipe(go))
		pfail("pipe");
	pid_t child = fork();
	if (child < 0)
		pfail("fork");
	if (child == 0) {
		char x;
		if (read(go[0], &x, 1) != 1)
			_exit(10);
		if (a1[10] != 0x77 || pc[20] != 0x66)
			_exit(11);
		a2[PG + 5] = 0x88; /* file offset 2 pages + 5 */
		pc[C_SIZE - 1] = 0x99;
		_exit(0);
	}

	test_daemon();
	test_waitsig();

	long bad;
	if ((bad = check_pattern(a1, A_SIZE, 31, 0)) >= 0)
		fail("A differs at offset %ld", bad);
	for (size_t i = A_SIZE; i < 4 * PG; i++)
		if (a1[i])
			fail("A: byte %zu past the end is %u", i, a1[i]);
	if (memcmp(a2, a1 + PG, 2 * PG))
		fail("A's second mapping (offset 1 page) differs from the first");
	stat_mapping(a1, 4 * PG, &sa);
	stat_mapping(a2, 2 * PG, &sa2);
	check_stat("A", &sa, A_SIZE, 0640);
	if (sa.st_ino != sa2.st_ino || sa.st_dev != sa2.st_dev)
		fail("A's two mappings map two files (inodes %lu and %lu)", (unsigned long)sa.st_ino,
		     (unsigned long)sa2.st_ino);
	a1[PG + 10] ^= 0xff;
	if (a2[10] != a1[PG + 10])
		fail("A: a write through one mapping is not seen through the other");
	a1[PG + 10] ^= 0xff;
	check_named(a1, a_name);
	check_named(a2, a_name);

	{
		static uint8_t want[2 * PG];
		fill_pattern(want, sizeof(want), 32, 0);
		if (memcmp(b, want, PG) || memcmp(b + B_SIZE / 2, want, 2 * PG))
			fail("B: the file's bytes differ");
		for (size_t i = 0; i < PG; i++)
			if (b[PG + i] != 0x5c)
				fail("B: the private page differs at %zu", i);
		for (size_t i = 2 * PG; i < B_SIZE / 2; i += 997)
			if (b[i])
				fail("B: hole byte %zu is %u", i, b[i]);
	}
	check_named(b, b_name);

	if ((bad = check_pattern(pc, C_SIZE, 33, 0)) >= 0)
		fail("C differs at offset %ld", bad);
	if (fstat(c, &sc))
		pfail("fstat C");
	check_stat("C", &sc, C_SIZE, 0600);
	stat_mapping(pc, C_SIZE, &sa2);
	if (sa2.st_ino != sc.st_ino || sa2.st_dev != sc.st_dev)
		fail("C: the fd and the mapping are two files");
	{
		uint8_t v = 0x66;
		if (pwrite(c, &v, 1, 20) != 1)
			pfail("pwrite C");
		if (pc[20] != 0x66)
			fail("C: a write to the fd is not seen in the mapping");
	}
	check_named(pc, c_name);
	if (access(a_name, F_OK) == 0 || access(c_name, F_OK) == 0 || access(b_name, F_OK) == 0)
		fail("a deleted file exists again under its name");

	a1[10] = 0x77;
	if (write(go[1], "g", 1) != 1)
		pfail("write go");
	if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st))
		fail("child failed: status %#x", st);
	if (a1[2 * PG + 5] != 0x88 || pc[C_SIZE - 1] != 0x99)
		fail("the child's writes are not seen by the parent: not one file");
	pass();
}
