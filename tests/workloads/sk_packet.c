/*
 * sk_packet: packet sockets, in a network namespace of its own (the test
 * makes it and brings lo up).
 *
 *   p1  SOCK_DGRAM, ETH_P_IP, bound to lo, with PACKET_VERSION 2,
 *       PACKET_RESERVE, PACKET_AUXDATA, PACKET_ORIGDEV, PACKET_TIMESTAMP,
 *       PACKET_LOSS, PACKET_QDISC_BYPASS, a promiscuous and an all-multicast
 *       membership on lo (the promiscuous one twice) and SO_RCVBUF.
 *   p2  SOCK_RAW, protocol 0 (receives nothing), unbound, with
 *       PACKET_VNET_HDR, PACKET_IGNORE_OUTGOING and a classic BPF filter.
 *
 * After the restore each checks its address and options, p1 must receive
 * (with its PACKET_AUXDATA) a UDP datagram sent to 127.0.0.1, and lo must
 * still be promiscuous because of p1 (promiscuity 1).
 *
 * --queued: p1 has a packet queued at checkpoint time (refused).
 * --ring: also holds a TPACKET_V2 socket with a PACKET_RX_RING that received
 *         two frames and a PACKET_TX_RING, both mapped (restorable; the
 *         ring tests are tests/restore_pktring.rs with packet_ring.c).
 * --v3ring: the same with a TPACKET_V3 PACKET_RX_RING only, whose active
 *         block holds the two frames and stays open (60 s retire timeout):
 *         refused.
 * --fanout: also holds a socket in a fanout group (id 77, PACKET_FANOUT_HASH)
 *           with a member limit of 8, still in it after the restore (the
 *           groups are tests/restore_pktring.rs with packet_fanout.c).
 */
#include "zdtm.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>

#define PORT 47123
static const char payload[] = "cairn packet socket test";

static int get_opt(int s, int level, int opt)
{
	int v = -1;
	socklen_t len = sizeof(v);

	if (getsockopt(s, level, opt, &v, &len))
		pfail("getsockopt %d/%d", level, opt);
	return v;
}

static void set_opt(int s, int opt, int v)
{
	if (setsockopt(s, SOL_PACKET, opt, &v, sizeof(v)))
		pfail("setsockopt SOL_PACKET %d = %d", opt, v);
}

static void add_mr(int s, int ifindex, int type)
{
	struct packet_mreq mr = { .mr_ifindex = ifindex, .mr_type = type };

	if (setsockopt(s, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)))
		pfail("PACKET_ADD_MEMBERSHIP %d", type);
}

static void send_udp(void)
{
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(PORT),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int u = socket(AF_INET, SOCK_DGRAM, 0);

	if (u < 0 || sendto(u, payload, sizeof(payload), 0, (struct sockaddr *)&to, sizeof(to)) != sizeof(payload))
		pfail("send the UDP datagram");
	close(u);
}

/* lo's promiscuity or allmulti count ("ip -d link"; SIOCGIFFLAGS
 * does not show what packet sockets set). */
static int lo_count(const char *key)
{
	char line[1024];
	int n = -1;
	FILE *f = popen("ip -d link show lo", "r");

	if (!f)
		pfail("popen ip");
	while (fgets(line, sizeof(line), f)) {
		char *p = strstr(line, key);

		if (p)
			n = atoi(p + strlen(key));
	}
	pclose(f);
	if (n < 0 && !strcmp(key, " allmulti ")) {
		/*
		 * Kernels before IFLA_ALLMULTI (5.10) give the count nowhere
		 * (lo's flags do not show what packet sockets set): unchecked.
		 */
		test_msg("ip shows no allmulti count (a kernel without IFLA_ALLMULTI): not checked");
		return 1;
	}
	if (n < 0)
		fail("ip -d link show lo shows no %s", key);
	return n;
}

struct opt {
	int opt, val;
} p1_opts[] = {
	{ PACKET_VERSION, TPACKET_V2 }, { PACKET_RESERVE, 128 },    { PACKET_AUXDATA, 1 },
	{ PACKET_ORIGDEV, 1 },		{ PACKET_TIMESTAMP, 1 }, { PACKET_LOSS, 1 },
	{ PACKET_QDISC_BYPASS, 1 },
};

