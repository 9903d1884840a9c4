/*
 * tree_subreaper: PR_SET_CHILD_SUBREAPER across checkpoint/restore.
 *
 *   root (child subreaper) ── C ── G
 *
 * After the go the root checks PR_GET_CHILD_SUBREAPER == 1 and that G's
 * parent is still C, then lets C exit (C does not wait for G). G must be
 * reparented to the root (not to init): the root checks /proc/G/stat and
 * reaps G with waitpid(G), and G itself checks getppid() == root.
 * (The kernel only looks for a subreaper among the ancestors of processes
 * forked while one existed above them, so a restore that sets the flag
 * after forking the tree breaks this.)
 */
#include "tree.h"

#include <sys/prctl.h>
#include <sys/wait.h>

static pid_t root_pid;

static int subreaper(void)
{
	int v = -1;

	if (prctl(PR_GET_CHILD_SUBREAPER, &v, 0, 0, 0))
		pfail("prctl(PR_GET_CHILD_SUBREAPER)");
	return v;
}

static void __attribute__((noreturn)) grandchild(pid_t c, int wfd)
{
	pid_t pid = getpid();

	if (getppid() != c)
		fail("G: getppid() %d, expected C %d", getppid(), c);
	ready_send(wfd, "G");
	close(wfd);
	test_waitsig();
	if (getpid() != pid)
		fail("G: getpid() = %d, was %d", getpid(), pid);
	if (getppid() != root_pid)
		fail("G (pid %d): getppid() = %d after C exited, expected the subreaper root %d", pid,
		     getppid(), root_pid);
	exit(0);
}

int main(int argc, char **argv)
{
	pid_t c, g = 0, ppid;
	int rp[2], gp[2];
	char buf[64];

	test_init(argc, argv);
	root_pid = getpid();
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
		pfail("prctl(PR_SET_CHILD_SUBREAPER)");
	if (subreaper() != 1)
		fail("PR_GET_CHILD_SUBREAPER is %d right after setting it", subreaper());
	if (pipe(rp) || pipe(gp))
		pfail("pipe");

	c = xfork();
	if (c == 0) {
		pid_t pid = getpid(), gg;

		close(rp[0]);
		close(gp[0]);
		gg = xfork();
		if (gg == 0) {
			close(gp[1]);
			grandchild(pid, rp[1]);
		}
		/* Tell the root G's pid. */
		if (write(gp[1], &gg, sizeof(gg)) != sizeof(gg))
			pfail("C: write G's pid");
		close(gp[1]);
		ready_send(rp[1], "C");
		close(rp[1]);
		test_waitsig();
		if (getpid() != pid || getppid() != root_pid)
			fail("C: getpid() %d getppid() %d, expected %d/%d", getpid(), getppid(), pid,
			     root_pid);
		/* Exit without waiting for G: G goes to the subreaper. */
		exit(0);
	}
	close(rp[1]);
	close(gp[1]);
	if (read(gp[0], &g, sizeof(g)) != sizeof(g))
		pfail("read G's pid from C");
	close(gp[0]);
	ready_collect(rp[0], 2);
	close(rp[0]);
	if (proc_state(g, &ppid) == 'Z' || ppid != c)
		fail("G (pid %d) has ppid %d before the dump, expected C %d", g, ppid, c);

	test_daemon();
	test_waitsig();

	if (getpid() != root_pid)
		fail("root: getpid() = %d, was %d", getpid(), root_pid);
	if (subreaper() != 1)
		fail("PR_GET_CHILD_SUBREAPER is %d after the go, expected 1", subreaper());
	if (proc_state(g, &ppid) == 'Z' || ppid != c)
		fail("G (pid %d) has ppid %d after the go, expected C %d", g, ppid, c);

	if (kill(c, SIGTERM))
		pfail("kill(C, SIGTERM)");
	expect_exit(c, "C", 0);
	/* C is gone: its child G must now be ours. */
	ppid = 0;
	proc_state(g, &ppid);
	if (ppid != root_pid) {
		snprintf(buf, sizeof(buf), "%d", ppid);
		fail("G (pid %d) was reparented to %s after C exited, not to the subreaper root %d",
		     g, ppid == 1 ? "init (1)" : buf, root_pid);
	}
	if (kill(g, SIGTERM))
		pfail("kill(G, SIGTERM)");
	expect_exit(g, "G (reparented to the root)", 0);
	expect_no_children();
	pass();
}
