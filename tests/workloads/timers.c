/* timers: setitimer(ITIMER_REAL / ITIMER_PROF) and two POSIX timers keep
 * their ids, clocks, signals, values, intervals and time left; a short
 * POSIX timer fires after restore with its sigev_value. */
#include "zdtm.h"
#include <sys/time.h>
#include <time.h>

static volatile sig_atomic_t fired;
static volatile int fired_value;

static void on_rt(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	fired_value = si->si_value.sival_int;
	fired = 1;
}

int main(int argc, char **argv)
{
	struct itimerval it = {{5, 0}, {100, 0}}, cur;
	struct sigaction sa = {0};
	timer_t t0, t1;
	struct sigevent sev = {0};
	struct itimerspec its;

	test_init(argc, argv);
	sa.sa_sigaction = on_rt;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigaction(SIGRTMIN + 2, &sa, NULL);
	signal(SIGALRM, SIG_IGN);
	signal(SIGPROF, SIG_IGN);
	if (setitimer(ITIMER_REAL, &it, NULL))
		pfail("setitimer real");
	struct itimerval prof = {{0, 500000}, {300, 0}};
	if (setitimer(ITIMER_PROF, &prof, NULL))
		pfail("setitimer prof");
	sev.sigev_notify = SIGEV_SIGNAL;
	sev.sigev_signo = SIGRTMIN + 1;
	sev.sigev_value.sival_int = 11;
	if (timer_create(CLOCK_MONOTONIC, &sev, &t0))
		pfail("timer_create 0");
	sev.sigev_signo = SIGRTMIN + 2;
	sev.sigev_value.sival_int = 22;
	if (timer_create(CLOCK_REALTIME, &sev, &t1))
		pfail("timer_create 1");
	its = (struct itimerspec){{3, 0}, {200, 0}};
	if (timer_settime(t0, 0, &its, NULL))
		pfail("settime 0");
	signal(SIGRTMIN + 1, SIG_IGN);
	test_daemon();
	test_waitsig();
	/* Armed after restore: t1 fires in 50 ms. */
	if (getitimer(ITIMER_REAL, &cur))
		pfail("getitimer");
	if (cur.it_interval.tv_sec != 5 || cur.it_value.tv_sec > 100 || cur.it_value.tv_sec < 50)
		fail("ITIMER_REAL: interval %ld, left %ld", (long)cur.it_interval.tv_sec, (long)cur.it_value.tv_sec);
	if (getitimer(ITIMER_PROF, &cur))
		pfail("getitimer prof");
	if (cur.it_interval.tv_usec != 500000 || cur.it_value.tv_sec > 300 || cur.it_value.tv_sec < 250)
		fail("ITIMER_PROF: interval %ld us, left %ld s", (long)cur.it_interval.tv_usec, (long)cur.it_value.tv_sec);
	if (timer_gettime(t0, &its))
		fail("POSIX timer 0 (id %ld) is gone", (long)(intptr_t)t0);
	if (its.it_interval.tv_sec != 3 || its.it_value.tv_sec > 200 || its.it_value.tv_sec < 150)
		fail("POSIX timer 0: interval %ld, left %ld", (long)its.it_interval.tv_sec, (long)its.it_value.tv_sec);
	its = (struct itimerspec){{0, 0}, {0, 50000000}};
	if (timer_settime(t1, 0, &its, NULL))
		fail("POSIX timer 1 (id %ld) is gone", (long)(intptr_t)t1);
	for (int i = 0; i < 200 && !fired; i++)
		usleep(10000);
	if (!fired || fired_value != 22)
		fail("POSIX timer 1 did not deliver SIGRTMIN+2 with value 22 (fired %d value %d)", fired, fired_value);
	pass();
}
