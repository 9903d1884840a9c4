/*
 * tree_levels: a three-level process tree.
 *
 *   root ── A ── G        (A's child G is root's grandchild)
 *        └─ B
 *
 * Every process records getpid(), getppid(), getpgid() and getsid() before
 * the dump. The harness sends SIGTERM to the root only; the root forwards
 * it to A and B, A forwards it to G. Each process then checks its own ids
 * (the root not its ppid: it is restored as a child of `cairn restore`),
 * and reports through its exit status; each parent collects its children
 * with waitpid(pid) (which also proves the parent/child link survived).
 * The root prints PASS only if every process verified itself.
 */
#include "tree.h"

#include <sys/wait.h>

struct ident {
	pid_t pid, ppid, pgid, sid;
};

static void record(struct ident *id)
{
	id->pid = getpid();
	id->ppid = getppid();
	id->pgid = getpgid(0);
	id->sid = getsid(0);
}

static void verify(const char *who, const struct ident *was, int check_ppid)
{
	struct ident now;

	record(&now);
	if (now.pid != was->pid)
		fail("%s: getpid() = %d, was %d before the dump", who, now.pid, was->pid);
	if (syscall(SYS_getpid) != was->pid)
		fail("%s: SYS_getpid = %ld, was %d", who, syscall(SYS_getpid), was->pid);
	if (check_ppid && now.ppid != was->ppid)
		fail("%s (pid %d): getppid() = %d, was %d before the dump", who, now.pid, now.ppid,
		     was->ppid);
	if (now.pgid != was->pgid)
		fail("%s (pid %d): getpgid() = %d, was %d", who, now.pid, now.pgid, was->pgid);
	if (now.sid != was->sid)
		fail("%s (pid %d): getsid() = %d, was %d", who, now.pid, now.sid, was->sid);
}

static struct ident me;

static void __attribute__((noreturn)) grandchild(int rfd, int wfd)
{
	record(&me);
	close(rfd);
	ready_send(wfd, "grandchild G");
	close(wfd);
	test_waitsig();
	verify("grandchild G", &me, 1);
	exit(0);
}

static void __attribute__((noreturn)) child_a(int rfd, int wfd)
{
	pid_t g;

	record(&me);
	g = xfork();
	if (g == 0)
		grandchild(rfd, wfd);
	close(rfd);
	ready_send(wfd, "child A");
	close(wfd);
	test_waitsig();
	verify("child A", &me, 1);
	if (kill(g, SIGTERM))
		pfail("child A: kill(G %d, SIGTERM)", g);
	expect_exit(g, "grandchild G (from A)", 0);
	expect_no_children();
	exit(0);
}

static void __attribute__((noreturn)) child_b(int rfd, int wfd)
{
	record(&me);
	close(rfd);
	ready_send(wfd, "child B");
	close(wfd);
	test_waitsig();
	verify("child B", &me, 1);
	exit(0);
}

int main(int argc, char **argv)
{
	int rp[2];
	pid_t a, b;

	test_init(argc, argv);
	record(&me);
	if (pipe(rp))
		pfail("pipe");
	a = xfork();
	if (a == 0)
		child_a(rp[0], rp[1]);
	b = xfork();
	if (b == 0)
		child_b(rp[0], rp[1]);
	close(rp[1]);
	ready_collect(rp[0], 3);
	close(rp[0]);

	test_daemon();
	test_waitsig();

	verify("root", &me, 0);
	if (kill(a, SIGTERM))
		pfail("kill(A %d, SIGTERM)", a);
	if (kill(b, SIGTERM))
		pfail("kill(B %d, SIGTERM)", b);
	expect_exit(a, "child A", 0);
	expect_exit(b, "child B", 0);
	expect_no_children();
	pass();
}
