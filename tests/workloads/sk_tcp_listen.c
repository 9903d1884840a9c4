/*
 * sk_tcp_listen: TCP listening sockets (IPv4, IPv6 only, dual stack) keep
 * their addresses, ports, backlogs and options; unconnected TCP sockets
 * (bound and unbound) come back too; after restore clients can connect
 * to every listener and talk to the accepted connection.
 */
#include "zdtm.h"
#include "sockopt.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <time.h>

struct lsn {
	int fd;
	int family;
	const char *addr;
	int backlog;
	int v6only;
	int nonblock;
	socklen_t len;
	struct sockaddr_storage ss;
};

static void make(struct lsn *l)
{
	l->fd = socket(l->family, SOCK_STREAM | (l->nonblock ? SOCK_NONBLOCK : 0), 0);
	if (l->fd < 0)
		pfail("socket");
	setint(l->fd, SOL_SOCKET, SO_REUSEADDR, 1);
	if (l->family == AF_INET6)
		setint(l->fd, IPPROTO_IPV6, IPV6_V6ONLY, l->v6only);
	memset(&l->ss, 0, sizeof(l->ss));
	if (l->family == AF_INET) {
		struct sockaddr_in *a = (void *)&l->ss;
		a->sin_family = AF_INET;
		inet_pton(AF_INET, l->addr, &a->sin_addr);
		l->len = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (void *)&l->ss;
		a->sin6_family = AF_INET6;
		inet_pton(AF_INET6, l->addr, &a->sin6_addr);
		l->len = sizeof(*a);
	}
	if (bind(l->fd, (void *)&l->ss, l->len))
		pfail("bind %s", l->addr);
	if (listen(l->fd, l->backlog))
		pfail("listen");
	if (getsockname(l->fd, (void *)&l->ss, &l->len))
		pfail("getsockname");
}

static int port_of(struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)ss)->sin_port);
	return ntohs(((struct sockaddr_in6 *)ss)->sin6_port);
}

/* Connect to the listener at (family, addr, port), accept, talk both ways. */
static void talk(struct lsn *l, int family, const char *addr)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char buf[16];
	int c, a;

	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *s = (void *)&ss;
		s->sin_family = AF_INET;
		s->sin_port = htons(port_of(&l->ss));
		inet_pton(AF_INET, addr, &s->sin_addr);
		len = sizeof(*s);
	} else {
		struct sockaddr_in6 *s = (void *)&ss;
		s->sin6_family = AF_INET6;
		s->sin6_port = htons(port_of(&l->ss));
		inet_pton(AF_INET6, addr, &s->sin6_addr);
		len = sizeof(*s);
	}
	c = socket(family, SOCK_STREAM, 0);
	if (c < 0 || connect(c, (void *)&ss, len))
		pfail("connect to %s port %d after restore", addr, port_of(&l->ss));
	if (l->nonblock) {
		struct timespec ts = { 0, 1000000 };
		for (int i = 0; i < 5000; i++) {
			a = accept(l->fd, NULL, NULL);
			if (a >= 0 || errno != EAGAIN)
				break;
			nanosleep(&ts, NULL);
		}
	} else {
		a = accept(l->fd, NULL, NULL);
	}
	if (a < 0)
		pfail("accept on %s", l->addr);
	if (write(c, "ping", 4) != 4 || read(a, buf, 4) != 4 || memcmp(buf, "ping", 4))
		fail("client -> server on %s", l->addr);
	if (write(a, "pong", 4) != 4 || read(c, buf, 4) != 4 || memcmp(buf, "pong", 4))
		fail("server -> client on %s", l->addr);
	close(a);
	close(c);
}

