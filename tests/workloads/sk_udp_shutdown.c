/*
 * sk_udp_shutdown: a connected UDP socket shut down for writing
 * (SHUT_WR). Its shutdown state is shown only by inet_diag and cairn does
 * not restore it yet, so the dump refuses it. After SIGTERM (the original,
 * never restored) a send still fails with EPIPE.
 */
#include "zdtm.h"
#include <netinet/in.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int sk;

	test_init(argc, argv);
	sk = socket(AF_INET, SOCK_DGRAM, 0);
	if (sk < 0 || bind(sk, (struct sockaddr *)&a, sizeof(a)) ||
	    getsockname(sk, (struct sockaddr *)&a, &len) ||
	    connect(sk, (struct sockaddr *)&a, sizeof(a)))
		pfail("setup");
	if (shutdown(sk, SHUT_WR))
		pfail("shutdown");

	test_daemon();
	test_waitsig();

	if (send(sk, "x", 1, MSG_NOSIGNAL) != -1 || errno != EPIPE)
		fail("send after SHUT_WR did not fail with EPIPE");
	pass();
}
