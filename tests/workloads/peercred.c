/*
 * peercred: every restored unix connection names the task that made it
 * (SO_PEERCRED: pid, uid, gid; SO_PEERGROUPS), as the kernel recorded:
 *   sp:  stream socketpair made by this process before fork; one end in
 *        child A: both ends name this process;
 *   acc: accepted from child B, which connected to this process's
 *        listener as uid/gid 4242 with groups 4243,4244: acc names B with
 *        those ids; B's end (cb) names the listener's task (this process,
 *        at listen()); the listener itself names this process;
 *   ex:  seqpacket socketpair made by child C as uid/gid 4343, handed to
 *        this process (SCM_RIGHTS); C exited and was reaped: both ends
 *        name C's pid, a pid no process has.
 *   wait: a connection from child D, as uid/gid 4545 with group 4546,
 *        left waiting in the listener's backlog: accepted only after
 *        SIGTERM, it must name D with those ids (a --leave-running dump
 *        cannot accept it to read them: BPF reads them in place);
 * After SIGTERM the values are read again (cb through pidfd_getfd) and
 * must be the same, and data still flows over each connection.
 *
 * --ext: also a stream connection to a listener of a live process outside
 * the tree (a grandchild whose parent exited), made as uid/gid 4646, and a
 * connection from that process waiting in this process's listener (dumped
 * with --ext-unix-sk). The outside process exits once this one is gone, so
 * its pid is free at restore: both must name it again after the restore.
 *
 * --outside: instead, a socketpair made by a live process outside the
 * tree (a grandchild whose parent exited, so it left the tree) is handed
 * to this process; the dump must refuse it. The grandchild exits when
 * this process is gone.
 */
#include "zdtm.h"
#include "unixsk.h"
#include <grp.h>
#include <stddef.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/un.h>
#include <sys/wait.h>

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif

static struct ucred cred_of(int fd, const char *what)
{
	struct ucred c;
	socklen_t len = sizeof(c);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c, &len))
		pfail("%s: SO_PEERCRED", what);
	return c;
}

static void expect_cred(int fd, pid_t pid, uid_t uid, gid_t gid, const char *what)
{
	struct ucred c = cred_of(fd, what);

	if (c.pid != pid || c.uid != uid || c.gid != gid)
		fail("%s: SO_PEERCRED pid %d uid %u gid %u, want pid %d uid %u gid %u", what,
		     c.pid, c.uid, c.gid, pid, uid, gid);
}

static int ngroups(int fd, gid_t *g, int max, const char *what)
{
	socklen_t len = max * sizeof(gid_t);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len))
		pfail("%s: SO_PEERGROUPS", what);
	return len / sizeof(gid_t);
}

static void send_fds(int sk, int a, int b)
{
	char c = 'x';
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	char cbuf[CMSG_SPACE(2 * sizeof(int))];
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	int fds[2] = { a, b };

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(fds));
	memcpy(CMSG_DATA(cm), fds, sizeof(fds));
	if (sendmsg(sk, &mh, 0) != 1)
		_exit(2);
}

static void recv_fds(int sk, int *a, int *b)
{
	char c;
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	char cbuf[CMSG_SPACE(2 * sizeof(int))];
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm;
	int fds[2];

	if (recvmsg(sk, &mh, 0) != 1)
		pfail("recvmsg");
	cm = CMSG_FIRSTHDR(&mh);
	if (!cm || cm->cmsg_type != SCM_RIGHTS || cm->cmsg_len != CMSG_LEN(sizeof(fds)))
		fail("no descriptors from the exited creator");
	memcpy(fds, CMSG_DATA(cm), sizeof(fds));
	*a = fds[0];
	*b = fds[1];
}

static void drop_to(uid_t id, const gid_t *groups, int n)
{
	if (setgroups(n, groups) || setresgid(id, id, id) || setresuid(id, id, id))
		_exit(3);
}

/*
 * A child that only holds its sockets: it dies with the parent (also when
 * the parent fails before it could kill it), so a failed run leaves no
 * process behind. Called after any credential change, which clears the
 * parent-death signal.
 */
static void pause_forever(pid_t parent)
{
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != parent)
		_exit(7);
	for (;;)
		pause();
}

/* Waits until listener `l` has a connection waiting. */
static void wait_pending(int l, const char *what)
{
	struct pollfd p = { .fd = l, .events = POLLIN };

	if (poll(&p, 1, 10000) != 1)
		fail("%s: no connection arrived", what);
}

