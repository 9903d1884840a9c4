/*
 * sleep_nanosleep: sleeps in nanosleep(100 s) in a loop until SIGTERM.
 * nanosleep may return -1/EINTR (the handler ran, or a restore interrupted
 * the sleep), but it must never return 0 before the full 100 s elapsed on
 * CLOCK_MONOTONIC, and never fail with another errno.
 */
#include "zdtm.h"

#include <time.h>

#define SLEEP_S 100

static double now(void)
{
	struct timespec t;

	if (clock_gettime(CLOCK_MONOTONIC, &t))
		pfail("clock_gettime");
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	double start, t0, t1, early = 0;
	int eintr = 0, full = 0;

	test_init(argc, argv);
	start = now();
	test_daemon();

	while (!test_sigterm_received) {
		struct timespec req = { SLEEP_S, 0 }, rem;
		int r;

		t0 = now();
		r = nanosleep(&req, &rem);
		t1 = now();
		if (r == -1) {
			if (errno != EINTR)
				pfail("nanosleep");
			if (rem.tv_sec > SLEEP_S || rem.tv_nsec >= 1000000000)
				fail("nanosleep left an impossible remainder %ld.%09ld",
				     (long)rem.tv_sec, rem.tv_nsec);
			eintr++;
		} else if (r == 0) {
			if (t1 - t0 < SLEEP_S - 0.001 && !early)
				early = t1 - t0;
			full++;
		} else {
			fail("nanosleep returned %d", r);
		}
	}
	if (early)
		fail("nanosleep(%d s) returned 0 after only %.3f s", SLEEP_S, early);
	if (now() < start)
		fail("CLOCK_MONOTONIC went backwards");
	test_msg("nanosleep: %d interrupted, %d full sleeps", eintr, full);
	pass();
}
