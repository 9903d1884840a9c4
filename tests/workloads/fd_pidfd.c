/* fd_pidfd: pidfds come back referring to the same processes.
 *   c: pidfd (PIDFD_NONBLOCK) of a child that waits: still signals it,
 *      waitid(P_PIDFD) reaps it.
 *   self: pidfd of the process itself.
 *   dead: pidfd of a child that exited with 7 and was reaped: "Pid: -1",
 *      no signal, POLLIN, and (where the kernel tells, PIDFD_GET_INFO)
 *      exit status 7.
 * --outside: only a pidfd of init (outside the tree), which the dump must
 * refuse. */
#include "zdtm.h"
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/wait.h>

#ifndef PIDFD_NONBLOCK
#define PIDFD_NONBLOCK O_NONBLOCK
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif

/* struct pidfd_info, version 0 (64 bytes); PIDFD_GET_INFO (6.13 on). */
struct pinfo {
	uint64_t mask, cgroupid;
	uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
	int32_t exit_code;
};
#define PIDFD_GET_INFO_ _IOWR(0xFF, 11, struct pinfo)
#define PIDFD_INFO_EXIT_ (1UL << 3)

/* The exit status the pidfd reports, or -1000 when the kernel does not. */
static int exit_info(int fd)
{
	struct pinfo i = {.mask = PIDFD_INFO_EXIT_};

	if (ioctl(fd, PIDFD_GET_INFO_, &i) || !(i.mask & PIDFD_INFO_EXIT_))
		return -1000;
	return i.exit_code;
}

static int fdinfo_pid(int fd)
{
	char path[64], line[256];
	int pid = -2;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	FILE *f = fopen(path, "r");
	if (!f)
		pfail("%s", path);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Pid: %d", &pid) == 1)
			break;
	fclose(f);
	return pid;
}

static int send0(int fd)
{
	return (int)syscall(SYS_pidfd_send_signal, fd, 0, NULL, 0);
}

int main(int argc, char **argv)
{
	test_init(argc, argv);
	if (test_flag("--outside")) {
		int init = (int)syscall(SYS_pidfd_open, 1, 0);
		if (init != 3)
			fail("pidfd of init is fd %d, not 3", init);
		test_daemon();
		test_waitsig();
		pass();
	}

	pid_t c = fork();
	if (c < 0)
		pfail("fork");
	if (c == 0) {
		for (;;)
			pause();
	}
	pid_t d = fork();
	if (d < 0)
		pfail("fork");
	if (d == 0)
		_exit(7);
	int cfd = (int)syscall(SYS_pidfd_open, c, PIDFD_NONBLOCK);
	int self = (int)syscall(SYS_pidfd_open, getpid(), 0);
	int dead = (int)syscall(SYS_pidfd_open, d, 0);
	if (cfd < 0 || self < 0 || dead < 0)
		pfail("pidfd_open");
	if (waitpid(d, NULL, 0) != d)
		pfail("waitpid");
	int cfl = fcntl(cfd, F_GETFL), selffl = fcntl(self, F_GETFL), deadfl = fcntl(dead, F_GETFL);
	int dead_exit = exit_info(dead);
	if (fdinfo_pid(dead) != -1)
		fail("the reaped child's pidfd says Pid %d before the dump", fdinfo_pid(dead));

	test_daemon();
	test_waitsig();

	if (fcntl(cfd, F_GETFL) != cfl || fcntl(self, F_GETFL) != selffl ||
	    fcntl(dead, F_GETFL) != deadfl)
		fail("pidfd flags changed: %#o %#o %#o, expected %#o %#o %#o", fcntl(cfd, F_GETFL),
		     fcntl(self, F_GETFL), fcntl(dead, F_GETFL), cfl, selffl, deadfl);
	if (fdinfo_pid(cfd) != c || fdinfo_pid(self) != getpid())
		fail("pidfds refer to %d and %d, expected %d and %d", fdinfo_pid(cfd),
		     fdinfo_pid(self), c, getpid());
	if (send0(cfd) || send0(self))
		pfail("pidfd_send_signal 0");
	if (fdinfo_pid(dead) != -1)
		fail("the dead pidfd refers to %d", fdinfo_pid(dead));
	if (send0(dead) == 0 || errno != ESRCH)
		fail("the dead pidfd can signal (errno %d)", errno);
	struct pollfd p = {.fd = dead, .events = POLLIN};
	if (poll(&p, 1, 0) != 1 || !(p.revents & POLLIN))
		fail("the dead pidfd does not poll as exited");
	if (exit_info(dead) != dead_exit)
		fail("the dead pidfd reports exit status %#x, expected %#x", exit_info(dead),
		     dead_exit);
	/* The child through its pidfd: kill it and reap it. */
	siginfo_t si;
	if (waitid(P_PIDFD, cfd, &si, WEXITED | WNOHANG) || si.si_pid != 0)
		fail("the child has exited already");
	if (syscall(SYS_pidfd_send_signal, cfd, SIGKILL, NULL, 0))
		pfail("pidfd_send_signal SIGKILL");
	memset(&si, 0, sizeof(si));
	/* PIDFD_NONBLOCK: waitid would not wait. */
	struct pollfd cp = {.fd = cfd, .events = POLLIN};
	if (poll(&cp, 1, 5000) != 1)
		fail("the killed child's pidfd does not poll as exited");
	if (waitid(P_PIDFD, cfd, &si, WEXITED))
		pfail("waitid P_PIDFD");
	if (si.si_pid != c || si.si_code != CLD_KILLED)
		fail("waitid gave pid %d code %d", si.si_pid, si.si_code);
	pass();
}
