/*
 * fd_epoll_oneshot: an EPOLLONESHOT watch that has fired and is disarmed.
 * A watch added again is always armed, so the dump refuses it. After
 * SIGTERM (the original, never restored) the watch is still disarmed: the
 * eventfd is readable but epoll reports nothing.
 */
#include "zdtm.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>

int main(int argc, char **argv)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT, .data.u64 = 7 };
	uint64_t one = 1;
	int ep, efd;

	test_init(argc, argv);
	ep = epoll_create1(0);
	efd = eventfd(0, 0);
	if (ep < 0 || efd < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev))
		pfail("setup");
	if (write(efd, &one, sizeof(one)) != sizeof(one))
		pfail("write eventfd");
	if (epoll_wait(ep, &ev, 1, 1000) != 1 || ev.data.u64 != 7)
		fail("the oneshot watch did not fire");

	test_daemon();
	test_waitsig();

	if (epoll_wait(ep, &ev, 1, 0) != 0)
		fail("the fired oneshot watch is armed again");
	pass();
}
