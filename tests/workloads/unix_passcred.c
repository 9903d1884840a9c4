/*
 * unix_passcred: a datagram socket pair whose receiver has SO_PASSCRED set
 * holds a queued datagram. Its receiver is shown the sender's credentials;
 * a queue written again by cairn would show cairn's, so the dump refuses
 * it. After SIGTERM (the original, never restored) the datagram is read
 * with the credentials of this process, which sent it.
 */
#define _GNU_SOURCE
#include "zdtm.h"
#include "unixsk.h"

int main(int argc, char **argv)
{
	int sk[2], on = 1;
	char buf[32], cbuf[CMSG_SPACE(sizeof(struct ucred))];
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm;
	struct ucred uc;

	test_init(argc, argv);
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sk))
		pfail("socketpair");
	if (setsockopt(sk[1], SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)))
		pfail("SO_PASSCRED");
	put(sk[0], "with-creds");

	test_daemon();
	test_waitsig();

	ssize_t n = recvmsg(sk[1], &mh, MSG_DONTWAIT);
	if (n != 10 || memcmp(buf, "with-creds", 10))
		fail("datagram lost (%zd)", n);
	cm = CMSG_FIRSTHDR(&mh);
	if (!cm || cm->cmsg_type != SCM_CREDENTIALS)
		fail("no credentials with the datagram");
	memcpy(&uc, CMSG_DATA(cm), sizeof(uc));
	if (uc.pid != getpid() || uc.uid != getuid())
		fail("credentials pid %d uid %u, want pid %d uid %u", uc.pid, uc.uid, getpid(),
		     getuid());
	pass();
}
