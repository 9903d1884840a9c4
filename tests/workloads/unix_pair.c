/*
 * unix_pair: socketpairs of the three unix socket types.
 *  - data queued in both directions; datagram and record boundaries kept;
 *  - the stream pair half shut down (one end SHUT_WR);
 *  - options: SO_SNDBUF/SO_RCVBUF, SO_PASSCRED (on a pair of its own with
 *    nothing queued: queued messages of a receiver with SO_PASSCRED are
 *    refused, see unix_passcred), SO_RCVTIMEO/SO_SNDTIMEO, O_NONBLOCK,
 *    FD_CLOEXEC;
 *  - one end of the seqpacket pair in a child process (the pair crosses
 *    processes of the tree);
 *  - an epoll instance watching a socket with data.
 * With --leave-running the original checks the same after the dump: its
 * queues must be intact.
 */
#include "zdtm.h"
#include "sockopt.h"
#include "unixsk.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>

static int st[2], dg[2], sq[2], pc[2];

static int child_main(void)
{
	sigset_t s;

	sigemptyset(&s);
	/* SIGUSR1 is blocked (inherited); wait for it. */
	sigaddset(&s, SIGUSR1);
	int sig;
	if (sigwait(&s, &sig))
		return 10;
	expect(sq[1], "seq-a2b-1", "child: seqpacket record 1");
	expect(sq[1], "seq-a2b-22", "child: seqpacket record 2");
	expect_empty(sq[1], "child: seqpacket");
	put(sq[1], "seq-child-reply");
	return 0;
}

int main(int argc, char **argv)
{
	struct timeval tv = { 2, 500000 }, tv2 = { 0 };
	int one = 1, sndbuf, rcvbuf, ep;
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0xfeed };
	sigset_t usr1;
	pid_t child;

	test_init(argc, argv);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, st) || socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sq) || socketpair(AF_UNIX, SOCK_DGRAM, 0, pc))
		pfail("socketpair");

	put(st[0], "stream-a2b-1");
	put(st[0], "stream-a2b-22");
	put(st[1], "stream-b2a-1");
	if (shutdown(st[0], SHUT_WR))
		pfail("shutdown");
	put(dg[0], "dgram-a2b-1");
	put(dg[0], "dgram-a2b-22");
	put(dg[1], "dgram-b2a-1");
	put(sq[0], "seq-a2b-1");
	put(sq[0], "seq-a2b-22");
	put(sq[1], "seq-b2a-1");

	if (setsockopt(st[0], SOL_SOCKET, SO_SNDBUF, &(int){ 65536 }, sizeof(int)) ||
	    setsockopt(st[0], SOL_SOCKET, SO_RCVBUF, &(int){ 40000 }, sizeof(int)) ||
	    setsockopt(pc[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) ||
	    setsockopt(dg[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
	    setsockopt(dg[1], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)))
		pfail("setsockopt");
	sndbuf = getint(st[0], SOL_SOCKET, SO_SNDBUF);
	rcvbuf = getint(st[0], SOL_SOCKET, SO_RCVBUF);
	if (fcntl(sq[0], F_SETFL, O_NONBLOCK) || fcntl(dg[0], F_SETFD, FD_CLOEXEC))
		pfail("fcntl");

	ep = epoll_create1(0);
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, st[1], &ev))
		pfail("epoll");

	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, NULL);
	child = fork();
	if (child < 0)
		pfail("fork");
	if (child == 0) {
		close(sq[0]);
		exit(child_main());
	}
	close(sq[1]);

	test_daemon();
	test_waitsig();

	/* The child checks its end, and answers. */
	if (kill(child, SIGUSR1))
		pfail("kill child");
	int status;
	if (waitpid(child, &status, 0) != child)
		pfail("waitpid");
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		fail("the child holding the seqpacket end failed (status %#x)", status);

	/* epoll still watches the stream end, which has data. */
	struct epoll_event got;
	if (epoll_wait(ep, &got, 1, 0) != 1 || got.data.u64 != 0xfeed || !(got.events & EPOLLIN))
		fail("epoll does not report the stream socket readable");

	/* Stream: bytes in order, then EOF (the writer shut down). */
	expect(st[1], "stream-a2b-1stream-a2b-22", "stream a->b");
	char c;
	if (recv(st[1], &c, 1, MSG_DONTWAIT) != 0)
		fail("stream: no EOF after the data (peer shut down its writing side)");
	expect(st[0], "stream-b2a-1", "stream b->a");
	if (send(st[0], "x", 1, MSG_NOSIGNAL) != -1 || errno != EPIPE)
		fail("stream: writing after SHUT_WR did not fail with EPIPE");
	put(st[1], "stream-new");
	expect(st[0], "stream-new", "stream b->a after restore");

	/* Datagrams: boundaries kept. */
	expect(dg[1], "dgram-a2b-1", "dgram 1");
	expect(dg[1], "dgram-a2b-22", "dgram 2");
	expect_empty(dg[1], "dgram b");
	expect(dg[0], "dgram-b2a-1", "dgram b->a");
	put(dg[0], "dgram-new");
	expect(dg[1], "dgram-new", "dgram a->b after restore");

	/* Seqpacket: the parent's end. */
	expect(sq[0], "seq-b2a-1", "seqpacket b->a");
	if (!(fcntl(sq[0], F_GETFL) & O_NONBLOCK))
		fail("seqpacket: O_NONBLOCK lost");
	struct timeval wait = { 5, 0 };
	fd_set rd;
	FD_ZERO(&rd);
	FD_SET(sq[0], &rd);
	if (select(sq[0] + 1, &rd, NULL, NULL, &wait) != 1)
		fail("seqpacket: no reply from the child");
	expect(sq[0], "seq-child-reply", "seqpacket reply");

	/* Options and flags. */
	if (getint(st[0], SOL_SOCKET, SO_SNDBUF) != sndbuf || getint(st[0], SOL_SOCKET, SO_RCVBUF) != rcvbuf)
		fail("buffer sizes %d/%d, want %d/%d", getint(st[0], SOL_SOCKET, SO_SNDBUF),
		     getint(st[0], SOL_SOCKET, SO_RCVBUF), sndbuf, rcvbuf);
	if (!getint(pc[1], SOL_SOCKET, SO_PASSCRED) || getint(pc[0], SOL_SOCKET, SO_PASSCRED))
		fail("SO_PASSCRED lost or spread");
	socklen_t l = sizeof(tv2);
	if (getsockopt(dg[1], SOL_SOCKET, SO_RCVTIMEO, &tv2, &l) || tv2.tv_sec != 2 ||
	    tv2.tv_usec / 1000 != 500)
		fail("SO_RCVTIMEO %ld.%06ld", (long)tv2.tv_sec, (long)tv2.tv_usec);
	if (getsockopt(dg[1], SOL_SOCKET, SO_SNDTIMEO, &tv2, &l) || tv2.tv_sec != 2)
		fail("SO_SNDTIMEO %ld.%06ld", (long)tv2.tv_sec, (long)tv2.tv_usec);
	if (!(fcntl(dg[0], F_GETFD) & FD_CLOEXEC) || (fcntl(dg[1], F_GETFD) & FD_CLOEXEC))
		fail("close-on-exec flags");
	if (getint(st[0], SOL_SOCKET, SO_TYPE) != SOCK_STREAM || getint(dg[0], SOL_SOCKET, SO_TYPE) != SOCK_DGRAM ||
	    getint(sq[0], SOL_SOCKET, SO_TYPE) != SOCK_SEQPACKET)
		fail("socket types");
	pass();
}
