/*
 * mem_fast: the restore paths of the page pipeline (issue 15, tests/
 * restore_fast.rs). One process with MIB MiB (default 128, at least 16)
 * of private anonymous memory in five regions, and a child forked after
 * the fill that rewrites part of it:
 *   A  3/8: xorshift output (raw chunks, read in place by the process);
 *   B  2/8: the same, every 5th page zero (raw chunks whose pages go to
 *           many separate places: one preadv of many iovecs);
 *   C  2/8: 2:1 data, 4 random bytes and 4 zero bytes per word (zstd
 *           chunks, written through cairn);
 *   D  1/8: pages written and then zeroed (zero runs, left untouched);
 *   E  a separate 2 MiB mapping of random data, read-only after the fill.
 * The child rewrites every 3rd page of A with other data after the fork;
 * the pages it keeps are shared copy-on-write with the parent, so its own
 * chunks and the parent's are used only in part.
 * After restore each process regenerates every byte and compares, and
 * checks that no fd of it is pages.img (the in-place reads' fd is closed
 * before the process runs). The parent stops the child with SIGTERM and
 * requires its exit status 0.
 *
 *   mem_fast --pidfile PATH [--mib N]
 */
#include "zdtm.h"

#include <dirent.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define PG 4096ul
#define MB (1ul << 20)
#define E_SIZE (2 * MB)

static size_t size, a_end, b_end, c_end;

static uint64_t mix(uint64_t w, uint64_t seed)
{
	uint64_t x = (0x9e3779b97f4a7c15ull + seed) ^ (w * 0xff51afd7ed558ccdull);

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return x | 1; /* never a zero word: zero pages are only where meant */
}

/* Word w of the main mapping; `child` for the child's rewritten pages. */
static uint64_t expect_word(size_t w, int child)
{
	size_t off = w * 8, page = off / PG;

	if (off < a_end)
		return child && page % 3 == 1 ? mix(w, 77) : mix(w, 1);
	if (off < b_end)
		return page % 5 == 3 ? 0 : mix(w, 2);
	if (off < c_end)
		return mix(w, 3) & 0xffffffffull;
	return 0;
}

static void check_fds(const char *who)
{
	char path[300], target[4096];
	struct dirent *d;
	DIR *dir = opendir("/proc/self/fd");

	if (!dir)
		pfail("%s: opendir /proc/self/fd", who);
	while ((d = readdir(dir))) {
		ssize_t n;

		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%s", d->d_name);
		n = readlink(path, target, sizeof(target) - 1);
		if (n < 0)
			continue;
		target[n] = 0;
		if (strstr(target, "pages.img"))
			fail("%s: fd %s is %s after restore", who, d->d_name, target);
	}
	closedir(dir);
}

static void check(const uint64_t *m, const uint64_t *e, int child)
{
	const char *who = child ? "child" : "parent";

	for (size_t w = 0; w < size / 8; w++)
		if (m[w] != expect_word(w, child))
			fail("%s: word at offset %#zx is %#llx, expected %#llx", who, w * 8,
			     (unsigned long long)m[w], (unsigned long long)expect_word(w, child));
	for (size_t w = 0; w < E_SIZE / 8; w++)
		if (e[w] != mix(w, 5))
			fail("%s: word %zu of the read-only mapping is %#llx", who, w,
			     (unsigned long long)e[w]);
	check_fds(who);
}

int main(int argc, char **argv)
{
	const char *mib;
	uint64_t *m, *e;
	pid_t child;
	int status, ready[2];
	char c;

	test_init(argc, argv);
	mib = test_arg("--mib");
	size = (mib ? strtoul(mib, NULL, 10) : 128) * MB;
	if (size < 16 * MB)
		fail("--mib must be at least 16");
	a_end = size / 8 * 3;
	b_end = a_end + size / 8 * 2;
	c_end = b_end + size / 8 * 2;

	m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	e = mmap(NULL, E_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED || e == MAP_FAILED)
		pfail("mmap");
	for (size_t w = 0; w < size / 8; w++)
		m[w] = w * 8 < c_end ? expect_word(w, 0) : 0x5a5a5a5a5a5a5a5aull;
	/* D: written, then zero again. */
	memset((char *)m + c_end, 0, size - c_end);
	for (size_t w = 0; w < E_SIZE / 8; w++)
		e[w] = mix(w, 5);
	if (mprotect(e, E_SIZE, PROT_READ))
		pfail("mprotect");

	if (pipe(ready))
		pfail("pipe");
	child = fork();
	if (child < 0)
		pfail("fork");
	if (child == 0) {
		close(ready[0]);
		for (size_t w = 0; w < a_end / 8; w++)
			if ((w * 8 / PG) % 3 == 1)
				m[w] = expect_word(w, 1);
		if (write(ready[1], "r", 1) != 1)
			pfail("write to the parent");
		close(ready[1]);
		test_waitsig();
		check(m, e, 1);
		exit(0);
	}
	/* The child has rewritten its pages before the parent is ready. */
	close(ready[1]);
	if (read(ready[0], &c, 1) != 1)
		pfail("read from the child");
	close(ready[0]);

	test_daemon();
	test_waitsig();

	if (kill(child, SIGTERM))
		pfail("kill child");
	if (waitpid(child, &status, 0) != child)
		pfail("waitpid");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail("child ended with status %#x", status);
	check(m, e, 0);
	pass();
}
