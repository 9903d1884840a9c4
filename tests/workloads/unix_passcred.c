/*
 * unix_passcred: queued unix messages come back with their senders'
 * credentials (SCM_CREDENTIALS), whoever sent them.
 *   dg:  datagram pair, receiver with SO_PASSCRED, a datagram from this
 *        process;
 *   st:  stream pair, receiver WITHOUT SO_PASSCRED, writer with it (so
 *        the kernel attaches credentials): "P1" written by this process,
 *        "C1" by a child, "P2" by this process again; after the restore
 *        the receiver sets SO_PASSCRED and each read stops where the
 *        writer changes, with that writer's pid;
 *   ns:  stream pair, neither end with SO_PASSCRED: "N1" from this
 *        process, "N2" from the child carry no credentials; a receiver
 *        that sets SO_PASSCRED later reads "N1N2" with pid 0, as before;
 *   pf:  datagram pair, receiver with SO_PASSPIDFD, a datagram from the
 *        child: its SCM_PIDFD is a pidfd of the child (fdinfo Pid:).
 * The child stays alive (it is part of the tree) and is killed at the end.
 *
 * --exited: a child sends a datagram to dg's receiver and exits (reaped):
 * no living process has its pid, so the dump must refuse. After SIGTERM
 * (the original, never restored) the datagram is still there.
 */
#include "zdtm.h"
#include "unixsk.h"
#include <sys/wait.h>

#ifndef SO_PASSPIDFD
#define SO_PASSPIDFD 76
#endif
#ifndef SCM_PIDFD
#define SCM_PIDFD 0x04
#endif

/* recvmsg one message; returns its length, its SCM_CREDENTIALS pid (or -1)
 * and its SCM_PIDFD (or -1). */
static ssize_t get(int fd, char *buf, size_t len, pid_t *pid, int *pidfd)
{
	char cbuf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = buf, .iov_len = len - 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm;
	ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT);

	*pid = -1;
	if (pidfd)
		*pidfd = -1;
	if (n < 0)
		pfail("recvmsg");
	buf[n] = 0;
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET)
			continue;
		if (cm->cmsg_type == SCM_CREDENTIALS) {
			struct ucred uc;

			memcpy(&uc, CMSG_DATA(cm), sizeof(uc));
			*pid = uc.pid;
			if (uc.pid && (uc.uid != getuid() || uc.gid != getgid()))
				fail("credentials uid %u gid %u, want %u %u", uc.uid, uc.gid, getuid(),
				     getgid());
		}
		if (cm->cmsg_type == SCM_PIDFD && pidfd)
			memcpy(pidfd, CMSG_DATA(cm), sizeof(int));
	}
	return n;
}

static void expect_from(int fd, const char *want, pid_t from, const char *what)
{
	char buf[64];
	pid_t pid;
	ssize_t n = get(fd, buf, sizeof(buf), &pid, NULL);

	if ((size_t)n != strlen(want) || strcmp(buf, want))
		fail("%s: got \"%s\", want \"%s\"", what, buf, want);
	if (pid != from)
		fail("%s: \"%s\" came with pid %d, want %d", what, want, pid, from);
}

int main(int argc, char **argv)
{
	int dg[2], st[2], ns[2], pf[2], sync[2], on = 1, exited, pidfds;
	char buf[64], info[512], line[64];
	pid_t child, me, pid;
	int pidfd;

	test_init(argc, argv);
	exited = test_flag("--exited");
	me = getpid();
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) || socketpair(AF_UNIX, SOCK_STREAM, 0, st) ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, ns) ||
	    socketpair(AF_UNIX, SOCK_DGRAM, 0, pf) || pipe(sync))
		pfail("socketpair");
	if (setsockopt(dg[1], SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)))
		pfail("SO_PASSCRED");
	if (setsockopt(st[0], SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)))
		pfail("SO_PASSCRED on the writer");
	/* SO_PASSPIDFD is Linux 6.5+: without it the pf part is left out
	 * (the test says so, probing the same). */
	pidfds = setsockopt(pf[1], SOL_SOCKET, SO_PASSPIDFD, &on, sizeof(on)) == 0;
	if (!pidfds && errno != ENOPROTOOPT)
		pfail("SO_PASSPIDFD");
	if (!pidfds)
		test_msg("SO_PASSPIDFD: not in this kernel (Linux 6.5+): no pidfd part");
	put(dg[0], "with-creds");
	put(st[0], "P1");
	put(ns[0], "N1");
	child = fork();
	if (child < 0)
		pfail("fork");
	if (child == 0) {
		if (exited) {
			put(dg[0], "gone");
			_exit(0);
		}
		put(st[0], "C1");
		put(ns[0], "N2");
		if (pidfds)
			put(pf[0], "pidfd");
		if (write(sync[1], "x", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	if (exited) {
		if (waitpid(child, NULL, 0) != child)
			pfail("waitpid");
	} else if (read(sync[0], buf, 1) != 1) {
		pfail("sync");
	}
	close(sync[0]);
	close(sync[1]);
	put(st[0], "P2");

	test_daemon();
	test_waitsig();

	expect_from(dg[1], "with-creds", me, "dgram with SO_PASSCRED");
	if (exited) {
		expect_from(dg[1], "gone", child, "dgram from an exited child");
		pass();
	}
	if (setsockopt(st[1], SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)))
		pfail("SO_PASSCRED after the restore");
	expect_from(st[1], "P1", me, "stream, first write");
	expect_from(st[1], "C1", child, "stream, the child's write");
	expect_from(st[1], "P2", me, "stream, last write");
	expect_empty(st[1], "stream");
	if (setsockopt(ns[1], SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)))
		pfail("SO_PASSCRED after the restore");
	expect_from(ns[1], "N1N2", 0, "stream without credentials");

	if (!pidfds) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
		pass();
	}
	if (get(pf[1], buf, sizeof(buf), &pid, &pidfd) != 5 || strcmp(buf, "pidfd"))
		fail("SO_PASSPIDFD datagram: got \"%s\"", buf);
	if (pidfd < 0)
		fail("no SCM_PIDFD with the datagram");
	snprintf(line, sizeof(line), "/proc/self/fdinfo/%d", pidfd);
	read_file(line, info, sizeof(info));
	snprintf(line, sizeof(line), "\nPid:\t%d\n", child);
	if (!strstr(info, line))
		fail("SCM_PIDFD is not a pidfd of the child %d: %s", child, info);

	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	pass();
}
