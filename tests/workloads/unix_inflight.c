/*
 * unix_inflight: descriptors in flight (SCM_RIGHTS) in unix socket queues.
 *  - a datagram pair: "d-pipe" carrying a pipe's read end (the process
 *    holds it too, the pipe holds "xyz"), then "d-two" carrying the pipe's
 *    write end and an eventfd together, then "d-plain" with none;
 *  - a seqpacket pair: "s-file" carrying a regular file the process holds
 *    (offset 2), then "s-plain";
 *  - a stream pair: "abc" written alone, "def" written with the eventfd,
 *    then "ghi": after the restore a 3-byte read gets "abc" without
 *    descriptors (they ride on "def", not before), the next read stops
 *    after "def" with the eventfd, the next one gets "ghi" without;
 *  - a socket of a pair that only exists in flight (sent over the datagram
 *    pair in "d-sock", then closed), with "to-x" queued on it;
 *  - a stream pair whose writer shut its side down after sending "bye"
 *    with the pipe's read end.
 * After the restore every descriptor that comes out of a queue must be the
 * same open file description as the one the process holds (kcmp), and the
 * socket only in flight must still be connected to its other end.
 * Flags for refusal tests (the original must pass after a refused dump):
 *  --standalone-file  also a file no process holds in flight
 *  --nested           also a socket in flight that has a descriptor in
 *                     flight in its own queue
 */
#include "zdtm.h"
#include "unixsk.h"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>

static void send_fds(int s, const char *data, const int *fds, int n)
{
	char cbuf[CMSG_SPACE(sizeof(int) * 4)];
	struct iovec iov = { .iov_base = (void *)data, .iov_len = strlen(data) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cm;

	if (n) {
		memset(cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * n);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * n);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * n);
	}
	if (sendmsg(s, &mh, MSG_NOSIGNAL) != (ssize_t)strlen(data))
		pfail("sendmsg %s", data);
}

/* Receive one message of at most `size` bytes; it must be `want` with
 * exactly `n` descriptors, returned in `fds`. */
static void recv_fds(int s, size_t size, const char *want, int *fds, int n, const char *what)
{
	char buf[256], cbuf[CMSG_SPACE(sizeof(int) * 8)];
	struct iovec iov = { .iov_base = buf, .iov_len = size };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm;
	int got = 0;
	ssize_t r = recvmsg(s, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

	if (r < 0)
		pfail("%s: recvmsg", what);
	buf[r] = 0;
	if (strcmp(buf, want))
		fail("%s: got \"%s\", want \"%s\"", what, buf, want);
	if (mh.msg_flags & MSG_CTRUNC)
		fail("%s: control data truncated", what);
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			fail("%s: unexpected control message %d/%d", what, cm->cmsg_level,
			     cm->cmsg_type);
		int k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		if (got + k > n)
			fail("%s: %d descriptors, want %d", what, got + k, n);
		memcpy(fds + got, CMSG_DATA(cm), k * sizeof(int));
		got += k;
	}
	if (got != n)
		fail("%s: %d descriptors, want %d", what, got, n);
}

static void same_file(int a, int b, const char *what)
{
	pid_t me = getpid();

	if (syscall(SYS_kcmp, me, me, KCMP_FILE, a, b) != 0)
		fail("%s: fd %d is not the same open file description as fd %d", what, a, b);
}

