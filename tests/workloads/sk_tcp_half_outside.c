/*
 * sk_tcp_half_outside: two half-closed TCP connections whose other ends
 * are OUTSIDE the tree (the test holds them and stays alive), checkpointed
 * with --tcp-established:
 *   c1: this side shut down for writing (FIN_WAIT2; the test's end is in
 *       CLOSE_WAIT);
 *   c2: the test shut its side down (this end is in CLOSE_WAIT).
 * After the restore (and SIGTERM) the states must be the same; the
 * workload writes "checked" in its directory; then data must still flow
 * in the open directions and the closes complete: "to-wl" arrives on c1
 * followed by EOF (the test closes), a write on c1 fails with EPIPE; c2
 * reads EOF, "from-wl" is written on it and it is closed (the test reads
 * both).
 *
 * --port P: the test's listener on 127.0.0.1.
 */
#include "zdtm.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

static int tcp_state(int fd)
{
	struct tcp_info ti;
	socklen_t l = sizeof(ti);

	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l))
		pfail("TCP_INFO");
	return ti.tcpi_state;
}

static int conn(struct sockaddr_in *a)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || connect(fd, (void *)a, sizeof(*a)))
		pfail("connect");
	return fd;
}

/* Read with a 10 s bound. */
static ssize_t rd(int fd, char *buf, size_t len)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	if (poll(&p, 1, 10000) != 1)
		fail("nothing to read within 10 s (state %d)", tcp_state(fd));
	return read(fd, buf, len);
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	const char *port;
	char buf[32];
	int c1, c2, i, f;
	ssize_t n;

	test_init(argc, argv);
	port = test_arg("--port");
	if (!port)
		fail("--port is required");
	a.sin_port = htons(atoi(port));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	c1 = conn(&a);
	c2 = conn(&a);
	if (shutdown(c1, SHUT_WR))
		pfail("shutdown c1");
	/* Wait for the FIN of c1 to be acknowledged and for the test's FIN
	 * on c2. */
	for (i = 0; i < 1000 && (tcp_state(c1) != TCP_FIN_WAIT2 || tcp_state(c2) != TCP_CLOSE_WAIT);
	     i++)
		usleep(10000);
	if (tcp_state(c1) != TCP_FIN_WAIT2 || tcp_state(c2) != TCP_CLOSE_WAIT)
		fail("states %d %d, want FIN_WAIT2 and CLOSE_WAIT", tcp_state(c1), tcp_state(c2));

	test_daemon();
	test_waitsig();

	if (tcp_state(c1) != TCP_FIN_WAIT2)
		fail("c1 is in state %d, not FIN_WAIT2", tcp_state(c1));
	if (tcp_state(c2) != TCP_CLOSE_WAIT)
		fail("c2 is in state %d, not CLOSE_WAIT", tcp_state(c2));
	f = open("checked", O_WRONLY | O_CREAT | O_EXCL, 0644);
	if (f < 0)
		pfail("create checked");
	close(f);

	n = rd(c1, buf, sizeof(buf));
	if (n != 5 || memcmp(buf, "to-wl", 5))
		fail("c1: read %zd bytes, want to-wl", n);
	n = rd(c1, buf, sizeof(buf));
	if (n != 0)
		fail("c1: no EOF after the data (%zd)", n);
	if (send(c1, "x", 1, MSG_NOSIGNAL) != -1 || errno != EPIPE)
		fail("c1: a write after SHUT_WR did not fail with EPIPE");

	n = rd(c2, buf, sizeof(buf));
	if (n != 0)
		fail("c2: read %zd, want EOF", n);
	if (send(c2, "from-wl", 7, MSG_NOSIGNAL) != 7)
		pfail("c2: send");
	if (close(c2))
		pfail("close c2");
	pass();
}
