/*
 * sig_blocked: a distinctive blocked-signal mask (including realtime
 * signals and SIGTERM's neighbours, but not SIGTERM) must survive. The
 * workload waits with a plain nanosleep loop, so nothing of ours touches
 * the mask between setting it and checking it: the raw rt_sigprocmask
 * query and the SigBlk line of /proc/self/status must be unchanged.
 */
#include "zdtm.h"

#include <time.h>

static uint64_t raw_mask(void)
{
	uint64_t m = 0;

	if (syscall(SYS_rt_sigprocmask, SIG_BLOCK, NULL, &m, 8))
		pfail("rt_sigprocmask query");
	return m;
}

int main(int argc, char **argv)
{
	static const int sigs[] = { SIGHUP, SIGINT, SIGUSR1, SIGPIPE, SIGALRM, SIGCHLD,
				    SIGWINCH, SIGSYS, 0 };
	char sigblk[128], line[128];
	uint64_t want, m, bit;
	sigset_t set;

	test_init(argc, argv);
	sigemptyset(&set);
	for (int i = 0; sigs[i]; i++)
		sigaddset(&set, sigs[i]);
	sigaddset(&set, SIGRTMIN);
	sigaddset(&set, SIGRTMIN + 5);
	sigaddset(&set, SIGRTMAX);
	if (sigprocmask(SIG_SETMASK, &set, NULL))
		pfail("sigprocmask");
	want = raw_mask();
	for (int i = 0; sigs[i]; i++)
		if (!(want & (1ull << (sigs[i] - 1))))
			fail("signal %d not in the mask just set", sigs[i]);
	proc_status_line("SigBlk:", sigblk, sizeof(sigblk));

	test_daemon();
	while (!test_sigterm_received) {
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}

	m = raw_mask();
	if (m != want) {
		for (int sig = 1; sig <= 64; sig++) {
			bit = 1ull << (sig - 1);
			if ((m & bit) != (want & bit))
				fail("signal %d is %s blocked after restore (mask %#llx, expected %#llx)",
				     sig, (m & bit) ? "now" : "no longer", (unsigned long long)m,
				     (unsigned long long)want);
		}
	}
	proc_status_line("SigBlk:", line, sizeof(line));
	if (strcmp(line, sigblk))
		fail("'%s' -> '%s'", sigblk, line);
	/* The mask is in force: a blocked signal stays pending. */
	raise(SIGUSR1);
	if (sigpending(&set) || sigismember(&set, SIGUSR1) != 1)
		fail("SIGUSR1 raised while blocked is not pending");
	pass();
}