int main(int argc, char **argv)
{
	struct lsn ls[] = {
		{ .family = AF_INET, .addr = "127.0.0.1", .backlog = 7 },
		{ .family = AF_INET6, .addr = "::1", .backlog = 3, .v6only = 1, .nonblock = 1 },
		{ .family = AF_INET6, .addr = "::", .backlog = 11, .v6only = 0 },
	};
	int n = sizeof(ls) / sizeof(ls[0]);
	int ports[3];
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t slen = sizeof(sin);
	int bound, unbound, bport;

	test_init(argc, argv);
	for (int i = 0; i < n; i++) {
		make(&ls[i]);
		ports[i] = port_of(&ls[i].ss);
	}
	/* Options on the IPv4 listener. */
	setint(ls[0].fd, SOL_SOCKET, SO_KEEPALIVE, 1);
	setint(ls[0].fd, SOL_SOCKET, SO_RCVBUF, 100000);
	setint(ls[0].fd, IPPROTO_TCP, TCP_NODELAY, 1);
	setint(ls[0].fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, 0);
	setint(ls[1].fd, IPPROTO_TCP, TCP_KEEPIDLE, 77);
	int rcvbuf = getint(ls[0].fd, SOL_SOCKET, SO_RCVBUF);

	/* A bound, unconnected TCP socket and an unbound one. */
	bound = socket(AF_INET, SOCK_STREAM, 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bound < 0 || bind(bound, (void *)&sin, sizeof(sin)))
		pfail("bind unconnected");
	if (getsockname(bound, (void *)&sin, &slen))
		pfail("getsockname");
	bport = ntohs(sin.sin_port);
	unbound = socket(AF_INET6, SOCK_STREAM, 0);
	if (unbound < 0)
		pfail("socket");

	/* --pending: a connection waits in the IPv4 listener's accept queue. */
	int pending = -1;
	if (test_flag("--pending")) {
		struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(ports[0]) };
		to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		pending = socket(AF_INET, SOCK_STREAM, 0);
		if (pending < 0 || connect(pending, (void *)&to, sizeof(to)) ||
		    write(pending, "early", 5) != 5)
			pfail("pending connection");
	}

	test_daemon();
	test_waitsig();

	if (pending >= 0) {
		char b[8];
		int a = accept(ls[0].fd, NULL, NULL);
		if (a < 0 || read(a, b, 5) != 5 || memcmp(b, "early", 5))
			fail("the pending connection was lost");
		close(a);
		close(pending);
	}

	for (int i = 0; i < n; i++) {
		struct lsn *l = &ls[i];
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		struct tcp_info ti;
		socklen_t tl = sizeof(ti);

		if (getsockname(l->fd, (void *)&ss, &len))
			pfail("getsockname %s", l->addr);
		if (port_of(&ss) != ports[i])
			fail("%s: port %d, expected %d", l->addr, port_of(&ss), ports[i]);
		if (!getint(l->fd, SOL_SOCKET, SO_ACCEPTCONN))
			fail("%s is not listening", l->addr);
		if (!getint(l->fd, SOL_SOCKET, SO_REUSEADDR))
			fail("%s lost SO_REUSEADDR", l->addr);
		if (getsockopt(l->fd, IPPROTO_TCP, TCP_INFO, &ti, &tl))
			pfail("TCP_INFO");
		if ((int)ti.tcpi_sacked != l->backlog)
			fail("%s: backlog %u, expected %d", l->addr, ti.tcpi_sacked, l->backlog);
		if (l->family == AF_INET6 &&
		    getint(l->fd, IPPROTO_IPV6, IPV6_V6ONLY) != l->v6only)
			fail("%s: IPV6_V6ONLY changed", l->addr);
		if (!!(fcntl(l->fd, F_GETFL) & O_NONBLOCK) != l->nonblock)
			fail("%s: O_NONBLOCK changed", l->addr);
	}
	if (!getint(ls[0].fd, SOL_SOCKET, SO_KEEPALIVE) ||
	    getint(ls[0].fd, SOL_SOCKET, SO_RCVBUF) != rcvbuf ||
	    !getint(ls[0].fd, IPPROTO_TCP, TCP_NODELAY))
		fail("options of the IPv4 listener changed (rcvbuf %d, was %d)",
		     getint(ls[0].fd, SOL_SOCKET, SO_RCVBUF), rcvbuf);
	if (getint(ls[1].fd, IPPROTO_TCP, TCP_KEEPIDLE) != 77)
		fail("TCP_KEEPIDLE changed");

	talk(&ls[0], AF_INET, "127.0.0.1");
	talk(&ls[1], AF_INET6, "::1");
	talk(&ls[2], AF_INET6, "::1");
	talk(&ls[2], AF_INET, "127.0.0.1"); /* dual stack */

	slen = sizeof(sin);
	if (getsockname(bound, (void *)&sin, &slen) || ntohs(sin.sin_port) != bport)
		fail("the bound unconnected socket lost its port %d", bport);
	if (getint(unbound, SOL_SOCKET, SO_DOMAIN) != AF_INET6 ||
	    getint(unbound, SOL_SOCKET, SO_TYPE) != SOCK_STREAM)
		fail("the unbound socket changed kind");
	/* The bound socket can still connect. */
	sin.sin_port = htons(ports[0]);
	if (connect(bound, (void *)&sin, sizeof(sin)))
		pfail("connect the bound socket");
	pass();
}
