/* fd_timerfd: an armed periodic timerfd keeps its interval and the time
 * left; a one-shot timerfd that expired before the dump still has its
 * unread expiration. */
#include "zdtm.h"
#include <sys/timerfd.h>

int main(int argc, char **argv)
{
	struct itimerspec its = {{2, 0}, {100, 0}}, cur;
	uint64_t n;

	test_init(argc, argv);
	int p = timerfd_create(CLOCK_MONOTONIC, 0);
	int o = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	if (p < 0 || o < 0)
		pfail("timerfd_create");
	if (timerfd_settime(p, 0, &its, NULL))
		pfail("settime");
	struct itimerspec one = {{0, 0}, {0, 1000000}};
	if (timerfd_settime(o, 0, &one, NULL))
		pfail("settime one-shot");
	usleep(20000);
	test_daemon();
	test_waitsig();
	if (timerfd_gettime(p, &cur))
		pfail("gettime");
	if (cur.it_interval.tv_sec != 2 || cur.it_interval.tv_nsec != 0)
		fail("interval is %ld.%09ld", (long)cur.it_interval.tv_sec, cur.it_interval.tv_nsec);
	if (cur.it_value.tv_sec > 100 || cur.it_value.tv_sec < 50 || (cur.it_value.tv_sec == 0 && cur.it_value.tv_nsec == 0))
		fail("time left is %ld s, expected a little under 100", (long)cur.it_value.tv_sec);
	if (read(o, &n, 8) != 8 || n != 1)
		fail("one-shot timerfd: expirations %llu (errno %d), expected 1", (unsigned long long)n, errno);
	if (read(o, &n, 8) != -1 || errno != EAGAIN)
		fail("one-shot timerfd fired again or is blocking");
	pass();
}
