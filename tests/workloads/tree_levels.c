/*
 * tree_levels: a three-level process tree.
 *
 *   root ── A ── G        (A's child G is root's grandchild)
 *        └─ B
 *
 * Every process records getpid(), getppid(), getpgid() and getsid() before
 * the dump. The harness sends SIGTERM to the root only; the root forwards
 * it to A and B, A forwards it to G. Each process then checks its own ids
 * (the root not its ppid: it is restored as a child of `cairn restore`),
 * and reports through its exit status; each parent collects its children
 * with waitpid(pid) (which also proves the parent/child link survived).
 * The root prints PASS only if every process verified itself.
 */
#include "zdtm.h"

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

struct ident {
	pid_t pid, ppid, pgid, sid;
};

static void record(struct ident *id)
{
	id->pid = getpid();
	id->ppid = getppid();
	id->pgid = getpgid(0);
	id->sid = getsid(0);
}

static void verify(const char *who, const struct ident *was, int check_ppid)
{
	struct ident now;

	record(&now);
	if (now.pid != was->pid)
		fail("%s: getpid() = %d, was %d before the dump", who, now.pid, was->pid);
	if (syscall(SYS_getpid) != was->pid)
		fail("%s: SYS_getpid = %ld, was %d", who, syscall(SYS_getpid), was->pid);
	if (check_ppid && now.ppid != was->ppid)
		fail("%s (pid %d): getppid() = %d, was %d before the dump", who, now.pid, now.ppid,
		     was->ppid);
	if (now.pgid != was->pgid)
		fail("%s (pid %d): getpgid() = %d, was %d", who, now.pid, now.pgid, was->pgid);
	if (now.sid != was->sid)
		fail("%s (pid %d): getsid() = %d, was %d", who, now.pid, now.sid, was->sid);
}

static struct ident me;

static void __attribute__((noreturn)) grandchild(int rfd, int wfd)
{
	record(&me);
	close(rfd);
	ready_send(wfd, "grandchild G");
	close(wfd);
	test_waitsig();
	verify("grandchild G", &me, 1);
	exit(0);
}

static void __attribute__((noreturn)) child_a(int rfd, int wfd)
{
	pid_t g;

	record(&me);
	g = xfork();
	if (g == 0)
		grandchild(rfd, wfd);
	close(rfd);
	ready_send(wfd, "child A");
	close(wfd);
	test_waitsig();
	verify("child A", &me, 1);
	if (kill(g, SIGTERM))
		pfail("child A: kill(G %d, SIGTERM)", g);
	expect_exit(g, "grandchild G (from A)", 0);
	expect_no_children();
	exit(0);
}

static void __attribute__((noreturn)) child_b(int rfd, int wfd)
{
	record(&me);
	close(rfd);
	ready_send(wfd, "child B");
	close(wfd);
	test_waitsig();
	verify("child B", &me, 1);
	exit(0);
}

int main(int argc, char **argv)
{
	int rp[2];
	pid_t a, b;

	test_init(argc, argv);
	record(&me);
	if (pipe(rp))
		pfail("pipe");
	a = xfork();
	if (a == 0)
		child_a(rp[0], rp[1]);
	b = xfork();
	if (b == 0)
		child_b(rp[0], rp[1]);
	close(rp[1]);
	ready_collect(rp[0], 3);
	close(rp[0]);

	test_daemon();
	test_waitsig();

	verify("root", &me, 0);
	if (kill(a, SIGTERM))
		pfail("kill(A %d, SIGTERM)", a);
	if (kill(b, SIGTERM))
		pfail("kill(B %d, SIGTERM)", b);
	expect_exit(a, "child A", 0);
	expect_exit(b, "child B", 0);
	expect_no_children();
	pass();
}
