/*
 * tree_fork_on_signal: a root that forks one child per SIGUSR1, so that a
 * test decides when a process is born (e.g. while cairn is freezing the
 * tree). It starts with --children N (default 2) children. Every child
 * blocks reading a pipe that the root closes at the go, then exits with
 * a code of its own (its index + 1). After the go the root checks that
 * every child it forked is still its child (ppid), closes the pipe,
 * reaps each with its code, finds no other child, reports how many it
 * forked on SIGUSR1 ("forked N children, M on SIGUSR1") and passes.
 *
 * With --middle the root is a child subreaper and also starts a middle
 * process that forks a grandchild (which waits on the pipe like the
 * children, exit code 50). At the first SIGUSR1 the root kills the middle
 * process, reaps it, checks that the grandchild is now its own child
 * ("grandchild adopted"), and only then forks the new child: whoever
 * waits for that fork sees a tree whose grandchild changed parents since
 * it last looked. The grandchild is checked and reaped like the children.
 *
 * With --thread each SIGUSR1 starts a thread instead of a child; the
 * threads wait on a condition variable until the go, then return their
 * number, which the root checks when it joins them ("joined N threads").
 */
#include "tree.h"

#include <pthread.h>
#include <sys/prctl.h>

#define MAXKIDS 64

static volatile sig_atomic_t usr1_count;
static pid_t kids[MAXKIDS];
static int codes[MAXKIDS];
static int nkids;
static int pipefd[2];

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int go;
static pthread_t threads[MAXKIDS];
static int nthreads;

static void *thread_main(void *arg)
{
	pthread_mutex_lock(&mu);
	while (!go)
		pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
	return arg;
}

static void start_thread(void)
{
	int err;

	if (nthreads >= MAXKIDS)
		fail("more than %d threads", MAXKIDS);
	err = pthread_create(&threads[nthreads], NULL, thread_main,
			     (void *)(long)(nthreads + 1000));
	if (err) {
		errno = err;
		pfail("pthread_create");
	}
	nthreads++;
}

static void join_threads(void)
{
	pthread_mutex_lock(&mu);
	go = 1;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
	for (int i = 0; i < nthreads; i++) {
		void *ret;
		int err = pthread_join(threads[i], &ret);

		if (err) {
			errno = err;
			pfail("pthread_join");
		}
		if ((long)ret != i + 1000)
			fail("thread %d returned %ld, expected %d", i, (long)ret, i + 1000);
	}
	test_msg("joined %d threads", nthreads);
}

static void on_usr1(int sig)
{
	(void)sig;
	usr1_count++;
}

static void __attribute__((noreturn)) wait_on_pipe_and_exit(int code)
{
	char c;
	ssize_t r;

	close(pipefd[1]);
	do
		r = read(pipefd[0], &c, 1);
	while (r < 0 && errno == EINTR);
	_exit(r == 0 ? code : 100);
}

static void track(pid_t p, int code)
{
	if (nkids >= MAXKIDS)
		fail("more than %d children", MAXKIDS);
	kids[nkids] = p;
	codes[nkids++] = code;
}

static void fork_kid(void)
{
	int code = nkids + 1;
	pid_t p = xfork();

	if (p == 0)
		wait_on_pipe_and_exit(code);
	track(p, code);
}

/* The middle process: forks the grandchild, reports its pid, sleeps. */
static pid_t start_middle(pid_t *grandchild)
{
	int gp[2];
	pid_t m;

	if (pipe(gp))
		pfail("pipe");
	m = xfork();
	if (m == 0) {
		pid_t g = xfork();

		if (g == 0)
			wait_on_pipe_and_exit(50);
		if (write(gp[1], &g, sizeof(g)) != sizeof(g))
			_exit(101);
		for (;;)
			pause();
	}
	if (read(gp[0], grandchild, sizeof(*grandchild)) != sizeof(*grandchild))
		pfail("read the grandchild's pid");
	close(gp[0]);
	close(gp[1]);
	return m;
}

/* Kills the middle process, reaps it; the grandchild must be ours now. */
static void end_middle(pid_t m, pid_t g, pid_t me)
{
	pid_t pp = 0;
	int st;

	if (kill(m, SIGKILL))
		pfail("kill the middle process %d", m);
	st = wait_child(m, "middle", 20);
	if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
		fail("middle process %d: wait status %#x, expected SIGKILL", m, st);
	proc_state(g, &pp);
	if (pp != me)
		fail("grandchild %d has ppid %d after its parent died, expected %d (subreaper)", g,
		     pp, me);
	track(g, 50);
	test_msg("grandchild adopted");
}

int main(int argc, char **argv)
{
	const char *n_arg;
	int initial = 2, handled = 0, middle, thread;
	pid_t mid = 0, grandchild = 0;
	sigset_t block, wait;
	struct sigaction sa;
	pid_t me;

	test_init(argc, argv);
	n_arg = test_arg("--children");
	if (n_arg)
		initial = atoi(n_arg);
	middle = test_flag("--middle");
	thread = test_flag("--thread");
	me = getpid();
	if (middle && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
		pfail("PR_SET_CHILD_SUBREAPER");
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
	if (middle)
		mid = start_middle(&grandchild);
	test_daemon();
	for (;;) {
		while (handled < usr1_count) {
			if (mid) {
				end_middle(mid, grandchild, me);
				mid = 0;
			}
			if (thread)
				start_thread();
			else
				fork_kid();
			handled++;
		}
		if (test_sigterm_received)
			break;
		sigsuspend(&wait);
	}

	if (getpid() != me)
		fail("getpid() = %d, was %d", getpid(), me);
	if (mid)
		fail("the go came before any SIGUSR1: the middle process %d still runs", mid);
	for (int i = 0; i < nkids; i++) {
		pid_t pp = 0;
		char s = proc_state(kids[i], &pp);

		if (pp != me)
			fail("child %d (state '%c') has ppid %d, expected %d", kids[i], s, pp, me);
	}
	join_threads();
	close(pipefd[0]);
	close(pipefd[1]);
	for (int i = 0; i < nkids; i++)
		expect_exit(kids[i], "child", codes[i]);
	expect_no_children();
	test_msg("forked %d children, %d on SIGUSR1", nkids - (grandchild ? 1 : 0), handled);
	pass();
}
