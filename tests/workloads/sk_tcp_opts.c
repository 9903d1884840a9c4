/*
 * sk_tcp_opts: socket options of established TCP connections (IPv4 and
 * IPv6, both ends in this process) and of a listener survive a
 * checkpoint with --tcp-established: SO_LINGER, SO_SNDTIMEO, SO_PRIORITY,
 * SO_MARK, SO_BINDTODEVICE, SO_REUSEPORT, SO_OOBINLINE, SO_SNDBUF,
 * SO_KEEPALIVE, IP_TOS, IPV6_TCLASS, TCP_CORK, TCP_USER_TIMEOUT,
 * TCP_NOTSENT_LOWAT. Afterwards both connections carry data.
 */
#include "zdtm.h"
#include "sockopt.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <net/if.h>
#include <sys/socket.h>
#include <sys/time.h>

/* A connected pair over loopback of `family`; *l keeps the listener. */
static void pair(int family, int *l, int *c, int *a)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t len;

	*l = socket(family, SOCK_STREAM, 0);
	if (family == AF_INET) {
		struct sockaddr_in *s = (void *)&ss;
		s->sin_family = AF_INET;
		s->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*s);
	} else {
		struct sockaddr_in6 *s = (void *)&ss;
		s->sin6_family = AF_INET6;
		s->sin6_addr = in6addr_loopback;
		len = sizeof(*s);
	}
	setint(*l, SOL_SOCKET, SO_REUSEPORT, 1);
	if (*l < 0 || bind(*l, (void *)&ss, len) || listen(*l, 2) ||
	    getsockname(*l, (void *)&ss, &len))
		pfail("listener");
	*c = socket(family, SOCK_STREAM, 0);
	if (*c < 0 || connect(*c, (void *)&ss, len))
		pfail("connect");
	*a = accept(*l, NULL, NULL);
	if (*a < 0)
		pfail("accept");
}

static void talk(int x, int y, const char *what)
{
	char b[8];

	if (write(x, "abcdef", 6) != 6 || read(y, b, 6) != 6 || memcmp(b, "abcdef", 6))
		fail("%s: data does not flow after restore", what);
}

int main(int argc, char **argv)
{
	struct linger lg = { 1, 5 }, lgot;
	struct timeval tv = { 2, 0 }, tgot;
	socklen_t sl;
	char dev[IFNAMSIZ];
	int l4, c4, a4, l6, c6, a6, sndbuf;

	test_init(argc, argv);
	pair(AF_INET, &l4, &c4, &a4);
	pair(AF_INET6, &l6, &c6, &a6);
	if (setsockopt(c4, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) ||
	    setsockopt(c4, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) ||
	    setsockopt(c4, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3))
		pfail("setsockopt");
	setint(c4, IPPROTO_IP, IP_TOS, 0x20); /* sets the priority too: first */
	setint(c4, SOL_SOCKET, SO_PRIORITY, 3);
	setint(c4, SOL_SOCKET, SO_MARK, 7);
	setint(c4, SOL_SOCKET, SO_OOBINLINE, 1);
	setint(c4, SOL_SOCKET, SO_KEEPALIVE, 1);
	setint(c4, SOL_SOCKET, SO_SNDBUF, 200000);
	sndbuf = getint(c4, SOL_SOCKET, SO_SNDBUF);
	setint(c4, IPPROTO_TCP, TCP_USER_TIMEOUT, 12345);
	setint(c4, IPPROTO_TCP, TCP_NOTSENT_LOWAT, 65536);
	setint(a4, IPPROTO_TCP, TCP_CORK, 1);
	setint(c6, IPPROTO_IPV6, IPV6_TCLASS, 0x40);

	/* A dual-stack listener and an IPv4 client: the accepted socket is
	 * IPv6 with IPv4-mapped addresses. */
	int l46 = socket(AF_INET6, SOCK_STREAM, 0), c46, a46;
	struct sockaddr_in6 any = { .sin6_family = AF_INET6 };
	struct sockaddr_in to4 = { .sin_family = AF_INET };
	socklen_t al = sizeof(any);
	setint(l46, IPPROTO_IPV6, IPV6_V6ONLY, 0);
	if (l46 < 0 || bind(l46, (void *)&any, sizeof(any)) || listen(l46, 1) ||
	    getsockname(l46, (void *)&any, &al))
		pfail("dual-stack listener");
	to4.sin_port = any.sin6_port;
	to4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	c46 = socket(AF_INET, SOCK_STREAM, 0);
	if (c46 < 0 || connect(c46, (void *)&to4, sizeof(to4)))
		pfail("connect to the dual-stack listener");
	a46 = accept(l46, NULL, NULL);
	if (a46 < 0)
		pfail("accept");

	test_daemon();
	test_waitsig();

	sl = sizeof(lgot);
	if (getsockopt(c4, SOL_SOCKET, SO_LINGER, &lgot, &sl) || !lgot.l_onoff || lgot.l_linger != 5)
		fail("SO_LINGER changed");
	sl = sizeof(tgot);
	if (getsockopt(c4, SOL_SOCKET, SO_SNDTIMEO, &tgot, &sl) || tgot.tv_sec != 2)
		fail("SO_SNDTIMEO changed");
	sl = sizeof(dev);
	if (getsockopt(c4, SOL_SOCKET, SO_BINDTODEVICE, dev, &sl) || strcmp(dev, "lo"))
		fail("SO_BINDTODEVICE changed");
	if (getint(c4, SOL_SOCKET, SO_PRIORITY) != 3 || getint(c4, SOL_SOCKET, SO_MARK) != 7 ||
	    !getint(c4, SOL_SOCKET, SO_OOBINLINE) || !getint(c4, SOL_SOCKET, SO_KEEPALIVE))
		fail("SO_PRIORITY/SO_MARK/SO_OOBINLINE/SO_KEEPALIVE changed");
	if (getint(c4, SOL_SOCKET, SO_SNDBUF) != sndbuf)
		fail("SO_SNDBUF %d, was %d", getint(c4, SOL_SOCKET, SO_SNDBUF), sndbuf);
	if (getint(c4, IPPROTO_IP, IP_TOS) != 0x20)
		fail("IP_TOS changed");
	if (getint(c4, IPPROTO_TCP, TCP_USER_TIMEOUT) != 12345 ||
	    getint(c4, IPPROTO_TCP, TCP_NOTSENT_LOWAT) != 65536)
		fail("TCP_USER_TIMEOUT/TCP_NOTSENT_LOWAT changed");
	if (!getint(a4, IPPROTO_TCP, TCP_CORK))
		fail("TCP_CORK lost");
	if (getint(c6, IPPROTO_IPV6, IPV6_TCLASS) != 0x40)
		fail("IPV6_TCLASS changed");
	if (!getint(l4, SOL_SOCKET, SO_REUSEPORT) || !getint(l6, SOL_SOCKET, SO_REUSEPORT))
		fail("SO_REUSEPORT lost");
	setint(a4, IPPROTO_TCP, TCP_CORK, 0);
	talk(c4, a4, "IPv4 client -> server");
	talk(a4, c4, "IPv4 server -> client");
	talk(c6, a6, "IPv6 client -> server");
	talk(a6, c6, "IPv6 server -> client");
	talk(c46, a46, "IPv4 client -> IPv4-mapped server");
	talk(a46, c46, "IPv4-mapped server -> IPv4 client");
	if (getint(a46, SOL_SOCKET, SO_DOMAIN) != AF_INET6)
		fail("the accepted dual-stack socket is not IPv6 any more");
	pass();
}
