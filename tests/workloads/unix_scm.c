/*
 * unix_scm: a descriptor in flight (SCM_RIGHTS) in a unix socket's queue,
 * which cairn refuses only after the tree is frozen and other queues were
 * already read: a dump that fails there must leave every queue as it was.
 * A stream pair and a datagram pair hold data; a seqpacket pair holds a
 * record carrying an eventfd that no process holds any more (a pipe end
 * would be refused earlier, before the freeze, as a pipe whose other end
 * is outside the tree). After SIGTERM all data is read back and the
 * passed descriptor works.
 */
#include "zdtm.h"
#include "unixsk.h"
#include <sys/eventfd.h>

int main(int argc, char **argv)
{
	int st[2], dg[2], sq[2], efd;
	uint64_t v = 7;
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = "with-fd", .iov_len = 7 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm;

	test_init(argc, argv);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, st) || socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sq) ||
	    (efd = eventfd(0, 0)) < 0)
		pfail("setup");
	put(st[0], "stream-data");
	put(dg[0], "dgram-1");
	put(dg[0], "dgram-2");
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &efd, sizeof(int));
	if (sendmsg(sq[0], &mh, 0) != 7)
		pfail("sendmsg SCM_RIGHTS");
	if (write(efd, &v, sizeof(v)) != sizeof(v))
		pfail("write eventfd");
	close(efd);

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
	v = 0;
	if (read(fd, &v, sizeof(v)) != sizeof(v) || v != 7)
		fail("the passed eventfd reads %llu, not 7", (unsigned long long)v);
	expect_empty(sq[1], "seqpacket");
	pass();
}
