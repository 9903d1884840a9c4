/*
 * tree_pgid_sid: process groups and sessions of a tree.
 *
 *   root (session and group leader, started with setsid by the harness)
 *   ├─ C1   setpgid(0, 0): its own group in the root's session
 *   ├─ C4   setpgid(0, C1): a member of C1's group
 *   └─ C2   setsid(): its own session and group
 *       ├─ C3    stays in C2's group and session
 *       └─ C3b   setpgid(0, 0): its own group inside C2's session
 *
 * Each process records pid/ppid/pgid/sid before the dump and, after the go
 * (SIGTERM forwarded down the tree), checks them against the recorded and
 * the expected values; parents also check their children's getpgid() and
 * getsid() from outside. Verdicts travel up through exit statuses.
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

/* Check the current ids against the recorded ones and the expected pgid/sid. */
static void verify(const char *who, const struct ident *was, pid_t want_pgid, pid_t want_sid,
		   int check_ppid, const char *when)
{
	struct ident now;

	record(&now);
	if (now.pid != was->pid)
		fail("%s %s: getpid() = %d, was %d", who, when, now.pid, was->pid);
	if (check_ppid && now.ppid != was->ppid)
		fail("%s (pid %d) %s: getppid() = %d, was %d", who, now.pid, when, now.ppid, was->ppid);
	if (now.pgid != was->pgid || now.pgid != want_pgid)
		fail("%s (pid %d) %s: getpgid() = %d, recorded %d, expected %d", who, now.pid, when,
		     now.pgid, was->pgid, want_pgid);
	if (now.sid != was->sid || now.sid != want_sid)
		fail("%s (pid %d) %s: getsid() = %d, recorded %d, expected %d", who, now.pid, when,
		     now.sid, was->sid, want_sid);
}

static struct ident me;
static pid_t root_pid;

/* A process that only waits for the go and checks its ids. */
static void __attribute__((noreturn)) leaf(const char *who, int rfd, int wfd, pid_t pgid, pid_t sid)
{
	record(&me);
	verify(who, &me, pgid, sid, 1, "before the dump");
	close(rfd);
	ready_send(wfd, who);
	close(wfd);
	test_waitsig();
	verify(who, &me, pgid, sid, 1, "after the go");
	exit(0);
}

/* C2: new session; its children C3 (C2's group) and C3b (own group, C2's session). */
static void __attribute__((noreturn)) session_leader(int rfd, int wfd)
{
	pid_t c3, c3b, self;

	if (setsid() < 0)
		pfail("C2: setsid");
	self = getpid();
	record(&me);
	verify("C2 (session leader)", &me, self, self, 1, "before the dump");
	c3 = xfork();
	if (c3 == 0)
		leaf("C3 (in C2's session and group)", rfd, wfd, self, self);
	c3b = xfork();
	if (c3b == 0) {
		if (setpgid(0, 0))
			pfail("C3b: setpgid(0, 0)");
		leaf("C3b (own group in C2's session)", rfd, wfd, getpid(), self);
	}
	if (setpgid(c3b, c3b) && errno != EACCES)
		pfail("C2: setpgid(C3b, C3b)");
	close(rfd);
	ready_send(wfd, "C2");
	close(wfd);
	test_waitsig();
	verify("C2 (session leader)", &me, self, self, 1, "after the go");
	if (getpgid(c3) != self || getsid(c3) != self)
		fail("C2: C3 (pid %d) has pgid %d sid %d, expected %d/%d", c3, getpgid(c3), getsid(c3),
		     self, self);
	if (getpgid(c3b) != c3b || getsid(c3b) != self)
		fail("C2: C3b (pid %d) has pgid %d sid %d, expected %d/%d", c3b, getpgid(c3b),
		     getsid(c3b), c3b, self);
	if (kill(c3, SIGTERM) || kill(c3b, SIGTERM))
		pfail("C2: kill(SIGTERM)");
	expect_exit(c3, "C3", 0);
	expect_exit(c3b, "C3b", 0);
	expect_no_children();
	exit(0);
}

int main(int argc, char **argv)
{
	int rp[2];
	pid_t c1, c4, c2;

	test_init(argc, argv);
	root_pid = getpid();
	record(&me);
	if (me.pgid != root_pid || me.sid != root_pid)
		fail("the root is not a session leader (pgid %d sid %d): start it with setsid",
		     me.pgid, me.sid);
	if (pipe(rp))
		pfail("pipe");

	/* C1: its own process group in the root's session. */
	c1 = xfork();
	if (c1 == 0) {
		if (setpgid(0, 0))
			pfail("C1: setpgid(0, 0)");
		leaf("C1 (own group)", rp[0], rp[1], getpid(), root_pid);
	}
	if (setpgid(c1, c1) && errno != EACCES)
		pfail("setpgid(C1, C1)");

	/* C4: joins C1's group (a group led by another process). */
	c4 = xfork();
	if (c4 == 0) {
		if (setpgid(0, c1))
			pfail("C4: setpgid(0, C1 %d)", c1);
		leaf("C4 (in C1's group)", rp[0], rp[1], c1, root_pid);
	}
	if (setpgid(c4, c1) && errno != EACCES)
		pfail("setpgid(C4, C1)");

	/* C2: a session of its own, with two children. */
	c2 = xfork();
	if (c2 == 0)
		session_leader(rp[0], rp[1]);

	close(rp[1]);
	ready_collect(rp[0], 5);
	close(rp[0]);

	test_daemon();
	test_waitsig();

	verify("root", &me, root_pid, root_pid, 0, "after the go");
	if (getpgid(c1) != c1 || getsid(c1) != root_pid)
		fail("C1 (pid %d): pgid %d sid %d, expected %d/%d", c1, getpgid(c1), getsid(c1), c1,
		     root_pid);
	if (getpgid(c4) != c1 || getsid(c4) != root_pid)
		fail("C4 (pid %d): pgid %d sid %d, expected %d/%d", c4, getpgid(c4), getsid(c4), c1,
		     root_pid);
	if (getpgid(c2) != c2 || getsid(c2) != c2)
		fail("C2 (pid %d): pgid %d sid %d, expected %d/%d", c2, getpgid(c2), getsid(c2), c2, c2);
	if (kill(c1, SIGTERM) || kill(c4, SIGTERM) || kill(c2, SIGTERM))
		pfail("kill(SIGTERM)");
	expect_exit(c1, "C1", 0);
	expect_exit(c4, "C4", 0);
	expect_exit(c2, "C2", 0);
	expect_no_children();
	pass();
}
