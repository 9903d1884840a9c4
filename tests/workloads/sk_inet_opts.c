/*
 * sk_inet_opts: socket options cairn lost before (issue 14), and states
 * around them; every socket checks after the restore that each option
 * reads back as it was set, and that the socket still works.
 *
 *   (default)  a TCP listener and an unbound TCP socket, UDP sockets:
 *              SO_BUF_LOCK with sizes set or tuned, TCP_CONGESTION,
 *              TCP_WINDOW_CLAMP, SO_ZEROCOPY, SO_BUSY_POLL, IP_RECVTTL,
 *              IP_MULTICAST_ALL, IPV6_RECVTCLASS, a classic BPF filter
 *              (SO_ATTACH_FILTER) that is locked (SO_LOCK_FILTER) and
 *              still filters; an IPv6 UDP socket connected without a bind
 *              keeps IPV6_V6ONLY off.
 *   --tcp      (with --tcp-established) an established loopback
 *              connection with SO_REUSEADDR on, buffers the kernel tuned
 *              (not locked), TCP_CONGESTION, and a large send queue the
 *              peer has not read (TCP_NOTSENT_LOWAT small); afterwards
 *              every byte arrives, in order, and more data flows.
 *   --timewait a listener without SO_REUSEADDR whose port has TIME_WAIT
 *              connections (accepted and closed first by the server);
 *              it is restored, keeps SO_REUSEADDR off, and accepts.
 *   --ebpf     a UDP socket with an eBPF filter (SO_ATTACH_BPF): the dump
 *              must refuse it.
 */
#include "zdtm.h"
#include "sockopt.h"
#include "stream.h"
#include <arpa/inet.h>
#include <linux/bpf.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#ifndef SO_BUF_LOCK
#define SO_BUF_LOCK 72
#endif
#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef SO_ATTACH_BPF
#define SO_ATTACH_BPF 50
#endif
#ifndef TCP_CONGESTION
#define TCP_CONGESTION 13
#endif

/* SO_BUF_LOCK is Linux 5.14+: without it the lock is neither set nor
 * checked (the test says so, probing the same). */
static int have_buf_lock(void)
{
	static int known = -1;

	if (known < 0) {
		int s = socket(AF_INET, SOCK_STREAM, 0), v;
		socklen_t l = sizeof(v);

		known = getsockopt(s, SOL_SOCKET, SO_BUF_LOCK, &v, &l) == 0;
		if (!known && errno != ENOPROTOOPT)
			pfail("SO_BUF_LOCK");
		if (!known)
			test_msg("SO_BUF_LOCK: not in this kernel (Linux 5.14+): not set or checked");
		close(s);
	}
	return known;
}

static void check_int(int fd, int level, int opt, int want, const char *what)
{
	int v = getint(fd, level, opt);

	if (v != want)
		fail("%s is %d, expected %d", what, v, want);
}

/* A buffer size: setsockopt can only make even ones (the kernel doubles
 * the value given), so a size the kernel tuned to an odd value comes back
 * one byte smaller. */
static void check_buf(int fd, int opt, int want, const char *what)
{
	int v = getint(fd, SOL_SOCKET, opt);

	if (v != want && v != (want & ~1))
		fail("%s is %d, expected %d", what, v, want);
}

static void check_cc(int fd, const char *want)
{
	char cc[32] = "";
	socklen_t l = sizeof(cc);

	if (getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, &l))
		pfail("TCP_CONGESTION");
	if (strcmp(cc, want))
		fail("TCP_CONGESTION is %s, expected %s", cc, want);
}

static void set_cc(int fd, const char *cc)
{
	if (setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, strlen(cc)))
		pfail("set TCP_CONGESTION %s", cc);
}

