/* ext_fd: writes a numbered line ("%08u\n", 9 bytes, one atomic write each)
 * about every millisecond to fd N (--fd N, default 5), an fd it was started
 * with whose object (a pipe's write end, one end of a unix socket pair) is
 * held outside the tree by the test, which reads the lines. The dump names
 * it --external, the restore hands the same object back with --inherit-fd:
 * the test sees the numbers go on with none lost or repeated.
 * --nonblock: fd N is made O_NONBLOCK (EAGAIN waits in poll);
 * --cloexec: fd N is made close-on-exec;
 * --dup M: fd M is a dup of fd N (the same description, another number);
 * --fork: a child holds fd N too (the same description, kcmp-checked).
 * After SIGTERM the workload checks that fd N (and M) has the file status
 * flags, fd flags, file type and inode it had, writes "end\n" and passes. */
#include "zdtm.h"
#include <poll.h>
#include <sys/wait.h>

#ifndef KCMP_FILE
#define KCMP_FILE 0
#endif

static int fd = 5;

static void put(const char *buf, size_t len)
{
	for (;;) {
		ssize_t n = write(fd, buf, len);
		if (n == (ssize_t)len)
			return;
		if (n >= 0)
			fail("short write %zd of %zu on fd %d", n, len, fd);
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			pfail("write fd %d", fd);
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		poll(&p, 1, 100);
	}
}

int main(int argc, char **argv)
{
	test_init(argc, argv);
	if (test_arg("--fd"))
		fd = atoi(test_arg("--fd"));
	int dupfd = test_arg("--dup") ? atoi(test_arg("--dup")) : -1;
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		pfail("fd %d is not open", fd);
	if (test_flag("--nonblock") && fcntl(fd, F_SETFL, fl | O_NONBLOCK))
		pfail("F_SETFL O_NONBLOCK");
	if (test_flag("--cloexec") && fcntl(fd, F_SETFD, FD_CLOEXEC))
		pfail("F_SETFD");
	if (dupfd >= 0 && dup2(fd, dupfd) != dupfd)
		pfail("dup2 %d %d", fd, dupfd);
	fl = fcntl(fd, F_GETFL);
	int fdfl = fcntl(fd, F_GETFD);
	struct stat st;
	if (fstat(fd, &st))
		pfail("fstat");
	pid_t child = -1;
	if (test_flag("--fork")) {
		child = fork();
		if (child < 0)
			pfail("fork");
		if (child == 0) {
			for (;;)
				pause();
		}
	}
	test_msg("fd %d: flags %#o fd flags %#o mode %#o ino %lu", fd, fl, fdfl,
		 st.st_mode & S_IFMT, (unsigned long)st.st_ino);
	test_daemon();
	unsigned n = 0;
	char buf[16];
	while (!test_sigterm_received) {
		snprintf(buf, sizeof(buf), "%08u\n", n++);
		put(buf, 9);
		usleep(1000);
	}
	struct stat now;
	if (fcntl(fd, F_GETFL) != fl)
		fail("fd %d: F_GETFL %#o, was %#o", fd, fcntl(fd, F_GETFL), fl);
	if (fcntl(fd, F_GETFD) != fdfl)
		fail("fd %d: F_GETFD %#o, was %#o", fd, fcntl(fd, F_GETFD), fdfl);
	if (fstat(fd, &now) || (now.st_mode & S_IFMT) != (st.st_mode & S_IFMT) ||
	    now.st_ino != st.st_ino)
		fail("fd %d: mode %#o ino %lu, was %#o %lu", fd, now.st_mode & S_IFMT,
		     (unsigned long)now.st_ino, st.st_mode & S_IFMT, (unsigned long)st.st_ino);
	if (dupfd >= 0 && syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, fd, dupfd) != 0)
		fail("fd %d is not fd %d's description any more", dupfd, fd);
	if (child > 0) {
		if (syscall(SYS_kcmp, getpid(), child, KCMP_FILE, fd, fd) != 0)
			fail("the child's fd %d is not the parent's description", fd);
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	}
	put("end\n", 4);
	test_msg("%u lines written", n);
	pass();
}
