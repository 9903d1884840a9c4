/*
 * tty_shell: a job started from a shell (tests/workloads/pty_shell.c): its
 * stdin, stdout and stderr are the shell's terminal, its process group is
 * the terminal's foreground group, its session is the shell's. It puts the
 * terminal in a raw-ish mode (no ICANON, ECHO or ISIG; VMIN 1, VTIME 0) and
 * prints "ready". After SIGTERM (restored with --shell-job into another
 * terminal) it checks that stdin is still a terminal with those settings,
 * that it is in the foreground and not a session leader, prints "say
 * something", reads a line from the terminal (wants "pong") and prints
 * PASS. All output goes to the terminal.
 */
#include "zdtm.h"

#include <poll.h>
#include <termios.h>

int main(int argc, char **argv)
{
	struct termios t, t2;
	char line[64];
	size_t n = 0;

	test_init(argc, argv);
	if (!isatty(0) || !isatty(1))
		fail("stdin/stdout are not a terminal");
	if (getsid(0) == getpid())
		fail("started as a session leader, not as a job of a shell");
	if (tcgetattr(0, &t))
		pfail("tcgetattr");
	t.c_lflag &= ~(ICANON | ECHO | ISIG);
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 0;
	if (tcsetattr(0, TCSANOW, &t))
		pfail("tcsetattr");
	printf("ready\n");
	fflush(stdout);

	test_daemon();
	test_waitsig();

	if (!isatty(0) || !isatty(1) || !isatty(2))
		fail("stdio is not a terminal after restore");
	if (!ttyname(0))
		fail("ttyname(0) is unknown");
	if (tcgetattr(0, &t2))
		pfail("tcgetattr after restore");
	if ((t2.c_lflag & (ICANON | ECHO | ISIG)) || t2.c_cc[VMIN] != 1 || t2.c_cc[VTIME] != 0)
		fail("terminal settings lost (lflag %o, VMIN %d, VTIME %d)", t2.c_lflag,
		     t2.c_cc[VMIN], t2.c_cc[VTIME]);
	if (tcgetpgrp(0) != getpgrp())
		fail("not in the foreground of its terminal (foreground %d, own group %d)",
		     tcgetpgrp(0), getpgrp());
	if (getsid(0) == getpid())
		fail("restored as a session leader");
	printf("say something\n");
	fflush(stdout);
	while (n < sizeof(line) - 1) {
		struct pollfd p = { .fd = 0, .events = POLLIN };
		if (poll(&p, 1, 20000) != 1)
			fail("nothing to read from the terminal");
		if (read(0, line + n, 1) != 1)
			pfail("read the terminal");
		if (line[n] == '\n' || line[n] == '\r')
			break;
		n++;
	}
	line[n] = 0;
	if (strcmp(line, "pong"))
		fail("read \"%s\" from the terminal, want \"pong\"", line);
	pass();
}
