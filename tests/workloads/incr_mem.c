/*
 * incr_mem: memory that changes between the layers of an incremental
 * checkpoint, checked after restore from the last layer.
 *
 *   incr_mem --pidfile P [--phases N] [--writer]
 *
 * The harness pre-dumps the workload (layer 1), sends SIGUSR1, waits for
 * ./phase-1, pre-dumps again (layer 2, parent 1), ... and after phase N
 * dumps it (the final layer) and restores it. Phase k changes memory in
 * these ways (k = 1..4; with fewer phases only the first ones happen):
 *   1: user writes to A; read(2) into B (the kernel writes); MADV_DONTNEED
 *      of C pages 2-4, two of them read again (the zero page is mapped
 *      there, and it is not soft-dirty); munmap of D; new mapping G; a new thread that writes
 *      A and waits; MADV_DONTNEED of a copy-on-write page of the private
 *      file mapping F (the file shows through again); with --writer, a
 *      thread that rewrites W continuously until phase 2 (so layer 2 is
 *      copied while W changes);
 *   2: writes to A, B by read(2); E moved onto D's old address (mremap:
 *      D's old bytes are in layer 1 at that address and must not come
 *      back); a new child (with its own writes); a write to the shared
 *      anonymous S; a new copy-on-write page of F; the writer stops;
 *   3: writes to A; C page 3 written again; G unmapped and mapped anew
 *      with only its page 0 written (its old bytes are in older layers);
 *      the child writes S and its own memory;
 *   4: writes to A and F, read(2) into B.
 * After the last phase the workload records a checksum of every region
 * (the memory at the final dump); after restore it recomputes them, checks
 * what each change implies (zero pages, unmapped ranges, file contents),
 * has its thread and child check theirs, and that its fd table never
 * changed and no stray signal arrived while it was checkpointed.
 */
#include "zdtm.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define PG 4096ul
#define BASE 0x300000000000ul
#define A_PAGES 512
#define W_PAGES 2048
#define A (BASE + 0x0000000ul)
#define B (BASE + 0x1000000ul)
#define C (BASE + 0x2000000ul)
#define D (BASE + 0x3000000ul)
#define E (BASE + 0x4000000ul)
#define G (BASE + 0x5000000ul)
#define S (BASE + 0x6000000ul)
#define F (BASE + 0x7000000ul)
#define W (BASE + 0x8000000ul)

static volatile sig_atomic_t go, stray;
static int phases = 4, done, with_writer;
static int fd_count_expected;

struct region {
	unsigned long addr, len;
	uint64_t sum;
};
static struct region regions[16];
static int nregions;

static uint64_t sum(unsigned long addr, unsigned long len)
{
	const uint64_t *p = (const uint64_t *)addr;
	uint64_t h = 0xcbf29ce484222325ull;

	for (unsigned long i = 0; i < len / 8; i++) {
		h ^= p[i] + i;
		h *= 0x100000001b3ull;
	}
	return h;
}

