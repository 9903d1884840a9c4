/*
 * sk_tcp_syn_sent: a connection still being set up (SYN_SENT) at the
 * checkpoint (--tcp-established). The listener, outside the tree (the
 * test), has a full accept queue, so the SYNs are dropped. After the
 * restore the socket must still be in SYN_SENT from the same local port;
 * the workload then writes "checked" in its directory, the test makes
 * room in the accept queue, and the connection must complete: one
 * message each way.
 *
 * --port P: the listener's port on 127.0.0.1.
 */
#include "zdtm.h"
#include "sockopt.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

static int tcp_state(int fd)
{
	struct tcp_info ti;
	socklen_t l = sizeof(ti);

	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l))
		pfail("TCP_INFO");
	return ti.tcpi_state;
}

static int local_port(int fd)
{
	struct sockaddr_in a;
	socklen_t l = sizeof(a);

	if (getsockname(fd, (void *)&a, &l))
		pfail("getsockname");
	return ntohs(a.sin_port);
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	const char *port;
	struct pollfd p;
	char buf[16];
	int fd, lport, err, f;
	socklen_t l = sizeof(err);

	test_init(argc, argv);
	port = test_arg("--port");
	if (!port)
		fail("--port is required");
	a.sin_port = htons(atoi(port));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (fd < 0)
		pfail("socket");
	/* Enough SYN retransmissions to outlast a slow checkpoint. */
	setint(fd, IPPROTO_TCP, TCP_SYNCNT, 10);
	if (connect(fd, (void *)&a, sizeof(a)) == 0 || errno != EINPROGRESS)
		pfail("connect did not stay in progress");
	usleep(100000);
	if (tcp_state(fd) != TCP_SYN_SENT)
		fail("state %d before the checkpoint, not SYN_SENT", tcp_state(fd));
	lport = local_port(fd);
	test_daemon();
	test_waitsig();

	if (tcp_state(fd) != TCP_SYN_SENT)
		fail("state %d after the restore, not SYN_SENT", tcp_state(fd));
	if (local_port(fd) != lport)
		fail("local port %d after the restore, was %d", local_port(fd), lport);
	if (getint(fd, IPPROTO_TCP, TCP_SYNCNT) != 10)
		fail("TCP_SYNCNT lost");
	f = open("checked", O_WRONLY | O_CREAT | O_EXCL, 0644);
	if (f < 0)
		pfail("create checked");
	close(f);
	p.fd = fd;
	p.events = POLLOUT;
	if (poll(&p, 1, 60000) != 1)
		fail("the connection did not complete within 60 s");
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) || err)
		fail("the connection failed: %s", strerror(err));
	if (send(fd, "syn-sent-ok", 11, MSG_NOSIGNAL) != 11)
		pfail("send");
	p.events = POLLIN;
	if (poll(&p, 1, 30000) != 1 || recv(fd, buf, 3, 0) != 3 || memcmp(buf, "ack", 3))
		fail("no answer from the listener");
	pass();
}
