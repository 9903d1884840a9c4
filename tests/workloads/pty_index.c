/*
 * pty_index: a pty pair comes back with its index (/dev/pts/N), as CRIU
 * restores it. Three masters are opened and the first two closed, so the
 * kept pair's index is above free ones (a restore that takes the next free
 * index gets another one). Its slave is the controlling terminal of the
 * workload (a session leader), so /proc/self/stat's tty_nr names it too.
 * Checked after restore: ptsname of the master, the slave fd's link, the
 * slave's device number and tty_nr are what they were.
 */
#include "zdtm.h"

#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <termios.h>

static void check(int m, int s, const char *name, dev_t rdev)
{
	char link[64], target[256], *now = ptsname(m);
	struct stat st;
	ssize_t n;

	if (!now)
		pfail("ptsname");
	if (strcmp(now, name))
		fail("the master is now %s, it was %s", now, name);
	snprintf(link, sizeof(link), "/proc/self/fd/%d", s);
	n = readlink(link, target, sizeof(target) - 1);
	if (n < 0)
		pfail("readlink");
	target[n] = 0;
	if (strcmp(target, name))
		fail("the slave fd is now %s, it was %s", target, name);
	if (fstat(s, &st))
		pfail("fstat");
	if (st.st_rdev != rdev)
		fail("the slave is now device %u:%u, it was %u:%u", major(st.st_rdev),
		     minor(st.st_rdev), major(rdev), minor(rdev));
	if (proc_stat_field(7) != rdev)
		fail("tty_nr is now %llu, it was %llu (%s)", proc_stat_field(7),
		     (unsigned long long)rdev, name);
}

int main(int argc, char **argv)
{
	char name[64];
	struct stat st;
	int a, b, m, s;

	test_init(argc, argv);
	a = posix_openpt(O_RDWR | O_NOCTTY);
	b = posix_openpt(O_RDWR | O_NOCTTY);
	m = posix_openpt(O_RDWR | O_NOCTTY);
	if (a < 0 || b < 0 || m < 0)
		pfail("posix_openpt");
	close(a);
	close(b);
	if (grantpt(m) || unlockpt(m))
		pfail("grantpt/unlockpt");
	snprintf(name, sizeof(name), "%s", ptsname(m));
	s = open(name, O_RDWR);
	if (s < 0)
		pfail("open %s", name);
	if (ioctl(s, TIOCSCTTY, 0))
		pfail("TIOCSCTTY");
	if (fstat(s, &st))
		pfail("fstat");
	check(m, s, name, st.st_rdev);
	test_msg("pty %s", name);
	test_daemon();
	test_waitsig();
	check(m, s, name, st.st_rdev);
	pass();
}