int main(int argc, char **argv)
{
	int dg[2], sq[2], st[2], x[2], sh[2], p[2], efd, file, fds[4];
	char path[] = "inflight.XXXXXX", c;
	uint64_t v;

	test_init(argc, argv);
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) || socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sq) ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, st) || socketpair(AF_UNIX, SOCK_STREAM, 0, x) ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, sh) || pipe(p))
		pfail("setup");
	efd = eventfd(7, 0);
	file = mkstemp(path);
	if (efd < 0 || file < 0 || write(file, "hello", 5) != 5 || lseek(file, 2, SEEK_SET) != 2)
		pfail("eventfd/file");
	unlink(path);
	if (write(p[1], "xyz", 3) != 3)
		pfail("write pipe");

	send_fds(dg[0], "d-pipe", &p[0], 1);
	fds[0] = p[1];
	fds[1] = efd;
	send_fds(dg[0], "d-two", fds, 2);
	send_fds(dg[0], "d-sock", &x[1], 1);
	close(x[1]);
	put(x[0], "to-x");
	put(dg[0], "d-plain");

	send_fds(sq[0], "s-file", &file, 1);
	put(sq[0], "s-plain");

	put(st[0], "abc");
	send_fds(st[0], "def", &efd, 1);
	put(st[0], "ghi");

	send_fds(sh[0], "bye", &p[0], 1);
	if (shutdown(sh[0], SHUT_WR))
		pfail("shutdown");

	if (test_flag("--standalone-file")) {
		int f = open("/proc/self/stat", O_RDONLY);
		if (f < 0)
			pfail("open");
		send_fds(sq[0], "s-alone", &f, 1);
		close(f);
	}
	if (test_flag("--nested")) {
		int y[2];
		if (socketpair(AF_UNIX, SOCK_DGRAM, 0, y))
			pfail("socketpair");
		send_fds(y[0], "inner", &efd, 1);
		send_fds(dg[0], "d-nested", &y[1], 1);
		close(y[1]);
		close(y[0]);
	}

	test_daemon();
	test_waitsig();

	/* The datagram pair. */
	recv_fds(dg[1], 256, "d-pipe", fds, 1, "d-pipe");
	same_file(fds[0], p[0], "d-pipe");
	if (read(fds[0], &c, 1) != 1 || c != 'x')
		fail("the pipe end in flight does not read the pipe");
	close(fds[0]);
	recv_fds(dg[1], 256, "d-two", fds, 2, "d-two");
	same_file(fds[0], p[1], "d-two pipe");
	same_file(fds[1], efd, "d-two eventfd");
	close(fds[0]);
	close(fds[1]);
	recv_fds(dg[1], 256, "d-sock", fds, 1, "d-sock");
	expect(fds[0], "to-x", "the socket in flight's queue");
	put(fds[0], "from-y");
	expect(x[0], "from-y", "the other end of the socket in flight");
	close(fds[0]);
	recv_fds(dg[1], 256, "d-plain", fds, 0, "d-plain");
	if (test_flag("--nested")) {
		recv_fds(dg[1], 256, "d-nested", fds, 1, "d-nested");
		recv_fds(fds[0], 256, "inner", fds + 1, 1, "inner");
		same_file(fds[2 - 1], efd, "inner eventfd");
	}

	/* The seqpacket pair. */
	recv_fds(sq[1], 256, "s-file", fds, 1, "s-file");
	same_file(fds[0], file, "s-file");
	if (lseek(fds[0], 0, SEEK_CUR) != 2)
		fail("the file in flight is not at offset 2");
	close(fds[0]);
	recv_fds(sq[1], 256, "s-plain", fds, 0, "s-plain");
	if (test_flag("--standalone-file"))
		recv_fds(sq[1], 256, "s-alone", fds, 1, "s-alone");

	/* The stream pair: write boundaries where descriptors ride. */
	recv_fds(st[1], 3, "abc", fds, 0, "stream abc");
	recv_fds(st[1], 256, "def", fds, 1, "stream def");
	same_file(fds[0], efd, "stream eventfd");
	if (read(fds[0], &v, 8) != 8 || v != 7)
		fail("the eventfd in flight reads %llu", (unsigned long long)v);
	close(fds[0]);
	recv_fds(st[1], 256, "ghi", fds, 0, "stream ghi");

	/* The shut-down writer. */
	recv_fds(sh[1], 256, "bye", fds, 1, "shutdown bye");
	same_file(fds[0], p[0], "shutdown pipe");
	if (recv(sh[1], &c, 1, MSG_DONTWAIT) != 0)
		fail("no end of file after the writer's shutdown");

	expect_empty(dg[1], "dgram");
	expect_empty(sq[1], "seqpacket");
	expect_empty(st[1], "stream");
	pass();
}
