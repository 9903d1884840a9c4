/*
 * files_shared_sibling: a process that shares its fd table and fs info
 * with a process of the tree that is not its parent. The root forks P;
 * P makes C with clone(CLONE_FILES | CLONE_FS | CLONE_PARENT), so C is
 * the root's child but shares P's fd table and cwd. A restore cannot
 * make that sharing (clone shares only with the parent that makes the
 * process), so the dump must refuse it and leave the tree running.
 * The log says "note: pids P C". On SIGTERM the root checks that P and C
 * still run and still share their fd table (an fd C opens is P's too),
 * stops them and passes.
 */
#include "zdtm.h"
#include <sched.h>
#include <sys/prctl.h>
#include <sys/wait.h>

static char stack[256 * 1024];
static int go[2], done[2];

static int c_main(void *arg)
{
	char ch;

	(void)arg;
	/* Gone with the root (its parent), whatever happens to the test. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (read(go[0], &ch, 1) != 1)
		_exit(10);
	if (dup2(go[0], 99) != 99)
		_exit(11);
	if (write(done[1], "c", 1) != 1)
		_exit(12);
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	pid_t p, c;
	int pc[2], st;
	char ch;

	test_init(argc, argv);
	if (pipe(go) || pipe(done) || pipe(pc))
		pfail("pipe");
	p = fork();
	if (p < 0)
		pfail("fork");
	if (p == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		pid_t k = clone(c_main, stack + sizeof(stack),
				CLONE_FILES | CLONE_FS | CLONE_PARENT | SIGCHLD, NULL);
		if (k < 0)
			_exit(20);
		if (write(pc[1], &k, sizeof(k)) != sizeof(k))
			_exit(21);
		/* P: waits for fd 99 to appear in the shared table. */
		for (;;) {
			if (fcntl(99, F_GETFD) >= 0)
				break;
			usleep(10000);
		}
		for (;;)
			pause();
	}
	if (read(pc[0], &c, sizeof(c)) != sizeof(c))
		pfail("read the pid of C");
	test_msg("pids %d %d", p, c);

	test_daemon();
	test_waitsig();

	if (kill(p, 0) || kill(c, 0))
		fail("P %d or C %d is gone", p, c);
	if (write(go[1], "g", 1) != 1)
		pfail("write go");
	if (read(done[0], &ch, 1) != 1)
		pfail("read done");
	kill(p, SIGKILL);
	kill(c, SIGKILL);
	if (waitpid(p, &st, 0) != p || waitpid(c, &st, 0) != c)
		pfail("waitpid");
	pass();
}
