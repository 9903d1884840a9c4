/*
 * mem_memfd_map: memfds mapped MAP_SHARED whose fds are closed.
 *   A  "cairn-mm-a", 2 pages + 300 bytes, sealed F_SEAL_SHRINK |
 *      F_SEAL_GROW | F_SEAL_SEAL after mapping, mode 0640, mapped twice
 *      (offset 0, 3 pages; offset 1 page, 1 page); the child inherits
 *      both.
 *   B  "cairn-mm-b", 1 page, the seals (F_SEAL_SEAL: no MFD_ALLOW_SEALING) and mode memfd_create gave it,
 *      made and mapped by the child only.
 * After restore: contents, st_size, mode and seals (through map_files),
 * the maps name "/memfd:NAME (deleted)", one object behind both mappings
 * of A, and the child sees the parent's write to A and writes back,
 * which the parent sees (one memfd for both processes).
 */
#include "zdtm.h"
#include <sys/mman.h>
#include <sys/wait.h>

#define PG 4096ul
#define A_SIZE (2 * PG + 300)
#define A_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

static void check_memfd(const char *what, const void *addr, size_t len, const char *name,
			off_t size, int seals, mode_t mode, ino_t *ino)
{
	char p[128], lines[4096], want[256];
	struct stat st;

	snprintf(p, sizeof(p), "/proc/self/map_files/%lx-%lx", (unsigned long)addr,
		 (unsigned long)addr + len);
	int fd = open(p, O_RDONLY);
	if (fd < 0)
		pfail("%s: open %s", what, p);
	if (fstat(fd, &st))
		pfail("fstat");
	if (st.st_size != size)
		fail("%s: st_size %ld, expected %ld", what, (long)st.st_size, (long)size);
	if ((st.st_mode & 07777) != mode)
		fail("%s: mode %o, expected %o", what, st.st_mode & 07777, mode);
	int got = fcntl(fd, F_GET_SEALS);
	if (got != seals)
		fail("%s: seals %#x, expected %#x", what, got, seals);
	close(fd);
	*ino = st.st_ino;
	if (maps_lines((unsigned long)addr, (unsigned long)addr + 1, lines, sizeof(lines)) != 1)
		fail("%s: no single maps line at %p", what, addr);
	snprintf(want, sizeof(want), " /memfd:%s (deleted)\n", name);
	if (!strstr(lines, want))
		fail("%s: maps says \"%s\", expected a name ending \"%s\"", what, lines, want);
}

int main(int argc, char **argv)
{
	int go[2], back[2], st;
	uint8_t *a1, *a2;
	ino_t i1, i2;

	test_init(argc, argv);
	int fd = memfd_create("cairn-mm-a", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		pfail("memfd_create");
	if (ftruncate(fd, A_SIZE) || fchmod(fd, 0640))
		pfail("size A");
	a1 = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	a2 = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, PG);
	if (a1 == MAP_FAILED || a2 == MAP_FAILED)
		pfail("mmap A");
	if (fcntl(fd, F_ADD_SEALS, A_SEALS))
		pfail("F_ADD_SEALS");
	close(fd);
	fill_pattern(a1, A_SIZE, 51, 0);

	if (pipe(go) || pipe(back))
		pfail("pipe");
	pid_t child = fork();
	if (child < 0)
		pfail("fork");
	if (child == 0) {
		char x;
		int b = memfd_create("cairn-mm-b", MFD_CLOEXEC);
		if (b < 0 || ftruncate(b, PG))
			_exit(20);
		uint8_t *pb = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, b, 0);
		if (pb == MAP_FAILED)
			_exit(21);
		fill_pattern(pb, PG, 52, 0);
		struct stat sb;
		int bseals = fcntl(b, F_GET_SEALS);
		if (fstat(b, &sb) || bseals < 0)
			_exit(23);
		close(b);
		if (write(back[1], "r", 1) != 1)
			_exit(22);
		if (read(go[0], &x, 1) != 1)
			_exit(10);
		if (a1[10] != 0x77)
			_exit(11);
		if (check_pattern(pb, PG, 52, 0) >= 0)
			_exit(12);
		ino_t ib;
		check_memfd("B", pb, PG, "cairn-mm-b", PG, bseals, sb.st_mode & 07777, &ib);
		a2[5] = 0x88;
		_exit(0);
	}
	{
		char x;
		if (read(back[0], &x, 1) != 1)
			fail("the child did not get ready");
	}

	test_daemon();
	test_waitsig();

	long bad;
	if ((bad = check_pattern(a1, A_SIZE, 51, 0)) >= 0)
		fail("A differs at offset %ld", bad);
	for (size_t i = A_SIZE; i < 3 * PG; i++)
		if (a1[i])
			fail("A: byte %zu past its size is %u", i, a1[i]);
	check_memfd("A", a1, 3 * PG, "cairn-mm-a", A_SIZE, A_SEALS, 0640, &i1);
	check_memfd("A (second mapping)", a2, PG, "cairn-mm-a", A_SIZE, A_SEALS, 0640, &i2);
	if (i1 != i2)
		fail("A's two mappings are two memfds");
	a1[PG + 9] ^= 0xff;
	if (a2[9] != a1[PG + 9])
		fail("A: a write through one mapping is not seen through the other");
	a1[PG + 9] ^= 0xff;

	a1[10] = 0x77;
	if (write(go[1], "g", 1) != 1)
		pfail("write go");
	if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st))
		fail("child failed: status %#x", st);
	if (a1[PG + 5] != 0x88)
		fail("the child's write is not seen by the parent: not one memfd");
	pass();
}
