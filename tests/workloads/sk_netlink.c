/*
 * sk_netlink: netlink sockets of three protocols, run in a network
 * namespace of its own (the test makes it).
 *
 *   s1  NETLINK_ROUTE bound to RTMGRP_LINK (autobound port id), plus group
 *       RTNLGRP_STATS (36, above 32; 32 before Linux 5.18, which has no
 *       route group above 32) by NETLINK_ADD_MEMBERSHIP, with
 *       PKTINFO, NO_ENOBUFS, BROADCAST_ERROR, EXT_ACK, CAP_ACK,
 *       GET_STRICT_CHK and SO_RCVBUF set.
 *   s2  NETLINK_ROUTE bound to a chosen port id and connected to s1.
 *   s3  NETLINK_KOBJECT_UEVENT, SOCK_DGRAM, bound to group 1.
 *   s4  NETLINK_SOCK_DIAG, never used (unbound; autobound where getsockopt
 *       cannot read NETLINK_LISTEN_ALL_NSID, as on 5.10).
 *
 * After the restore each checks its addresses, groups and options; then
 * s1 must see the RTM_NEWLINK of a veth pair created now (with its
 * NETLINK_PKTINFO group) and the message s2 sends it, and s4 must find s1
 * by its port id in a netlink_diag dump.
 *
 * --queued: s1 has a message queued at checkpoint time (the dump must
 * refuse); on SIGTERM the original checks it is still there.
 * --generic: also holds a NETLINK_GENERIC socket (refused).
 * --otherns: also holds a bound NETLINK_ROUTE socket of another network
 * namespace (refused).
 */
#include "zdtm.h"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/netlink_diag.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>

#ifndef NETLINK_EXT_ACK
#define NETLINK_EXT_ACK 11
#endif
#ifndef NETLINK_GET_STRICT_CHK
#define NETLINK_GET_STRICT_CHK 12
#endif
#define S2_PORT 0x7f001234u
#define USER_TYPE 0x7777

static int nl_socket(int type, int proto)
{
	int s = socket(AF_NETLINK, type, proto);

	if (s < 0)
		pfail("socket(AF_NETLINK, %d)", proto);
	return s;
}

static void nl_bind(int s, uint32_t pid, uint32_t groups)
{
	struct sockaddr_nl a = { .nl_family = AF_NETLINK, .nl_pid = pid, .nl_groups = groups };

	if (bind(s, (struct sockaddr *)&a, sizeof(a)))
		pfail("bind netlink %u/%u", pid, groups);
}

static struct sockaddr_nl name_of(int s, int peer)
{
	struct sockaddr_nl a;
	socklen_t len = sizeof(a);

	memset(&a, 0, sizeof(a));
	if ((peer ? getpeername : getsockname)(s, (struct sockaddr *)&a, &len))
		pfail("get%sname", peer ? "peer" : "sock");
	return a;
}

static void set_opt(int s, int opt, int v)
{
	if (setsockopt(s, SOL_NETLINK, opt, &v, sizeof(v)))
		pfail("setsockopt SOL_NETLINK %d", opt);
}

static int get_opt(int s, int level, int opt)
{
	int v = -1;
	socklen_t len = sizeof(v);

	if (getsockopt(s, level, opt, &v, &len))
		pfail("getsockopt %d/%d", level, opt);
	return v;
}

static void memberships(int s, uint32_t *out, int n)
{
	socklen_t len = n * sizeof(uint32_t);

	memset(out, 0, len);
	if (getsockopt(s, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, out, &len))
		pfail("NETLINK_LIST_MEMBERSHIPS");
}

static void send_user(int s2)
{
	struct nlmsghdr h = { .nlmsg_len = sizeof(h), .nlmsg_type = USER_TYPE, .nlmsg_seq = 42 };

	if (send(s2, &h, sizeof(h), 0) != sizeof(h))
		pfail("send from s2 to s1");
}

/* The group s1 joins by NETLINK_ADD_MEMBERSHIP (above 32 if the kernel has one). */
static int extra_group;
/* The kernel cannot read NETLINK_LISTEN_ALL_NSID by getsockopt; s4's port id. */
static int old_nsid;
static uint32_t p4;

static const int s1_opts[] = { NETLINK_PKTINFO, NETLINK_NO_ENOBUFS, NETLINK_BROADCAST_ERROR,
			       NETLINK_EXT_ACK, NETLINK_CAP_ACK, NETLINK_GET_STRICT_CHK };