static int fd_count(void)
{
	int n = 0;

	for (int fd = 0; fd < 1024; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			n++;
	return n;
}

static void check_fds(const char *when)
{
	int n = fd_count();

	if (n != fd_count_expected)
		fail("%s: %d fds open, expected %d (an fd was left in the table?)", when, n,
		     fd_count_expected);
}

static void *map_at(unsigned long addr, unsigned long len, int flags)
{
	void *p = mmap((void *)addr, len, PROT_READ | PROT_WRITE,
		       flags | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

	if (p == MAP_FAILED)
		pfail("mmap %#lx", addr);
	if ((unsigned long)p != addr)
		fail("mmap at %#lx got %p", addr, p);
	/*
	 * No transparent huge pages: a kernel with THP "always" (Debian's)
	 * backs the 2 MiB-aligned A with one huge page, whose soft-dirty bit
	 * covers all 512 pages, so one write makes the whole of A dirty and
	 * the page counts the harness checks depend on whether the kernel
	 * found a free huge page. The granularity is the kernel's, not a
	 * tracking error; here every region tracks 4 KiB pages.
	 */
	if (madvise(p, len, MADV_NOHUGEPAGE))
		pfail("madvise NOHUGEPAGE %#lx", addr);
	return p;
}

static int mapped(unsigned long addr)
{
	return msync((void *)addr, PG, MS_ASYNC) == 0;
}

/* ---- the writer thread (W) ---- */
static volatile int writer_stop;
static pthread_t writer_thread;

static void *writer(void *arg)
{
	uint64_t x = 0x12345678, it = 0;

	(void)arg;
	while (!writer_stop) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		uint64_t *p = (uint64_t *)(W + (x % W_PAGES) * PG);
		for (unsigned i = 0; i < PG / 8; i++)
			p[i] = x + i + it;
		it++;
	}
	return NULL;
}

/* ---- the thread of phase 1 ---- */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int thread_go, thread_ready;
static pthread_t phase_thread;

static void *phase_thread_fn(void *arg)
{
	volatile uint64_t local[512];

	(void)arg;
	for (int i = 0; i < 512; i++)
		local[i] = 0xabcdef00ull + i;
	fill_pattern((void *)(A + 500 * PG), PG, 200, 0);
	pthread_mutex_lock(&mu);
	thread_ready = 1;
	pthread_cond_broadcast(&cv);
	while (!thread_go)
		pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
	for (int i = 0; i < 512; i++)
		if (local[i] != 0xabcdef00ull + i)
			return (void *)1;
	return NULL;
}

/* ---- the child of phase 2 ---- */
static int to_child[2], from_child[2];
static pid_t child;

static void child_main(void)
{
	char cmd;
	uint64_t want = 0;

	close(to_child[1]);
	close(from_child[0]);
	/* Its own copy-on-write writes. */
	fill_pattern((void *)A, 16 * PG, 300, 0);
	for (;;) {
		if (read(to_child[0], &cmd, 1) != 1)
			_exit(3);
		if (cmd == 'w') {
			fill_pattern((void *)(S + 2 * PG), PG, 302, 0);
			fill_pattern((void *)(A + 20 * PG), PG, 320, 0);
		} else if (cmd == 's') {
			want = sum(A, A_PAGES * PG) ^ sum(S, 8 * PG);
		} else if (cmd == 'v') {
			uint64_t got = sum(A, A_PAGES * PG) ^ sum(S, 8 * PG);
			if (check_pattern((void *)A, 16 * PG, 300, 0) >= 0)
				_exit(4);
			_exit(got == want ? 0 : 5);
		}
		if (write(from_child[1], "k", 1) != 1)
			_exit(3);
	}
}

static void child_cmd(char c)
{
	char k;

	if (write(to_child[1], &c, 1) != 1 || read(from_child[0], &k, 1) != 1)
		fail("talking to the child");
}

/* ---- phases ---- */
static void read_into(unsigned long dst, size_t len, off_t off)
{
	int fd = open("src", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		pfail("open src");
	if (pread(fd, (void *)dst, len, off) != (ssize_t)len)
		pfail("pread into %#lx", dst);
	close(fd);
}

static void write_a(int k)
{
	/* 12 pages here and there, never the pages of the thread or child. */
	for (int i = 0; i < 12; i++) {
		unsigned long pg = 30 + (k * 97 + i * 37) % 460;
		fill_pattern((void *)(A + pg * PG), PG, 100 + k, pg);
	}
}

static void phase(int k)
{
	check_fds("before the phase");
	write_a(k);
	if (k == 1) {
		read_into(B + PG + 100, 6000, 0);
		if (madvise((void *)(C + 2 * PG), 3 * PG, MADV_DONTNEED))
			pfail("madvise C");
		/* Read back: the zero page is mapped there now (not soft-dirty). */
		if (((volatile uint8_t *)C)[2 * PG] || ((volatile uint8_t *)C)[4 * PG + 5])
			fail("C reads non-zero right after MADV_DONTNEED");
		if (munmap((void *)D, 8 * PG))
			pfail("munmap D");
		map_at(G, 8 * PG, MAP_PRIVATE);
		fill_pattern((void *)G, 8 * PG, 7, 0);
		if (madvise((void *)(F + 1 * PG), PG, MADV_DONTNEED))
			pfail("madvise F");
		sigset_t old;

		test_term_block(&old);
		if (pthread_create(&phase_thread, NULL, phase_thread_fn, NULL))
			fail("pthread_create");
		test_term_unblock(&old);
		pthread_mutex_lock(&mu);
		while (!thread_ready)
			pthread_cond_wait(&cv, &mu);
		pthread_mutex_unlock(&mu);
		test_term_block(&old);
		if (with_writer && pthread_create(&writer_thread, NULL, writer, NULL))
			fail("pthread_create writer");
		test_term_unblock(&old);
	} else if (k == 2) {
		read_into(B + 5 * PG + 3000, 9000, 20000);
		if (mremap((void *)E, 8 * PG, 8 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)D) !=
		    (void *)D)
			pfail("mremap E onto D");
		fill_pattern((void *)(S + 1 * PG), PG, 81, 0);
		fill_pattern((void *)(F + 5 * PG), PG, 95, 0);
		if (pipe(to_child) || pipe(from_child))
			pfail("pipe");
		child = fork();
		if (child < 0)
			pfail("fork");
		if (child == 0)
			child_main();
		close(to_child[0]);
		close(from_child[1]);
		fd_count_expected += 2;
		child_cmd('n');
		if (with_writer) {
			writer_stop = 1;
			pthread_join(writer_thread, NULL);
		}
	} else if (k == 3) {
		fill_pattern((void *)(C + 3 * PG), PG, 33, 0);
		if (munmap((void *)G, 8 * PG))
			pfail("munmap G");
		map_at(G, 8 * PG, MAP_PRIVATE);
		fill_pattern((void *)G, PG, 77, 0);
		if (child > 0)
			child_cmd('w');
	} else if (k == 4) {
		fill_pattern((void *)(F + 2 * PG), PG, 92, 0);
		read_into(B + 10 * PG, 2 * PG, 40000);
	}
	check_fds("after the phase");
}

static void add_region(unsigned long addr, unsigned long len)
{
	regions[nregions].addr = addr;
	regions[nregions].len = len;
	nregions++;
}

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

static void on_stray(int sig)
{
	(void)sig;
	stray++;
}

static void write_ack(int k)
{
	char tmp[64], name[64];
	int fd;

	snprintf(tmp, sizeof(tmp), "phase-%d.tmp", k);
	snprintf(name, sizeof(name), "phase-%d", k);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || close(fd) || rename(tmp, name))
		pfail("ack %s", name);
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	sigset_t usr1, old;
	uint8_t filebuf[8 * PG];
	int fd;

	test_init(argc, argv);
	if (test_arg("--phases"))
		phases = atoi(test_arg("--phases"));
	with_writer = test_flag("--writer");

	/* The file read into B, and the file privately mapped as F. */
	fill_pattern(filebuf, sizeof(filebuf), 50, 0);
	fd = open("src", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		pfail("create src");
	for (int i = 0; i < 8; i++)
		if (write(fd, filebuf, sizeof(filebuf)) != (ssize_t)sizeof(filebuf))
			pfail("write src");
	close(fd);
	fill_pattern(filebuf, sizeof(filebuf), 9, 0);
	fd = open("data", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, filebuf, sizeof(filebuf)) != (ssize_t)sizeof(filebuf))
		pfail("create data");
	if (mmap((void *)F, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED_NOREPLACE, fd,
		 0) != (void *)F)
		pfail("mmap F");
	close(fd);

	map_at(A, A_PAGES * PG, MAP_PRIVATE);
	map_at(B, 16 * PG, MAP_PRIVATE);
	map_at(C, 8 * PG, MAP_PRIVATE);
	map_at(D, 8 * PG, MAP_PRIVATE);
	map_at(E, 8 * PG, MAP_PRIVATE);
	map_at(S, 8 * PG, MAP_SHARED);
	map_at(W, W_PAGES * PG, MAP_PRIVATE);
	fill_pattern((void *)A, A_PAGES * PG, 1, 0);
	fill_pattern((void *)B, 16 * PG, 2, 0);
	fill_pattern((void *)C, 8 * PG, 3, 0);
	fill_pattern((void *)D, 8 * PG, 4, 0);
	fill_pattern((void *)E, 8 * PG, 5, 0);
	fill_pattern((void *)S, 8 * PG, 8, 0);
	fill_pattern((void *)W, W_PAGES * PG, 6, 0);
	fill_pattern((void *)F, 3 * PG, 90, 0);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL))
		pfail("sigaction");
	sa.sa_handler = on_stray;
	sigaction(SIGCONT, &sa, NULL);
	sigaction(SIGTRAP, &sa, NULL);
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, &old);
	fd_count_expected = fd_count();

	test_daemon();
	for (int k = 1; k <= phases; k++) {
		sigset_t wait = old;

		sigdelset(&wait, SIGUSR1);
		while (!go && !test_sigterm_received)
			sigsuspend(&wait);
		if (test_sigterm_received)
			break;	/* not checkpointed further: check as is */
		go = 0;
		phase(k);
		write_ack(k);
		done = k;
	}

	/* The memory at the final dump. */
	add_region(A, A_PAGES * PG);
	add_region(B, 16 * PG);
	add_region(C, 8 * PG);
	if (done != 1)
		add_region(D, 8 * PG);	/* D itself, or E moved there */
	if (done < 2)
		add_region(E, 8 * PG);
	if (done >= 1)
		add_region(G, 8 * PG);
	add_region(S, 8 * PG);
	add_region(F, 8 * PG);
	add_region(W, W_PAGES * PG);
	for (int i = 0; i < nregions; i++)
		regions[i].sum = sum(regions[i].addr, regions[i].len);
	if (child > 0)
		child_cmd('s');

	test_waitsig();

	check_fds("after restore");
	if (stray)
		fail("%d stray SIGCONT/SIGTRAP arrived", (int)stray);
	for (int i = 0; i < nregions; i++)
		if (sum(regions[i].addr, regions[i].len) != regions[i].sum)
			fail("region at %#lx (%lu pages) differs from the memory at the dump",
			     regions[i].addr, regions[i].len / PG);
	/* What the changes imply. */
	if (done >= 1) {
		for (int pg = 2; pg <= 4; pg++) {
			if (pg == 3 && done >= 3) {
				if (check_pattern((void *)(C + 3 * PG), PG, 33, 0) >= 0)
					fail("C page 3 lost its last write");
				continue;
			}
			for (unsigned long i = 0; i < PG; i++)
				if (((uint8_t *)C)[pg * PG + i])
					fail("C page %d was MADV_DONTNEED'd but is not zero", pg);
		}
		fill_pattern(filebuf, sizeof(filebuf), 9, 0);
		if (memcmp((void *)(F + PG), filebuf + PG, PG))
			fail("F page 1 was dropped (MADV_DONTNEED) but does not show the file");
		if (check_pattern((void *)F, PG, 90, 0) >= 0)
			fail("F page 0 lost its copy-on-write contents");
		fill_pattern(filebuf, sizeof(filebuf), 50, 0);
		if (memcmp((void *)(B + PG + 100), filebuf, 6000))
			fail("B does not hold what read(2) put there");
	}
	if (done == 1 && mapped(D))
		fail("D was unmapped but is mapped after restore");
	if (done >= 2) {
		if (check_pattern((void *)D, 8 * PG, 5, 0) >= 0)
			fail("E moved onto D's address does not hold E's bytes");
		if (mapped(E))
			fail("E's old range is mapped after restore");
	}
	if (done >= 3) {
		if (check_pattern((void *)G, PG, 77, 0) >= 0)
			fail("the new G page 0 is wrong");
		for (unsigned long i = PG; i < 8 * PG; i++)
			if (((uint8_t *)G)[i])
				fail("the new G mapping shows old bytes at offset %lu", i);
	}
	if (done >= 1) {
		void *ret = (void *)2;

		pthread_mutex_lock(&mu);
		thread_go = 1;
		pthread_cond_broadcast(&cv);
		pthread_mutex_unlock(&mu);
		pthread_join(phase_thread, &ret);
		if (ret)
			fail("the phase-1 thread's stack changed");
		if (check_pattern((void *)(A + 500 * PG), PG, 200, 0) >= 0)
			fail("the thread's write to A is lost");
	}
	if (child > 0) {
		int st;
		char c = 'v';

		if (write(to_child[1], &c, 1) != 1)
			pfail("write to child");
		if (waitpid(child, &st, 0) != child)
			pfail("waitpid");
		if (!WIFEXITED(st) || WEXITSTATUS(st))
			fail("the child found its memory changed (status %#x)", st);
	}
	pass();
}
