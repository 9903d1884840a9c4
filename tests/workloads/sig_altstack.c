/*
 * sig_altstack: an alternate signal stack (malloc'd) set with sigaltstack.
 * After restore the sigaltstack query returns the same stack, and a handler
 * installed with SA_ONSTACK runs on it (a local variable of the handler lies
 * inside the stack, and SS_ONSTACK is reported inside the handler).
 */
#include "zdtm.h"

#define ALT_SIZE (64 * 1024)

static uint8_t *alt;
static volatile uintptr_t handler_local;
static volatile int handler_onstack;
static volatile sig_atomic_t handler_ran;

static void on_usr1(int sig)
{
	volatile int local = sig;
	stack_t cur;

	handler_local = (uintptr_t)&local;
	handler_onstack = sigaltstack(NULL, &cur) == 0 && (cur.ss_flags & SS_ONSTACK);
	handler_ran++;
}

static void check_runs_on_altstack(const char *when)
{
	int before = handler_ran;

	handler_local = 0;
	handler_onstack = 0;
	raise(SIGUSR1);
	if (handler_ran != before + 1)
		fail("SA_ONSTACK handler did not run %s", when);
	if (handler_local < (uintptr_t)alt || handler_local >= (uintptr_t)alt + ALT_SIZE)
		fail("handler local at %#lx is outside the altstack %p..%p %s",
		     (unsigned long)handler_local, (void *)alt, (void *)(alt + ALT_SIZE), when);
	if (!handler_onstack)
		fail("sigaltstack did not report SS_ONSTACK inside the handler %s", when);
}

int main(int argc, char **argv)
{
	stack_t ss, q;
	struct sigaction sa;
	int local;

	test_init(argc, argv);
	alt = malloc(ALT_SIZE);
	if (!alt)
		pfail("malloc");
	memset(alt, 0xa5, ALT_SIZE);
	ss.ss_sp = alt;
	ss.ss_size = ALT_SIZE;
	ss.ss_flags = 0;
	if (sigaltstack(&ss, NULL))
		pfail("sigaltstack");
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL))
		pfail("sigaction");
	check_runs_on_altstack("before the dump");

	test_daemon();
	test_waitsig();

	if (sigaltstack(NULL, &q))
		pfail("sigaltstack query");
	if (q.ss_sp != (void *)alt || q.ss_size != ALT_SIZE || q.ss_flags != 0)
		fail("sigaltstack is sp %p size %zu flags %#x, expected %p %d 0", q.ss_sp,
		     q.ss_size, q.ss_flags, (void *)alt, ALT_SIZE);
	if ((uintptr_t)&local >= (uintptr_t)alt && (uintptr_t)&local < (uintptr_t)alt + ALT_SIZE)
		fail("main() runs on the altstack");
	check_runs_on_altstack("after restore");
	pass();
}
