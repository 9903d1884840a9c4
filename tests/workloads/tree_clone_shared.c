/*
 * tree_clone_shared: a child made with clone(CLONE_FILES | CLONE_FS) shares
 * the fd table and the cwd/root/umask of its parent, without being a thread.
 * After the restore the sharing must still hold: an fd the child opens
 * shows up in the parent, a chdir/umask of the child is seen by the parent.
 */
#include "zdtm.h"
#include <sched.h>
#include <sys/wait.h>

static char stack[256 * 1024];
static char dir[4096];
static int go_pipe[2];

static int child_main(void *arg)
{
	char c;

	(void)arg;
	/* Wait for the parent's go (after restore). */
	if (read(go_pipe[0], &c, 1) != 1)
		_exit(10);
	int fd = open("/dev/null", O_RDONLY);
	if (fd < 0)
		_exit(11);
	if (dup2(fd, 77) != 77)
		_exit(12);
	if (chdir(dir))
		_exit(13);
	umask(0061);
	_exit(0);
}

int main(int argc, char **argv)
{
	char cwd[4096];
	int st;

	test_init(argc, argv);
	if (!getcwd(dir, sizeof(dir)))
		pfail("getcwd");
	strncat(dir, "/subdir", sizeof(dir) - strlen(dir) - 1);
	if (mkdir(dir, 0755) && errno != EEXIST)
		pfail("mkdir %s", dir);
	if (pipe(go_pipe))
		pfail("pipe");
	pid_t c = clone(child_main, stack + sizeof(stack), CLONE_FILES | CLONE_FS | SIGCHLD, NULL);
	if (c < 0)
		pfail("clone");
	umask(0022);
	test_daemon();
	test_waitsig();

	if (fcntl(77, F_GETFD) != -1)
		fail("fd 77 exists before the child opened it");
	if (write(go_pipe[1], "g", 1) != 1)
		pfail("write go");
	if (waitpid(c, &st, 0) != c)
		pfail("waitpid");
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		fail("child failed: status %#x", st);
	if (fcntl(77, F_GETFD) == -1)
		fail("fd 77 opened by the child is not in the parent: fd table no longer shared");
	if (!getcwd(cwd, sizeof(cwd)) || strcmp(cwd, dir))
		fail("cwd is %s, the child chdir'd to %s: fs info no longer shared", cwd, dir);
	mode_t m = umask(0);
	if (m != 0061)
		fail("umask is %03o, the child set 061", m);
	pass();
}
