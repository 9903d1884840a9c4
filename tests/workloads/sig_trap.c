/*
 * sig_trap: SIGTRAP's disposition, mask and pending state in a process
 * with threads. A restore runs its injected calls through `syscall;
 * int3` and takes the int3's SIGTRAP as the end of each call; the kernel
 * resets a blocked or ignored SIGTRAP to SIG_DFL when it forces the trap,
 * so this checks that nothing of SIGTRAP changes.
 *
 *   sig_trap --mode handler|ignore|pending --pidfile PATH
 *
 * handler: SIGTRAP has an SA_SIGINFO handler with a mask; one thread
 *   blocks SIGTRAP, the others do not.
 * ignore:  SIGTRAP is SIG_IGN.
 * pending: SIGTRAP has a handler, is blocked in every thread and pending
 *   for the process; after the restore it is still pending, and runs the
 *   handler once unblocked.
 * Every disposition 1..64 is compared with the raw rt_sigaction before
 * and after, and each thread's mask with its own before; raising SIGTRAP
 * at the end runs the handler (or nothing, when ignored).
 */
#include <pthread.h>
#include "zdtm.h"

#define THREADS 3

static struct ksigaction before[65];
static volatile sig_atomic_t trap_ran, trap_info_ok;
static volatile int done;
static sigset_t masks_before[THREADS + 1];
static volatile int mask_bad[THREADS + 1];
static volatile int checked[THREADS + 1];
static volatile int ready;

static void on_trap(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	trap_info_ok = sig == SIGTRAP && si->si_signo == SIGTRAP;
	trap_ran++;
}

static int same_mask(const sigset_t *a, const sigset_t *b)
{
	for (int sig = 1; sig <= 64; sig++)
		if (sig != SIGKILL && sig != SIGSTOP && sigismember(a, sig) != sigismember(b, sig))
			return 0;
	return 1;
}

static void *worker(void *arg)
{
	long k = (long)arg;
	sigset_t m;

	if (k == 1) {
		sigemptyset(&m);
		sigaddset(&m, SIGTRAP);
		pthread_sigmask(SIG_BLOCK, &m, NULL);
	}
	pthread_sigmask(SIG_SETMASK, NULL, &masks_before[k]);
	__atomic_add_fetch(&ready, 1, __ATOMIC_SEQ_CST);
	while (!done)
		usleep(1000);
	pthread_sigmask(SIG_SETMASK, NULL, &m);
	mask_bad[k] = !same_mask(&m, &masks_before[k]);
	checked[k] = 1;
	return NULL;
}

int main(int argc, char **argv)
{
	test_init(argc, argv);
	const char *mode = test_arg("--mode");
	if (!mode)
		fail("--mode missing");
	int ignore = !strcmp(mode, "ignore"), pending = !strcmp(mode, "pending");
	if (!ignore && !pending && strcmp(mode, "handler"))
		fail("unknown mode %s", mode);

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	if (ignore) {
		sa.sa_handler = SIG_IGN;
	} else {
		sa.sa_sigaction = on_trap;
		sa.sa_flags = SA_SIGINFO | SA_RESTART;
		sigaddset(&sa.sa_mask, SIGUSR2);
	}
	if (sigaction(SIGTRAP, &sa, NULL))
		pfail("sigaction(SIGTRAP)");
	if (pending) {
		sigset_t m;
		sigemptyset(&m);
		sigaddset(&m, SIGTRAP);
		sigprocmask(SIG_BLOCK, &m, NULL);
		/* Pending for the process (kill), not for one thread. */
		if (kill(getpid(), SIGTRAP))
			pfail("kill(SIGTRAP)");
	}
	pthread_t th[THREADS + 1];
	sigset_t term_old;
	/* Only the main thread takes the harness's SIGTERM (see zdtm.h). */
	test_term_block(&term_old);
	for (long k = 1; k <= THREADS; k++)
		if (pthread_create(&th[k], NULL, worker, (void *)k))
			fail("pthread_create");
	test_term_unblock(&term_old);
	while (__atomic_load_n(&ready, __ATOMIC_SEQ_CST) != THREADS)
		usleep(1000);
	pthread_sigmask(SIG_SETMASK, NULL, &masks_before[0]);
	ksig_get_all(before);

	test_daemon();
	test_waitsig();

	ksig_expect_same(before);
	sigset_t m;
	pthread_sigmask(SIG_SETMASK, NULL, &m);
	if (!same_mask(&m, &masks_before[0]))
		fail("the main thread's signal mask changed");
	done = 1;
	for (long k = 1; k <= THREADS; k++) {
		pthread_join(th[k], NULL);
		if (!checked[k] || mask_bad[k])
			fail("thread %ld: signal mask changed", k);
	}
	if (pending) {
		sigset_t p;
		sigpending(&p);
		if (sigismember(&p, SIGTRAP) != 1)
			fail("SIGTRAP no longer pending");
		sigemptyset(&m);
		sigaddset(&m, SIGTRAP);
		sigprocmask(SIG_UNBLOCK, &m, NULL);
		if (trap_ran != 1 || !trap_info_ok)
			fail("pending SIGTRAP: handler ran %d times, siginfo ok %d", trap_ran,
			     trap_info_ok);
		trap_ran = 0;
	}
	raise(SIGTRAP);
	if (ignore ? trap_ran != 0 : trap_ran != 1 || !trap_info_ok)
		fail("raise(SIGTRAP): handler ran %d times, siginfo ok %d", trap_ran, trap_info_ok);
	pass();
}
