/*
 * sig_actions: signal dispositions with distinct flags and masks, SIG_IGN
 * for some, default for the rest. Every disposition 1..64 (but SIGKILL and
 * SIGSTOP) is read with the raw rt_sigaction syscall (handler, flags with
 * SA_RESTORER, restorer, mask) before and compared after restore. Then
 * handled signals are raised: the handlers run with the right mask and
 * SA_RESETHAND resets its disposition.
 */
#include "zdtm.h"

static struct ksigaction before[65];
static volatile sig_atomic_t usr1_ran, usr2_ran, hup_ran, rt_ran;
static volatile sig_atomic_t usr1_mask_ok, usr2_mask_ok, usr1_info_ok;

static int blocked(int sig)
{
	sigset_t cur;

	sigprocmask(SIG_SETMASK, NULL, &cur);
	return sigismember(&cur, sig) == 1;
}

static void on_usr1(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	usr1_info_ok = sig == SIGUSR1 && si->si_signo == SIGUSR1 && si->si_code == SI_TKILL &&
		       si->si_pid == getpid();
	/* sa_mask {SIGUSR2, SIGINT} plus the signal itself (no SA_NODEFER). */
	usr1_mask_ok = blocked(SIGUSR2) && blocked(SIGINT) && blocked(SIGUSR1) && !blocked(SIGHUP);
	usr1_ran++;
}

static void on_usr2(int sig)
{
	(void)sig;
	/* SA_NODEFER: SIGUSR2 itself not blocked; sa_mask {SIGHUP}. */
	usr2_mask_ok = !blocked(SIGUSR2) && blocked(SIGHUP);
	usr2_ran++;
}

static void on_hup(int sig)
{
	(void)sig;
	hup_ran++;
}

static void on_rt(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)si;
	(void)uc;
	rt_ran++;
}

static void set(int sig, void *handler, int flags, const int *mask_sigs)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	if (flags & SA_SIGINFO)
		sa.sa_sigaction = handler;
	else
		sa.sa_handler = handler;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	for (; mask_sigs && *mask_sigs; mask_sigs++)
		sigaddset(&sa.sa_mask, *mask_sigs);
	if (sigaction(sig, &sa, NULL))
		pfail("sigaction(%d)", sig);
}

int main(int argc, char **argv)
{
	test_init(argc, argv);

	int m_usr1[] = { SIGUSR2, SIGINT, 0 };
	int m_usr2[] = { SIGHUP, 0 };
	int m_alrm[] = { SIGRTMIN, SIGRTMAX, SIGQUIT, 0 };
	int m_rt[] = { SIGUSR1, SIGCHLD, 0 };

	set(SIGUSR1, on_usr1, SA_SIGINFO | SA_RESTART, m_usr1);
	set(SIGUSR2, on_usr2, SA_NODEFER, m_usr2);
	set(SIGHUP, on_hup, SA_RESETHAND | SA_ONSTACK, NULL);
	set(SIGALRM, on_hup, SA_RESTART | SA_NODEFER | SA_ONSTACK, m_alrm);
	set(SIGCHLD, on_hup, SA_NOCLDSTOP | SA_RESTART, NULL);
	set(SIGRTMIN + 1, on_rt, SA_SIGINFO, m_rt);
	set(SIGRTMAX - 1, on_rt, SA_SIGINFO | SA_RESETHAND | SA_NODEFER, NULL);
	set(SIGINT, SIG_IGN, 0, NULL);
	set(SIGQUIT, SIG_IGN, 0, NULL);
	set(SIGPIPE, SIG_IGN, 0, NULL);
	set(SIGRTMIN + 4, SIG_IGN, 0, NULL);
	set(SIGWINCH, SIG_DFL, SA_RESTART, NULL); /* default, but with a flag */

	ksig_get_all(before);

	test_daemon();
	test_waitsig();

	ksig_expect_same(before);

	raise(SIGUSR1);
	if (usr1_ran != 1 || !usr1_info_ok || !usr1_mask_ok)
		fail("SIGUSR1 handler: ran %d, siginfo ok %d, mask ok %d", usr1_ran, usr1_info_ok,
		     usr1_mask_ok);
	raise(SIGUSR2);
	if (usr2_ran != 1 || !usr2_mask_ok)
		fail("SIGUSR2 handler: ran %d, mask ok %d", usr2_ran, usr2_mask_ok);
	raise(SIGINT); /* ignored: nothing happens */
	raise(SIGPIPE);
	raise(SIGRTMIN + 1);
	if (rt_ran != 1)
		fail("SIGRTMIN+1 handler ran %d times", rt_ran);
	raise(SIGHUP);
	if (hup_ran != 1)
		fail("SIGHUP handler ran %d times", hup_ran);
	struct sigaction q;
	if (sigaction(SIGHUP, NULL, &q))
		pfail("sigaction query");
	if (q.sa_handler != SIG_DFL)
		fail("SA_RESETHAND did not reset the SIGHUP disposition");
	pass();
}
