/*
 * tree_cow: 64 MiB of random data shared copy-on-write by parent and child.
 *
 * The root mallocs 64 MiB, fills it with random bytes, computes a checksum
 * and forks C; neither touches the buffer again, so every page is still
 * shared copy-on-write at dump time. After the go both recompute the
 * checksum (C with its own copy of the expected value). The Rust test also
 * requires the image directory to stay below 1.5 x 64 MiB: shared pages
 * must be saved once, not once per process.
 */
#include "zdtm.h"

#include <sys/random.h>
#include <sys/wait.h>

/* ---- tree helpers (the same in every tree_* workload) ---- */

static inline pid_t xfork(void)
{
	pid_t p;

	fflush(NULL);
	p = fork();
	if (p < 0)
		pfail("fork");
	return p;
}

static inline void ready_send(int fd, const char *who)
{
	char c = 'r';

	if (write(fd, &c, 1) != 1)
		pfail("%s: write to the ready pipe", who);
}

/* Read n readiness bytes; EOF first means a process died before it was ready. */
static inline void ready_collect(int fd, int n)
{
	for (int got = 0; got < n;) {
		char c;
		ssize_t r = read(fd, &c, 1);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			pfail("read the ready pipe");
		if (r == 0)
			fail("only %d of %d processes got ready (one died before; see above)", got, n);
		got++;
	}
}

/* waitpid(pid) with a timeout; returns the wait status. */
static inline int wait_child(pid_t pid, const char *who, int timeout_s)
{
	int st;

	for (long ms = 0;; ms++) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid)
			return st;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			pfail("waitpid(%s, pid %d) (not my child any more?)", who, pid);
		if (ms >= timeout_s * 1000L)
			fail("%s (pid %d) did not exit within %d s", who, pid, timeout_s);
		usleep(1000);
	}
}

static inline void expect_exit(pid_t pid, const char *who, int code)
{
	int st = wait_child(pid, who, 20);

	if (WIFEXITED(st) && WEXITSTATUS(st) == code)
		return;
	if (WIFEXITED(st))
		fail("%s (pid %d) exited with %d, expected %d", who, pid, WEXITSTATUS(st), code);
	if (WIFSIGNALED(st))
		fail("%s (pid %d) was killed by signal %d", who, pid, WTERMSIG(st));
	fail("%s (pid %d): unexpected wait status %#x", who, pid, st);
}

/* No children left (a restore must not leave helpers as our children). */
static inline void expect_no_children(void)
{
	int st;
	pid_t r = waitpid(-1, &st, WNOHANG);

	if (r < 0 && errno == ECHILD)
		return;
	if (r > 0)
		fail("reaped an unexpected child, pid %d (status %#x)", r, st);
	if (r == 0)
		fail("there are unexpected live children left");
	pfail("waitpid(-1)");
}

/* State letter of another process (and its ppid), from /proc/PID/stat. */
static inline char proc_state(pid_t pid, pid_t *ppid)
{
	char path[64], buf[4096], *p;
	char st = 0;
	int pp = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	read_file(path, buf, sizeof(buf));
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%c %d", &st, &pp) != 2)
		fail("cannot parse %s: %s", path, buf);
	if (ppid)
		*ppid = pp;
	return st;
}

/* ---- */

#define SIZE (64UL << 20)

static uint64_t *buf;
static uint64_t sum_before;

static uint64_t checksum(void)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < SIZE / 8; i++)
		h = (h ^ buf[i]) * 0x100000001b3ull + (h >> 29);
	return h;
}

static void check(const char *who)
{
	uint64_t s = checksum();

	if (s != sum_before)
		fail("%s: checksum of the 64 MiB buffer is %#llx, was %#llx", who,
		     (unsigned long long)s, (unsigned long long)sum_before);
}

int main(int argc, char **argv)
{
	uint64_t x;
	pid_t c, me;

	test_init(argc, argv);
	me = getpid();
	buf = malloc(SIZE);
	if (!buf)
		pfail("malloc 64 MiB");
	if (getrandom(&x, sizeof(x), 0) != sizeof(x))
		pfail("getrandom");
	x |= 1;
	for (size_t i = 0; i < SIZE / 8; i++) {
		/* xorshift64* */
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		buf[i] = x * 0x2545F4914F6CDD1Dull;
	}
	sum_before = checksum();

	c = xfork();
	if (c == 0) {
		pid_t pid = getpid();

		test_waitsig();
		if (getpid() != pid || getppid() != me)
			fail("C: getpid() %d getppid() %d, expected %d/%d", getpid(), getppid(), pid,
			     me);
		check("C");
		exit(0);
	}

	test_daemon();
	test_waitsig();

	check("root");
	if (kill(c, SIGTERM))
		pfail("kill(C, SIGTERM)");
	expect_exit(c, "C", 0);
	expect_no_children();
	pass();
}
