/*
 * fd_unsupported: holds an fd that cairn refuses to dump, chosen with
 * --kind: netlink (a NETLINK_GENERIC socket, the default), packet (an
 * AF_PACKET socket in a PACKET_FANOUT_CBPF group with a fanout program), io_uring, kvm (/dev/kvm), tun (/dev/net/tun), block
 * (/dev/loop0). The refused dump must leave the process exactly as it was:
 * after SIGTERM the fd is still open on the same object, and a byte left in
 * a pipe is still there (nothing was read or changed).
 */
#include "zdtm.h"
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/netlink.h>
#include <linux/if_packet.h>
#include <linux/filter.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
	const char *kind;
	struct stat before, after;
	int s = -1, p[2];
	char c;

	test_init(argc, argv);
	kind = test_arg("--kind");
	if (!kind)
		kind = "netlink";
	if (!strcmp(kind, "netlink")) {
		s = socket(AF_NETLINK, SOCK_RAW, NETLINK_GENERIC);
	} else if (!strcmp(kind, "packet")) {
		int fanout = 78 | PACKET_FANOUT_CBPF << 16;
		struct sock_filter code[] = { { 0x06, 0, 0, 0 } }; /* ret 0 */
		struct sock_fprog prog = { 1, code };

		s = socket(AF_PACKET, SOCK_RAW, htons(0x88b6));
		if (s >= 0 && setsockopt(s, SOL_PACKET, PACKET_FANOUT, &fanout, sizeof(fanout)))
			pfail("PACKET_FANOUT");
		if (s >= 0 && setsockopt(s, SOL_PACKET, PACKET_FANOUT_DATA, &prog, sizeof(prog)))
			pfail("PACKET_FANOUT_DATA");
	} else if (!strcmp(kind, "io_uring")) {
		char params[120] = { 0 };
		s = syscall(__NR_io_uring_setup, 4, params);
	} else if (!strcmp(kind, "kvm")) {
		s = open("/dev/kvm", O_RDWR);
	} else if (!strcmp(kind, "tun")) {
		s = open("/dev/net/tun", O_RDWR);
	} else if (!strcmp(kind, "block")) {
		s = open("/dev/loop0", O_RDONLY);
	} else {
		fail("unknown --kind %s", kind);
	}
	if (s < 0)
		pfail("open a %s fd", kind);
	if (fstat(s, &before) || pipe(p) || write(p[1], "x", 1) != 1)
		pfail("setup");
	test_daemon();
	test_waitsig();
	if (fstat(s, &after))
		fail("%s fd lost", kind);
	if (after.st_ino != before.st_ino || after.st_dev != before.st_dev)
		fail("%s fd refers to another object now", kind);
	if (fcntl(p[0], F_SETFL, O_NONBLOCK) || read(p[0], &c, 1) != 1 || c != 'x')
		fail("the byte in the pipe is gone");
	pass();
}
