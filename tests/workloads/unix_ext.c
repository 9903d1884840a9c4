/*
 * unix_ext: unix sockets whose peers are outside the dumped tree (the
 * test holds them): a datagram socket connect()ed to the test's bound
 * datagram socket (--dgram PATH) and a stream socket connected to the
 * test's listener (--listen PATH), with "from-server" queued on it.
 *
 * Checks after SIGTERM: if the file "expect-restored" exists in the working
 * directory (the test creates it before restoring with --ext-unix-sk), the
 * datagram socket is connected to PATH again and the stream socket reads
 * its queued data, then EOF (its peer is gone), and writing to it fails
 * with EPIPE; otherwise (the original, after a refused dump) both are
 * connected as before.
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
	const char *dpath, *lpath;
	char buf[64];
	ssize_t n;
	int d, s, restored;

	test_init(argc, argv);
	dpath = test_arg("--dgram");
	lpath = test_arg("--listen");
	if (!dpath || !lpath)
		fail("usage: --dgram PATH --listen PATH");
	d = connect_to(SOCK_DGRAM, dpath);
	s = connect_to(SOCK_STREAM, lpath);
	if (send(d, "before", 6, 0) != 6 || send(s, "to-server", 9, 0) != 9)
		pfail("send");

	test_daemon();
	test_waitsig();

	restored = access("expect-restored", F_OK) == 0;
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
	pass();
}
