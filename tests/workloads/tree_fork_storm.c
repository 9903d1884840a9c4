/*
 * tree_fork_storm: a root that keeps forking short-lived children.
 *
 * The root forks a child about every 0.5 ms; each child exits at once or
 * after 1 ms with a known exit code. The root reaps with waitpid(-1,
 * WNOHANG), and tracks every live (or zombie) child with its expected
 * code; the invariant forked == reaped + live is checked after every step.
 * It reports readiness after 50 forks and keeps forking; the harness dumps
 * it mid-storm. After the go it first checks that every child it tracks
 * is still its child (running or a zombie), forks 300 more, reaps
 * everything and checks: each reaped pid was one it forked and tracked,
 * with the right exit code; fork never returned a pid it still tracked;
 * nothing is left (ECHILD); forked == reaped.
 */
#include "tree.h"

#include <sys/wait.h>
#include <time.h>

#define MAXLIVE 512
#define AFTER_GO 300

struct kid {
	pid_t pid;
	int code;
};

static struct kid live[MAXLIVE];
static int nlive;
static long forked, reaped;

static void check_invariant(const char *where)
{
	if (forked != reaped + nlive)
		fail("%s: forked %ld != reaped %ld + live %d", where, forked, reaped, nlive);
}

/* Reap one child (block) or all exited ones (no block). */
static void reap(int block)
{
	for (;;) {
		int st, i;
		pid_t p = waitpid(-1, &st, block ? 0 : WNOHANG);

		if (p == 0)
			return;
		if (p < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ECHILD) {
				if (nlive)
					fail("waitpid: ECHILD, but %d children are tracked as live "
					     "(first: pid %d)", nlive, live[0].pid);
				return;
			}
			pfail("waitpid(-1)");
		}
		for (i = 0; i < nlive && live[i].pid != p; i++)
			;
		if (i == nlive)
			fail("reaped pid %d (status %#x), which is not a child I forked and track", p,
			     st);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != live[i].code)
			fail("child %d: wait status %#x, expected exit code %d", p, st, live[i].code);
		live[i] = live[--nlive];
		reaped++;
		check_invariant("after a reap");
		if (block)
			return;
	}
}

static void fork_one(void)
{
	int code = (int)(forked % 100) + 1;
	int nap = (int)(forked % 2);
	pid_t p;

	while (nlive >= MAXLIVE)
		reap(1);
	p = fork();
	if (p < 0) {
		if (errno == EAGAIN) {
			reap(1);
			return;
		}
		pfail("fork");
	}
	if (p == 0) {
		if (nap) {
			struct timespec ts = { 0, 1000000 };

			nanosleep(&ts, NULL);
		}
		_exit(code);
	}
	for (int i = 0; i < nlive; i++)
		if (live[i].pid == p)
			fail("fork returned pid %d, which is still tracked as a live child", p);
	live[nlive].pid = p;
	live[nlive].code = code;
	nlive++;
	forked++;
	check_invariant("after a fork");
}

static void pace(void)
{
	struct timespec ts = { 0, 500000 };

	nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
	long at_go;
	pid_t me;
	int st;

	test_init(argc, argv);
	me = getpid();
	fflush(NULL);
	for (int i = 0; i < 50; i++) {
		fork_one();
		reap(0);
		pace();
	}
	test_daemon();
	while (!test_sigterm_received) {
		fork_one();
		reap(0);
		pace();
	}

	if (getpid() != me)
		fail("getpid() = %d, was %d", getpid(), me);
	check_invariant("after the go");
	at_go = forked;
	/* Everything tracked must still be my child: running or a zombie. */
	for (int i = 0; i < nlive; i++) {
		pid_t pp = 0;
		char s = proc_state(live[i].pid, &pp);

		if (pp != me)
			fail("tracked child %d (state '%c') has ppid %d, expected %d", live[i].pid, s,
			     pp, me);
	}
	test_msg("at the go: forked %ld, reaped %ld, live %d", forked, reaped, nlive);
	for (int i = 0; i < AFTER_GO; i++) {
		fork_one();
		reap(0);
		pace();
	}
	while (nlive)
		reap(1);
	if (waitpid(-1, &st, WNOHANG) != -1 || errno != ECHILD)
		fail("children left after reaping every tracked one");
	if (forked != reaped || forked != at_go + AFTER_GO)
		fail("forked %ld, reaped %ld, expected %ld forks", forked, reaped, at_go + AFTER_GO);
	test_msg("done: forked %ld, reaped %ld", forked, reaped);
	pass();
}