static struct sockaddr_in lo4(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

static int port_of(int fd)
{
	struct sockaddr_storage ss;
	socklen_t l = sizeof(ss);

	if (getsockname(fd, (void *)&ss, &l))
		pfail("getsockname");
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static int listener(int reuse)
{
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = lo4(0);

	if (l < 0)
		pfail("socket");
	setint(l, SOL_SOCKET, SO_REUSEADDR, reuse);
	if (bind(l, (void *)&a, sizeof(a)) || listen(l, 8))
		pfail("listener");
	return l;
}

static void connect_to(int fd, int port)
{
	struct sockaddr_in a = lo4(port);

	if (connect(fd, (void *)&a, sizeof(a)))
		pfail("connect to %d", port);
}

/* A client connects to listener l, sends "hi", gets "ok" back. */
static void exchange(int l)
{
	int c = socket(AF_INET, SOCK_STREAM, 0), a;
	char b[3] = "";

	connect_to(c, port_of(l));
	a = accept(l, NULL, NULL);
	if (a < 0)
		pfail("accept");
	if (write(c, "hi", 2) != 2 || read(a, b, 2) != 2 || strcmp(b, "hi"))
		fail("the listener's connection does not carry data");
	if (write(a, "ok", 2) != 2 || read(c, b, 2) != 2 || strcmp(b, "ok"))
		fail("the listener's connection does not carry data back");
	close(a);
	close(c);
}

/* ------------------------------------------------------------ default */

static struct sock_filter prog[] = {
	/* The first payload byte of a UDP datagram (after the 8-byte header). */
	BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 8),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 'A', 0, 1),
	BPF_STMT(BPF_RET | BPF_K, 0xffff),
	BPF_STMT(BPF_RET | BPF_K, 0),
};

static void check_filter(int fd)
{
	struct sock_filter got[16];
	socklen_t l = sizeof(got);

	if (getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, got, &l))
		pfail("SO_GET_FILTER");
	if (l != 4 || memcmp(got, prog, sizeof(prog)))
		fail("the socket filter came back with %u instructions or different ones", l);
	check_int(fd, SOL_SOCKET, SO_LOCK_FILTER, 1, "SO_LOCK_FILTER");
	if (setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, &l, sizeof(int)) == 0 || errno != EPERM)
		fail("a locked filter could be detached");
}

static void send_byte(int to_port, char c)
{
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = lo4(to_port);

	if (sendto(s, &c, 1, 0, (void *)&a, sizeof(a)) != 1)
		pfail("sendto");
	close(s);
}

static void check_filtering(int fd)
{
	char c = 0;
	struct pollfd p = { .fd = fd, .events = POLLIN };

	send_byte(port_of(fd), 'B');
	send_byte(port_of(fd), 'A');
	if (poll(&p, 1, 2000) != 1)
		fail("the filtered socket received nothing");
	if (recv(fd, &c, 1, MSG_DONTWAIT) != 1 || c != 'A')
		fail("the filter let %c through", c);
	if (recv(fd, &c, 1, MSG_DONTWAIT) >= 0)
		fail("the filter let a second datagram (%c) through", c);
}

