/*
 * sk_udp: UDP sockets, IPv4 and IPv6, bound and connected, keep their
 * addresses, options and the datagrams queued in them (contents,
 * boundaries, order and senders); afterwards they send and receive.
 */
#include "zdtm.h"
#include "sockopt.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

static int udp(int family, const char *addr, struct sockaddr_storage *ss, socklen_t *len)
{
	int fd = socket(family, SOCK_DGRAM, 0);

	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *a = (void *)ss;
		a->sin_family = AF_INET;
		inet_pton(AF_INET, addr, &a->sin_addr);
		*len = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (void *)ss;
		a->sin6_family = AF_INET6;
		inet_pton(AF_INET6, addr, &a->sin6_addr);
		*len = sizeof(*a);
		setint(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1);
	}
	if (fd < 0 || bind(fd, (void *)ss, *len) || getsockname(fd, (void *)ss, len))
		pfail("udp socket on %s", addr);
	return fd;
}

static int same_addr(struct sockaddr_storage *a, struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET) {
		struct sockaddr_in *x = (void *)a, *y = (void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	struct sockaddr_in6 *x = (void *)a, *y = (void *)b;
	return x->sin6_port == y->sin6_port && !memcmp(&x->sin6_addr, &y->sin6_addr, 16);
}

/* Send datagram number i (length len) from fd to `to`. */
static void dsend(int fd, int i, size_t len, struct sockaddr_storage *to, socklen_t tl)
{
	static uint8_t b[9000];

	fill_pattern(b, len, 100 + i, 0);
	if (sendto(fd, b, len, 0, to ? (void *)to : NULL, to ? tl : 0) != (ssize_t)len)
		pfail("sendto datagram %d", i);
}

/* Receive datagram number i, of length len, from `from`. */
static void drecv(int fd, int i, size_t len, struct sockaddr_storage *from)
{
	static uint8_t b[9001];
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	ssize_t r = recvfrom(fd, b, sizeof(b), MSG_DONTWAIT, (void *)&ss, &sl);

	if (r < 0)
		pfail("datagram %d is missing", i);
	if ((size_t)r != len)
		fail("datagram %d: %zd bytes, expected %zu", i, r, len);
	if (check_pattern(b, len, 100 + i, 0) >= 0)
		fail("datagram %d: wrong contents", i);
	if (from && !same_addr(&ss, from))
		fail("datagram %d: wrong sender", i);
}

int main(int argc, char **argv)
{
	struct sockaddr_storage a4, a4c, o4, a6, a6c, chk;
	socklen_t l4, l4c, lo4, l6, l6c, lc;
	struct timeval tv = { 1, 500000 }, got;
	socklen_t tl = sizeof(got);
	int u4, u4c, o, u6, u6c, rcvbuf;

	test_init(argc, argv);
	u4 = udp(AF_INET, "127.0.0.1", &a4, &l4);
	setint(u4, SOL_SOCKET, SO_REUSEADDR, 1);
	setint(u4, SOL_SOCKET, SO_BROADCAST, 1);
	setint(u4, IPPROTO_IP, IP_TOS, 0x10);
	setint(u4, SOL_SOCKET, SO_RCVBUF, 300000);
	rcvbuf = getint(u4, SOL_SOCKET, SO_RCVBUF);
	if (setsockopt(u4, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)))
		pfail("SO_RCVTIMEO");
	fcntl(u4, F_SETFL, O_NONBLOCK);
	/* A connected socket, bound to a port of its own. */
	u4c = udp(AF_INET, "127.0.0.1", &a4c, &l4c);
	if (connect(u4c, (void *)&a4, l4))
		pfail("connect u4c");
	/* Another sender. */
	o = udp(AF_INET, "127.0.0.1", &o4, &lo4);
	u6 = udp(AF_INET6, "::1", &a6, &l6);
	setint(u6, IPPROTO_IPV6, IPV6_TCLASS, 0x28);
	u6c = socket(AF_INET6, SOCK_DGRAM, 0); /* connected without bind */
	if (u6c < 0 || connect(u6c, (void *)&a6, l6))
		pfail("connect u6c");
	l6c = sizeof(a6c);
	getsockname(u6c, (void *)&a6c, &l6c);

	/* Queued: to u4 from u4c and o (one empty datagram), to u6, to u4c. */
	dsend(u4c, 1, 100, NULL, 0);
	dsend(o, 2, 1400, &a4, l4);
	dsend(u4c, 3, 0, NULL, 0);
	dsend(u4c, 4, 9000, NULL, 0);
	dsend(u6c, 5, 77, NULL, 0);
	dsend(u6c, 6, 5, NULL, 0);
	dsend(u4, 7, 33, &a4c, l4c);

	test_daemon();
	test_waitsig();

	lc = sizeof(chk);
	if (getsockname(u4, (void *)&chk, &lc) || !same_addr(&chk, &a4))
		fail("u4 lost its address");
	lc = sizeof(chk);
	if (getpeername(u4c, (void *)&chk, &lc) || !same_addr(&chk, &a4))
		fail("u4c is not connected to u4 any more");
	lc = sizeof(chk);
	if (getsockname(u4c, (void *)&chk, &lc) || !same_addr(&chk, &a4c))
		fail("u4c lost its address");
	lc = sizeof(chk);
	if (getpeername(u6c, (void *)&chk, &lc) || !same_addr(&chk, &a6))
		fail("u6c is not connected to u6 any more");
	lc = sizeof(chk);
	if (getsockname(u6c, (void *)&chk, &lc) || !same_addr(&chk, &a6c))
		fail("u6c lost its automatic port");
	if (!getint(u4, SOL_SOCKET, SO_REUSEADDR) || !getint(u4, SOL_SOCKET, SO_BROADCAST) ||
	    getint(u4, IPPROTO_IP, IP_TOS) != 0x10 || getint(u4, SOL_SOCKET, SO_RCVBUF) != rcvbuf)
		fail("u4 options changed");
	if (getsockopt(u4, SOL_SOCKET, SO_RCVTIMEO, &got, &tl) || got.tv_sec != 1 ||
	    got.tv_usec != 500000)
		fail("SO_RCVTIMEO changed");
	if (!(fcntl(u4, F_GETFL) & O_NONBLOCK))
		fail("u4 lost O_NONBLOCK");
	if (getint(u6, IPPROTO_IPV6, IPV6_TCLASS) != 0x28 || !getint(u6, IPPROTO_IPV6, IPV6_V6ONLY))
		fail("u6 options changed");

	/* The queues, in order, with their senders. */
	drecv(u4, 1, 100, &a4c);
	drecv(u4, 2, 1400, &o4);
	drecv(u4, 3, 0, &a4c);
	drecv(u4, 4, 9000, &a4c);
	drecv(u6, 5, 77, &a6c);
	drecv(u6, 6, 5, &a6c);
	drecv(u4c, 7, 33, &a4);
	if (recv(u4, &chk, 1, MSG_DONTWAIT) >= 0 || recv(u6, &chk, 1, MSG_DONTWAIT) >= 0)
		fail("more datagrams than were queued");

	/* And they work. */
	dsend(u4c, 8, 10, NULL, 0);
	dsend(u4, 9, 11, &a4c, l4c);
	dsend(u6c, 10, 12, NULL, 0);
	usleep(10000);
	drecv(u4, 8, 10, &a4c);
	drecv(u4c, 9, 11, &a4);
	drecv(u6, 10, 12, &a6c);
	pass();
}
