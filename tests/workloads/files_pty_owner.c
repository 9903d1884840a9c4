/*
 * files_pty_owner: a pty pair whose slave (/dev/pts/N) was given another
 * owner and mode, as grantpt, sshd or `mesg n` do: uid 4321, gid 5,
 * mode 0600 (--uid, --gid, --mode to change). After restore: the slave
 * (maybe another /dev/pts/N) has that owner and mode, and the pair
 * still carries bytes both ways.
 */
#include "zdtm.h"

#include <termios.h>

int main(int argc, char **argv)
{
	unsigned uid = 4321, gid = 5, mode = 0600;
	struct stat st;
	char name[64], buf[8];
	int m, s;

	test_init(argc, argv);
	if (test_arg("--uid"))
		uid = strtoul(test_arg("--uid"), NULL, 0);
	if (test_arg("--gid"))
		gid = strtoul(test_arg("--gid"), NULL, 0);
	if (test_arg("--mode"))
		mode = strtoul(test_arg("--mode"), NULL, 8);
	m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || unlockpt(m) || ptsname_r(m, name, sizeof(name)))
		pfail("pty");
	s = open(name, O_RDWR | O_NOCTTY);
	if (s < 0)
		pfail("open %s", name);
	if (fchown(s, uid, gid) || fchmod(s, mode))
		pfail("fchown/fchmod %s", name);
	{
		struct termios t;

		if (tcgetattr(s, &t))
			pfail("tcgetattr");
		cfmakeraw(&t);
		if (tcsetattr(s, TCSANOW, &t))
			pfail("tcsetattr");
	}

	test_daemon();
	test_waitsig();

	if (fstat(s, &st))
		pfail("fstat the slave");
	if (st.st_uid != uid || st.st_gid != gid)
		fail("the slave is owned by %u:%u, expected %u:%u", st.st_uid, st.st_gid, uid, gid);
	if ((st.st_mode & 07777) != mode)
		fail("the slave has mode %o, expected %o", st.st_mode & 07777, mode);
	if (write(m, "ab", 2) != 2 || read(s, buf, 2) != 2 || memcmp(buf, "ab", 2))
		fail("master -> slave does not carry bytes");
	if (write(s, "cd", 2) != 2 || read(m, buf, 2) != 2 || memcmp(buf, "cd", 2))
		fail("slave -> master does not carry bytes");
	pass();
}
