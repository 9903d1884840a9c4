/*
 * proc_stopped: a child stopped by SIGTSTP. The child makes its own
 * process group (so that the group is not orphaned and SIGTSTP stops it)
 * and the parent sends it SIGTSTP, waiting until /proc shows it stopped
 * (without collecting the stop with waitpid). After the restore the
 * parent's waitpid(WUNTRACED) must report it stopped by SIGTSTP (not
 * SIGSTOP); SIGCONT lets it go on, and it exits with 0 after checking
 * that it was continued.
 */
#include "zdtm.h"

#include <sys/wait.h>

static volatile sig_atomic_t conts;

static void on_cont(int sig)
{
	(void)sig;
	conts++;
}

int main(int argc, char **argv)
{
	test_init(argc, argv);
	signal(SIGCONT, on_cont);
	pid_t c = fork();
	if (c < 0)
		pfail("fork");
	if (c == 0) {
		if (setpgid(0, 0))
			_exit(2);
		while (!conts)
			usleep(1000);
		_exit(0);
	}
	if (setpgid(c, c) && errno != EACCES)
		pfail("setpgid");
	char path[64], st[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", c);
	for (int i = 0;; i++) {
		read_file(path, st, sizeof(st));
		char *p = strrchr(st, ')');
		if (p && getpgid(c) == c && (p[2] == 'S' || p[2] == 'R'))
			break;
		if (i > 5000)
			fail("child not ready");
		usleep(1000);
	}
	if (kill(c, SIGTSTP))
		pfail("SIGTSTP");
	for (int i = 0;; i++) {
		read_file(path, st, sizeof(st));
		char *p = strrchr(st, ')');
		if (p && p[2] == 'T')
			break;
		if (i > 5000)
			fail("child not stopped by SIGTSTP");
		usleep(1000);
	}

	test_daemon();
	test_waitsig();

	int ws;
	pid_t r = waitpid(c, &ws, WUNTRACED | WNOHANG);
	if (r != c)
		fail("waitpid(WUNTRACED) returned %d: the child is not reported stopped", r);
	if (!WIFSTOPPED(ws) || WSTOPSIG(ws) != SIGTSTP)
		fail("child status %#x: expected stopped by SIGTSTP (%d), got signal %d", ws,
		     SIGTSTP, WIFSTOPPED(ws) ? WSTOPSIG(ws) : -1);
	if (kill(c, SIGCONT))
		pfail("SIGCONT");
	if (waitpid(c, &ws, 0) != c)
		pfail("waitpid");
	if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
		fail("child status %#x after SIGCONT", ws);
	pass();
}
