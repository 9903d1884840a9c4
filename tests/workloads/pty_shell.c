/*
 * pty_shell: a stand-in for an interactive shell, for the --shell-job
 * tests (not a workload itself).
 * Usage: pty_shell [--stay] [--no-job-control] SLAVE PROG [ARGS...]
 * Becomes a session leader with the terminal SLAVE as its controlling
 * terminal, and runs PROG as a job: in a process group of its own, in the
 * foreground, with stdin, stdout and stderr on the terminal. Waits for it
 * and exits with its exit code (128 + signal if it was killed); with --stay
 * it stays (the session and its terminal with it) until it is killed, as an
 * interactive shell does. With --no-job-control, PROG stays in the shell's
 * own process group (the foreground one), as a non-interactive shell
 * leaves the commands it runs.
 */
#include "zdtm.h"

#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>

int main(int argc, char **argv)
{
	int t, st, stay = 0, jobs = 1;
	pid_t c;

	if (argc > 1 && !strcmp(argv[1], "--stay")) {
		stay = 1;
		argv++;
		argc--;
	}
	if (argc > 1 && !strcmp(argv[1], "--no-job-control")) {
		jobs = 0;
		argv++;
		argc--;
	}
	if (argc < 3) {
		fprintf(stderr, "usage: %s SLAVE PROG [ARGS...]\n", argv[0]);
		return 2;
	}
	if (setsid() < 0)
		pfail("setsid");
	t = open(argv[1], O_RDWR);
	if (t < 0 || ioctl(t, TIOCSCTTY, 0))
		pfail("controlling terminal %s", argv[1]);
	/* A shell in the background of its own terminal. */
	signal(SIGTTOU, SIG_IGN);
	c = fork();
	if (c < 0)
		pfail("fork");
	if (c == 0) {
		if (jobs) {
			setpgid(0, 0);
			tcsetpgrp(t, getpid());
		}
		signal(SIGTTOU, SIG_DFL);
		dup2(t, 0);
		dup2(t, 1);
		dup2(t, 2);
		close(t);
		execv(argv[2], argv + 2);
		_exit(127);
	}
	if (jobs) {
		setpgid(c, c);
		tcsetpgrp(t, c);
	}
	while (waitpid(c, &st, 0) < 0)
		if (errno != EINTR)
			pfail("waitpid");
	while (stay)
		pause();
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
