/*
 * tree_fork_on_signal: a root that forks one child per SIGUSR1, so that a
 * test decides when a process is born (e.g. while cairn is freezing the
 * tree). It starts with --children N (default 2) children. Every child
 * blocks reading a pipe that the root closes at the go, then exits with
 * a code of its own (its index + 1). After the go the root checks that
 * every child it forked is still its child (ppid), closes the pipe,
 * reaps each with its code, finds no other child, reports how many it
 * forked on SIGUSR1 ("forked N children, M on SIGUSR1") and passes.
 */
#include "tree.h"

#define MAXKIDS 64

static volatile sig_atomic_t usr1_count;
static pid_t kids[MAXKIDS];
static int nkids;
static int pipefd[2];

static void on_usr1(int sig)
{
	(void)sig;
	usr1_count++;
}

static void fork_kid(void)
{
	int code = nkids + 1;
	pid_t p;

	if (nkids >= MAXKIDS)
		fail("more than %d children asked for", MAXKIDS);
	p = xfork();
	if (p == 0) {
		char c;
		ssize_t r;

		close(pipefd[1]);
		do
			r = read(pipefd[0], &c, 1);
		while (r < 0 && errno == EINTR);
		if (r != 0)
			_exit(100);
		_exit(code);
	}
	kids[nkids++] = p;
}

int main(int argc, char **argv)
{
	const char *n_arg;
	int initial = 2, handled = 0;
	sigset_t block, wait;
	struct sigaction sa;
	pid_t me;

	test_init(argc, argv);
	n_arg = test_arg("--children");
	if (n_arg)
		initial = atoi(n_arg);
	me = getpid();
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL))
		pfail("sigaction(SIGUSR1)");
	/* SIGUSR1 and SIGTERM only arrive in sigsuspend: no lost wake-up. */
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigaddset(&block, SIGTERM);
	if (sigprocmask(SIG_BLOCK, &block, &wait))
		pfail("sigprocmask");
	sigdelset(&wait, SIGUSR1);
	sigdelset(&wait, SIGTERM);
	if (pipe(pipefd))
		pfail("pipe");
	for (int i = 0; i < initial; i++)
		fork_kid();
	test_daemon();
	while (!test_sigterm_received) {
		while (handled < usr1_count) {
			fork_kid();
			handled++;
		}
		if (!test_sigterm_received)
			sigsuspend(&wait);
	}
	while (handled < usr1_count) {
		fork_kid();
		handled++;
	}

	if (getpid() != me)
		fail("getpid() = %d, was %d", getpid(), me);
	for (int i = 0; i < nkids; i++) {
		pid_t pp = 0;
		char s = proc_state(kids[i], &pp);

		if (pp != me)
			fail("child %d (state '%c') has ppid %d, expected %d", kids[i], s, pp, me);
	}
	close(pipefd[0]);
	close(pipefd[1]);
	for (int i = 0; i < nkids; i++)
		expect_exit(kids[i], "child", i + 1);
	expect_no_children();
	test_msg("forked %d children, %d on SIGUSR1", nkids, handled);
	pass();
}