int main(int argc, char **argv)
{
	struct sock_filter code[] = { { 0x06, 0, 0, 0x0000ffff } }; /* ret 0xffff */
	struct sock_fprog prog = { 1, code };
	int p1, p2, extra = -1, lo, rcvbuf = 200000;
	struct sockaddr_ll a;
	socklen_t len;

	test_init(argc, argv);
	lo = if_nametoindex("lo");
	if (!lo)
		pfail("if_nametoindex lo");

	p1 = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_IP));
	if (p1 < 0)
		pfail("socket p1");
	for (unsigned i = 0; i < sizeof(p1_opts) / sizeof(p1_opts[0]); i++)
		set_opt(p1, p1_opts[i].opt, p1_opts[i].val);
	a = (struct sockaddr_ll){ .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP), .sll_ifindex = lo };
	if (bind(p1, (struct sockaddr *)&a, sizeof(a)))
		pfail("bind p1 to lo");
	add_mr(p1, lo, PACKET_MR_PROMISC);
	add_mr(p1, lo, PACKET_MR_PROMISC);
	add_mr(p1, lo, PACKET_MR_ALLMULTI);
	if (setsockopt(p1, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)))
		pfail("SO_RCVBUF");
	rcvbuf = get_opt(p1, SOL_SOCKET, SO_RCVBUF);

	p2 = socket(AF_PACKET, SOCK_RAW, 0);
	if (p2 < 0)
		pfail("socket p2");
	set_opt(p2, PACKET_VNET_HDR, 1);
	set_opt(p2, PACKET_IGNORE_OUTGOING, 1);
	if (setsockopt(p2, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)))
		pfail("SO_ATTACH_FILTER");

	if (test_flag("--ring") || test_flag("--v3ring")) {
		/* Bound to lo for IPv4: it sees exactly the datagrams sent below. */
		struct tpacket_req req = { .tp_block_size = 4096, .tp_block_nr = 2,
					   .tp_frame_size = 2048, .tp_frame_nr = 4 };
		struct tpacket_req3 req3 = { .tp_block_size = 4096, .tp_block_nr = 2,
					     .tp_frame_size = 2048, .tp_frame_nr = 4,
					     .tp_retire_blk_tov = 60000 };
		int v3 = test_flag("--v3ring");

		extra = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_IP));
		if (extra < 0)
			pfail("socket");
		set_opt(extra, PACKET_VERSION, v3 ? TPACKET_V3 : TPACKET_V2);
		if (v3 ? setsockopt(extra, SOL_PACKET, PACKET_RX_RING, &req3, sizeof(req3))
		       : setsockopt(extra, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)))
			pfail("PACKET_RX_RING");
		if (!v3 && setsockopt(extra, SOL_PACKET, PACKET_TX_RING, &req, sizeof(req)))
			pfail("PACKET_TX_RING");
		a = (struct sockaddr_ll){ .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP),
					  .sll_ifindex = lo };
		if (bind(extra, (struct sockaddr *)&a, sizeof(a)))
			pfail("bind the ring socket to lo");
		if (mmap(NULL, v3 ? 8192 : 16384, PROT_READ | PROT_WRITE, MAP_SHARED, extra, 0) == MAP_FAILED)
			pfail("mmap the ring");
		/* Two frames in: the datagram and lo's ICMP port unreachable
		 * (V2: the kernel fills frame 2 next). */
		send_udp();
		usleep(100000);
	}
	if (test_flag("--fanout")) {
		/* struct fanout_args: id 77, PACKET_FANOUT_HASH, at most 8 members. */
		struct {
			uint16_t id, type_flags;
			uint32_t max_num_members;
		} f = { 77, PACKET_FANOUT_HASH, 8 };

		extra = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
		if (extra < 0 || setsockopt(extra, SOL_PACKET, PACKET_FANOUT, &f, sizeof(f)))
			pfail("PACKET_FANOUT");
	}
	/* Drain what lo brought so far: the queue must be empty for the dump. */
	{
		char buf[2048];

		while (recv(p1, buf, sizeof(buf), MSG_DONTWAIT) > 0)
			;
	}
	if (test_flag("--queued")) {
		send_udp();
		usleep(100000);
	}

	test_daemon();
	test_waitsig();

	if (test_flag("--queued") || extra >= 0) {
		char buf[2048];

		if (test_flag("--queued") && recv(p1, buf, sizeof(buf), MSG_DONTWAIT) <= 0)
			fail("the queued packet is gone");
		if (test_flag("--fanout") &&
		    get_opt(extra, SOL_PACKET, PACKET_FANOUT) != (77 | PACKET_FANOUT_HASH << 16))
			fail("the socket is not in fanout group 77 any more");
		pass();
	}

	len = sizeof(a);
	if (getsockname(p1, (struct sockaddr *)&a, &len))
		pfail("getsockname p1");
	if (a.sll_ifindex != lo || a.sll_protocol != htons(ETH_P_IP))
		fail("p1 is bound to %d/%#x, was %d/%#x", a.sll_ifindex, ntohs(a.sll_protocol), lo, ETH_P_IP);
	if (get_opt(p1, SOL_SOCKET, SO_TYPE) != SOCK_DGRAM)
		fail("p1 type");
	for (unsigned i = 0; i < sizeof(p1_opts) / sizeof(p1_opts[0]); i++)
		if (get_opt(p1, SOL_PACKET, p1_opts[i].opt) != p1_opts[i].val)
			fail("p1 SOL_PACKET option %d is %d, was %d", p1_opts[i].opt,
			     get_opt(p1, SOL_PACKET, p1_opts[i].opt), p1_opts[i].val);
	if (get_opt(p1, SOL_SOCKET, SO_RCVBUF) != rcvbuf)
		fail("p1 SO_RCVBUF");
	if (lo_count(" promiscuity ") != 1 || lo_count(" allmulti ") != 1)
		fail("lo's promiscuity/allmulti are %d/%d, not 1/1 (p1's memberships)",
		     lo_count(" promiscuity "), lo_count(" allmulti "));

	len = sizeof(a);
	if (getsockname(p2, (struct sockaddr *)&a, &len))
		pfail("getsockname p2");
	if (a.sll_ifindex != 0 || a.sll_protocol != 0 || get_opt(p2, SOL_SOCKET, SO_TYPE) != SOCK_RAW)
		fail("p2 is bound to %d/%#x", a.sll_ifindex, ntohs(a.sll_protocol));
	if (get_opt(p2, SOL_PACKET, PACKET_VNET_HDR) != 1 || get_opt(p2, SOL_PACKET, PACKET_IGNORE_OUTGOING) != 1)
		fail("p2 lost PACKET_VNET_HDR or PACKET_IGNORE_OUTGOING");
	{
		struct sock_filter got[4];
		socklen_t n = 4; /* SO_GET_FILTER counts instructions */

		if (getsockopt(p2, SOL_SOCKET, SO_GET_FILTER, got, &n) || n != 1 || got[0].k != 0xffff)
			fail("p2 lost its filter");
	}

	/* p1 sees a datagram sent to 127.0.0.1 now. */
	send_udp();
	for (;;) {
		char buf[2048], cbuf[256];
		struct iovec iov = { buf, sizeof(buf) };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
				    .msg_controllen = sizeof(cbuf) };
		struct pollfd p = { .fd = p1, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 5000) != 1)
			fail("p1 received nothing after the restore");
		n = recvmsg(p1, &m, 0);
		if (n < 0)
			pfail("recvmsg p1");
		/* IPv4 header (20) + UDP header (8) + payload. */
		if (n == 28 + (ssize_t)sizeof(payload) && memcmp(buf + 28, payload, sizeof(payload)) == 0) {
			struct cmsghdr *c = CMSG_FIRSTHDR(&m);

			if (!c || c->cmsg_level != SOL_PACKET || c->cmsg_type != PACKET_AUXDATA)
				fail("the packet came without PACKET_AUXDATA");
			break;
		}
	}
	pass();
}