int main(int argc, char **argv)
{
	int s1, s2, s3, s4, gen = -1, rcvbuf;
	uint32_t p1, groups[4], want[4] = { 0 };
	struct sockaddr_nl a;

	test_init(argc, argv);

	s1 = nl_socket(SOCK_RAW, NETLINK_ROUTE);
	nl_bind(s1, 0, RTMGRP_LINK);
	extra_group = RTNLGRP_STATS;
	if (setsockopt(s1, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &extra_group, sizeof(extra_group))) {
		/* A group above the kernel's RTNLGRP_MAX is EINVAL. */
		if (errno != EINVAL)
			pfail("NETLINK_ADD_MEMBERSHIP %d", extra_group);
		test_msg("group %d (RTNLGRP_STATS, Linux 5.18) not in this kernel: group %d instead, "
			 "the memberships' second word stays untested",
			 extra_group, RTNLGRP_NEXTHOP);
		extra_group = RTNLGRP_NEXTHOP;
		set_opt(s1, NETLINK_ADD_MEMBERSHIP, extra_group);
	}
	for (unsigned i = 0; i < sizeof(s1_opts) / sizeof(s1_opts[0]); i++)
		set_opt(s1, s1_opts[i], 1);
	rcvbuf = 300000;
	if (setsockopt(s1, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)))
		pfail("SO_RCVBUF");
	rcvbuf = get_opt(s1, SOL_SOCKET, SO_RCVBUF);
	p1 = name_of(s1, 0).nl_pid;
	if (p1 == 0)
		fail("s1 has no port id after bind");

	s2 = nl_socket(SOCK_RAW, NETLINK_ROUTE);
	nl_bind(s2, S2_PORT, 0);
	a = (struct sockaddr_nl){ .nl_family = AF_NETLINK, .nl_pid = p1 };
	if (connect(s2, (struct sockaddr *)&a, sizeof(a)))
		pfail("connect s2 to s1");

	s3 = nl_socket(SOCK_DGRAM, NETLINK_KOBJECT_UEVENT);
	nl_bind(s3, 0, 1);

	s4 = nl_socket(SOCK_RAW, NETLINK_SOCK_DIAG);
	{
		int v;
		socklen_t len = sizeof(v);

		/*
		 * A kernel whose getsockopt cannot read NETLINK_LISTEN_ALL_NSID
		 * (5.10): cairn reads it from netlink_diag, which lists only
		 * bound sockets (an unbound one is refused): s4 autobinds.
		 */
		old_nsid = getsockopt(s4, SOL_NETLINK, NETLINK_LISTEN_ALL_NSID, &v, &len) &&
			   errno == ENOPROTOOPT;
		if (old_nsid) {
			test_msg("getsockopt(NETLINK_LISTEN_ALL_NSID): ENOPROTOOPT: s4 autobound");
			nl_bind(s4, 0, 0);
			p4 = name_of(s4, 0).nl_pid;
		}
	}

	if (test_flag("--generic"))
		gen = nl_socket(SOCK_RAW, NETLINK_GENERIC);
	if (test_flag("--queued"))
		send_user(s2);
	if (test_flag("--otherns")) {
		int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);

		if (home < 0 || unshare(CLONE_NEWNET))
			pfail("unshare(CLONE_NEWNET)");
		gen = nl_socket(SOCK_RAW, NETLINK_ROUTE);
		nl_bind(gen, 0, 0);
		if (setns(home, CLONE_NEWNET))
			pfail("setns back");
		close(home);
	}

	test_daemon();
	test_waitsig();

	if (test_flag("--queued")) {
		char buf[256];
		ssize_t n = recv(s1, buf, sizeof(buf), MSG_DONTWAIT);

		if (n < (ssize_t)sizeof(struct nlmsghdr) ||
		    ((struct nlmsghdr *)buf)->nlmsg_type != USER_TYPE)
			fail("the queued message is gone (%zd)", n);
		pass();
	}
	if (gen >= 0)
		pass();

	/* Addresses, groups, options. */
	a = name_of(s1, 0);
	/* getsockname gives the first 32 groups. */
	want[0] = RTMGRP_LINK | (extra_group <= 32 ? 1u << (extra_group - 1) : 0);
	if (a.nl_pid != p1 || a.nl_groups != want[0])
		fail("s1 is %u/%#x, was %u/%#x", a.nl_pid, a.nl_groups, p1, want[0]);
	memberships(s1, groups, 4);
	want[(extra_group - 1) / 32] |= 1u << ((extra_group - 1) % 32);
	if (memcmp(groups, want, sizeof(want)))
		fail("s1 memberships %#x %#x %#x, want %#x %#x %#x", groups[0], groups[1], groups[2],
		     want[0], want[1], want[2]);
	for (unsigned i = 0; i < sizeof(s1_opts) / sizeof(s1_opts[0]); i++)
		if (get_opt(s1, SOL_NETLINK, s1_opts[i]) != 1)
			fail("s1 lost SOL_NETLINK option %d", s1_opts[i]);
	if (!old_nsid && get_opt(s1, SOL_NETLINK, NETLINK_LISTEN_ALL_NSID) != 0)
		fail("s1 has NETLINK_LISTEN_ALL_NSID");
	if (get_opt(s1, SOL_SOCKET, SO_RCVBUF) != rcvbuf)
		fail("s1 SO_RCVBUF %d, was %d", get_opt(s1, SOL_SOCKET, SO_RCVBUF), rcvbuf);
	a = name_of(s2, 0);
	if (a.nl_pid != S2_PORT)
		fail("s2 port id %#x, was %#x", a.nl_pid, S2_PORT);
	a = name_of(s2, 1);
	if (a.nl_pid != p1)
		fail("s2 is connected to %u, was %u", a.nl_pid, p1);
	if (get_opt(s2, SOL_NETLINK, NETLINK_PKTINFO) != 0)
		fail("s2 has NETLINK_PKTINFO");
	a = name_of(s3, 0);
	if (a.nl_groups != 1 || a.nl_pid == 0)
		fail("uevent socket is %u/%#x", a.nl_pid, a.nl_groups);
	if (get_opt(s3, SOL_SOCKET, SO_TYPE) != SOCK_DGRAM || get_opt(s3, SOL_SOCKET, SO_PROTOCOL) != NETLINK_KOBJECT_UEVENT)
		fail("uevent socket type/protocol");
	a = name_of(s4, 0);
	if (a.nl_pid != p4 || get_opt(s4, SOL_SOCKET, SO_PROTOCOL) != NETLINK_SOCK_DIAG)
		fail("sock_diag socket is bound to %u (was %u) or of another protocol", a.nl_pid, p4);

	/* s1 receives a link event (with its group as NETLINK_PKTINFO) and s2's message. */
	send_user(s2);
	if (system("ip link add cairnnl0 type veth peer name cairnnl1"))
		fail("ip link add (veth) failed");
	{
		int got_link = 0, got_user = 0;
		char buf[16384], cbuf[256];

		while (!got_link || !got_user) {
			struct pollfd p = { .fd = s1, .events = POLLIN };
			struct iovec iov = { buf, sizeof(buf) };
			struct msghdr m = { .msg_name = &a, .msg_namelen = sizeof(a), .msg_iov = &iov,
					    .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
			ssize_t n;

			if (poll(&p, 1, 5000) != 1)
				fail("s1: nothing received (link event %d, message %d)", got_link, got_user);
			n = recvmsg(s1, &m, 0);
			if (n < 0)
				pfail("recvmsg s1");
			for (struct nlmsghdr *h = (void *)buf; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
				if (h->nlmsg_type == USER_TYPE && a.nl_pid == S2_PORT)
					got_user = 1;
				if (h->nlmsg_type == RTM_NEWLINK && a.nl_groups == RTMGRP_LINK) {
					struct cmsghdr *c = CMSG_FIRSTHDR(&m);
					struct nl_pktinfo pi;

					if (!c || c->cmsg_level != SOL_NETLINK || c->cmsg_type != NETLINK_PKTINFO)
						fail("link event without NETLINK_PKTINFO");
					memcpy(&pi, CMSG_DATA(c), sizeof(pi));
					if (pi.group != RTNLGRP_LINK)
						fail("link event pktinfo group %u", pi.group);
					got_link = 1;
				}
			}
		}
	}
	if (system("ip link del cairnnl0"))
		fail("ip link del failed");

	/* s4 works: netlink_diag lists s1 with its port id and groups. */
	{
		struct {
			struct nlmsghdr h;
			struct netlink_diag_req r;
		} req = {
			.h = { .nlmsg_len = sizeof(req), .nlmsg_type = SOCK_DIAG_BY_FAMILY,
			       .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = 1 },
			.r = { .sdiag_family = AF_NETLINK, .sdiag_protocol = NETLINK_ROUTE,
			       .ndiag_show = NDIAG_SHOW_GROUPS },
		};
		char buf[32768];
		int found = 0, done = 0;

		if (send(s4, &req, sizeof(req), 0) != sizeof(req))
			pfail("send sock_diag request");
		while (!done) {
			ssize_t n = recv(s4, buf, sizeof(buf), 0);

			if (n <= 0)
				pfail("recv sock_diag");
			for (struct nlmsghdr *h = (void *)buf; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
				if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) {
					done = 1;
					break;
				}
				struct netlink_diag_msg *d = NLMSG_DATA(h);
				if (d->ndiag_portid == p1)
					found = 1;
			}
		}
		if (!found)
			fail("netlink_diag through the restored sock_diag socket does not list s1 (%u)", p1);
	}
	pass();
}
