/*
 * tree_stopped: stopped children across checkpoint/restore.
 *
 *   S1  stops itself with kill(getpid(), SIGSTOP)
 *   S2  is stopped by the root (kill(S2, SIGSTOP)) while it sleeps in
 *       sigsuspend (test_waitsig)
 * The root waits for both with WUNTRACED (WIFSTOPPED, WSTOPSIG == SIGSTOP)
 * and checks state 'T' in /proc before it reports readiness. After the go
 * the root requires state 'T' again (the restore must re-stop them), sends
 * each SIGTERM (stays pending while stopped) and SIGCONT; each child then
 * runs its SIGTERM handler, checks its pid/ppid and exits 0.
 */
#include "tree.h"

#include <sys/wait.h>

static pid_t root_pid;

static void __attribute__((noreturn)) stopped_child(const char *who, int self_stop)
{
	pid_t pid = getpid();

	if (getppid() != root_pid)
		fail("%s: getppid() %d, expected %d", who, getppid(), root_pid);
	if (self_stop && kill(pid, SIGSTOP))
		pfail("%s: kill(self, SIGSTOP)", who);
	test_waitsig();
	if (getpid() != pid)
		fail("%s: getpid() = %d, was %d", who, getpid(), pid);
	if (getppid() != root_pid)
		fail("%s (pid %d): getppid() = %d, expected %d", who, pid, getppid(), root_pid);
	exit(0);
}

static void wait_stopped(pid_t pid, const char *who)
{
	int st;

	for (;;) {
		pid_t r = waitpid(pid, &st, WUNTRACED);

		if (r == pid)
			break;
		if (r < 0 && errno == EINTR)
			continue;
		pfail("waitpid(%s, WUNTRACED)", who);
	}
	if (!WIFSTOPPED(st) || WSTOPSIG(st) != SIGSTOP)
		fail("%s (pid %d): wait status %#x, expected stopped by SIGSTOP", who, pid, st);
}

static void expect_state_t(pid_t pid, const char *who, const char *when)
{
	pid_t ppid;
	char st = proc_state(pid, &ppid);

	if (st != 'T')
		fail("%s (pid %d) is in state '%c' %s, expected 'T' (stopped)", who, pid, st, when);
	if (ppid != root_pid)
		fail("%s (pid %d) has ppid %d %s, expected %d", who, pid, ppid, when, root_pid);
}

int main(int argc, char **argv)
{
	pid_t s1, s2;
	int rp[2];

	test_init(argc, argv);
	root_pid = getpid();
	if (pipe(rp))
		pfail("pipe");

	s1 = xfork();
	if (s1 == 0) {
		close(rp[0]);
		close(rp[1]);
		stopped_child("S1 (stopped itself)", 1);
	}
	s2 = xfork();
	if (s2 == 0) {
		close(rp[0]);
		ready_send(rp[1], "S2");
		close(rp[1]);
		stopped_child("S2 (stopped by the root)", 0);
	}
	close(rp[1]);
	ready_collect(rp[0], 1);
	close(rp[0]);
	/* S2 may not be in sigsuspend yet; that does not matter for the stop. */
	if (kill(s2, SIGSTOP))
		pfail("kill(S2, SIGSTOP)");
	wait_stopped(s1, "S1");
	wait_stopped(s2, "S2");
	expect_state_t(s1, "S1", "before the dump");
	expect_state_t(s2, "S2", "before the dump");

	test_daemon();
	test_waitsig();

	expect_state_t(s1, "S1", "after the go");
	expect_state_t(s2, "S2", "after the go");
	/* Give a wrongly running child a chance to show up as not stopped. */
	usleep(50000);
	expect_state_t(s1, "S1", "50 ms after the go");
	expect_state_t(s2, "S2", "50 ms after the go");

	if (kill(s1, SIGTERM) || kill(s2, SIGTERM))
		pfail("kill(SIGTERM)");
	usleep(20000);
	expect_state_t(s1, "S1", "with SIGTERM pending");
	expect_state_t(s2, "S2", "with SIGTERM pending");
	if (kill(s1, SIGCONT) || kill(s2, SIGCONT))
		pfail("kill(SIGCONT)");
	expect_exit(s1, "S1", 0);
	expect_exit(s2, "S2", 0);
	expect_no_children();
	pass();
}
