/*
 * unix_scm: a descriptor in flight (SCM_RIGHTS) in a unix socket's queue,
 * which cairn refuses only after the tree is frozen and other queues were
 * already read: a dump that fails there must leave every queue as it was.
 * A stream pair and a datagram pair hold data; a seqpacket pair holds a
 * record carrying a pipe's read end. After SIGTERM all data is read back
 * and the passed descriptor works.
 */
#include "zdtm.h"
#include "unixsk.h"

int main(int argc, char **argv)
{
	int st[2], dg[2], sq[2], p[2];
	char cbuf[CMSG_SPACE(sizeof(int))], c;
	struct iovec iov = { .iov_base = "with-fd", .iov_len = 7 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm;

	test_init(argc, argv);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, st) || socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sq) || pipe(p))
		pfail("setup");
	put(st[0], "stream-data");
	put(dg[0], "dgram-1");
	put(dg[0], "dgram-2");
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &p[0], sizeof(int));
	if (sendmsg(sq[0], &mh, 0) != 7)
		pfail("sendmsg SCM_RIGHTS");
	close(p[0]);
	if (write(p[1], "z", 1) != 1)
		pfail("write pipe");

	test_daemon();
	test_waitsig();

	expect(st[1], "stream-data", "stream");
	expect(dg[1], "dgram-1", "dgram 1");
	expect(dg[1], "dgram-2", "dgram 2");
	char buf[16];
	iov.iov_base = buf;
	iov.iov_len = sizeof(buf);
	mh.msg_controllen = sizeof(cbuf);
	ssize_t n = recvmsg(sq[1], &mh, MSG_DONTWAIT);
	if (n != 7 || memcmp(buf, "with-fd", 7))
		fail("seqpacket record lost (%zd)", n);
	cm = CMSG_FIRSTHDR(&mh);
	if (!cm || cm->cmsg_type != SCM_RIGHTS)
		fail("the descriptor in flight is gone");
	int fd;
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	if (read(fd, &c, 1) != 1 || c != 'z')
		fail("the passed pipe end does not read the pipe");
	expect_empty(sq[1], "seqpacket");
	pass();
}
