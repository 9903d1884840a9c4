/*
 * sig_pending: pending signals across checkpoint/restore.
 * SIGUSR1, SIGUSR2 and SIGRTMIN+2 are blocked, then
 *   SIGUSR1       kill(getpid())                     -> process-wide (shared) queue
 *   SIGUSR2       tgkill(getpid(), gettid())         -> thread's private queue
 *   SIGRTMIN+2 x2 sigqueue with si_value 111 then 222 -> shared, queued twice
 * After restore: sigpending() shows all three, the SigPnd/ShdPnd lines of
 * /proc/self/status are unchanged, and rt_sigtimedwait() returns each with
 * the right si_code (SI_USER / SI_TKILL / SI_QUEUE), si_pid and si_value,
 * the two realtime ones in order, and then nothing more.
 */
#include "zdtm.h"

#include <time.h>

static int rt;

static void expect(int sig, int code, int value, const char *what)
{
	sigset_t s;
	siginfo_t si;
	struct timespec zero = { 0, 0 };
	int r;

	sigemptyset(&s);
	sigaddset(&s, sig);
	memset(&si, 0, sizeof(si));
	/* Raw syscall: glibc's sigtimedwait() folds SI_TKILL into SI_USER. */
	r = syscall(SYS_rt_sigtimedwait, &s, &si, &zero, 8);
	if (r < 0)
		pfail("sigtimedwait for %s: nothing pending", what);
	if (r != sig || si.si_signo != sig)
		fail("sigtimedwait for %s returned %d (si_signo %d)", what, r, si.si_signo);
	if (si.si_code != code)
		fail("%s: si_code %d, expected %d", what, si.si_code, code);
	if (si.si_pid != getpid() || si.si_uid != getuid())
		fail("%s: si_pid %d si_uid %d, expected %d/%d", what, si.si_pid, si.si_uid,
		     getpid(), getuid());
	if (code == SI_QUEUE && si.si_value.sival_int != value)
		fail("%s: si_value %d, expected %d", what, si.si_value.sival_int, value);
}

int main(int argc, char **argv)
{
	sigset_t set, pend;
	char sigpnd[128], shdpnd[128], line[128];
	union sigval v;

	test_init(argc, argv);
	rt = SIGRTMIN + 2;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, rt);
	if (sigprocmask(SIG_BLOCK, &set, NULL))
		pfail("sigprocmask");

	if (kill(getpid(), SIGUSR1))
		pfail("kill");
	if (syscall(SYS_tgkill, getpid(), gettid(), SIGUSR2))
		pfail("tgkill");
	v.sival_int = 111;
	if (sigqueue(getpid(), rt, v))
		pfail("sigqueue 111");
	v.sival_int = 222;
	if (sigqueue(getpid(), rt, v))
		pfail("sigqueue 222");

	proc_status_line("SigPnd:", sigpnd, sizeof(sigpnd));
	proc_status_line("ShdPnd:", shdpnd, sizeof(shdpnd));

	test_daemon();
	test_waitsig();

	if (sigpending(&pend))
		pfail("sigpending");
	if (sigismember(&pend, SIGUSR1) != 1 || sigismember(&pend, SIGUSR2) != 1 ||
	    sigismember(&pend, rt) != 1)
		fail("sigpending lacks a signal: USR1 %d USR2 %d RTMIN+2 %d",
		     sigismember(&pend, SIGUSR1), sigismember(&pend, SIGUSR2), sigismember(&pend, rt));
	proc_status_line("SigPnd:", line, sizeof(line));
	if (strcmp(line, sigpnd))
		fail("thread-private pending set changed: '%s' -> '%s'", sigpnd, line);
	proc_status_line("ShdPnd:", line, sizeof(line));
	if (strcmp(line, shdpnd))
		fail("shared pending set changed: '%s' -> '%s'", shdpnd, line);

	expect(SIGUSR1, SI_USER, 0, "SIGUSR1 (kill)");
	expect(SIGUSR2, SI_TKILL, 0, "SIGUSR2 (tgkill)");
	expect(rt, SI_QUEUE, 111, "first SIGRTMIN+2 (sigqueue 111)");
	expect(rt, SI_QUEUE, 222, "second SIGRTMIN+2 (sigqueue 222)");

	if (sigpending(&pend))
		pfail("sigpending");
	for (int sig = 1; sig <= 64; sig++)
		if (sigismember(&pend, sig) == 1)
			fail("signal %d still pending after all were taken", sig);
	pass();
}
