/*
 * lazy_contents: file contents that travel in pages.img next to memory
 * that a lazy (post-copy) restore fetches on fault.
 *   G  lazy_contents.ghost-PID in the cwd: GHOST_SIZE pattern bytes (more
 *      than one 16 MiB contents chunk), opened O_RDWR at offset 4321,
 *      unlinked (deleted, held open).
 *   F  a memfd "lazy-contents" (tmpfs) of MEMFD_SIZE pattern bytes, its fd
 *      kept open at offset 999 (not mapped: a memfd both mapped and open
 *      is refused at dump).
 *   S  /dev/shm/cairn-lazy-contents-PID, SHM_SIZE pattern bytes, mapped
 *      MAP_SHARED, fd closed, unlinked (a deleted tmpfs file known only
 *      by its mapping).
 *   M  --mib N (default 16) of private anonymous memory, a pattern in
 *      every page: the pages a lazy restore leaves to its pager.
 *   A  a line in the log before the checkpoint: the log file's contents
 *      are saved too.
 * No child: the process is a leaf, so M is restored lazily.
 * After restore: G is still deleted (nlink 0), holds its bytes, size and
 * offset; F holds its bytes and offset; S's mapping holds its bytes; every
 * page of M holds its pattern.
 */
#include "zdtm.h"
#include <sys/mman.h>

#define PG 4096ul
#define GHOST_SIZE ((17ul << 20) + 777)
#define MEMFD_SIZE (5 * PG + 123)
#define SHM_SIZE (3 * PG)

static void check_bytes(const char *what, const uint8_t *p, size_t len, uint32_t seed)
{
	long bad = check_pattern(p, len, seed, 0);
	if (bad >= 0)
		fail("%s: byte %ld of %zu differs", what, bad, len);
}

static uint8_t *read_all(const char *what, int fd, size_t len)
{
	uint8_t *buf = malloc(len + 16);
	size_t got = 0;

	if (!buf)
		fail("malloc %zu", len);
	while (got < len + 16) {
		ssize_t n = pread(fd, buf + got, len + 16 - got, (off_t)got);
		if (n < 0)
			pfail("%s: pread", what);
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (got != len)
		fail("%s: %zu bytes, expected %zu", what, got, len);
	return buf;
}

int main(int argc, char **argv)
{
	char ghost[256], shm[256], link[512], p[64];
	const char *mib_arg;
	size_t mlen;
	struct stat st;

	test_init(argc, argv);
	mib_arg = test_arg("--mib");
	mlen = (size_t)(mib_arg ? atol(mib_arg) : 16) << 20;
	if (mlen == 0)
		fail("--mib must be at least 1");

	/* G */
	snprintf(ghost, sizeof(ghost), "lazy_contents.ghost-%d", getpid());
	int g = open(ghost, O_RDWR | O_CREAT | O_EXCL, 0640);
	if (g < 0)
		pfail("create %s", ghost);
	{
		uint8_t *buf = malloc(GHOST_SIZE);
		if (!buf)
			fail("malloc");
		fill_pattern(buf, GHOST_SIZE, 71, 0);
		size_t off = 0;
		while (off < GHOST_SIZE) {
			ssize_t n = write(g, buf + off, GHOST_SIZE - off);
			if (n <= 0)
				pfail("write %s", ghost);
			off += (size_t)n;
		}
		free(buf);
	}
	if (lseek(g, 4321, SEEK_SET) != 4321)
		pfail("lseek");
	if (unlink(ghost))
		pfail("unlink %s", ghost);

	/* F */
	int f = memfd_create("lazy-contents", 0);
	if (f < 0)
		pfail("memfd_create");
	{
		static uint8_t buf[MEMFD_SIZE];
		fill_pattern(buf, MEMFD_SIZE, 72, 0);
		if (write(f, buf, MEMFD_SIZE) != (ssize_t)MEMFD_SIZE)
			pfail("write memfd");
	}
	if (lseek(f, 999, SEEK_SET) != 999)
		pfail("lseek memfd");

	/* S */
	snprintf(shm, sizeof(shm), "/dev/shm/cairn-lazy-contents-%d", getpid());
	int s = open(shm, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (s < 0)
		pfail("create %s", shm);
	if (ftruncate(s, SHM_SIZE))
		pfail("ftruncate %s", shm);
	uint8_t *sm = mmap(NULL, SHM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, s, 0);
	if (sm == MAP_FAILED)
		pfail("mmap %s", shm);
	fill_pattern(sm, SHM_SIZE, 73, 0);
	close(s);
	if (unlink(shm))
		pfail("unlink %s", shm);

	/* M */
	uint8_t *m = mmap(NULL, mlen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		pfail("mmap %zu bytes", mlen);
	fill_pattern(m, mlen, 74, 0);

	/* A */
	test_msg("lazy_contents: %zu MiB of memory, a %lu-byte deleted file, a memfd and a "
		 "deleted /dev/shm mapping",
		 mlen >> 20, GHOST_SIZE);

	test_daemon();
	test_waitsig();

	check_bytes("private memory", m, mlen, 74);
	check_bytes("deleted /dev/shm mapping", sm, SHM_SIZE, 73);

	if (fstat(g, &st))
		pfail("fstat ghost");
	if (st.st_nlink != 0)
		fail("ghost: nlink %lu, expected 0", (unsigned long)st.st_nlink);
	if ((st.st_mode & 07777) != 0640)
		fail("ghost: mode %o", st.st_mode & 07777);
	if (lseek(g, 0, SEEK_CUR) != 4321)
		fail("ghost: offset %ld, expected 4321", (long)lseek(g, 0, SEEK_CUR));
	snprintf(p, sizeof(p), "/proc/self/fd/%d", g);
	ssize_t l = readlink(p, link, sizeof(link) - 1);
	link[l > 0 ? l : 0] = 0;
	if (!strstr(link, ghost) || !strstr(link, " (deleted)"))
		fail("ghost fd links to %s", link);
	uint8_t *gb = read_all("ghost", g, GHOST_SIZE);
	check_bytes("ghost contents", gb, GHOST_SIZE, 71);
	free(gb);

	uint8_t *fb = read_all("memfd", f, MEMFD_SIZE);
	check_bytes("memfd contents", fb, MEMFD_SIZE, 72);
	free(fb);
	if (lseek(f, 0, SEEK_CUR) != 999)
		fail("memfd: offset %ld, expected 999", (long)lseek(f, 0, SEEK_CUR));

	pass();
}
