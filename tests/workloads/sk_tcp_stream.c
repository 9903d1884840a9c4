/*
 * sk_tcp_stream: established TCP connections survive a checkpoint with
 * --tcp-established. Every byte in both directions is checked
 * (stream.h), before, across and after the checkpoint.
 *
 * Pair mode (default): both ends in the tree. The process forks; parent
 * and child are the two ends of
 *   - "main", IPv4 over loopback, a rate-limited stream both ways that
 *     runs all the time, with TCP_NODELAY, keepalive settings, a send
 *     buffer size and O_NONBLOCK that must survive;
 *   - "bulk", IPv6 over loopback, whose queues are full at the
 *     checkpoint: the parent wrote more than the child's small receive
 *     buffer holds (so part of its send queue was never sent) and the
 *     child wrote bytes the parent has not read.
 * After SIGTERM the parent streams another 512 KiB each way, both sides
 * shut down in turn, the bulk data is drained and checked, and the
 * parent requires the child's success.
 *
 * Peer mode (--peer ADDR --port P): the other end is tcp_peer, outside
 * the tree (in another network namespace); only "main" exists.
 */
#include "stream.h"
#include "sockopt.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/wait.h>

#define BULK (256 * 1024)
#define BULK_BACK (20 * 1024)
#define AFTER (512 * 1024)
#define STEP_BYTES 4096
/*
 * Peer mode offers far more than the slow link carries (up to 64 KiB per
 * 10 ms against 2 Mbit/s), so the send queue is full at the checkpoint
 * even when a loaded machine runs the loop late: sent-but-unacknowledged
 * and never-sent data are both there, and draining the full queue takes
 * seconds, longer than freezing and locking.
 */
#define PEER_STEP_BYTES 65536

static int listener(int family, struct sockaddr_storage *ss, socklen_t *len)
{
	int l = socket(family, SOCK_STREAM, 0);

	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *a = (void *)ss;
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		*len = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (void *)ss;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		*len = sizeof(*a);
	}
	if (l < 0 || bind(l, (void *)ss, *len) || listen(l, 4) || getsockname(l, (void *)ss, len))
		pfail("listener");
	return l;
}

/* Stream until the flag is set, then AFTER more bytes each way. */
static void run_main(struct stream *s, size_t step, volatile sig_atomic_t *flag)
{
	uint64_t rx0 = 0, tx0 = 0;
	int after = 0;

	for (;;) {
		stream_step(s, step, 10, 1);
		if (s->eof)
			fail("main: the peer closed early after %llu bytes", (unsigned long long)s->rcvd);
		if (!after && *flag) {
			after = 1;
			rx0 = s->rcvd;
			tx0 = s->sent;
			test_msg("main: %llu bytes in, %llu out before SIGTERM; longest silence %.2f s",
				 (unsigned long long)s->rcvd, (unsigned long long)s->sent, s->max_gap);
		}
		if (after && s->rcvd - rx0 >= AFTER && s->sent - tx0 >= AFTER)
			return;
	}
}

/* Shut our side, then read (and check) until the peer's EOF. */
static void finish_main(struct stream *s)
{
	double deadline = now_s() + 60;

	stream_shut(s);
	while (!s->eof) {
		if (now_s() > deadline)
			fail("main: no EOF from the peer");
		stream_step(s, 0, 100, 0);
	}
}

static void check_opts(int fd)
{
	if (!getint(fd, IPPROTO_TCP, TCP_NODELAY))
		fail("TCP_NODELAY lost");
	if (!getint(fd, SOL_SOCKET, SO_KEEPALIVE) || getint(fd, IPPROTO_TCP, TCP_KEEPIDLE) != 33 ||
	    getint(fd, IPPROTO_TCP, TCP_KEEPINTVL) != 7 || getint(fd, IPPROTO_TCP, TCP_KEEPCNT) != 4)
		fail("keepalive settings lost");
	if (!(fcntl(fd, F_GETFL) & O_NONBLOCK))
		fail("O_NONBLOCK lost");
}

