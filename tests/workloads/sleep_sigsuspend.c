/*
 * sleep_sigsuspend: sleeps in sigsuspend() with a distinctive blocked mask.
 * While inside sigsuspend the thread's mask is the temporary one; the kernel
 * puts the real mask back when sigsuspend returns. So right after
 * sigsuspend returns (before any sigprocmask call of ours) the mask must
 * equal the one set before: a restore that took the temporary mask for the
 * real one fails here. Also the zdtm test_waitsig() path, afterwards.
 */
#include "zdtm.h"

static void mask_str(const sigset_t *s, char *out)
{
	char *p = out;

	for (int sig = 1; sig <= 64; sig++)
		if (sigismember(s, sig) == 1)
			p += sprintf(p, "%d ", sig);
	*p = 0;
}

static void get_mask(sigset_t *s)
{
	if (sigprocmask(SIG_SETMASK, NULL, s))
		pfail("sigprocmask query");
}

int main(int argc, char **argv)
{
	sigset_t set, wait, cur;
	char want[512], got[512];
	int r, e, loops = 0;

	test_init(argc, argv);

	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGWINCH);
	sigaddset(&set, SIGRTMIN + 3);
	sigaddset(&set, SIGRTMAX);
	sigaddset(&set, SIGTERM); /* blocked outside of sigsuspend: no lost wake-up */
	if (sigprocmask(SIG_SETMASK, &set, NULL))
		pfail("sigprocmask");
	get_mask(&cur);
	mask_str(&cur, want);

	wait = set;
	sigdelset(&wait, SIGTERM);
	sigaddset(&wait, SIGUSR2); /* the temporary mask differs in both directions */
	sigdelset(&wait, SIGHUP);

	test_daemon();

	do {
		r = sigsuspend(&wait);
		e = errno;
		get_mask(&cur);
		mask_str(&cur, got);
		if (r != -1 || e != EINTR)
			fail("sigsuspend returned %d, errno %d", r, e);
		if (strcmp(want, got))
			fail("blocked mask after sigsuspend is {%s}, expected {%s}", got, want);
		loops++;
	} while (!test_sigterm_received);

	/* The library path as well: test_waitsig() must return at once. */
	test_waitsig();
	get_mask(&cur);
	mask_str(&cur, got);
	if (strcmp(want, got))
		fail("blocked mask after test_waitsig is {%s}, expected {%s}", got, want);
	if (loops != 1)
		test_msg("sigsuspend returned %d times", loops);
	pass();
}
