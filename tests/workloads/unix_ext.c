/*
 * unix_ext: unix sockets whose peers are outside the dumped tree (the
 * test holds them): a datagram socket connect()ed to the test's bound
 * datagram socket (--dgram PATH) and a stream socket connected to the
 * test's listener (--listen PATH), with "from-server" queued on it; and a
 * listener of its own (--serve PATH) with a connection from the test
 * waiting in its backlog, "ext-client" sent on it.
 *
 * Checks after SIGTERM: if the file "expect-restored" exists in the working
 * directory (the test creates it before restoring with --ext-unix-sk), the
 * datagram socket is connected to PATH again and the stream socket reads
 * its queued data, then EOF (its peer is gone), and writing to it fails
 * with EPIPE, and the waiting connection is accepted with its data, then
 * EOF (its client is gone); otherwise (the original, after a refused dump)
 * all are connected as before.
 *
 * SO_PEERCRED of the stream socket names the test (its listener's
 * creator), alive at restore: a restore refuses that unless given
 * --ext-unix-sk-lose-peercred, which the test passes with the file
 * "expect-restored"; then it names another task (cairn), and before the
 * dump (and in the original) the test's pid.
 */
#include "zdtm.h"

#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

static int connect_to(int type, const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int s = socket(AF_UNIX, type, 0);

	strncpy(a.sun_path, path, sizeof(a.sun_path) - 1);
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)))
		pfail("connect %s", path);
	return s;
}

int main(int argc, char **argv)
{
	const char *dpath, *lpath, *spath;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int lsn, c;
	char buf[64];
	ssize_t n;
	int d, s, restored;
	struct ucred before, after;
	socklen_t len = sizeof(before);

	test_init(argc, argv);
	dpath = test_arg("--dgram");
	lpath = test_arg("--listen");
	spath = test_arg("--serve");
	if (!dpath || !lpath || !spath)
		fail("usage: --dgram PATH --listen PATH --serve PATH");
	strncpy(sa.sun_path, spath, sizeof(sa.sun_path) - 1);
	lsn = socket(AF_UNIX, SOCK_STREAM, 0);
	if (lsn < 0 || bind(lsn, (struct sockaddr *)&sa, sizeof(sa)) || listen(lsn, 4))
		pfail("listen on %s", spath);
	d = connect_to(SOCK_DGRAM, dpath);
	s = connect_to(SOCK_STREAM, lpath);
	if (send(d, "before", 6, 0) != 6 || send(s, "to-server", 9, 0) != 9)
		pfail("send");
	if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &before, &len))
		pfail("SO_PEERCRED");

	test_daemon();
	test_waitsig();

	restored = access("expect-restored", F_OK) == 0;
	len = sizeof(after);
	if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &after, &len))
		pfail("SO_PEERCRED after");
	if (restored && after.pid == before.pid)
		fail("stream socket: SO_PEERCRED names pid %d as before, but its task is alive: "
		     "the restore cannot make the connection as it", after.pid);
	if (!restored && after.pid != before.pid)
		fail("stream socket: SO_PEERCRED names pid %d, not %d", after.pid, before.pid);
	if (send(d, "after", 5, 0) != 5)
		pfail("datagram socket: send to its outside peer");
	n = recv(s, buf, sizeof(buf) - 1, MSG_DONTWAIT);
	if (n < 0)
		pfail("stream socket: recv");
	buf[n] = 0;
	if (strcmp(buf, "from-server"))
		fail("stream socket: got \"%s\", want \"from-server\"", buf);
	n = recv(s, buf, 1, MSG_DONTWAIT);
	if (restored) {
		if (n != 0)
			fail("stream socket: no EOF after the queued data (its peer is gone)");
		if (send(s, "x", 1, MSG_NOSIGNAL) != -1 || errno != EPIPE)
			fail("stream socket: writing did not fail with EPIPE");
	} else if (n != -1 || errno != EAGAIN) {
		fail("stream socket: unexpected recv %zd (errno %d)", n, errno);
	}
	c = accept(lsn, NULL, NULL);
	if (c < 0)
		pfail("accept the waiting connection");
	n = recv(c, buf, sizeof(buf) - 1, MSG_DONTWAIT);
	if (n < 0)
		pfail("waiting connection: recv");
	buf[n] = 0;
	if (strcmp(buf, "ext-client"))
		fail("waiting connection: got \"%s\", want \"ext-client\"", buf);
	n = recv(c, buf, 1, MSG_DONTWAIT);
	if (restored ? n != 0 : (n != -1 || errno != EAGAIN))
		fail("waiting connection: after the data recv gave %zd (errno %d)", n, errno);
	pass();
}
