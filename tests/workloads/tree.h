/*
 * tree.h - helpers shared by the tree_* workloads (on top of zdtm.h):
 * fork with flushed stdio, a readiness pipe, waiting for children with a
 * timeout, and reading another process's state from /proc.
 */
#ifndef TREE_H
#define TREE_H

#include "zdtm.h"

#include <poll.h>
#include <sys/ioctl.h>
#include <sys/wait.h>

static inline pid_t xfork(void)
{
	pid_t p;

	fflush(NULL);
	p = fork();
	if (p < 0)
		pfail("fork");
	return p;
}

static inline void ready_send(int fd, const char *who)
{
	char c = 'r';

	if (write(fd, &c, 1) != 1)
		pfail("%s: write to the ready pipe", who);
}

/* Read n readiness bytes; EOF first means a process died before it was ready. */
static inline void ready_collect(int fd, int n)
{
	for (int got = 0; got < n;) {
		char c;
		ssize_t r = read(fd, &c, 1);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			pfail("read the ready pipe");
		if (r == 0)
			fail("only %d of %d processes got ready (one died before; see above)", got, n);
		got++;
	}
}

/* waitpid(pid) with a timeout; returns the wait status. */
static inline int wait_child(pid_t pid, const char *who, int timeout_s)
{
	int st;

	for (long ms = 0;; ms++) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid)
			return st;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			pfail("waitpid(%s, pid %d) (not my child any more?)", who, pid);
		if (ms >= timeout_s * 1000L)
			fail("%s (pid %d) did not exit within %d s", who, pid, timeout_s);
		usleep(1000);
	}
}

static inline void expect_exit(pid_t pid, const char *who, int code)
{
	int st = wait_child(pid, who, 20);

	if (WIFEXITED(st) && WEXITSTATUS(st) == code)
		return;
	if (WIFEXITED(st))
		fail("%s (pid %d) exited with %d, expected %d", who, pid, WEXITSTATUS(st), code);
	if (WIFSIGNALED(st))
		fail("%s (pid %d) was killed by signal %d", who, pid, WTERMSIG(st));
	fail("%s (pid %d): unexpected wait status %#x", who, pid, st);
}

/* No children left (a restore must not leave helpers as our children). */
static inline void expect_no_children(void)
{
	int st;
	pid_t r = waitpid(-1, &st, WNOHANG);

	if (r < 0 && errno == ECHILD)
		return;
	if (r > 0)
		fail("reaped an unexpected child, pid %d (status %#x)", r, st);
	if (r == 0)
		fail("there are unexpected live children left");
	pfail("waitpid(-1)");
}

/* State letter of another process (and its ppid), from /proc/PID/stat. */
static inline char proc_state(pid_t pid, pid_t *ppid)
{
	char path[64], buf[4096], *p;
	char st = 0;
	int pp = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	read_file(path, buf, sizeof(buf));
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%c %d", &st, &pp) != 2)
		fail("cannot parse %s: %s", path, buf);
	if (ppid)
		*ppid = pp;
	return st;
}

static inline int queued(int fd, const char *what)
{
	int n = -1;

	if (ioctl(fd, FIONREAD, &n))
		pfail("FIONREAD on %s", what);
	return n;
}

/* Read exactly len bytes, waiting at most 10 s for each chunk. 0 on EOF. */
static inline size_t read_full(int fd, void *buf, size_t len, const char *who, const char *what)
{
	size_t got = 0;

	while (got < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int r = poll(&p, 1, 10000);
		ssize_t n;

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			pfail("%s: poll", who);
		if (r == 0)
			fail("%s: nothing to read for 10 s while waiting for %s (%zu of %zu bytes)", who,
			     what, got, len);
		n = read(fd, (char *)buf + got, len - got);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			pfail("%s: read %s", who, what);
		if (n == 0)
			return got;
		got += n;
	}
	return got;
}

#endif /* TREE_H */
