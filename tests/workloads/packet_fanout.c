/*
 * packet_fanout: packet sockets in PACKET_FANOUT groups, in a network
 * namespace of the test's own (lo up, nothing else).
 *
 * Group A (id 4242, PACKET_FANOUT_HASH with PACKET_FANOUT_FLAG_DEFRAG and
 * PACKET_FANOUT_FLAG_ROLLOVER, at most 4 members: struct fanout_args):
 * SOCK_DGRAM ETH_P_IP sockets on lo, joined in the order a0 (this
 * process), c1 (a child), a2, a3 (this process); then a0 is closed, and
 * the kernel moves a3 into its place: the group's member array, which
 * picks the member of each packet (hash % members), is a3, c1, a2.
 * Group B (id 4243, PACKET_FANOUT_CPU with
 * PACKET_FANOUT_FLAG_IGNORE_OUTGOING, joined with a plain int: limit 256):
 * b0 and b1, SOCK_RAW on lo for ethertype 0x88b5.
 *
 * Before the checkpoint, 16 UDP datagrams with fixed ports (16 flows) are
 * sent on lo; which member of A gets each is recorded (the child reports
 * what c1 receives through a pipe). After the restore: getsockopt
 * (PACKET_FANOUT) of every member is its group's; the same 16 datagrams
 * go to the same members (the member array came back in its order); a
 * frame of 0x88b5 reaches exactly one member of B; a socket cannot join A
 * with another member limit (EINVAL), can with the same, and then no
 * other can (ENOSPC: 4 members).
 *
 * Refused at dump (the test checks the message; the process must go on):
 * --lb:    also group C (id 4245, PACKET_FANOUT_LB, 2 members on 0x88b6)
 *          that received 3 frames: its round-robin cursor moved.
 * --cbpf:  also group D (id 4246, PACKET_FANOUT_CBPF) with a classic
 *          fanout program (PACKET_FANOUT_DATA).
 * --join ID: only a socket (ETH_P_IP on lo) in group ID, PACKET_FANOUT_HASH
 *          (no groups A, B and no child); the test runs two of these, and
 *          the dump of the second is refused (a member outside its tree).
 *          After SIGTERM the socket must still be in the group.
 */
#include "zdtm.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define FLOWS 16
#define GROUP_A 4242
#define GROUP_B 4243
#define A_FLAGS (PACKET_FANOUT_FLAG_DEFRAG | PACKET_FANOUT_FLAG_ROLLOVER)
#ifndef PACKET_FANOUT_FLAG_IGNORE_OUTGOING
#define PACKET_FANOUT_FLAG_IGNORE_OUTGOING 0x4000
#endif
#define B_FLAGS PACKET_FANOUT_FLAG_IGNORE_OUTGOING
#define ETH_B 0x88b5
#define ETH_C 0x88b6

struct fanout_args_ {
	uint16_t id, type_flags;
	uint32_t max_num_members;
};

static int lo;

static int packet_on_lo(int type, int proto)
{
	struct sockaddr_ll a = { .sll_family = AF_PACKET, .sll_protocol = htons(proto),
				 .sll_ifindex = lo };
	int s = socket(AF_PACKET, type, htons(proto));

	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)))
		pfail("packet socket for %#x on lo", proto);
	return s;
}

static int join_args(int s, int id, int type_flags, int max)
{
	struct fanout_args_ f = { id, type_flags, max };

	return setsockopt(s, SOL_PACKET, PACKET_FANOUT, &f, sizeof(f));
}

static void join_int(int s, int id, int type_flags)
{
	int v = id | type_flags << 16;

	if (setsockopt(s, SOL_PACKET, PACKET_FANOUT, &v, sizeof(v)))
		pfail("PACKET_FANOUT %d", id);
}

static void expect_group(int s, const char *name, int id, int type_flags)
{
	int v = -1;
	socklen_t len = sizeof(v);
	int want = id | type_flags << 16;

	if (getsockopt(s, SOL_PACKET, PACKET_FANOUT, &v, &len))
		pfail("getsockopt PACKET_FANOUT of %s", name);
	if (v != want)
		fail("%s: PACKET_FANOUT is %#x, was %#x", name, v, want);
}

/* The flow number of a UDP datagram of ours in `b` (an IP packet), or -1. */
static int flow_of(const unsigned char *b, ssize_t n)
{
	int ihl;

	if (n < 20 || (b[0] >> 4) != 4 || b[9] != IPPROTO_UDP)
		return -1;
	ihl = (b[0] & 15) * 4;
	if (n < ihl + 8 + 6 || memcmp(b + ihl + 8, "flow", 4))
		return -1;
	return atoi((const char *)b + ihl + 12);
}

