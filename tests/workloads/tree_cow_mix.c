/*
 * tree_cow_mix: copy-on-write sharing between a parent and its children,
 * with the ways a child's memory comes to differ from its parent's.
 *
 * The root fills, at fixed addresses (tests/restore_cow.rs reads their
 * page frames from outside):
 *   BUF   64 MiB private anonymous memory, a pattern;
 *   ZBUF   2 MiB written with zeros (real pages, not the zero page);
 *   LBUF 256 KiB, a pattern, mlock()ed;
 *   DFBUF  1 MiB, a pattern, MADV_DONTFORK (children do not get it);
 *   WFBUF  1 MiB, a pattern, MADV_WIPEONFORK (children see zeros);
 *   dpage  32 KiB of initialised data (a private file mapping), a pattern.
 * Then it forks (each child names itself with PR_SET_NAME):
 *   cow-A  touches nothing, and forks cow-G, which touches nothing;
 *   cow-B  writes another pattern over the first 8 MiB of BUF and the
 *          first half of dpage;
 *   cow-C  drops 4 MiB of BUF at 16 MiB with MADV_DONTNEED (reads zero);
 *   cow-D  maps its own 1 MiB at DFBUF (another pattern) and writes the
 *          first 256 KiB of WFBUF.
 * After the go every process checks every region (contents, and whether
 * it is mapped at all), the parents collect their children's verdicts.
 */
#include "tree.h"

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>

#define MIB (1ul << 20)
#define BUF ((uint64_t *)0x300000000000ul)
#define BUF_LEN (64 * MIB)
#define ZBUF ((uint64_t *)0x300100000000ul)
#define ZBUF_LEN (2 * MIB)
#define LBUF ((uint64_t *)0x300200000000ul)
#define LBUF_LEN (256ul << 10)
#define DFBUF ((uint64_t *)0x300300000000ul)
#define DFBUF_LEN MIB
#define WFBUF ((uint64_t *)0x300400000000ul)
#define WFBUF_LEN MIB
#define B_LEN (8 * MIB)
#define C_OFF (16 * MIB)
#define C_LEN (4 * MIB)
#define D_WF_LEN (256ul << 10)

static uint64_t dpage[4096] = { 1 };
static uint32_t seed;

