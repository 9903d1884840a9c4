/*
 * sk_udp_shutdown: UDP sockets shut down every way, connected, bound and
 * unbound (the shutdown state is shown only by inet_diag and, for an
 * unbound socket, BPF; poll() shows SHUT_RD only). Each socket's poll
 * events and what recv (non-blocking, and blocking with a 200 ms
 * timeout) returns are recorded before the checkpoint and must be the same after the restore; sends fail with
 * EPIPE where SHUT_WR was done and work elsewhere.
 *   wr:   connected, SHUT_WR
 *   rd:   connected, SHUT_RD, a datagram queued before the shutdown
 *   both: connected, SHUT_RDWR
 *   brd:  bound, not connected, SHUT_RD (shutdown() says ENOTCONN and
 *         still sets the bit)
 *   ub:   unbound, SHUT_RDWR
 *   ubw:  unbound, SHUT_WR (ENOTCONN; no interface but BPF shows it)
 *   open: connected, not shut down
 */
#include "zdtm.h"
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

enum { WR, RD, BOTH, BRD, UB, UBW, OPEN, N };
static const char *names[N] = { "wr", "rd", "both", "brd", "ub", "ubw", "open" };
static const int hows[N] = { SHUT_WR, SHUT_RD, SHUT_RDWR, SHUT_RD, SHUT_RDWR, SHUT_WR, -1 };

struct rc {
	long n;
	int err;
};

static struct rc try_recv(int sk, int flags)
{
	char b[16];
	struct rc r;

	errno = 0;
	r.n = recv(sk, b, sizeof(b), flags);
	r.err = r.n < 0 ? errno : 0;
	return r;
}

static short events(int sk)
{
	struct pollfd p = { .fd = sk, .events = POLLIN | POLLOUT | POLLRDHUP };

	if (poll(&p, 1, 0) < 0)
		pfail("poll");
	return p.revents;
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_in pa = a;
	struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 };
	socklen_t len = sizeof(pa);
	struct rc nb[N], bl[N], r;
	short ev[N];
	char b[16];
	int sk[N], peer, i;

	test_init(argc, argv);
	peer = socket(AF_INET, SOCK_DGRAM, 0);
	if (peer < 0 || bind(peer, (struct sockaddr *)&pa, sizeof(pa)) ||
	    getsockname(peer, (struct sockaddr *)&pa, &len))
		pfail("peer");
	for (i = 0; i < N; i++) {
		struct sockaddr_in me = a;
		socklen_t l = sizeof(me);

		sk[i] = socket(AF_INET, SOCK_DGRAM, 0);
		if (sk[i] < 0 || setsockopt(sk[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)))
			pfail("socket %s", names[i]);
		if (i == UB || i == UBW)
			continue;
		if (bind(sk[i], (struct sockaddr *)&me, sizeof(me)) ||
		    getsockname(sk[i], (struct sockaddr *)&me, &l))
			pfail("bind %s", names[i]);
		if (i != BRD && connect(sk[i], (struct sockaddr *)&pa, sizeof(pa)))
			pfail("connect %s", names[i]);
		if (i == RD) {
			if (sendto(peer, "q", 1, 0, (struct sockaddr *)&me, sizeof(me)) != 1)
				pfail("send to rd");
			if (try_recv(sk[i], MSG_PEEK).n != 1)
				fail("datagram not queued on rd");
		}
	}
	for (i = 0; i < N; i++) {
		int want = (i == BRD || i == UB || i == UBW) ? ENOTCONN : 0;

		if (hows[i] < 0)
			continue;
		errno = 0;
		if (shutdown(sk[i], hows[i]) != (want ? -1 : 0) || errno != want)
			pfail("shutdown %s", names[i]);
	}
	for (i = 0; i < N; i++) {
		ev[i] = events(sk[i]);
		if (i == RD) {
			nb[i] = try_recv(sk[BOTH], MSG_DONTWAIT);
			bl[i] = try_recv(sk[BOTH], 0);
			continue;
		}
		nb[i] = try_recv(sk[i], MSG_DONTWAIT);
		bl[i] = try_recv(sk[i], 0);
		test_msg("%s: events %#x, recv %ld/%d, blocking %ld/%d\n", names[i], ev[i], nb[i].n,
			 nb[i].err, bl[i].n, bl[i].err);
	}
	if (bl[OPEN].err != EAGAIN || bl[WR].err != EAGAIN || bl[UBW].err != EAGAIN)
		fail("recv on a socket open for reading did not time out");
	if (bl[BOTH].err == EAGAIN || bl[BRD].err == EAGAIN)
		fail("recv on a socket shut for reading waited");

	test_daemon();
	test_waitsig();

	for (i = 0; i < N; i++) {
		short now = events(sk[i]);

		if (now != ev[i])
			fail("%s: poll events %#x, were %#x", names[i], now, ev[i]);
	}
	if (recv(sk[RD], b, sizeof(b), MSG_DONTWAIT) != 1 || b[0] != 'q')
		fail("rd: the datagram queued before SHUT_RD is lost");
	for (i = 0; i < N; i++) {
		r = try_recv(sk[i], MSG_DONTWAIT);
		if (r.n != nb[i].n || r.err != nb[i].err)
			fail("%s: recv gives %ld/%d, gave %ld/%d", names[i], r.n, r.err, nb[i].n,
			     nb[i].err);
		r = try_recv(sk[i], 0);
		if (r.n != bl[i].n || r.err != bl[i].err)
			fail("%s: blocking recv gives %ld/%d, gave %ld/%d", names[i], r.n, r.err,
			     bl[i].n, bl[i].err);
	}
	for (i = 0; i < N; i++) {
		int shut_wr = hows[i] == SHUT_WR || hows[i] == SHUT_RDWR;
		long n = sendto(sk[i], "x", 1, MSG_NOSIGNAL, (struct sockaddr *)&pa, sizeof(pa));

		if (shut_wr && (n != -1 || errno != EPIPE))
			fail("%s: send after SHUT_WR gives %ld (%m), not EPIPE", names[i], n);
		if (!shut_wr && n != 1)
			fail("%s: send fails: %m", names[i]);
	}
	pass();
}
