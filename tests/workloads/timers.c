/*
 * timers: the three setitimer(2) timers and five POSIX timers come back
 * with what they were made with, and still fire.
 *
 *   ITIMER_REAL     interval 5 s, 100 s left; SIGALRM ignored
 *   ITIMER_VIRTUAL  interval 20 ms, 50 ms left (of user CPU time); SIGVTALRM
 *   ITIMER_PROF     interval 0.5 s, 300 s left; SIGPROF ignored
 *   t0  CLOCK_MONOTONIC, SIGEV_SIGNAL SIGRTMIN+1 value 11, 3 s / 200 s
 *   t1  CLOCK_REALTIME, SIGEV_SIGNAL SIGRTMIN+2 value 22, disarmed
 *   t2  CLOCK_BOOTTIME, SIGEV_SIGNAL SIGRTMIN+3 value 33, every 20 ms
 *       (its signal blocked until the check: it fires all along, a
 *       checkpoint included, and is never re-armed)
 *   t3  CLOCK_PROCESS_CPUTIME_ID, SIGEV_NONE value 44, 9 s / 1000 s
 *   t4  CLOCK_MONOTONIC, SIGEV_THREAD_ID (this thread) SIGRTMIN+5 value 55,
 *       every 30 ms (blocked until the check, like t2)
 *
 * After restore, /proc/self/timers must list exactly these five ids, each
 * with its clock id, signal number, sigev_value and notify kind (to this
 * process, or to this thread for t4); timer_gettime / getitimer must show each interval exactly and
 * a time left that is plausible; and every timer must still fire: t2 on
 * its own (several signals with its value and id once unblocked), the
 * virtual itimer when the process burns user time, ITIMER_REAL counting
 * down, and t0 and t1, re-armed to a short time, deliver their own signal
 * and value (their sigevent survived).
 */
#include "zdtm.h"
#include <sys/time.h>
#include <time.h>

/* glibc passes CLOCK_PROCESS_CPUTIME_ID to the kernel as the calling
 * process's CPU clock, MAKE_PROCESS_CPUCLOCK(0, CPUCLOCK_SCHED). */
#define KERNEL_PROCESS_CPUCLOCK (-6)

#define NT 5
static timer_t tid[NT];

/* Per signal: deliveries, and deliveries whose siginfo was not the
 * expected timer's (value, code or timer id). */
static volatile sig_atomic_t got[NT + 1], wrong[NT + 1], vtalrm;
static volatile int wrong_value[NT + 1], wrong_code[NT + 1], wrong_timer[NT + 1];

static void on_rt(int sig, siginfo_t *si, void *uc)
{
	int i = sig - SIGRTMIN;

	(void)uc;
	if (i < 1 || i > NT)
		return;
	if (si->si_value.sival_int != 11 * i || si->si_code != SI_TIMER ||
	    si->si_timerid != (int)(intptr_t)tid[i - 1]) {
		wrong_value[i] = si->si_value.sival_int;
		wrong_code[i] = si->si_code;
		wrong_timer[i] = si->si_timerid;
		wrong[i]++;
	}
	got[i]++;
}

static void on_vtalrm(int sig)
{
	(void)sig;
	vtalrm++;
}

static void make_timer(int i, clockid_t clock, int notify, int value)
{
	struct sigevent sev;

	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = notify;
	/* t<i> signals SIGRTMIN+i+1; SIGEV_NONE has no signal (0). */
	sev.sigev_signo = notify == SIGEV_NONE ? 0 : SIGRTMIN + i + 1;
	sev.sigev_value.sival_ptr = (void *)(intptr_t)value;
	if (notify == SIGEV_THREAD_ID)
		sev._sigev_un._tid = gettid();
	if (timer_create(clock, &sev, &tid[i]))
		pfail("timer_create t%d", i);
}

