/*
 * sk_tcp_states: TCP connections that are half closed at the checkpoint
 * (--tcp-established), both ends in this process, over loopback:
 *
 *   "cw"  (IPv4) a shut down: a FIN_WAIT2 with unread bytes from b,
 *         b CLOSE_WAIT with unread bytes from a before the EOF;
 *   "fw1" (IPv6) a wrote more than b's small receive buffer holds, then
 *         shut down: a FIN_WAIT1 with its FIN behind never-sent data,
 *         b ESTABLISHED with a full receive queue;
 *   "la"  (IPv4) a shut down, then b wrote more than a's small receive
 *         buffer holds and shut down: b LAST_ACK (FIN behind unsent
 *         data), a FIN_WAIT2 with a full receive queue;
 *   "cl"  (IPv6) a wrote more than b holds and shut down (FIN_WAIT1),
 *         then b shut down: a CLOSING, b FIN_WAIT2.
 *
 * After the restore every socket must be in its state again, every byte
 * comes through in order, each EOF is where it was, and a CLOSE_WAIT end
 * can still send to its FIN_WAIT2 peer. The connections then close.
 */
#include "zdtm.h"
#include "sockopt.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

static const char *state_name(int s)
{
	static const char *n[] = { "?", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1",
				   "FIN_WAIT2", "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK",
				   "LISTEN", "CLOSING" };
	return s > 0 && s < 12 ? n[s] : "?";
}

static int tcp_state(int fd)
{
	struct tcp_info ti;
	socklen_t l = sizeof(ti);

	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l))
		pfail("TCP_INFO");
	return ti.tcpi_state;
}

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void wait_state(const char *what, int fd, int want)
{
	double end = now() + 10;

	while (tcp_state(fd) != want) {
		if (now() > end)
			fail("%s: state %s, expected %s", what, state_name(tcp_state(fd)),
			     state_name(want));
		usleep(1000);
	}
}

static void expect_state(const char *what, int fd, int want)
{
	int s = tcp_state(fd);

	if (s != want)
		fail("%s: state %s after the restore, was %s", what, state_name(s), state_name(want));
}

/* a connects to a listener whose accepted socket b gets `b_rcvbuf`. */
static void make_pair(int family, int a_rcvbuf, int b_rcvbuf, int *a, int *b)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int l = socket(family, SOCK_STREAM, 0);

	*a = socket(family, SOCK_STREAM, 0);
	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *s4 = (void *)&ss;
		s4->sin_family = AF_INET;
		s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*s4);
	} else {
		struct sockaddr_in6 *s6 = (void *)&ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_addr = in6addr_loopback;
		len = sizeof(*s6);
	}
	if (l < 0 || *a < 0)
		pfail("socket");
	if (b_rcvbuf)
		setint(l, SOL_SOCKET, SO_RCVBUF, b_rcvbuf);
	if (a_rcvbuf)
		setint(*a, SOL_SOCKET, SO_RCVBUF, a_rcvbuf);
	if (bind(l, (void *)&ss, len) || listen(l, 1) || getsockname(l, (void *)&ss, &len))
		pfail("listener");
	if (connect(*a, (void *)&ss, len))
		pfail("connect");
	*b = accept(l, NULL, NULL);
	if (*b < 0)
		pfail("accept");
	close(l);
}

static uint8_t pat(uint32_t seed, uint64_t i)
{
	return (uint8_t)((i * 2654435761u + seed) >> 7);
}

/* Writes the pattern until the queues are full; returns the byte count. */
static uint64_t fill(int fd, uint32_t seed)
{
	uint8_t buf[4096];
	uint64_t n = 0;
	int fl = fcntl(fd, F_GETFL);
	int idle = 0;

	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	while (idle < 50) {
		ssize_t w;

		for (size_t i = 0; i < sizeof(buf); i++)
			buf[i] = pat(seed, n + i);
		w = send(fd, buf, sizeof(buf), MSG_NOSIGNAL);
		if (w > 0) {
			n += w;
			idle = 0;
		} else if (w < 0 && errno == EAGAIN) {
			idle++;
			usleep(2000);
		} else {
			pfail("fill");
		}
	}
	fcntl(fd, F_SETFL, fl);
	return n;
}

/* Reads exactly n pattern bytes, then requires EOF. */
static void drain(const char *what, int fd, uint32_t seed, uint64_t n)
{
	uint8_t buf[8192];
	uint64_t got = 0;

	while (got < n) {
		ssize_t r = recv(fd, buf, sizeof(buf), 0);

		if (r < 0)
			pfail("%s: recv after %llu of %llu bytes", what, (unsigned long long)got,
			      (unsigned long long)n);
		if (r == 0)
			fail("%s: EOF after %llu of %llu bytes", what, (unsigned long long)got,
			     (unsigned long long)n);
		for (ssize_t i = 0; i < r; i++)
			if (buf[i] != pat(seed, got + i))
				fail("%s: byte %llu differs", what, (unsigned long long)(got + i));
		got += r;
	}
	if (recv(fd, buf, sizeof(buf), 0) != 0)
		fail("%s: no EOF after %llu bytes", what, (unsigned long long)n);
}

static void expect_msg(const char *what, int fd, const char *msg)
{
	char buf[64];
	size_t n = strlen(msg), got = 0;

	while (got < n) {
		ssize_t r = recv(fd, buf + got, n - got, 0);

		if (r <= 0)
			fail("%s: %s while reading %s", what, r ? strerror(errno) : "EOF", msg);
		got += r;
	}
	if (memcmp(buf, msg, n))
		fail("%s: read %.*s, expected %s", what, (int)n, buf, msg);
}

