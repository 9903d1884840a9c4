/*
 * tcp_peer: the far end of sk_tcp_stream's peer mode, run outside the
 * dumped tree (in another network namespace: "another machine"). Listens
 * on --listen ADDR --port P, writes its pidfile, accepts one connection
 * and streams both ways (stream.h) all the time, the checkpoint
 * included, until the other side shuts down; then shuts down its side.
 * PASS if no error or reset was ever seen, every byte checked out, and
 * at least --min BYTES came in.
 */
#include "stream.h"
#include <arpa/inet.h>
#include <netinet/in.h>

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	struct stream s;
	long min;
	int l, c, one = 1;
	double deadline;

	test_init(argc, argv);
	if (!test_arg("--listen") || !test_arg("--port"))
		fail("usage: tcp_peer --pidfile F --listen ADDR --port P [--min BYTES]");
	min = test_arg("--min") ? atol(test_arg("--min")) : 1 << 20;
	a.sin_port = htons(atoi(test_arg("--port")));
	inet_pton(AF_INET, test_arg("--listen"), &a.sin_addr);
	l = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (l < 0 || bind(l, (void *)&a, sizeof(a)) || listen(l, 1))
		pfail("listen on %s", test_arg("--listen"));
	test_daemon();
	c = accept(l, NULL, NULL);
	if (c < 0)
		pfail("accept");
	stream_init(&s, c, 2, 1);
	deadline = now_s() + 300;
	while (!s.eof) {
		if (now_s() > deadline)
			fail("no end of the stream within 300 s");
		stream_step(&s, 4096, 10, 1);
	}
	stream_shut(&s);
	if ((long)s.rcvd < min)
		fail("only %llu bytes came in", (unsigned long long)s.rcvd);
	printf("peer: %llu bytes in, %llu out; longest silence %.2f s\n",
	       (unsigned long long)s.rcvd, (unsigned long long)s.sent, s.max_gap);
	pass();
}