static void arm(int i, long interval_ms, long value_ms)
{
	struct itimerspec its = {
		{ interval_ms / 1000, interval_ms % 1000 * 1000000 },
		{ value_ms / 1000, value_ms % 1000 * 1000000 },
	};

	if (timer_settime(tid[i], 0, &its, NULL))
		fail("timer_settime t%d (id %d): %s", i, (int)(intptr_t)tid[i], strerror(errno));
}

/* One timer of /proc/self/timers. */
struct proc_timer {
	int id, signo, clock, notify_pid;
	unsigned long long value;
	char notify[16], per[8];
};

static int read_proc_timers(struct proc_timer *out, int max)
{
	static char buf[8192];
	char *line, *save = NULL;
	int n = -1, id;

	read_file("/proc/self/timers", buf, sizeof(buf));
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (sscanf(line, "ID: %d", &id) == 1) {
			if (++n >= max)
				fail("/proc/self/timers lists more than %d timers", max);
			memset(&out[n], 0, sizeof(out[n]));
			out[n].id = id;
			continue;
		}
		if (n < 0)
			fail("/proc/self/timers: %s before any ID", line);
		if (!strncmp(line, "signal:", 7) &&
		    sscanf(line, "signal: %d/%llx", &out[n].signo, &out[n].value) != 2)
			fail("/proc/self/timers: bad line %s", line);
		if (!strncmp(line, "notify:", 7) &&
		    sscanf(line, "notify: %15[a-z]/%7[a-z].%d", out[n].notify, out[n].per,
			   &out[n].notify_pid) != 3)
			fail("/proc/self/timers: bad line %s", line);
		if (!strncmp(line, "ClockID:", 8) && sscanf(line, "ClockID: %d", &out[n].clock) != 1)
			fail("/proc/self/timers: bad line %s", line);
	}
	return n + 1;
}

static void check_proc_timer(int i, int clock, const char *notify, const char *per,
			     int target, int signo, int value)
{
	struct proc_timer pt[NT + 4];
	int n = read_proc_timers(pt, NT + 4), id = (int)(intptr_t)tid[i];

	for (int k = 0; k < n; k++) {
		if (pt[k].id != id)
			continue;
		if (pt[k].clock != clock)
			fail("t%d (id %d): clock id %d, made with %d", i, id, pt[k].clock, clock);
		if (strcmp(pt[k].notify, notify) || strcmp(pt[k].per, per) ||
		    pt[k].notify_pid != target)
			fail("t%d (id %d): notify %s/%s.%d, made with %s/%s.%d", i, id,
			     pt[k].notify, pt[k].per, pt[k].notify_pid, notify, per, target);
		if (pt[k].signo != signo || pt[k].value != (unsigned long long)value)
			fail("t%d (id %d): signal %d value %#llx, made with %d value %#x", i, id,
			     pt[k].signo, pt[k].value, signo, value);
		return;
	}
	fail("t%d (id %d) is not in /proc/self/timers", i, id);
}

static void check_posix(int i, long interval_ms, long min_left_s, long max_left_s)
{
	struct itimerspec its;
	long long left_ms;

	if (timer_gettime(tid[i], &its))
		fail("t%d (id %d) is gone: %s", i, (int)(intptr_t)tid[i], strerror(errno));
	left_ms = its.it_value.tv_sec * 1000LL + its.it_value.tv_nsec / 1000000;
	if (its.it_interval.tv_sec * 1000LL + its.it_interval.tv_nsec / 1000000 != interval_ms ||
	    its.it_interval.tv_nsec % 1000000)
		fail("t%d: interval %ld.%09ld s, made with %ld ms", i, (long)its.it_interval.tv_sec,
		     its.it_interval.tv_nsec, interval_ms);
	if (left_ms > max_left_s * 1000 || left_ms < min_left_s * 1000 ||
	    (max_left_s && !its.it_value.tv_sec && !its.it_value.tv_nsec))
		fail("t%d: %lld ms left, expected %ld..%ld s", i, left_ms, min_left_s, max_left_s);
}