static uint64_t wpat(uint32_t s, uint64_t i)
{
	uint64_t x = ((uint64_t)s << 40) ^ (i + 1) * 0x9E3779B97F4A7C15ull;

	x ^= x >> 30;
	x *= 0xBF58476D1CE4E5B9ull;
	x ^= x >> 27;
	x *= 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

static void fill(uint64_t *p, size_t len, uint32_t s)
{
	for (size_t i = 0; i < len / 8; i++)
		p[i] = wpat(s, i);
}

/* p[i] must be word base + i of pattern s (zero for s == 0). */
static void expect_at(const char *who, const char *what, const uint64_t *p, size_t len,
		      uint32_t s, size_t base)
{
	for (size_t i = 0; i < len / 8; i++) {
		uint64_t want = s ? wpat(s, base + i) : 0;

		if (p[i] != want)
			fail("%s: %s: word %zu at %p is %#llx, expected %#llx", who, what, i,
			     (void *)&p[i], (unsigned long long)p[i], (unsigned long long)want);
	}
}

static void expect(const char *who, const char *what, const uint64_t *p, size_t len, uint32_t s)
{
	expect_at(who, what, p, len, s, 0);
}

static void map_fixed(uint64_t *at, size_t len, const char *what)
{
	void *p = mmap(at, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

	if (p != at)
		pfail("mmap %s at %p", what, (void *)at);
}

/* Whether [p, p + len) is mapped (mincore fails with ENOMEM where not). */
static int mapped(void *p, size_t len)
{
	unsigned char vec[256];

	if (mincore(p, len < 256 * 4096 ? len : 256 * 4096, vec) == 0)
		return 1;
	if (errno != ENOMEM)
		pfail("mincore %p", p);
	return 0;
}

/* Checks of a child's memory after the go. */
static void check_child(const char *who)
{
	/* BUF: B rewrote its start, C dropped a part, the rest is the root's. */
	if (!strcmp(who, "cow-B")) {
		expect(who, "BUF (written by B)", BUF, B_LEN, seed + 1);
		expect_at(who, "BUF", BUF + B_LEN / 8, BUF_LEN - B_LEN, seed, B_LEN / 8);
	} else if (!strcmp(who, "cow-C")) {
		expect(who, "BUF", BUF, C_OFF, seed);
		expect(who, "BUF (dropped by C)", BUF + C_OFF / 8, C_LEN, 0);
		expect_at(who, "BUF", BUF + (C_OFF + C_LEN) / 8, BUF_LEN - C_OFF - C_LEN, seed,
			  (C_OFF + C_LEN) / 8);
	} else {
		expect(who, "BUF", BUF, BUF_LEN, seed);
	}
	expect(who, "ZBUF", ZBUF, ZBUF_LEN, 0);
	expect(who, "LBUF", LBUF, LBUF_LEN, seed + 5);
	if (!strcmp(who, "cow-D")) {
		expect(who, "D's own map at DFBUF", DFBUF, DFBUF_LEN, seed + 3);
		expect(who, "WFBUF (written by D)", WFBUF, D_WF_LEN, seed + 4);
		expect(who, "WFBUF (wiped on fork)", WFBUF + D_WF_LEN / 8, WFBUF_LEN - D_WF_LEN, 0);
	} else {
		if (mapped(DFBUF, DFBUF_LEN))
			fail("%s: the parent's MADV_DONTFORK region %p is mapped", who,
			     (void *)DFBUF);
		expect(who, "WFBUF (wiped on fork)", WFBUF, WFBUF_LEN, 0);
	}
	if (!strcmp(who, "cow-B")) {
		expect(who, "dpage (written by B)", dpage, sizeof(dpage) / 2, seed + 2);
		expect_at(who, "dpage", dpage + 2048, sizeof(dpage) / 2, seed + 6, 2048);
	} else {
		expect(who, "dpage", dpage, sizeof(dpage), seed + 6);
	}
}

static void __attribute__((noreturn)) run_child(const char *who, int rfd, int wfd)
{
	pid_t g = 0;

	if (prctl(PR_SET_NAME, who))
		pfail("%s: PR_SET_NAME", who);
	if (!strcmp(who, "cow-A")) {
		g = xfork();
		if (g == 0)
			run_child("cow-G", rfd, wfd);
	} else if (!strcmp(who, "cow-B")) {
		fill(BUF, B_LEN, seed + 1);
		fill(dpage, sizeof(dpage) / 2, seed + 2);
	} else if (!strcmp(who, "cow-C")) {
		if (madvise((char *)BUF + C_OFF, C_LEN, MADV_DONTNEED))
			pfail("%s: MADV_DONTNEED", who);
	} else if (!strcmp(who, "cow-D")) {
		if (mapped(DFBUF, DFBUF_LEN))
			fail("%s: the MADV_DONTFORK region came along", who);
		map_fixed(DFBUF, DFBUF_LEN, "D's own DFBUF");
		fill(DFBUF, DFBUF_LEN, seed + 3);
		fill(WFBUF, D_WF_LEN, seed + 4);
	}
	close(rfd);
	ready_send(wfd, who);
	close(wfd);
	test_waitsig();
	check_child(who);
	if (g) {
		if (kill(g, SIGTERM))
			pfail("%s: kill(G %d, SIGTERM)", who, g);
		expect_exit(g, "cow-G", 0);
	}
	expect_no_children();
	exit(0);
}

int main(int argc, char **argv)
{
	static const char *const kids[] = { "cow-A", "cow-B", "cow-C", "cow-D" };
	pid_t pid[4];
	int rp[2];

	test_init(argc, argv);
	if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
		pfail("getrandom");
	seed = (seed & 0xffff) + 1;
	map_fixed(BUF, BUF_LEN, "BUF");
	fill(BUF, BUF_LEN, seed);
	map_fixed(ZBUF, ZBUF_LEN, "ZBUF");
	memset(ZBUF, 0, ZBUF_LEN);
	map_fixed(LBUF, LBUF_LEN, "LBUF");
	fill(LBUF, LBUF_LEN, seed + 5);
	if (mlock(LBUF, LBUF_LEN))
		pfail("mlock LBUF");
	map_fixed(DFBUF, DFBUF_LEN, "DFBUF");
	fill(DFBUF, DFBUF_LEN, seed + 7);
	if (madvise(DFBUF, DFBUF_LEN, MADV_DONTFORK))
		pfail("MADV_DONTFORK");
	map_fixed(WFBUF, WFBUF_LEN, "WFBUF");
	fill(WFBUF, WFBUF_LEN, seed + 8);
	if (madvise(WFBUF, WFBUF_LEN, MADV_WIPEONFORK))
		pfail("MADV_WIPEONFORK");
	fill(dpage, sizeof(dpage), seed + 6);
	if (pipe(rp))
		pfail("pipe");
	for (int k = 0; k < 4; k++) {
		pid[k] = xfork();
		if (pid[k] == 0)
			run_child(kids[k], rp[0], rp[1]);
	}
	close(rp[1]);
	ready_collect(rp[0], 5);
	close(rp[0]);

	test_daemon();
	test_waitsig();

	expect("root", "BUF", BUF, BUF_LEN, seed);
	expect("root", "ZBUF", ZBUF, ZBUF_LEN, 0);
	expect("root", "LBUF", LBUF, LBUF_LEN, seed + 5);
	expect("root", "DFBUF", DFBUF, DFBUF_LEN, seed + 7);
	expect("root", "WFBUF", WFBUF, WFBUF_LEN, seed + 8);
	expect("root", "dpage", dpage, sizeof(dpage), seed + 6);
	for (int k = 0; k < 4; k++)
		if (kill(pid[k], SIGTERM))
			pfail("kill(%s %d, SIGTERM)", kids[k], pid[k]);
	for (int k = 0; k < 4; k++)
		expect_exit(pid[k], kids[k], 0);
	expect_no_children();
	pass();
}
