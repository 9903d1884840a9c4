/*
 * Who may use the control socket of libcairn (issue 18), and how long a
 * second connection waits. Linked with libcairn (tests/libcairn.rs
 * builds it).
 *
 *   libcairn_peers PROGRESS      (under `cairn run`, as root)
 *
 * The root never calls libcairn itself. Child A connects
 * (cairn_is_backup) and keeps its connection; child B's call then waits
 * for it and must get -ETIMEDOUT after about CAIRN_CONNECT_WAIT_MS; once
 * A has exited, B's next call is served. Child C changes its uid and gid
 * to 65534 and sends nonrestart data, which must succeed; the root then
 * reads that data back with cairn_takeover_data. The root writes
 * "1 PID" to PROGRESS and waits for PROGRESS.done (the test checks a
 * process outside the tree meanwhile), then prints PASS (exit 0), or
 * FAIL and the reason (exit 1).
 *
 *   libcairn_peers --outside     (not of the tree, any uid)
 *
 * sends nonrestart data with the CAIRN_CONTROL_SOCKET it was given:
 * must get -EACCES; prints PASS or FAIL.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cairn.h"

static const char msg[] = "data of the process that changed its uid";

static long now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int fail(const char *why, long v)
{
	printf("FAIL: %s (%ld)\n", why, v);
	fflush(stdout);
	return 1;
}

/* Waits for child `pid`; its exit code, or 100 + signal. */
static int reap(pid_t pid)
{
	int st;
	if (waitpid(pid, &st, 0) != pid)
		return 99;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st);
}

int main(int argc, char **argv)
{
	alarm(120);
	if (argc == 2 && !strcmp(argv[1], "--outside")) {
		int r = cairn_checkpoint_data(msg, sizeof(msg));
		if (r != -EACCES)
			return fail("a process outside the tree: not -EACCES", r);
		printf("PASS outside: refused (uid %d)\n", (int)getuid());
		return 0;
	}
	if (argc != 2)
		return fail("usage: libcairn_peers PROGRESS | --outside", argc);
	setvbuf(stdout, NULL, _IOLBF, 0);
	int hold[2], ready[2];
	if (pipe(hold) || pipe(ready))
		return fail("pipe", errno);
	pid_t a = fork();
	if (a == 0) {
		close(hold[1]);
		close(ready[0]);
		int r = cairn_is_backup();
		char c = r == 0 ? 'y' : 'n';
		if (write(ready[1], &c, 1) != 1)
			_exit(3);
		/* Keeps the connection until the root closes the pipe. */
		if (read(hold[0], &c, 1) < 0)
			_exit(4);
		_exit(r == 0 ? 0 : 2);
	}
	close(hold[0]);
	close(ready[1]);
	char c = 0;
	if (read(ready[0], &c, 1) != 1 || c != 'y')
		return fail("child A was not served", c);
	/* B's SIGUSR1 says A may close. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, NULL);
	pid_t b = fork();
	if (b == 0) {
		/* A's pipe ends only with the root's end. */
		close(hold[1]);
		close(ready[0]);
		long t0 = now_ms();
		int r = cairn_is_backup();
		long waited = now_ms() - t0;
		printf("B: %d after %ld ms while A holds the connection\n", r, waited);
		if (r != -ETIMEDOUT)
			_exit(10);
		if (waited < CAIRN_CONNECT_WAIT_MS - 500 || waited > 4 * CAIRN_CONNECT_WAIT_MS)
			_exit(11);
		/* A goes: B is served. */
		if (kill(getppid(), SIGUSR1))
			_exit(12);
		for (int i = 0; i < 100; i++) {
			r = cairn_is_backup();
			if (r != -ETIMEDOUT)
				break;
		}
		printf("B: %d once A closed\n", r);
		_exit(r == 0 ? 0 : 13);
	}
	int sig = 0;
	if (sigwait(&set, &sig))
		return fail("sigwait", errno);
	close(hold[1]);
	int ra = reap(a);
	if (ra)
		return fail("child A", ra);
	int rb = reap(b);
	if (rb)
		return fail("child B", rb);
	pid_t cc = fork();
	if (cc == 0) {
		if (setgroups(0, NULL) || setgid(65534) || setuid(65534))
			_exit(20);
		int r = cairn_checkpoint_data(msg, sizeof(msg));
		printf("C (uid %d): cairn_checkpoint_data %d\n", (int)getuid(), r);
		_exit(r == 0 ? 0 : 21);
	}
	int rc = reap(cc);
	if (rc)
		return fail("child C (uid changed)", rc);
	char buf[CAIRN_DATA_MAX];
	int n = cairn_takeover_data(buf, sizeof(buf));
	if (n != (int)sizeof(msg) || memcmp(buf, msg, sizeof(msg)))
		return fail("the data of child C", n);
	char p[64];
	int len = snprintf(p, sizeof(p), "1 %d\n", getpid());
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, p, len) != len)
		return fail("progress", errno);
	close(fd);
	char done[4096];
	snprintf(done, sizeof(done), "%s.done", argv[1]);
	while (access(done, F_OK))
		usleep(10000);
	printf("PASS peers\n");
	return 0;
}