static long long itimer_ms(const struct timeval *tv)
{
	return tv->tv_sec * 1000LL + tv->tv_usec / 1000;
}

static void check_itimer(int which, const char *name, long interval_us, long min_left_ms,
			 long max_left_ms, struct itimerval *cur)
{
	if (getitimer(which, cur))
		pfail("getitimer %s", name);
	if (cur->it_interval.tv_sec * 1000000L + cur->it_interval.tv_usec != interval_us)
		fail("%s: interval %ld.%06ld s, made with %ld us", name,
		     (long)cur->it_interval.tv_sec, (long)cur->it_interval.tv_usec, interval_us);
	if (itimer_ms(&cur->it_value) < min_left_ms || itimer_ms(&cur->it_value) > max_left_ms ||
	    (cur->it_value.tv_sec == 0 && cur->it_value.tv_usec == 0))
		fail("%s: %lld ms left, expected %ld..%ld ms (and armed)", name,
		     itimer_ms(&cur->it_value), min_left_ms, max_left_ms);
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* Sleep `ms` of CLOCK_MONOTONIC, however many signals interrupt it. */
static void sleep_ms(long ms)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	t.tv_sec += ms / 1000;
	t.tv_nsec += ms % 1000 * 1000000;
	if (t.tv_nsec >= 1000000000) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000;
	}
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR)
		;
}

/* Wait (up to 5 s) until signal SIGRTMIN+i arrived at least n times. */
static void wait_fired(int i, int n, const char *what)
{
	double deadline = now_s() + 5;

	while (got[i] < n && now_s() < deadline)
		sleep_ms(5);
	if (got[i] < n)
		fail("%s: %d of %d SIGRTMIN+%d arrived in 5 s", what, (int)got[i], n, i);
	if (wrong[i])
		fail("%s: %d SIGRTMIN+%d not from its timer (value %d, si_code %d, timer %d; "
		     "expected %d, SI_TIMER, %d)",
		     what, (int)wrong[i], i, wrong_value[i], wrong_code[i], wrong_timer[i], 11 * i,
		     (int)(intptr_t)tid[i - 1]);
}

