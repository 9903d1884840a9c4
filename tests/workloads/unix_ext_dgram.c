/*
 * unix_ext_dgram: a datagram socket connected to a peer outside the
 * dumped tree that a restore could never reconnect to by name, so that a
 * dump with --ext-unix-sk must refuse it:
 *
 * --connect PATH: connected to the test's socket bound to PATH (the test
 *      then removes PATH, or puts another file there).
 * --pair: one end of a datagram socketpair (no name); the other end, dup'd
 *      to fd 100, is taken by the test (pidfd_getfd) once the file "taken"
 *      appears in the working directory; then this process closes it and
 *      creates the file "closed".
 *
 * After SIGTERM (the dump was refused): the socket is still connected to
 * the same peer and can send to it ("after"; the test reads it).
 */
#include "zdtm.h"

#include <sys/socket.h>
#include <sys/un.h>

int main(int argc, char **argv)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX }, b;
	socklen_t alen = sizeof(a), blen = sizeof(b);
	const char *path;
	int s;

	test_init(argc, argv);
	path = test_arg("--connect");
	if (path) {
		s = socket(AF_UNIX, SOCK_DGRAM, 0);
		strncpy(a.sun_path, path, sizeof(a.sun_path) - 1);
		if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)))
			pfail("connect %s", path);
		test_daemon();
	} else if (test_flag("--pair")) {
		int sv[2], tries;

		if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) || dup2(sv[1], 100) != 100)
			pfail("socketpair");
		close(sv[1]);
		s = sv[0];
		test_daemon();
		for (tries = 0; access("taken", F_OK); tries++) {
			if (tries > 1000)
				fail("the test did not take the other end");
			usleep(10000);
		}
		close(100);
		if (close(open("closed", O_CREAT | O_WRONLY, 0644)))
			pfail("create closed");
	} else {
		fail("--connect PATH or --pair");
	}
	alen = sizeof(a);
	if (getpeername(s, (struct sockaddr *)&a, &alen))
		pfail("getpeername before");
	test_waitsig();
	if (getpeername(s, (struct sockaddr *)&b, &blen))
		pfail("getpeername after");
	if (alen != blen || memcmp(&a, &b, alen))
		fail("the peer's name changed");
	if (send(s, "after", 5, 0) != 5)
		pfail("send to the peer");
	pass();
}