static void say(int fd, const char *msg)
{
	if (send(fd, msg, strlen(msg), MSG_NOSIGNAL) != (ssize_t)strlen(msg))
		pfail("send %s", msg);
}

int main(int argc, char **argv)
{
	int cw_a, cw_b, fw_a, fw_b, la_a, la_b, cl_a, cl_b;
	uint64_t fw_n, la_n, cl_n;

	test_init(argc, argv);

	/* cw: a FIN_WAIT2, b CLOSE_WAIT, both with unread bytes. */
	make_pair(AF_INET, 0, 0, &cw_a, &cw_b);
	say(cw_a, "hello-from-a");
	say(cw_b, "before-the-checkpoint");
	if (shutdown(cw_a, SHUT_WR))
		pfail("shutdown cw");
	wait_state("cw a", cw_a, TCP_FIN_WAIT2);
	wait_state("cw b", cw_b, TCP_CLOSE_WAIT);

	/* fw1: a FIN_WAIT1 behind unsent data. */
	make_pair(AF_INET6, 0, 4096, &fw_a, &fw_b);
	setint(fw_a, SOL_SOCKET, SO_SNDBUF, 65536);
	fw_n = fill(fw_a, 11);
	if (shutdown(fw_a, SHUT_WR))
		pfail("shutdown fw1");
	wait_state("fw1 a", fw_a, TCP_FIN_WAIT1);

	/* la: b LAST_ACK behind unsent data, a FIN_WAIT2 full. */
	make_pair(AF_INET, 4096, 0, &la_a, &la_b);
	setint(la_b, SOL_SOCKET, SO_SNDBUF, 65536);
	if (shutdown(la_a, SHUT_WR))
		pfail("shutdown la a");
	wait_state("la b", la_b, TCP_CLOSE_WAIT);
	la_n = fill(la_b, 22);
	if (shutdown(la_b, SHUT_WR))
		pfail("shutdown la b");
	wait_state("la b", la_b, TCP_LAST_ACK);
	wait_state("la a", la_a, TCP_FIN_WAIT2);

	/* cl: a CLOSING (FIN behind unsent data, the peer's FIN received). */
	make_pair(AF_INET6, 0, 4096, &cl_a, &cl_b);
	setint(cl_a, SOL_SOCKET, SO_SNDBUF, 65536);
	cl_n = fill(cl_a, 33);
	if (shutdown(cl_a, SHUT_WR))
		pfail("shutdown cl a");
	wait_state("cl a", cl_a, TCP_FIN_WAIT1);
	if (shutdown(cl_b, SHUT_WR))
		pfail("shutdown cl b");
	wait_state("cl a", cl_a, TCP_CLOSING);
	wait_state("cl b", cl_b, TCP_FIN_WAIT2);

	test_msg("fw1 %llu bytes, la %llu bytes, cl %llu bytes queued", (unsigned long long)fw_n,
		 (unsigned long long)la_n, (unsigned long long)cl_n);
	test_daemon();
	test_waitsig();

	expect_state("cw a", cw_a, TCP_FIN_WAIT2);
	expect_state("cw b", cw_b, TCP_CLOSE_WAIT);
	expect_state("fw1 a", fw_a, TCP_FIN_WAIT1);
	expect_state("fw1 b", fw_b, TCP_ESTABLISHED);
	expect_state("la a", la_a, TCP_FIN_WAIT2);
	expect_state("la b", la_b, TCP_LAST_ACK);
	expect_state("cl a", cl_a, TCP_CLOSING);
	expect_state("cl b", cl_b, TCP_FIN_WAIT2);

	/* CLOSE_WAIT: the bytes, then EOF; it can still send. */
	expect_msg("cw b", cw_b, "hello-from-a");
	{
		char c;
		if (recv(cw_b, &c, 1, 0) != 0)
			fail("cw b: no EOF after the peer's bytes");
	}
	expect_msg("cw a", cw_a, "before-the-checkpoint");
	say(cw_b, "after-the-restore");
	expect_msg("cw a", cw_a, "after-the-restore");
	if (shutdown(cw_b, SHUT_WR))
		pfail("shutdown cw b");
	{
		char c;
		if (recv(cw_a, &c, 1, 0) != 0)
			fail("cw a: no EOF after the peer shut down");
	}

	/* FIN_WAIT1: every byte, then EOF; the peer can still send. */
	drain("fw1 b", fw_b, 11, fw_n);
	say(fw_b, "late");
	expect_msg("fw1 a", fw_a, "late");

	/* LAST_ACK: the peer reads everything and EOF; we read EOF. */
	drain("la a", la_a, 22, la_n);
	{
		char c;
		if (recv(la_b, &c, 1, 0) != 0)
			fail("la b: no EOF");
		if (send(la_b, "x", 1, MSG_NOSIGNAL) != -1 || errno != EPIPE)
			fail("la b: sending after shutdown did not fail with EPIPE");
	}

	/* CLOSING: the peer reads everything and EOF; we read EOF. */
	drain("cl b", cl_b, 33, cl_n);
	{
		char c;
		if (recv(cl_a, &c, 1, 0) != 0)
			fail("cl a: no EOF");
	}
	wait_state("cl a", cl_a, TCP_CLOSE);
	wait_state("la b", la_b, TCP_CLOSE);
	pass();
}
