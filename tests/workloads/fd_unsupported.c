/* fd_unsupported: holds a netlink socket, which cairn refuses to dump; the
 * refused dump must leave the process exactly as it was. */
#include "zdtm.h"
#include <linux/netlink.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
	test_init(argc, argv);
	int s = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	if (s < 0)
		pfail("socket");
	test_daemon();
	test_waitsig();
	if (fcntl(s, F_GETFD) < 0)
		fail("netlink socket lost");
	pass();
}
