/* fd_epoll_closed: an epoll watch whose fd was closed after a dup (the
 * file lives on as another fd), or, with --reused, whose number now names
 * another file. It comes back registered as before: the watch still
 * reports the eventfd. */
#include "zdtm.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>

int main(int argc, char **argv)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 42}, out;
	uint64_t v = 1;

	test_init(argc, argv);
	int ep = epoll_create1(0), e = eventfd(0, 0);
	if (ep != 3 || e != 4)
		fail("epoll is fd %d and eventfd fd %d, not 3 and 4", ep, e);
	if (epoll_ctl(ep, EPOLL_CTL_ADD, e, &ev))
		pfail("epoll_ctl");
	int alias = dup(e);
	if (alias < 0 || close(e))
		pfail("dup/close");
	if (test_flag("--reused") && open("/dev/null", O_RDONLY) != 4)
		fail("/dev/null did not get fd 4");
	test_daemon();
	test_waitsig();
	if (write(alias, &v, 8) != 8)
		pfail("write");
	if (epoll_wait(ep, &out, 1, 1000) != 1 || out.data.u64 != 42)
		fail("the watch of the closed fd does not report the eventfd");
	pass();
}