static void set_opts(int fd)
{
	setint(fd, IPPROTO_TCP, TCP_NODELAY, 1);
	setint(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
	setint(fd, IPPROTO_TCP, TCP_KEEPIDLE, 33);
	setint(fd, IPPROTO_TCP, TCP_KEEPINTVL, 7);
	setint(fd, IPPROTO_TCP, TCP_KEEPCNT, 4);
}

static int peer_mode(const char *addr, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct stream s;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int sndbuf;

	inet_pton(AF_INET, addr, &a.sin_addr);
	if (fd < 0 || connect(fd, (void *)&a, sizeof(a)))
		pfail("connect to the peer %s:%d", addr, port);
	set_opts(fd);
	setint(fd, SOL_SOCKET, SO_SNDBUF, 300000);
	sndbuf = getint(fd, SOL_SOCKET, SO_SNDBUF);
	stream_init(&s, fd, 1, 2);
	/* Get the stream going before reporting readiness. */
	while (s.rcvd < 64 * 1024 || s.sent < 64 * 1024)
		stream_step(&s, STEP_BYTES, 10, 1);
	test_daemon();
	run_main(&s, PEER_STEP_BYTES, &test_sigterm_received);
	check_opts(fd);
	if (getint(fd, SOL_SOCKET, SO_SNDBUF) != sndbuf)
		fail("SO_SNDBUF %d, was %d", getint(fd, SOL_SOCKET, SO_SNDBUF), sndbuf);
	finish_main(&s);
	test_msg("main: %llu bytes in, %llu out; longest silence %.2f s",
		 (unsigned long long)s.rcvd, (unsigned long long)s.sent, s.max_gap);
	pass();
}

int main(int argc, char **argv)
{
	struct sockaddr_storage m, b;
	socklen_t ml, bl;
	struct stream s;
	int lm, lb, pm, pb, sync[2], status, written;
	pid_t child;
	char c;

	test_init(argc, argv);
	if (test_arg("--peer"))
		return peer_mode(test_arg("--peer"), atoi(test_arg("--port") ? test_arg("--port") : "0"));

	lm = listener(AF_INET, &m, &ml);
	lb = listener(AF_INET6, &b, &bl);
	{
		/* For the harness: the port of the IPv4 listener. */
		FILE *f = fopen("ports", "w");
		if (!f || fprintf(f, "%d\n", ntohs(((struct sockaddr_in *)&m)->sin_port)) < 0 ||
		    fclose(f))
			pfail("ports file");
	}
	if (pipe(sync))
		pfail("pipe");
	child = fork();
	if (child < 0)
		pfail("fork");
	if (child == 0) {
		int cm = socket(AF_INET, SOCK_STREAM, 0);
		int cb = socket(AF_INET6, SOCK_STREAM, 0);

		close(lm);
		close(lb);
		close(sync[0]);
		setint(cb, SOL_SOCKET, SO_RCVBUF, 4096);
		if (cm < 0 || cb < 0 || connect(cm, (void *)&m, ml) || connect(cb, (void *)&b, bl))
			pfail("child connect");
		bulk_write(cb, 4, 0, BULK_BACK);
		set_opts(cm);
		stream_init(&s, cm, 2, 1);
		if (write(sync[1], "r", 1) != 1)
			pfail("sync");
		/* Stream until the parent closes main. */
		while (!s.eof)
			stream_step(&s, s.tx_shut ? 0 : STEP_BYTES, 10, 1);
		stream_shut(&s);
		check_opts(cm);
		fcntl(cb, F_SETFL, 0);
		bulk_read(cb, 3, 0, BULK);
		if (recv(cb, &c, 1, 0) != 0)
			fail("child: bulk has more than %d bytes", BULK);
		printf("child: main %llu in, %llu out, bulk %d in; ok\n", (unsigned long long)s.rcvd,
		       (unsigned long long)s.sent, BULK);
		fflush(stdout);
		_exit(0);
	}
	close(sync[1]);
	pm = accept(lm, NULL, NULL);
	pb = accept(lb, NULL, NULL);
	if (pm < 0 || pb < 0)
		pfail("accept");
	/* Fill the bulk connection: the child reads nothing before the end. */
	fcntl(pb, F_SETFL, O_NONBLOCK);
	{
		static uint8_t buf[BULK];
		fill_pattern(buf, BULK, 3, 0);
		written = 0;
		for (int i = 0; i < 200 && written < BULK; i++) {
			ssize_t w = send(pb, buf + written, BULK - written, MSG_DONTWAIT);
			if (w > 0)
				written += w;
			else
				usleep(1000);
		}
	}
	set_opts(pm);
	stream_init(&s, pm, 1, 2);
	if (read(sync[0], &c, 1) != 1)
		fail("the child did not get ready");
	while (s.rcvd < 64 * 1024 || s.sent < 64 * 1024)
		stream_step(&s, STEP_BYTES, 10, 1);
	test_msg("bulk: %d of %d bytes written before the checkpoint", written, BULK);
	test_daemon();
	run_main(&s, STEP_BYTES, &test_sigterm_received);
	check_opts(pm);
	finish_main(&s);
	fcntl(pb, F_SETFL, 0);
	bulk_read(pb, 4, 0, BULK_BACK);
	bulk_write(pb, 3, written, BULK);
	shutdown(pb, SHUT_WR);
	if (waitpid(child, &status, 0) != child)
		pfail("waitpid");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail("the child failed (status %#x)", status);
	test_msg("main: %llu bytes in, %llu out; longest silence %.2f s", (unsigned long long)s.rcvd,
		 (unsigned long long)s.sent, s.max_gap);
	pass();
}