/*
 * --ext: a process outside the tree (grandchild, its parent exits) that,
 * as uid 4646, listens on an abstract name, accepts this process's
 * connection to it, connects to this process's listener `sa` (left
 * waiting), and exits once `me` is gone. Returns this process's connected
 * socket; *pending is the listener holding the outside connection.
 */
static int ext_peer(pid_t me, int *pending, pid_t *gpid)
{
	struct sockaddr_un xa = { .sun_family = AF_UNIX }, la = { .sun_family = AF_UNIX };
	socklen_t xlen, llen;
	gid_t g[1] = { 4646 };
	int ready[2], x, l2;
	pid_t mid;
	char c;

	snprintf(xa.sun_path + 1, sizeof(xa.sun_path) - 1, "cairn-peercred-x-%d", me);
	xlen = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(xa.sun_path + 1);
	snprintf(la.sun_path + 1, sizeof(la.sun_path) - 1, "cairn-peercred-w-%d", me);
	llen = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(la.sun_path + 1);
	l2 = socket(AF_UNIX, SOCK_STREAM, 0);
	if (l2 < 0 || bind(l2, (struct sockaddr *)&la, llen) || listen(l2, 4) || pipe(ready))
		pfail("ext listener");
	mid = fork();
	if (mid < 0)
		pfail("fork");
	if (mid == 0) {
		pid_t g2 = fork();
		int l, a, s;

		if (g2 != 0)
			_exit(g2 < 0);
		close(l2);
		drop_to(4646, g, 1);
		l = socket(AF_UNIX, SOCK_STREAM, 0);
		if (l < 0 || bind(l, (struct sockaddr *)&xa, xlen) || listen(l, 1))
			_exit(8);
		if (write(ready[1], "r", 1) != 1)
			_exit(9);
		a = accept(l, NULL, NULL);
		s = socket(AF_UNIX, SOCK_STREAM, 0);
		if (a < 0 || s < 0 || connect(s, (struct sockaddr *)&la, llen))
			_exit(10);
		/* EPERM: `me` is there, and root. */
		while (kill(me, 0) == 0 || errno == EPERM)
			usleep(100000);
		_exit(0);
	}
	if (read(ready[0], &c, 1) != 1)
		fail("the outside process did not start");
	waitpid(mid, NULL, 0);
	x = socket(AF_UNIX, SOCK_STREAM, 0);
	if (x < 0 || connect(x, (struct sockaddr *)&xa, xlen))
		pfail("connect to the outside listener");
	wait_pending(l2, "outside connection");
	*gpid = cred_of(x, "outside listener").pid;
	*pending = l2;
	return x;
}

