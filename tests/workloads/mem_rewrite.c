/*
 * mem_rewrite: rewrites its memory all the time, for the background
 * snapshot (a --leave-running dump that copies memory while the tree runs).
 *
 * --mib N (default 256) of private anonymous memory is cut into --threads T
 * (default 1) slices, one writer thread each. Every page holds a generation
 * g and its index i in every one of its 512 words (word w = f(g, i, w)).
 * A writer rewrites its slice page after page, generation after
 * generation; BEFORE it rewrites a page it checks that the page holds
 * exactly the previous generation. So the memory is always one state of
 * the writers' order: in each slice, pages [0, k) of generation g and
 * [k, n) of g - 1, page k possibly half written (it is being written).
 * After a restore the writers go on from where they were frozen: a page the
 * images took from after the freeze (a later generation), or lost (zero),
 * or torn, is found when the writer reaches it, or at SIGTERM, when every
 * writer stops at a page boundary and the main thread checks every page
 * against the writers' positions. Any difference: FAIL.
 *
 * --passes-file PATH: after each completed pass of writer 0, its count is
 * written there (so a test can see the writers make progress).
 * --idle: the memory is filled once and no writer runs (for benchmarks).
 * The writers block SIGTERM: only the main thread takes it.
 * --dontneed N: every Nth page is dropped with madvise(MADV_DONTNEED)
 * after its check and before its rewrite (it is zero in between: also a
 * state of the order, as the page being written).
 * --race-file PATH: a racer thread waits until PATH exists, then changes
 * the memory map (a test makes it do so between the background snapshot's
 * arming and the freeze, `CAIRN_PAUSE_AT=bg-armed`): unmaps region A
 * (filled at the start), makes the upper half of region M read-only (its
 * VMA splits), writes page 5 of region T (mapped, never touched), maps and
 * fills a new region N, and forks a child that keeps its copy of N and
 * waits for SIGTERM; then it writes PATH.done. At SIGTERM the main thread
 * checks each region as the race left it (or as at the start, if the race
 * never ran), and that the child still exists and found its copy of N
 * intact (its exit status).
 */
#include "zdtm.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define PG 4096ul
#define WORDS (PG / 8)

struct writer {
	pthread_t th;
	uint64_t *base;  /* first page of the slice */
	uint64_t first;  /* index of its first page in the region */
	uint64_t n;      /* pages */
	uint64_t g;      /* generation being written */
	uint64_t k;      /* next page to write */
	uint64_t passes; /* passes completed since the start */
};

static struct writer *ws;
static int nthreads = 1;
static atomic_int stop;
static const char *passes_file;
static uint64_t dontneed;

static inline uint64_t word(uint64_t g, uint64_t i, uint64_t w)
{
	if (w == 0)
		return g;
	if (w == 1)
		return i;
	uint64_t x = (g * 0x9E3779B97F4A7C15ull) ^ (i << 20) ^ (w * 0xBF58476D1CE4E5B9ull);
	return x ^ (x >> 29);
}

static void fill(uint64_t *p, uint64_t g, uint64_t i)
{
	for (uint64_t w = 0; w < WORDS; w++)
		((volatile uint64_t *)p)[w] = word(g, i, w);
}

/* 0 if page i holds generation g, else fails with what it holds. */
static void expect(uint64_t *p, uint64_t g, uint64_t i, const char *when)
{
	for (uint64_t w = 0; w < WORDS; w++) {
		uint64_t v = ((volatile uint64_t *)p)[w];
		if (v != word(g, i, w))
			fail("%s: page %lu word %lu is %#lx, want %#lx (generation %lu; the "
			     "page holds generation %lu, index %lu)",
			     when, (unsigned long)i, (unsigned long)w, (unsigned long)v,
			     (unsigned long)word(g, i, w), (unsigned long)g,
			     (unsigned long)p[0], (unsigned long)p[1]);
	}
}

static void note_passes(uint64_t n)
{
	char tmp[4096], buf[32];
	int len = snprintf(buf, sizeof(buf), "%lu\n", (unsigned long)n);
	snprintf(tmp, sizeof(tmp), "%s.tmp", passes_file);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	if (write(fd, buf, len) == len)
		rename(tmp, passes_file);
	close(fd);
}

