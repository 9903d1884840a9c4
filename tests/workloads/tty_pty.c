/*
 * tty_pty: pseudo-terminals the tree owns.
 *  - pair A: master and slave open; slave termios changed (no echo, VERASE,
 *    no ONLCR), a window size; lines typed into the master and not read
 *    yet, output written to the slave and not read yet; packet mode on the
 *    master; exclusive mode on the slave;
 *  - pair B: locked after its slave was opened (TIOCSPTLCK);
 *  - a child in a session of its own with pair A's slave as controlling
 *    terminal and its process group in the foreground.
 * After restore the pty index may differ: the slave fd must be the slave of
 * the master fd (ptsname), and everything above must hold.
 */
#include "zdtm.h"

#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>

static void same_pair(int m, int s, const char *what)
{
	char *name = ptsname(m), link[64], target[256];
	struct stat a, b;
	ssize_t n;

	if (!name)
		pfail("%s: ptsname", what);
	if (stat(name, &a) || fstat(s, &b))
		pfail("%s: stat", what);
	if (a.st_rdev != b.st_rdev)
		fail("%s: the slave fd is not the slave of the master (%s)", what, name);
	snprintf(link, sizeof(link), "/proc/self/fd/%d", s);
	n = readlink(link, target, sizeof(target) - 1);
	if (n < 0)
		pfail("readlink");
	target[n] = 0;
	if (strcmp(target, name))
		fail("%s: slave fd links to %s, ptsname says %s", what, target, name);
}

static int child_main(int s)
{
	sigset_t set;
	int sig, tty;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	if (sigwait(&set, &sig))
		return 10;
	if (tcgetsid(s) != getpid())
		return 11;
	if (tcgetpgrp(s) != getpgrp())
		return 12;
	tty = open("/dev/tty", O_RDWR);
	if (tty < 0)
		return 13;
	if (write(tty, "via-dev-tty\n", 12) != 12)
		return 14;
	return 0;
}

static void expect_read(int fd, const char *want, const char *what)
{
	char buf[256];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);

	if (n < 0)
		pfail("%s: read", what);
	buf[n] = 0;
	if (strcmp(buf, want))
		fail("%s: got \"%s\" (%zd bytes), want \"%s\"", what, buf, n, want);
}

int main(int argc, char **argv)
{
	struct winsize ws = { .ws_row = 33, .ws_col = 101, .ws_xpixel = 7, .ws_ypixel = 9 }, ws2;
	struct termios t, t2;
	int ma, sa, mb, sb, one = 1, v, sv[2];
	pid_t child;
	sigset_t usr1;

	test_init(argc, argv);
	ma = posix_openpt(O_RDWR | O_NOCTTY);
	if (ma < 0 || grantpt(ma) || unlockpt(ma))
		pfail("pty A");
	sa = open(ptsname(ma), O_RDWR | O_NOCTTY);
	mb = posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK);
	if (sa < 0 || mb < 0 || grantpt(mb) || unlockpt(mb))
		pfail("pty B");
	sb = open(ptsname(mb), O_RDWR | O_NOCTTY);
	if (sb < 0)
		pfail("open slave B");
	if (ioctl(mb, TIOCSPTLCK, &one))
		pfail("TIOCSPTLCK");

	if (tcgetattr(sa, &t))
		pfail("tcgetattr");
	t.c_lflag &= ~(ECHO | ECHOE);
	t.c_oflag &= ~ONLCR;
	t.c_cc[VERASE] = 0x08;
	t.c_cc[VKILL] = 0x15;
	if (tcsetattr(sa, TCSANOW, &t) || ioctl(sa, TIOCSWINSZ, &ws))
		pfail("tcsetattr/TIOCSWINSZ");
	if (write(ma, "line-one\nline-two\n", 18) != 18)
		pfail("write master");
	if (write(sa, "out-1\n", 6) != 6)
		pfail("write slave");
	if (ioctl(ma, TIOCPKT, &one) || ioctl(sa, TIOCEXCL))
		pfail("TIOCPKT/TIOCEXCL");
	usleep(20000);

	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, NULL);
	if (pipe(sv))
		pfail("pipe");
	child = fork();
	if (child < 0)
		pfail("fork");
	if (child == 0) {
		if (setsid() < 0 || ioctl(sa, TIOCSCTTY, 0) || tcsetpgrp(sa, getpid()))
			exit(20);
		close(sv[0]);
		if (write(sv[1], "k", 1) != 1)
			exit(21);
		exit(child_main(sa));
	}
	close(sv[1]);
	char k;
	if (read(sv[0], &k, 1) != 1)
		fail("child could not take pair A as its controlling terminal");

	test_daemon();
	test_waitsig();

	same_pair(ma, sa, "pair A");
	same_pair(mb, sb, "pair B");
	if (tcgetattr(sa, &t2))
		pfail("tcgetattr");
	if (t2.c_lflag != t.c_lflag || t2.c_oflag != t.c_oflag || t2.c_iflag != t.c_iflag ||
	    t2.c_cc[VERASE] != 0x08 || t2.c_cc[VKILL] != 0x15)
		fail("termios of slave A changed (lflag %o/%o oflag %o/%o)", t2.c_lflag, t.c_lflag,
		     t2.c_oflag, t.c_oflag);
	if (ioctl(ma, TIOCGWINSZ, &ws2) || ws2.ws_row != 33 || ws2.ws_col != 101 ||
	    ws2.ws_xpixel != 7 || ws2.ws_ypixel != 9)
		fail("window size %dx%d", ws2.ws_row, ws2.ws_col);
	if (ioctl(ma, TIOCGPKT, &v) || !v)
		fail("packet mode lost");
	if (ioctl(sa, TIOCGEXCL, &v) || !v)
		fail("exclusive mode lost");
	if (ioctl(mb, TIOCGPTLCK, &v) || !v)
		fail("pair B is no longer locked");
	if (ioctl(ma, TIOCGPTLCK, &v) || v)
		fail("pair A is locked");
	if (!(fcntl(mb, F_GETFL) & O_NONBLOCK) || (fcntl(ma, F_GETFL) & O_NONBLOCK))
		fail("master file flags");

	/* Typed lines, one per read (canonical mode). */
	expect_read(sa, "line-one\n", "slave A line 1");
	expect_read(sa, "line-two\n", "slave A line 2");
	/* Output, after the packet-mode header byte (TIOCPKT_DATA). */
	char buf[64];
	ssize_t n = read(ma, buf, sizeof(buf) - 1);
	if (n < 1 || buf[0] != TIOCPKT_DATA)
		fail("master A: no packet-mode data read (%zd)", n);
	buf[n] = 0;
	if (strcmp(buf + 1, "out-1\n"))
		fail("master A: got \"%s\", want \"out-1\\n\"", buf + 1);

	/* The child's session and terminal. */
	if (kill(child, SIGUSR1))
		pfail("kill");
	int status;
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status))
		fail("the child in the pty's session failed (status %#x)", status);
	n = read(ma, buf, sizeof(buf) - 1);
	if (n < 1)
		pfail("read master A");
	buf[n] = 0;
	if (strcmp(buf + 1, "via-dev-tty\n"))
		fail("master A: got \"%s\" from the child's /dev/tty", buf + 1);

	/* Still a working pair: no echo, ONLCR off. */
	if (write(ma, "again\n", 6) != 6)
		pfail("write");
	expect_read(sa, "again\n", "slave A after restore");
	pass();
}
