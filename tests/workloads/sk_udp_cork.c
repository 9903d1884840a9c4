/*
 * sk_udp_cork: a UDP socket with UDP_CORK on. After the restore the cork
 * is still on: two sends and uncorking give one datagram with both.
 *
 * --pending: a corked datagram is pending at the checkpoint (the dump
 * must refuse: it cannot be read back); after SIGTERM the original
 * uncorks and the receiver gets it.
 */
#include "zdtm.h"
#include "sockopt.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	char buf[64];
	int r, s, pending;
	ssize_t n;

	test_init(argc, argv);
	pending = test_flag("--pending");
	r = socket(AF_INET, SOCK_DGRAM, 0);
	s = socket(AF_INET, SOCK_DGRAM, 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (r < 0 || s < 0 || bind(r, (void *)&a, sizeof(a)) || getsockname(r, (void *)&a, &len) ||
	    connect(s, (void *)&a, sizeof(a)))
		pfail("sockets");
	setint(s, IPPROTO_UDP, UDP_CORK, 1);
	if (pending && send(s, "early-", 6, 0) != 6)
		pfail("send early");
	test_daemon();
	test_waitsig();

	if (getint(s, IPPROTO_UDP, UDP_CORK) != 1)
		fail("UDP_CORK lost");
	if (send(s, "first-", 6, 0) != 6 || send(s, "second", 6, 0) != 6)
		pfail("send");
	if (recv(r, buf, sizeof(buf), MSG_DONTWAIT) >= 0)
		fail("a datagram left while corked");
	setint(s, IPPROTO_UDP, UDP_CORK, 0);
	n = recv(r, buf, sizeof(buf), 0);
	if (pending) {
		if (n != 18 || memcmp(buf, "early-first-second", 18))
			fail("got %zd bytes %.*s, expected early-first-second", n, (int)(n > 0 ? n : 0), buf);
	} else if (n != 12 || memcmp(buf, "first-second", 12)) {
		fail("got %zd bytes %.*s, expected first-second", n, (int)(n > 0 ? n : 0), buf);
	}
	pass();
}