int main(int argc, char **argv)
{
	struct itimerval cur, cur2;
	struct sigaction sa;
	sigset_t rt3;

	test_init(argc, argv);
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_rt;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	for (int i = 1; i <= NT; i++)
		if (sigaction(SIGRTMIN + i, &sa, NULL))
			pfail("sigaction SIGRTMIN+%d", i);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_vtalrm;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGVTALRM, &sa, NULL))
		pfail("sigaction SIGVTALRM");
	signal(SIGALRM, SIG_IGN);
	signal(SIGPROF, SIG_IGN);
	/* t2's signal stays pending (at most one from the timer) until the
	 * check, so the checkpoint never meets a signal being delivered. */
	sigemptyset(&rt3);
	sigaddset(&rt3, SIGRTMIN + 3);
	sigaddset(&rt3, SIGRTMIN + 5);
	if (sigprocmask(SIG_BLOCK, &rt3, NULL))
		pfail("sigprocmask");

	cur = (struct itimerval){ { 5, 0 }, { 100, 0 } };
	if (setitimer(ITIMER_REAL, &cur, NULL))
		pfail("setitimer real");
	cur = (struct itimerval){ { 0, 20000 }, { 0, 50000 } };
	if (setitimer(ITIMER_VIRTUAL, &cur, NULL))
		pfail("setitimer virtual");
	cur = (struct itimerval){ { 0, 500000 }, { 300, 0 } };
	if (setitimer(ITIMER_PROF, &cur, NULL))
		pfail("setitimer prof");
	make_timer(0, CLOCK_MONOTONIC, SIGEV_SIGNAL, 11);
	make_timer(1, CLOCK_REALTIME, SIGEV_SIGNAL, 22);
	make_timer(2, CLOCK_BOOTTIME, SIGEV_SIGNAL, 33);
	make_timer(3, CLOCK_PROCESS_CPUTIME_ID, SIGEV_NONE, 44);
	/* To this thread (SIGEV_THREAD_ID): "signal/tid.N" in /proc. */
	make_timer(4, CLOCK_MONOTONIC, SIGEV_THREAD_ID, 55);
	arm(0, 3000, 200000);
	arm(2, 20, 20);
	arm(3, 9000, 1000000);
	arm(4, 30, 30);
	test_daemon();
	test_waitsig();

	/* What each timer is. */
	{
		struct proc_timer pt[NT + 4];
		int n = read_proc_timers(pt, NT + 4);

		if (n != NT)
			fail("/proc/self/timers lists %d timers, expected %d", n, NT);
	}
	check_proc_timer(0, CLOCK_MONOTONIC, "signal", "pid", getpid(), SIGRTMIN + 1, 11);
	check_proc_timer(1, CLOCK_REALTIME, "signal", "pid", getpid(), SIGRTMIN + 2, 22);
	check_proc_timer(2, CLOCK_BOOTTIME, "signal", "pid", getpid(), SIGRTMIN + 3, 33);
	check_proc_timer(3, KERNEL_PROCESS_CPUCLOCK, "none", "pid", getpid(), 0, 44);
	check_proc_timer(4, CLOCK_MONOTONIC, "signal", "tid", gettid(), SIGRTMIN + 5, 55);
	/* Intervals exactly, time left plausibly (never more than made with). */
	check_posix(0, 3000, 150, 200);
	check_posix(1, 0, 0, 0);
	check_posix(2, 20, 0, 1);
	check_posix(3, 9000, 990, 1000);
	check_posix(4, 30, 0, 1);
	check_itimer(ITIMER_REAL, "ITIMER_REAL", 5000000, 50000, 100000, &cur);
	/* The kernel adds a tick (at most 10 ms) to a CPU itimer's value. */
	check_itimer(ITIMER_VIRTUAL, "ITIMER_VIRTUAL", 20000, 0, 50 + 10, &cur2);
	check_itimer(ITIMER_PROF, "ITIMER_PROF", 500000, 250000, 300000 + 10, &cur2);

	/* t2 fires on its own: the signal pending since before the checkpoint
	 * (if any) and then the restored timer's, every 20 ms. */
	if (sigprocmask(SIG_UNBLOCK, &rt3, NULL))
		pfail("sigprocmask");
	wait_fired(3, 6, "t2 (never re-armed)");
	wait_fired(5, 3, "t4 (to this thread, never re-armed)");

	/* ITIMER_REAL counts down. */
	sleep_ms(200);
	if (getitimer(ITIMER_REAL, &cur2))
		pfail("getitimer real");
	if (itimer_ms(&cur.it_value) - itimer_ms(&cur2.it_value) < 150)
		fail("ITIMER_REAL does not run: %lld ms left, %lld ms left 200 ms later",
		     itimer_ms(&cur.it_value), itimer_ms(&cur2.it_value));

	/* ITIMER_VIRTUAL fires (every 20 ms of user time) as we burn some. */
	{
		int before = vtalrm;
		double deadline = now_s() + 20;
		volatile unsigned long spin = 0;

		do {
			for (int k = 0; k < 1000000; k++)
				spin++;
		} while (vtalrm - before < 3 && now_s() < deadline);
		if (vtalrm - before < 3)
			fail("ITIMER_VIRTUAL: %d SIGVTALRM in 20 s of spinning", vtalrm - before);
	}

	/* t0 and t1, armed to fire soon, deliver their own signal and value. */
	arm(0, 0, 30);
	wait_fired(1, 1, "t0 re-armed");
	arm(1, 0, 50);
	wait_fired(2, 1, "t1 re-armed");
	pass();
}