static void *writer_main(void *arg)
{
	struct writer *me = arg;
	while (!atomic_load(&stop)) {
		uint64_t *p = me->base + me->k * WORDS;
		uint64_t i = me->first + me->k;
		expect(p, me->g - 1, i, "before a rewrite");
		if (dontneed && i % dontneed == 0 && madvise(p, PG, MADV_DONTNEED))
			pfail("madvise(DONTNEED) page %lu", (unsigned long)i);
		fill(p, me->g, i);
		if (++me->k == me->n) {
			me->k = 0;
			me->g++;
			me->passes++;
			if (me == &ws[0] && passes_file)
				note_passes(me->passes);
		}
	}
	return NULL;
}

#define RPAGES 64ul
static const char *race_file;
static uint64_t *ra, *rm, *rt, *rn;
static pid_t rchild;
static atomic_int raced;
static pthread_t racer;

static void check_region(uint64_t *p, uint64_t g, uint64_t first, uint64_t n, const char *what)
{
	for (uint64_t k = 0; k < n; k++)
		expect(p + k * WORDS, g, first + k, what);
}

static void *racer_main(void *arg)
{
	char done[4096];
	(void)arg;
	while (access(race_file, F_OK) && !atomic_load(&stop))
		usleep(2000);
	if (atomic_load(&stop))
		return NULL;
	/* N first: it cannot take A's place. */
	rn = mmap(NULL, RPAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (rn == MAP_FAILED)
		pfail("mmap region N");
	for (uint64_t k = 0; k < RPAGES; k++)
		fill(rn + k * WORDS, 12, k);
	if (munmap(ra, RPAGES * PG))
		pfail("munmap region A");
	if (mprotect(rm + RPAGES / 2 * WORDS, RPAGES / 2 * PG, PROT_READ))
		pfail("mprotect region M");
	fill(rt + 5 * WORDS, 11, 5);
	rchild = fork();
	if (rchild < 0)
		pfail("fork");
	if (rchild == 0) {
		/* SIGTERM is blocked in this thread, so in the child too. */
		sigset_t term;
		int sig;
		sigemptyset(&term);
		sigaddset(&term, SIGTERM);
		while (sigwait(&term, &sig))
			;
		for (uint64_t k = 0; k < RPAGES; k++)
			for (uint64_t w = 0; w < WORDS; w++)
				if (rn[k * WORDS + w] != word(12, k, w))
					_exit(3);
		_exit(0);
	}
	atomic_store(&raced, 1);
	snprintf(done, sizeof(done), "%s.done", race_file);
	int fd = open(done, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		pfail("create %s", done);
	close(fd);
	return NULL;
}

static void race_setup(void)
{
	uint64_t **r[] = {&ra, &rm, &rt};
	for (int i = 0; i < 3; i++) {
		*r[i] = mmap(NULL, RPAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			     -1, 0);
		if (*r[i] == MAP_FAILED)
			pfail("mmap a race region");
	}
	for (uint64_t k = 0; k < RPAGES; k++) {
		fill(ra + k * WORDS, 7, k);
		fill(rm + k * WORDS, 8, k);
	}
}

static void race_check(void)
{
	unsigned char v;
	char maps[4096];
	int ran = atomic_load(&raced);
	pthread_join(racer, NULL);
	if (!ran) {
		check_region(ra, 7, 0, RPAGES, "region A (no race)");
		check_region(rm, 8, 0, RPAGES, "region M (no race)");
		for (uint64_t k = 0; k < RPAGES; k++)
			for (uint64_t w = 0; w < WORDS; w++)
				if (rt[k * WORDS + w])
					fail("region T page %lu touched without a race", (unsigned long)k);
		test_msg("the race never ran");
		return;
	}
	if (mincore(ra, PG, &v) == 0 || errno != ENOMEM)
		fail("region A is mapped again after its munmap");
	check_region(rm, 8, 0, RPAGES, "region M");
	unsigned long hi = (unsigned long)(rm + RPAGES * WORDS);
	unsigned long mid = (unsigned long)(rm + RPAGES / 2 * WORDS);
	if (maps_lines(mid, hi, maps, sizeof(maps)) != 1 || !strstr(maps, " r--p "))
		fail("upper half of region M is not one read-only VMA: %s", maps);
	for (uint64_t k = 0; k < RPAGES; k++) {
		if (k == 5) {
			expect(rt + k * WORDS, 11, 5, "region T page 5");
			continue;
		}
		for (uint64_t w = 0; w < WORDS; w++)
			if (rt[k * WORDS + w])
				fail("region T page %lu (never written) has word %lu = %#lx",
				     (unsigned long)k, (unsigned long)w, (unsigned long)rt[k * WORDS + w]);
	}
	check_region(rn, 12, 0, RPAGES, "region N");
	int st;
	if (kill(rchild, SIGTERM))
		pfail("the forked child %d is gone", rchild);
	if (waitpid(rchild, &st, 0) != rchild)
		pfail("waitpid %d", rchild);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		fail("the forked child found its memory changed (status %#x)", st);
	test_msg("race: A unmapped, M split read-only, T page 5, N and the child as at the freeze");
}

int main(int argc, char **argv)
{
	test_init(argc, argv);
	const char *s = test_arg("--mib");
	uint64_t mib = s ? strtoull(s, NULL, 10) : 256;
	s = test_arg("--threads");
	if (s)
		nthreads = atoi(s);
	passes_file = test_arg("--passes-file");
	s = test_arg("--dontneed");
	if (s)
		dontneed = strtoull(s, NULL, 10);
	if (nthreads < 1 || nthreads > 64 || mib < 1)
		fail("bad --mib/--threads");
	uint64_t pages = mib << 8;
	uint64_t *mem = mmap(NULL, pages * PG, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		pfail("mmap %lu MiB", (unsigned long)mib);
	ws = calloc(nthreads, sizeof(*ws));
	if (!ws)
		pfail("calloc");
	uint64_t per = pages / nthreads;
	for (int t = 0; t < nthreads; t++) {
		struct writer *w = &ws[t];
		w->first = t * per;
		w->n = t == nthreads - 1 ? pages - w->first : per;
		w->base = mem + w->first * WORDS;
		w->g = 2;
		for (uint64_t k = 0; k < w->n; k++)
			fill(w->base + k * WORDS, 1, w->first + k);
	}
	race_file = test_arg("--race-file");
	if (race_file)
		race_setup();
	int idle = test_flag("--idle");
	/*
	 * The writers block SIGTERM, so only the main thread takes it. Were it
	 * unblocked there, the kernel could hand the process's SIGTERM to a
	 * writer, which would set the flag while the main thread sleeps on in
	 * sigsuspend: the main thread is preferred only while it "wants" the
	 * signal, and just after a restore lets it go (PTRACE_DETACH wakes it
	 * with TIF_SIGPENDING set) it does not until it has run again.
	 */
	sigset_t term, old;
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	if ((errno = pthread_sigmask(SIG_BLOCK, &term, &old)))
		pfail("pthread_sigmask");
	for (int t = 0; t < nthreads && !idle; t++)
		if ((errno = pthread_create(&ws[t].th, NULL, writer_main, &ws[t])))
			pfail("pthread_create");
	if (race_file && (errno = pthread_create(&racer, NULL, racer_main, NULL)))
		pfail("pthread_create");
	if ((errno = pthread_sigmask(SIG_SETMASK, &old, NULL)))
		pfail("pthread_sigmask");
	test_daemon();
	test_waitsig();
	atomic_store(&stop, 1);
	for (int t = 0; t < nthreads && !idle; t++)
		pthread_join(ws[t].th, NULL);
	if (race_file)
		race_check();
	uint64_t passes = 0;
	for (int t = 0; t < nthreads; t++) {
		struct writer *w = &ws[t];
		for (uint64_t k = 0; k < w->n; k++)
			expect(w->base + k * WORDS, k < w->k ? w->g : w->g - 1, w->first + k,
			       "at the end");
		passes += w->passes;
	}
	test_msg("%d writers, %lu passes over %lu MiB, all consistent", nthreads,
		 (unsigned long)passes, (unsigned long)mib);
	pass();
}
