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
#include "tree.h"

#include <sys/wait.h>

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
