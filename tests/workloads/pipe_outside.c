/*
 * pipe_outside: pipes between a parent and a child.
 *  - pipe A: the parent keeps the write end, the child the read end;
 *  - pipe B: the child holds its read end, whose write end everyone closed
 *    (the child must still read EOF from it);
 * The parent writes the child's pid to ./child.pid once it is set up.
 * Dumping the child alone must be refused (pipe A's write end is outside
 * that tree) and leave it working; dumping the parent takes both. On
 * SIGTERM the parent writes "go" to pipe A; the child checks it reads "go",
 * then EOF from A (the parent closed its end) and EOF from B, and exits 0.
 */
#include "zdtm.h"

#include <sys/wait.h>

static int child(int a, int b)
{
	char buf[8];
	sigset_t set;

	/* The child ignores the harness's SIGTERM: the parent drives it. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigprocmask(SIG_BLOCK, &set, NULL);
	if (read(a, buf, sizeof(buf)) != 2 || memcmp(buf, "go", 2))
		return 10;
	if (read(a, buf, sizeof(buf)) != 0)
		return 11;
	if (read(b, buf, sizeof(buf)) != 0)
		return 12;
	return 0;
}

int main(int argc, char **argv)
{
	int a[2], b[2], st, fd;
	char num[32];
	pid_t pid;

	test_init(argc, argv);
	if (pipe(a) || pipe(b))
		pfail("pipe");
	pid = fork();
	if (pid < 0)
		pfail("fork");
	if (pid == 0) {
		close(a[1]);
		close(b[1]);
		_exit(child(a[0], b[0]));
	}
	close(a[0]);
	close(b[0]);
	close(b[1]);
	fd = open("child.pid.tmp", O_WRONLY | O_CREAT | O_EXCL, 0644);
	if (fd < 0)
		pfail("open child.pid.tmp");
	snprintf(num, sizeof(num), "%d\n", pid);
	if (write(fd, num, strlen(num)) != (ssize_t)strlen(num) || close(fd) ||
	    rename("child.pid.tmp", "child.pid"))
		pfail("write child.pid");
	test_daemon();
	test_waitsig();
	if (write(a[1], "go", 2) != 2)
		pfail("write pipe A");
	close(a[1]);
	if (waitpid(pid, &st, 0) != pid)
		pfail("waitpid");
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		fail("the child ended with status %#x", st);
	pass();
}
