/*
 * migrate_mix: a tree that keeps changing while it is migrated, and checks
 * itself after arriving.
 *
 *   migrate_mix --pidfile P [--mem MIB] [--rate PAGES_PER_SEC] [--init-only]
 *
 * The parent maps MIB MiB (default 32) of private anonymous memory and
 * fills every page with a pattern derived from (page index, generation),
 * generation in the page's first words. Two writer threads then rewrite
 * pages continuously (together about RATE pages per second, default 4000;
 * 0: none), each a whole page with its next generation. A third thread
 * plays ping-pong with the child: a counter goes down a pipe, the child
 * sends it back through a unix socketpair, and each answer must be the
 * counter sent. The child has memory of its own, written once.
 *
 * With --init-only nothing is rewritten after the start (0%/s).
 *
 * On SIGTERM: the threads stop, every page must hold a whole pattern of
 * some generation (no torn or lost page), the pid must be the one it
 * had, one more ping-pong round must work, and the child, told through
 * the pipe, checks its memory and pid and exits 0; then PASS.
 */
#include "zdtm.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

#define PG 4096ul
#define WORDS (PG / 8)
#define STOP_WORD 0xffffffffffffffffull

static unsigned long npages;
static uint64_t *mem;
static volatile int stop_threads;
static long rate = 4000;
static int to_child, from_child;
static volatile uint64_t pings;
static volatile const char *thread_fail;

static uint64_t word(uint64_t idx, uint64_t gen, uint64_t k)
{
	uint64_t x = (idx * 0x9e3779b97f4a7c15ull) ^ (gen * 0xbf58476d1ce4e5b9ull) ^ (k + 1);
	x ^= x >> 31;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 29);
}

static void fill(uint64_t *p, uint64_t idx, uint64_t gen)
{
	/* Header last written: a torn page shows as a mismatch. */
	for (uint64_t k = 2; k < WORDS; k++)
		p[k] = word(idx, gen, k);
	p[0] = idx;
	p[1] = gen;
}

static const char *check_page(const uint64_t *p, uint64_t idx)
{
	if (p[0] != idx)
		return "page index word";
	for (uint64_t k = 2; k < WORDS; k++)
		if (p[k] != word(idx, p[1], k))
			return "page pattern";
	return NULL;
}

static void sleep_ns(long ns)
{
	struct timespec ts = { ns / 1000000000l, ns % 1000000000l };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static void *writer(void *arg)
{
	unsigned long i = (unsigned long)arg * 7919;
	/* Each of the two writers does rate/2 pages per second, in
	 * batches of 1 ms. */
	long per_ms = rate / 2000;
	long gap_ns = per_ms ? 1000000l : (rate ? 2000000000l / rate : 0);

	if (per_ms == 0)
		per_ms = 1;
	while (!stop_threads) {
		for (long b = 0; b < per_ms && !stop_threads; b++) {
			uint64_t *p = mem + (i % npages) * WORDS;

			/* Only this thread writes pages of its parity. */
			fill(p, i % npages, p[1] + 1);
			i += 2;
		}
		sleep_ns(gap_ns);
	}
	return NULL;
}

static int ping(uint64_t v)
{
	uint64_t back;

	if (write(to_child, &v, 8) != 8)
		return -1;
	if (read(from_child, &back, 8) != 8)
		return -1;
	return back == v ? 0 : -2;
}

static void *pinger(void *arg)
{
	(void)arg;
	while (!stop_threads) {
		int r = ping(pings + 1);

		if (r) {
			thread_fail = r == -1 ? "ping-pong I/O" : "ping-pong answer";
			return NULL;
		}
		pings++;
		sleep_ns(1000000);
	}
	return NULL;
}

static int child_main(int in, int out, pid_t want_pid)
{
	unsigned long n = 256;
	uint64_t *own = mmap(NULL, n * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (own == MAP_FAILED)
		return 2;
	for (unsigned long i = 0; i < n; i++)
		fill(own + i * WORDS, i, 77);
	for (;;) {
		uint64_t v;
		ssize_t r = read(in, &v, 8);

		if (r != 8)
			return 3;
		if (v == STOP_WORD) {
			for (unsigned long i = 0; i < n; i++)
				if (check_page(own + i * WORDS, i) || own[i * WORDS + 1] != 77)
					return 4;
			return getpid() == want_pid ? 0 : 5;
		}
		if (write(out, &v, 8) != 8)
			return 6;
	}
}

int main(int argc, char **argv)
{
	unsigned long mib = 32;
	int init_only = 0;
	int p2c[2], sv[2];
	pthread_t th[3];
	pid_t me, child;
	int st;

	test_init(argc, argv);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--mem") && i + 1 < argc)
			mib = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--rate") && i + 1 < argc)
			rate = strtol(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--init-only"))
			init_only = 1;
	}
	npages = mib * 256;
	me = getpid();
	mem = mmap(NULL, npages * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		pfail("mmap %lu MiB", mib);
	for (unsigned long i = 0; i < npages; i++)
		fill(mem + i * WORDS, i, 1);
	if (pipe(p2c) || socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		pfail("pipe/socketpair");
	child = fork();
	if (child < 0)
		pfail("fork");
	if (child == 0) {
		close(p2c[1]);
		close(sv[0]);
		_exit(child_main(p2c[0], sv[1], getpid()));
	}
	close(p2c[0]);
	close(sv[1]);
	to_child = p2c[1];
	from_child = sv[0];
	if (init_only)
		rate = 0;
	sigset_t old;

	test_term_block(&old);
	for (long t = 0; t < 3; t++) {
		void *(*fn)(void *) = t < 2 ? writer : pinger;

		if (t < 2 && rate == 0)
			continue;
		if (pthread_create(&th[t], NULL, fn, (void *)t))
			fail("pthread_create");
	}
	test_term_unblock(&old);
	test_daemon();
	test_waitsig();

	stop_threads = 1;
	for (long t = 0; t < 3; t++) {
		if (t < 2 && rate == 0)
			continue;
		pthread_join(th[t], NULL);
	}
	if (thread_fail)
		fail("%s (after %llu pings)", (const char *)thread_fail, (unsigned long long)pings);
	if (getpid() != me)
		fail("pid %d, was %d", getpid(), me);
	uint64_t gens = 0;
	for (unsigned long i = 0; i < npages; i++) {
		const char *why = check_page(mem + i * WORDS, i);

		if (why)
			fail("page %lu: %s (generation %llu)", i, why,
			     (unsigned long long)mem[i * WORDS + 1]);
		gens += mem[i * WORDS + 1] - 1;
	}
	if (ping(pings + 1))
		fail("the last ping-pong round");
	uint64_t stop = STOP_WORD;
	if (write(to_child, &stop, 8) != 8)
		pfail("tell the child");
	if (waitpid(child, &st, 0) != child)
		pfail("waitpid %d", child);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail("the child %d ended with status %#x", child, st);
	test_msg("%llu pings, %llu page rewrites", (unsigned long long)pings,
		 (unsigned long long)gens);
	pass();
}
