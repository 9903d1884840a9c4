/* fd_epoll: an epoll instance keeps its watch list (fds, events, data). */
#include "zdtm.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>

int main(int argc, char **argv)
{
	struct epoll_event ev, out[4];
	int p[2];
	uint64_t v = 1;

	test_init(argc, argv);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	int e = eventfd(0, 0);
	if (ep < 0 || e < 0 || pipe(p))
		pfail("setup");
	ev.events = EPOLLIN;
	ev.data.u64 = 0xdeadbeefcafeULL;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, e, &ev))
		pfail("epoll_ctl eventfd");
	ev.events = EPOLLIN | EPOLLET;
	ev.data.u64 = 7;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev))
		pfail("epoll_ctl pipe");
	test_daemon();
	test_waitsig();
	if (epoll_wait(ep, out, 4, 0) != 0)
		fail("events ready before anything was written");
	if (write(e, &v, 8) != 8)
		pfail("write eventfd");
	int n = epoll_wait(ep, out, 4, 1000);
	if (n != 1 || out[0].data.u64 != 0xdeadbeefcafeULL || !(out[0].events & EPOLLIN))
		fail("eventfd event: n=%d data=%#llx", n, n > 0 ? (unsigned long long)out[0].data.u64 : 0ULL);
	if (read(e, &v, 8) != 8 || write(p[1], "x", 1) != 1)
		pfail("io");
	n = epoll_wait(ep, out, 4, 1000);
	if (n != 1 || out[0].data.u64 != 7)
		fail("pipe event: n=%d data=%llu", n, n > 0 ? (unsigned long long)out[0].data.u64 : 0ULL);
	/* Edge-triggered: no second report without new data. */
	if (epoll_wait(ep, out, 4, 0) != 0)
		fail("EPOLLET lost: the pipe was reported twice");
	pass();
}