static int run_default(void)
{
	struct sockaddr_in a = lo4(0);
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	struct sock_fprog fp = { .len = 4, .filter = prog };
	int l, t, t2, u, u6, r6;
	int t_snd, t2_snd, l_rcv;
	socklen_t al = sizeof(a6);

	/* A listener: reno, a clamped window, SO_BUF_LOCK for the receive
	 * buffer only, busy polling, SO_REUSEADDR off. */
	l = listener(0);
	set_cc(l, "reno");
	setint(l, IPPROTO_TCP, TCP_WINDOW_CLAMP, 40000);
	setint(l, SOL_SOCKET, SO_RCVBUF, 100000);
	setint(l, SOL_SOCKET, SO_BUSY_POLL, 50);
	l_rcv = getint(l, SOL_SOCKET, SO_RCVBUF);

	/* Unbound TCP sockets: a send buffer set and then unlocked (the kernel
	 * may tune it), the lock alone on another one. */
	t = socket(AF_INET, SOCK_STREAM, 0);
	setint(t, SOL_SOCKET, SO_SNDBUF, 300000);
	if (have_buf_lock())
		setint(t, SOL_SOCKET, SO_BUF_LOCK, 0);
	setint(t, SOL_SOCKET, SO_ZEROCOPY, 1);
	setint(t, IPPROTO_IP, IP_RECVTTL, 1);
	t_snd = getint(t, SOL_SOCKET, SO_SNDBUF);
	t2 = socket(AF_INET, SOCK_STREAM, 0);
	if (have_buf_lock())
		setint(t2, SOL_SOCKET, SO_BUF_LOCK, 2);
	t2_snd = getint(t2, SOL_SOCKET, SO_SNDBUF);

	/* UDP with a locked classic filter; multicast of all groups off. */
	u = socket(AF_INET, SOCK_DGRAM, 0);
	if (bind(u, (void *)&a, sizeof(a)))
		pfail("bind udp");
	if (setsockopt(u, SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof(fp)))
		pfail("SO_ATTACH_FILTER");
	setint(u, SOL_SOCKET, SO_LOCK_FILTER, 1);
	setint(u, IPPROTO_IP, IP_MULTICAST_ALL, 0);
	check_filtering(u);

	/* IPv6 UDP: one bound to [::1], another connected to it without a
	 * bind (its local address comes from connect, IPV6_V6ONLY stays 0). */
	r6 = socket(AF_INET6, SOCK_DGRAM, 0);
	if (bind(r6, (void *)&a6, sizeof(a6)) || getsockname(r6, (void *)&a6, &al))
		pfail("bind [::1]");
	u6 = socket(AF_INET6, SOCK_DGRAM, 0);
	setint(u6, IPPROTO_IPV6, IPV6_RECVTCLASS, 1);
	if (connect(u6, (void *)&a6, sizeof(a6)))
		pfail("connect [::1]");
	if (getint(u6, IPPROTO_IPV6, IPV6_V6ONLY) != 0)
		fail("setup: IPV6_V6ONLY is on after connect");

	test_daemon();
	test_waitsig();

	check_int(l, SOL_SOCKET, SO_REUSEADDR, 0, "listener SO_REUSEADDR");
	check_cc(l, "reno");
	check_int(l, IPPROTO_TCP, TCP_WINDOW_CLAMP, 40000, "listener TCP_WINDOW_CLAMP");
	if (have_buf_lock())
		check_int(l, SOL_SOCKET, SO_BUF_LOCK, 2, "listener SO_BUF_LOCK");
	check_int(l, SOL_SOCKET, SO_RCVBUF, l_rcv, "listener SO_RCVBUF");
	check_int(l, SOL_SOCKET, SO_BUSY_POLL, 50, "listener SO_BUSY_POLL");
	exchange(l);

	if (have_buf_lock())
		check_int(t, SOL_SOCKET, SO_BUF_LOCK, 0, "SO_BUF_LOCK");
	check_int(t, SOL_SOCKET, SO_SNDBUF, t_snd, "SO_SNDBUF");
	check_int(t, SOL_SOCKET, SO_ZEROCOPY, 1, "SO_ZEROCOPY");
	check_int(t, IPPROTO_IP, IP_RECVTTL, 1, "IP_RECVTTL");
	if (have_buf_lock())
		check_int(t2, SOL_SOCKET, SO_BUF_LOCK, 2, "second SO_BUF_LOCK");
	check_int(t2, SOL_SOCKET, SO_SNDBUF, t2_snd, "second SO_SNDBUF");
	connect_to(t, port_of(l));

	check_filter(u);
	check_int(u, IPPROTO_IP, IP_MULTICAST_ALL, 0, "IP_MULTICAST_ALL");
	check_filtering(u);

	check_int(u6, IPPROTO_IPV6, IPV6_V6ONLY, 0, "IPV6_V6ONLY of the connected socket");
	check_int(u6, IPPROTO_IPV6, IPV6_RECVTCLASS, 1, "IPV6_RECVTCLASS");
	if (send(u6, "x", 1, 0) != 1)
		pfail("send on the IPv6 socket");
	{
		char c;
		struct pollfd p = { .fd = r6, .events = POLLIN };

		if (poll(&p, 1, 2000) != 1 || recv(r6, &c, 1, 0) != 1 || c != 'x')
			fail("the IPv6 datagram did not arrive");
	}
	pass();
	return 0;
}

/* ------------------------------------------------------------ --tcp */

#define SEED_W 7
#define SEED_R 8

