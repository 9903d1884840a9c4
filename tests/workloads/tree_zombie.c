/*
 * tree_zombie: unreaped children across checkpoint/restore.
 *
 * The root forks
 *   Z1  exits at once with status 42,
 *   Z2  is killed with SIGUSR2 (default action: terminate, no core),
 *   L   a live child that checks its ids after the go,
 * and waits (waitid with WNOWAIT, so nothing is reaped) until Z1 and Z2
 * are zombies before it reports readiness. SIGCHLD keeps its default
 * disposition (not SIG_IGN), so the zombies stay. After the go the root
 * checks that Z1 and Z2 are still zombies and its children, that waitid
 * WNOWAIT reports the same exit information, and then reaps them:
 * Z1 WIFEXITED with 42, Z2 WIFSIGNALED with SIGUSR2 and no core dump.
 */
#include "tree.h"

#include <sys/wait.h>

/* waitid(WEXITED|WNOWAIT) on pid: what it reports, without reaping. */
static void peek_exit(pid_t pid, const char *who, int want_code, int want_status, int nohang)
{
	siginfo_t si;

	for (;;) {
		memset(&si, 0, sizeof(si));
		if (waitid(P_PID, pid, &si, WEXITED | WNOWAIT | (nohang ? WNOHANG : 0)) == 0)
			break;
		if (errno != EINTR)
			pfail("waitid(%s, pid %d, WNOWAIT)", who, pid);
	}
	if (si.si_pid != pid)
		fail("waitid(WNOHANG|WNOWAIT) on %s (pid %d) reports nothing: not a zombie", who, pid);
	if (si.si_signo != SIGCHLD || si.si_code != want_code || si.si_status != want_status)
		fail("%s (pid %d): waitid reports si_signo %d si_code %d si_status %d, expected "
		     "SIGCHLD/%d/%d", who, pid, si.si_signo, si.si_code, si.si_status, want_code,
		     want_status);
}

static void expect_zombie(pid_t pid, const char *who)
{
	pid_t ppid;
	char st = proc_state(pid, &ppid);

	if (st != 'Z')
		fail("%s (pid %d) is in state '%c', expected a zombie ('Z')", who, pid, st);
	if (ppid != getpid())
		fail("%s (pid %d) has ppid %d, expected %d", who, pid, ppid, getpid());
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	pid_t z1, z2, l, me;
	int rp[2], st;

	test_init(argc, argv);
	me = getpid();
	if (sigaction(SIGCHLD, NULL, &sa))
		pfail("sigaction(SIGCHLD)");
	if (sa.sa_handler != SIG_DFL)
		fail("SIGCHLD is not SIG_DFL");
	if (pipe(rp))
		pfail("pipe");

	z1 = xfork();
	if (z1 == 0)
		_exit(42);

	z2 = xfork();
	if (z2 == 0) {
		sigset_t none;

		signal(SIGUSR2, SIG_DFL);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		for (;;)
			pause();
	}

	l = xfork();
	if (l == 0) {
		pid_t pid = getpid();

		close(rp[0]);
		ready_send(rp[1], "live child L");
		close(rp[1]);
		test_waitsig();
		if (getpid() != pid || getppid() != me)
			fail("L: getpid() %d getppid() %d, expected %d/%d", getpid(), getppid(), pid, me);
		exit(0);
	}
	close(rp[1]);
	ready_collect(rp[0], 1);
	close(rp[0]);

	if (kill(z2, SIGUSR2))
		pfail("kill(Z2, SIGUSR2)");
	peek_exit(z1, "Z1", CLD_EXITED, 42, 0);
	peek_exit(z2, "Z2", CLD_KILLED, SIGUSR2, 0);
	expect_zombie(z1, "Z1");
	expect_zombie(z2, "Z2");

	test_daemon();
	test_waitsig();

	expect_zombie(z1, "Z1 after the go");
	expect_zombie(z2, "Z2 after the go");
	peek_exit(z1, "Z1 after the go", CLD_EXITED, 42, 1);
	peek_exit(z2, "Z2 after the go", CLD_KILLED, SIGUSR2, 1);

	st = wait_child(z1, "Z1", 5);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 42)
		fail("Z1 (pid %d): wait status %#x, expected WIFEXITED with status 42", z1, st);
	st = wait_child(z2, "Z2", 5);
	if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGUSR2)
		fail("Z2 (pid %d): wait status %#x, expected WIFSIGNALED with SIGUSR2 (%d)", z2, st,
		     SIGUSR2);
	if (WCOREDUMP(st))
		fail("Z2 (pid %d): wait status %#x has the core-dump flag", z2, st);

	if (kill(l, SIGTERM))
		pfail("kill(L, SIGTERM)");
	expect_exit(l, "live child L", 0);
	expect_no_children();
	pass();
}