int main(int argc, char **argv)
{
	int sp[2], ch[2], ex[2], lsk, acc, cb = -1, pfd, copy, n;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t salen;
	int w, xs = -1, xl = -1;
	pid_t me, a, b, c, d, g = 0;
	gid_t bgroups[2] = { 4243, 4244 }, dgroups[1] = { 4546 }, got[16];
	char buf[8];

	test_init(argc, argv);
	me = getpid();
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) || socketpair(AF_UNIX, SOCK_DGRAM, 0, ch))
		pfail("socketpair");
	if (test_flag("--outside")) {
		pid_t mid = fork(), g;

		if (mid < 0)
			pfail("fork");
		if (mid == 0) {
			g = fork();
			if (g != 0)
				_exit(g < 0);
			if (socketpair(AF_UNIX, SOCK_STREAM, 0, ex))
				_exit(6);
			send_fds(ch[1], ex[0], ex[1]);
			while (kill(me, 0) == 0)
				sleep(1);
			_exit(0);
		}
		recv_fds(ch[0], &ex[0], &ex[1]);
		waitpid(mid, NULL, 0);
		test_msg("outside creator pid %d", cred_of(ex[0], "outside").pid);
		test_daemon();
		test_waitsig();
		expect_cred(ex[0], cred_of(ex[1], "outside").pid, 0, 0, "outside socketpair");
		pass();
	}
	a = fork();
	if (a < 0)
		pfail("fork");
	if (a == 0) {
		close(sp[0]);
		pause_forever(me);
	}
	close(sp[1]);

	lsk = socket(AF_UNIX, SOCK_STREAM, 0);
	snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "cairn-peercred-%d", me);
	salen = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(sa.sun_path + 1);
	if (lsk < 0 || bind(lsk, (struct sockaddr *)&sa, salen) || listen(lsk, 4))
		pfail("listener");
	b = fork();
	if (b < 0)
		pfail("fork");
	if (b == 0) {
		int s;

		drop_to(4242, bgroups, 2);
		s = socket(AF_UNIX, SOCK_STREAM, 0);
		if (s < 0 || connect(s, (struct sockaddr *)&sa, salen))
			_exit(4);
		if (dup2(s, 10) != 10)
			_exit(5);
		close(s);
		pause_forever(me);
	}
	acc = accept(lsk, NULL, NULL);
	if (acc < 0)
		pfail("accept");
	cb = 10;

	c = fork();
	if (c < 0)
		pfail("fork");
	if (c == 0) {
		gid_t none[1] = { 4343 };

		drop_to(4343, none, 1);
		if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, ex))
			_exit(6);
		send_fds(ch[1], ex[0], ex[1]);
		_exit(0);
	}
	recv_fds(ch[0], &ex[0], &ex[1]);
	if (waitpid(c, NULL, 0) != c)
		pfail("waitpid");

	d = fork();
	if (d < 0)
		pfail("fork");
	if (d == 0) {
		int s;

		drop_to(4545, dgroups, 1);
		s = socket(AF_UNIX, SOCK_STREAM, 0);
		if (s < 0 || connect(s, (struct sockaddr *)&sa, salen))
			_exit(4);
		if (dup2(s, 11) != 11)
			_exit(5);
		close(s);
		pause_forever(me);
	}
	wait_pending(lsk, "child D's connection");
	if (test_flag("--ext")) {
		xs = ext_peer(me, &xl, &g);
		test_msg("ext creator pid %d", g);
		expect_cred(xs, g, 4646, 4646, "connection to the outside listener");
	}

	/* What the kernel recorded. */
	expect_cred(sp[0], me, 0, 0, "socketpair made before fork");
	expect_cred(lsk, me, 0, 0, "listener");
	expect_cred(acc, b, 4242, 4242, "accepted from child B");
	expect_cred(ex[0], c, 4343, 4343, "socketpair of exited child C");
	expect_cred(ex[1], c, 4343, 4343, "socketpair of exited child C (other end)");

	test_daemon();
	test_waitsig();

	expect_cred(sp[0], me, 0, 0, "socketpair made before fork");
	expect_cred(lsk, me, 0, 0, "listener");
	expect_cred(acc, b, 4242, 4242, "accepted from child B");
	n = ngroups(acc, got, 16, "accepted from child B");
	if (n != 2 || got[0] != 4243 || got[1] != 4244)
		fail("accepted from child B: SO_PEERGROUPS has %d groups (%u %u), want 4243 4244", n,
		     n > 0 ? got[0] : 0, n > 1 ? got[1] : 0);
	expect_cred(ex[0], c, 4343, 4343, "socketpair of exited child C");
	expect_cred(ex[1], c, 4343, 4343, "socketpair of exited child C (other end)");
	pfd = syscall(SYS_pidfd_open, b, 0);
	copy = pfd < 0 ? -1 : syscall(SYS_pidfd_getfd, pfd, cb, 0);
	if (copy < 0)
		pfail("pidfd_getfd of child B's socket");
	expect_cred(copy, me, 0, 0, "child B's connecting socket");
	/* The connection that waited in the backlog through the dump. */
	w = accept(lsk, NULL, NULL);
	if (w < 0)
		pfail("accept child D's waiting connection");
	expect_cred(w, d, 4545, 4545, "waiting connection from child D");
	n = ngroups(w, got, 16, "waiting connection from child D");
	if (n != 1 || got[0] != 4546)
		fail("waiting connection from child D: SO_PEERGROUPS has %d groups (%u), want 4546", n,
		     n > 0 ? got[0] : 0);
	if (xs >= 0) {
		int o;

		expect_cred(xs, g, 4646, 4646, "connection to the outside listener");
		o = accept(xl, NULL, NULL);
		if (o < 0)
			pfail("accept the outside process's waiting connection");
		expect_cred(o, g, 4646, 4646, "waiting connection from the outside process");
	}
	/* Data flows both ways on each connection. */
	put(acc, "to-b");
	expect(copy, "to-b", "accepted -> child B");
	put(copy, "to-p");
	expect(acc, "to-p", "child B -> accepted");
	put(ex[0], "rec");
	expect(ex[1], "rec", "seqpacket of exited child");
	put(sp[0], "sp");
	if (read(sp[0], buf, 0) < 0)
		pfail("read");
	kill(a, SIGKILL);
	kill(b, SIGKILL);
	kill(d, SIGKILL);
	waitpid(a, NULL, 0);
	waitpid(b, NULL, 0);
	waitpid(d, NULL, 0);
	pass();
}