static int run_tcp(void)
{
	int l = listener(1), c, a, c_snd, c_rcv, a_snd, a_rcv;
	uint64_t sent = 0;
	static uint8_t buf[65536];

	c = socket(AF_INET, SOCK_STREAM, 0);
	setint(c, SOL_SOCKET, SO_REUSEADDR, 1);
	set_cc(c, "reno");
	connect_to(c, port_of(l));
	a = accept(l, NULL, NULL);
	if (a < 0)
		pfail("accept");
	close(l);
	/* Traffic first, so that the kernel tunes the buffers. */
	bulk_write(c, SEED_R, 0, 1 << 20);
	bulk_read(a, SEED_R, 0, 1 << 20);
	/* The peer reads no more: c's data piles up in a's receive queue,
	 * then in c's send queue, most of it never sent. */
	setint(c, IPPROTO_TCP, TCP_NOTSENT_LOWAT, 16384);
	if (fcntl(c, F_SETFL, O_NONBLOCK))
		pfail("O_NONBLOCK");
	for (;;) {
		ssize_t w;

		fill_pattern(buf, sizeof(buf), SEED_W, sent);
		w = send(c, buf, sizeof(buf), MSG_NOSIGNAL);
		if (w < 0 && errno == EAGAIN) {
			struct pollfd p = { .fd = c, .events = POLLOUT };

			if (poll(&p, 1, 300) == 0)
				break;
			continue;
		}
		if (w <= 0)
			pfail("send");
		sent += w;
	}
	c_snd = getint(c, SOL_SOCKET, SO_SNDBUF);
	c_rcv = getint(c, SOL_SOCKET, SO_RCVBUF);
	a_snd = getint(a, SOL_SOCKET, SO_SNDBUF);
	a_rcv = getint(a, SOL_SOCKET, SO_RCVBUF);
	test_msg("%llu bytes written, not read; c sndbuf %d rcvbuf %d lock %d",
		 (unsigned long long)sent, c_snd, c_rcv, have_buf_lock() ? getint(c, SOL_SOCKET, SO_BUF_LOCK) : -1);

	test_daemon();
	test_waitsig();

	check_int(c, SOL_SOCKET, SO_REUSEADDR, 1, "connection SO_REUSEADDR");
	check_int(a, SOL_SOCKET, SO_REUSEADDR, 1, "accepted SO_REUSEADDR");
	if (have_buf_lock())
		check_int(c, SOL_SOCKET, SO_BUF_LOCK, 0, "connection SO_BUF_LOCK");
	if (have_buf_lock())
		check_int(a, SOL_SOCKET, SO_BUF_LOCK, 0, "accepted SO_BUF_LOCK");
	check_buf(c, SO_SNDBUF, c_snd, "connection SO_SNDBUF");
	check_buf(c, SO_RCVBUF, c_rcv, "connection SO_RCVBUF");
	check_buf(a, SO_SNDBUF, a_snd, "accepted SO_SNDBUF");
	check_buf(a, SO_RCVBUF, a_rcv, "accepted SO_RCVBUF");
	check_int(c, IPPROTO_TCP, TCP_NOTSENT_LOWAT, 16384, "TCP_NOTSENT_LOWAT");
	check_cc(c, "reno");
	if (fcntl(c, F_SETFL, 0))
		pfail("blocking");
	/* Everything written before arrives, then more both ways. */
	bulk_read(a, SEED_W, 0, sent);
	bulk_write(c, SEED_W, sent, sent + 100000);
	bulk_read(a, SEED_W, sent, sent + 100000);
	bulk_write(a, SEED_R + 1, 0, 100000);
	bulk_read(c, SEED_R + 1, 0, 100000);
	pass();
	return 0;
}

/* ------------------------------------------------------------ --timewait */

static int run_timewait(void)
{
	int l = listener(0);

	for (int i = 0; i < 3; i++) {
		int c = socket(AF_INET, SOCK_STREAM, 0), a;
		char b;

		connect_to(c, port_of(l));
		a = accept(l, NULL, NULL);
		if (a < 0)
			pfail("accept");
		/* The server closes first: its side goes to TIME_WAIT. */
		close(a);
		if (read(c, &b, 1) != 0)
			fail("no EOF from the server");
		close(c);
	}
	test_daemon();
	test_waitsig();
	check_int(l, SOL_SOCKET, SO_REUSEADDR, 0, "listener SO_REUSEADDR");
	exchange(l);
	pass();
	return 0;
}

/* ------------------------------------------------------------ --ebpf */

static int run_ebpf(void)
{
	struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = -1 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	union bpf_attr attr;
	struct sockaddr_in a = lo4(0);
	int u = socket(AF_INET, SOCK_DGRAM, 0), prog_fd;

	memset(&attr, 0, sizeof(attr));
	attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
	attr.insns = (uintptr_t)insns;
	attr.insn_cnt = 2;
	attr.license = (uintptr_t) "GPL";
	prog_fd = syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof(attr));
	if (prog_fd < 0)
		pfail("BPF_PROG_LOAD");
	if (bind(u, (void *)&a, sizeof(a)))
		pfail("bind");
	if (setsockopt(u, SOL_SOCKET, SO_ATTACH_BPF, &prog_fd, sizeof(prog_fd)))
		pfail("SO_ATTACH_BPF");
	close(prog_fd);
	test_daemon();
	test_waitsig();
	pass();
	return 0;
}

int main(int argc, char **argv)
{
	int mode = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--tcp"))
			mode = 1;
		else if (!strcmp(argv[i], "--timewait"))
			mode = 2;
		else if (!strcmp(argv[i], "--ebpf"))
			mode = 3;
	}
	test_init(argc, argv);
	switch (mode) {
	case 1:
		return run_tcp();
	case 2:
		return run_timewait();
	case 3:
		return run_ebpf();
	default:
		return run_default();
	}
}
