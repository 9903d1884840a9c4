/*
 * files_proc: files opened through /proc. fd A is /proc/self/status
 * (the kernel names it /proc/PID/status: the process's own, which comes
 * back with its pid). With --other PID it also holds /proc/PID/status of
 * a process outside the tree, which a dump must refuse.
 * After restore: fd A is the restored process's status file (its "Pid:"
 * line is getpid()), at offset 0, read-only.
 */
#include "zdtm.h"

static long pid_in(int fd)
{
	char buf[4096], *p;
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	if (n <= 0)
		pfail("read the status file");
	buf[n] = 0;
	p = strstr(buf, "\nPid:");
	if (!p)
		fail("no Pid: line");
	return strtol(p + 5, NULL, 10);
}

int main(int argc, char **argv)
{
	const char *other;
	int a, b = -1;

	test_init(argc, argv);
	a = open("/proc/self/status", O_RDONLY);
	if (a < 0)
		pfail("open /proc/self/status");
	other = test_arg("--other");
	if (other) {
		char p[64];

		snprintf(p, sizeof(p), "/proc/%s/status", other);
		b = open(p, O_RDONLY);
		if (b < 0)
			pfail("open %s", p);
	}
	if (pid_in(a) != getpid())
		fail("/proc/self/status is not our own");

	test_daemon();
	test_waitsig();

	if (pid_in(a) != getpid())
		fail("fd %d reads the status of pid %ld, not ours (%d)", a, pid_in(a), getpid());
	if ((fcntl(a, F_GETFL) & O_ACCMODE) != O_RDONLY)
		fail("fd %d is not read-only", a);
	if (b >= 0)
		close(b);
	pass();
}