/* Reads what is queued on s; returns the first flow of ours, or -1. */
static int drain(int s)
{
	unsigned char b[2048];
	int flow = -1;
	ssize_t n;

	while ((n = recv(s, b, sizeof(b), MSG_DONTWAIT)) > 0) {
		int f = flow_of(b, n);

		if (f >= 0 && flow < 0)
			flow = f;
	}
	return flow;
}

static void send_flow(int i)
{
	struct sockaddr_in from = { .sin_family = AF_INET, .sin_port = htons(41000 + i),
				    .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(42000 + i),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	char msg[32];
	int one = 1, u = socket(AF_INET, SOCK_DGRAM, 0);

	snprintf(msg, sizeof(msg), "flow%d", i);
	if (u < 0 || setsockopt(u, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(u, (struct sockaddr *)&from, sizeof(from)) ||
	    sendto(u, msg, strlen(msg) + 1, 0, (struct sockaddr *)&to, sizeof(to)) < 0)
		pfail("send flow %d", i);
	close(u);
}

/* The child: c1 joins A when told, then reports every flow c1 receives. */
static void child(int go, int report)
{
	struct pollfd p;
	char c;
	int s;

	if (read(go, &c, 1) != 1)
		exit(1);
	s = packet_on_lo(SOCK_DGRAM, ETH_P_IP);
	if (join_args(s, GROUP_A, PACKET_FANOUT_HASH | A_FLAGS, 4))
		pfail("child: join group A");
	if (write(report, "j", 1) != 1)
		exit(1);
	p.fd = s;
	p.events = POLLIN;
	for (;;) {
		int f;

		if (poll(&p, 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			exit(1);
		}
		f = drain(s);
		if (f >= 0) {
			unsigned char b = f;

			if (write(report, &b, 1) != 1)
				exit(1);
		}
	}
}

/* Sends every flow; `who[i]`: 0 a3, 1 c1, 2 a2 got flow i. */
static void route_flows(int a2, int a3, int report, int who[FLOWS])
{
	for (int i = 0; i < FLOWS; i++) {
		struct pollfd p[3] = { { a3, POLLIN, 0 }, { report, POLLIN, 0 }, { a2, POLLIN, 0 } };
		int got = -1;

		send_flow(i);
		for (int tries = 0; tries < 20 && got < 0; tries++) {
			if (poll(p, 3, 100) < 0)
				pfail("poll");
			for (int k = 0; k < 3; k++) {
				int f = -1;
				unsigned char b;

				if (!(p[k].revents & POLLIN))
					continue;
				if (k == 1) {
					if (read(report, &b, 1) != 1)
						pfail("read the child's report");
					f = b;
				} else {
					f = drain(p[k].fd);
				}
				if (f == i) {
					if (got >= 0)
						fail("flow %d reached members %d and %d", i, got, k);
					got = k;
				} else if (f >= 0) {
					fail("flow %d arrived while waiting for flow %d", f, i);
				}
			}
		}
		if (got < 0)
			fail("flow %d reached no member of group A", i);
		who[i] = got;
	}
	usleep(100000);
	drain(a2);
	drain(a3);
}

int main(int argc, char **argv)
{
	int a0, a2, a3, b0, b1, go[2], rep[2], before[FLOWS], after[FLOWS], used = 0;
	int extra[2] = { -1, -1 };
	const char *join = NULL;
	pid_t pid;
	char c;

	test_init(argc, argv);
	lo = if_nametoindex("lo");
	if (!lo)
		pfail("if_nametoindex lo");
	join = test_arg("--join");
	if (join) {
		int s = packet_on_lo(SOCK_DGRAM, ETH_P_IP);

		join_int(s, atoi(join), PACKET_FANOUT_HASH);
		test_daemon();
		test_waitsig();
		expect_group(s, "the socket", atoi(join), PACKET_FANOUT_HASH);
		pass();
	}
	if (pipe(go) || pipe(rep))
		pfail("pipe");
	pid = fork();
	if (pid < 0)
		pfail("fork");
	if (pid == 0) {
		close(go[1]);
		close(rep[0]);
		child(go[0], rep[1]);
	}
	close(go[0]);
	close(rep[1]);

	a0 = packet_on_lo(SOCK_DGRAM, ETH_P_IP);
	if (join_args(a0, GROUP_A, PACKET_FANOUT_HASH | A_FLAGS, 4))
		pfail("join group A with struct fanout_args");
	if (write(go[1], "g", 1) != 1 || read(rep[0], &c, 1) != 1 || c != 'j')
		fail("the child did not join group A");
	a2 = packet_on_lo(SOCK_DGRAM, ETH_P_IP);
	a3 = packet_on_lo(SOCK_DGRAM, ETH_P_IP);
	if (join_args(a2, GROUP_A, PACKET_FANOUT_HASH | A_FLAGS, 4) ||
	    join_args(a3, GROUP_A, PACKET_FANOUT_HASH | A_FLAGS, 4))
		pfail("join group A");
	close(a0);

	b0 = packet_on_lo(SOCK_RAW, ETH_B);
	b1 = packet_on_lo(SOCK_RAW, ETH_B);
	join_int(b0, GROUP_B, PACKET_FANOUT_CPU | B_FLAGS);
	join_int(b1, GROUP_B, PACKET_FANOUT_CPU | B_FLAGS);

	if (test_flag("--lb") || test_flag("--cbpf")) {
		int lb = test_flag("--lb");
		int id = lb ? 4245 : 4246;
		int type = lb ? PACKET_FANOUT_LB : PACKET_FANOUT_CBPF;

		for (int k = 0; k < 2; k++) {
			extra[k] = packet_on_lo(SOCK_RAW, ETH_C);
			join_int(extra[k], id, type);
		}
		if (lb) {
			unsigned char frame[60] = { 0 };
			struct sockaddr_ll to = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_C),
						  .sll_ifindex = lo, .sll_halen = 6 };
			int tx = socket(AF_PACKET, SOCK_RAW, 0);

			frame[12] = ETH_C >> 8;
			frame[13] = ETH_C & 0xff;
			for (int k = 0; k < 3; k++)
				if (tx < 0 || sendto(tx, frame, sizeof(frame), 0, (struct sockaddr *)&to,
						     sizeof(to)) != sizeof(frame))
					pfail("send a frame to group C");
			close(tx);
			usleep(100000);
			drain(extra[0]);
			drain(extra[1]);
		} else {
			struct sock_filter code[] = { { 0x06, 0, 0, 1 } }; /* ret 1 */
			struct sock_fprog prog = { 1, code };

			if (setsockopt(extra[0], SOL_PACKET, PACKET_FANOUT_DATA, &prog, sizeof(prog)))
				pfail("PACKET_FANOUT_DATA");
		}
	}

	route_flows(a2, a3, rep[0], before);
	for (int k = 0; k < 2; k++)
		if (extra[k] >= 0)
			drain(extra[k]);
	for (int i = 0; i < FLOWS; i++)
		used |= 1 << before[i];
	if (used == 1 || used == 2 || used == 4)
		fail("all %d flows went to one member: the test would not see the order", FLOWS);

	test_daemon();
	test_waitsig();

	expect_group(a2, "a2", GROUP_A, PACKET_FANOUT_HASH | A_FLAGS);
	expect_group(a3, "a3", GROUP_A, PACKET_FANOUT_HASH | A_FLAGS);
	expect_group(b0, "b0", GROUP_B, PACKET_FANOUT_CPU | B_FLAGS);
	expect_group(b1, "b1", GROUP_B, PACKET_FANOUT_CPU | B_FLAGS);
	route_flows(a2, a3, rep[0], after);
	for (int i = 0; i < FLOWS; i++)
		if (after[i] != before[i])
			fail("flow %d reached member %d, before the checkpoint %d (members a3, c1, a2)",
			     i, after[i], before[i]);
	{
		unsigned char frame[60] = { 0 };
		struct sockaddr_ll to = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_B),
					  .sll_ifindex = lo, .sll_halen = 6 };
		int tx = socket(AF_PACKET, SOCK_RAW, 0), n = 0;
		char b[128];

		frame[12] = ETH_B >> 8;
		frame[13] = ETH_B & 0xff;
		if (tx < 0 || sendto(tx, frame, sizeof(frame), 0, (struct sockaddr *)&to, sizeof(to)) !=
				      sizeof(frame))
			pfail("send a frame to group B");
		usleep(100000);
		while (recv(b0, b, sizeof(b), MSG_DONTWAIT) > 0)
			n++;
		while (recv(b1, b, sizeof(b), MSG_DONTWAIT) > 0)
			n++;
		if (n != 1)
			fail("group B got the frame %d times, not once", n);
	}
	{
		int x = packet_on_lo(SOCK_DGRAM, ETH_P_IP), y = packet_on_lo(SOCK_DGRAM, ETH_P_IP);

		if (!join_args(x, GROUP_A, PACKET_FANOUT_HASH | A_FLAGS, 5) || errno != EINVAL)
			fail("joined group A with a member limit of 5 (it has 4)");
		if (join_args(x, GROUP_A, PACKET_FANOUT_HASH | A_FLAGS, 4))
			pfail("join group A as its 4th member");
		if (!join_args(y, GROUP_A, PACKET_FANOUT_HASH | A_FLAGS, 4) || errno != ENOSPC)
			fail("a 5th member joined group A (limit 4)");
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	pass();
}
