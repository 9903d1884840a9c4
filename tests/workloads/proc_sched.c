/*
 * proc_sched: scheduling and the small per-task attributes.
 *
 * Before the dump each thread sets its own:
 *   main   SCHED_OTHER nice 7, affinity CPU 0, I/O priority BE/6,
 *          timer slack 123456 ns;
 *   fifo   SCHED_FIFO priority 10 with SCHED_FLAG_RESET_ON_FORK, nice -3
 *          (kept for an RT thread), affinity last CPU, I/O class IDLE;
 *   batch  SCHED_BATCH nice 3, affinity last CPU, I/O priority RT/4,
 *          timer slack 777000 ns;
 *   dl     SCHED_DEADLINE 2 ms / 20 ms / 20 ms (skipped, with a note, when
 *          the kernel refuses it here);
 * "batch" also sets its own parent-death signal (SIGURG; per thread);
 * and the process: oom_score_adj 321, PR_SET_THP_DISABLE, loginuid 4321
 * (when the kernel has audit), a parent-death signal.
 * After the restore each thread reads its own values back (sched_getattr,
 * sched_getaffinity, getpriority, ioprio_get, PR_GET_TIMERSLACK) and the
 * main thread the process's (oom_score_adj, PR_GET_THP_DISABLE, loginuid,
 * PR_GET_PDEATHSIG).
 */
#include "zdtm.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/resource.h>

struct sched_attr_k {
	uint32_t size, policy;
	uint64_t flags;
	int32_t nice;
	uint32_t priority;
	uint64_t runtime, deadline, period;
	uint32_t util_min, util_max;
};

#define SCHED_FLAG_RESET_ON_FORK_K 1
#define IOPRIO(cl, lv) (((cl) << 13) | (lv))

struct want {
	const char *name;
	int policy, nice, prio, flags;
	int cpu; /* -1: any */
	int ioprio;
	unsigned long slack; /* 0: not checked */
	uint64_t runtime, deadline, period;
};

static atomic_int phase, ready, checked;
static int ncpu, dl_ok = 1;
static char errbuf[4][512];

static int gettid_(void) { return syscall(SYS_gettid); }

static int sched_get(struct sched_attr_k *a)
{
	memset(a, 0, sizeof(*a));
	return syscall(SYS_sched_getattr, 0, a, sizeof(*a), 0);
}

static int setup(const struct want *w)
{
	struct sched_attr_k a;
	cpu_set_t set;

	if (setpriority(PRIO_PROCESS, gettid_(), w->nice))
		pfail("%s: setpriority %d", w->name, w->nice);
	CPU_ZERO(&set);
	for (int c = 0; c < ncpu; c++)
		if (w->cpu < 0 || c == w->cpu)
			CPU_SET(c, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		pfail("%s: sched_setaffinity", w->name);
	if (syscall(SYS_ioprio_set, 1, 0, w->ioprio))
		pfail("%s: ioprio_set %#x", w->name, w->ioprio);
	if (w->slack && prctl(PR_SET_TIMERSLACK, w->slack, 0, 0, 0))
		pfail("%s: PR_SET_TIMERSLACK", w->name);
	if (w->policy != SCHED_OTHER) {
		memset(&a, 0, sizeof(a));
		a.size = sizeof(a);
		a.policy = w->policy;
		a.flags = w->flags;
		a.nice = w->nice;
		a.priority = w->prio;
		a.runtime = w->runtime;
		a.deadline = w->deadline;
		a.period = w->period;
		if (syscall(SYS_sched_setattr, 0, &a, 0)) {
			if (w->policy == SCHED_DEADLINE)
				return -1;
			pfail("%s: sched_setattr policy %d", w->name, w->policy);
		}
	}
	return 0;
}

/* Empty string when the calling thread has what `w` asks for. */
static void check(const struct want *w, char *err, size_t len)
{
	struct sched_attr_k a;
	cpu_set_t set;
	int n;

	err[0] = 0;
	if (sched_get(&a)) {
		snprintf(err, len, "%s: sched_getattr: %s", w->name, strerror(errno));
		return;
	}
	if ((int)a.policy != w->policy || (int)a.priority != w->prio ||
	    ((w->policy == SCHED_OTHER || w->policy == SCHED_BATCH) && a.nice != w->nice) ||
	    (int)(a.flags & 1) != w->flags ||
	    (w->policy == SCHED_DEADLINE &&
	     (a.runtime != w->runtime || a.deadline != w->deadline || a.period != w->period))) {
		snprintf(err, len,
			 "%s: policy %u prio %u nice %d flags %#llx dl %llu/%llu/%llu, expected "
			 "policy %d prio %d nice %d flags %#x",
			 w->name, a.policy, a.priority, a.nice, (unsigned long long)a.flags,
			 (unsigned long long)a.runtime, (unsigned long long)a.deadline,
			 (unsigned long long)a.period, w->policy, w->prio, w->nice, w->flags);
		return;
	}
	errno = 0;
	n = getpriority(PRIO_PROCESS, gettid_());
	if (n != w->nice) {
		snprintf(err, len, "%s: getpriority %d, expected %d", w->name, n, w->nice);
		return;
	}
	if (sched_getaffinity(0, sizeof(set), &set)) {
		snprintf(err, len, "%s: sched_getaffinity: %s", w->name, strerror(errno));
		return;
	}
	if (w->cpu >= 0 ? (CPU_COUNT(&set) != 1 || !CPU_ISSET(w->cpu, &set))
			: CPU_COUNT(&set) != ncpu) {
		snprintf(err, len, "%s: affinity has %d CPUs (CPU %d: %d), expected only CPU %d",
			 w->name, CPU_COUNT(&set), w->cpu, w->cpu >= 0 && CPU_ISSET(w->cpu, &set),
			 w->cpu);
		return;
	}
	n = syscall(SYS_ioprio_get, 1, 0);
	if (n != w->ioprio) {
		snprintf(err, len, "%s: ioprio %#x, expected %#x", w->name, n, w->ioprio);
		return;
	}
	if (w->slack) {
		unsigned long s = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
		if (s != w->slack)
			snprintf(err, len, "%s: timer slack %lu, expected %lu", w->name, s,
				 w->slack);
	}
}

static struct want wants[4];

static void *thread_main(void *arg)
{
	int i = (int)(long)arg;

	if (setup(&wants[i])) {
		printf("note: SCHED_DEADLINE: %s\n", strerror(errno));
		dl_ok = 0;
		wants[i].policy = SCHED_OTHER;
		wants[i].runtime = wants[i].deadline = wants[i].period = 0;
	}
	/* The parent-death signal is per thread: only "batch" has one. */
	if (i == 2 && prctl(PR_SET_PDEATHSIG, SIGURG, 0, 0, 0))
		pfail("PR_SET_PDEATHSIG in a thread");
	atomic_fetch_add(&ready, 1);
	while (atomic_load(&phase) == 0)
		usleep(1000);
	check(&wants[i], errbuf[i], sizeof(errbuf[i]));
	int sig = -1;
	if (!errbuf[i][0] && (prctl(PR_GET_PDEATHSIG, &sig, 0, 0, 0) || sig != (i == 2 ? SIGURG : 0)))
		snprintf(errbuf[i], sizeof(errbuf[i]), "%s: parent-death signal %d, expected %d",
			 wants[i].name, sig, i == 2 ? SIGURG : 0);
	atomic_fetch_add(&checked, 1);
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t th[4];
	char buf[64];
	int have_loginuid;

	test_init(argc, argv);
	ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int last = ncpu > 1 ? 1 : 0;
	wants[0] = (struct want){ "main", SCHED_OTHER, 7, 0, 0, 0, IOPRIO(2, 6), 123456, 0, 0, 0 };
	wants[1] = (struct want){ "fifo", SCHED_FIFO, -3, 10, SCHED_FLAG_RESET_ON_FORK_K, last,
				  IOPRIO(3, 0), 0, 0, 0, 0 };
	wants[2] = (struct want){ "batch", SCHED_BATCH, 3, 0, 0, last, IOPRIO(1, 4), 777000, 0, 0, 0 };
	wants[3] = (struct want){ "dl", SCHED_DEADLINE, 0, 0, 0, -1, IOPRIO(2, 1), 0,
				  2000000, 20000000, 20000000 };
	setup(&wants[0]);
	sigset_t old;

	test_term_block(&old);
	for (long i = 1; i < 4; i++)
		if (pthread_create(&th[i], NULL, thread_main, (void *)i))
			fail("pthread_create");
	test_term_unblock(&old);
	while (atomic_load(&ready) < 3)
		usleep(1000);
	if (!dl_ok)
		printf("note: SCHED_DEADLINE refused here; the dl thread stays SCHED_OTHER\n");

	int fd = open("/proc/self/oom_score_adj", O_WRONLY);
	if (fd < 0 || write(fd, "321", 3) != 3)
		pfail("oom_score_adj");
	close(fd);
	if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0))
		pfail("PR_SET_THP_DISABLE");
	fd = open("/proc/self/loginuid", O_WRONLY);
	have_loginuid = fd >= 0;
	if (have_loginuid && write(fd, "4321", 4) != 4)
		pfail("write loginuid");
	if (fd >= 0)
		close(fd);
	if (prctl(PR_SET_PDEATHSIG, SIGUSR2, 0, 0, 0))
		pfail("PR_SET_PDEATHSIG");
	check(&wants[0], errbuf[0], sizeof(errbuf[0]));
	if (errbuf[0][0])
		fail("before the dump: %s", errbuf[0]);

	test_daemon();
	test_waitsig();

	atomic_store(&phase, 1);
	check(&wants[0], errbuf[0], sizeof(errbuf[0]));
	for (int i = 1; i < 4; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < 4; i++)
		if (errbuf[i][0])
			fail("%s", errbuf[i]);
	read_file("/proc/self/oom_score_adj", buf, sizeof(buf));
	if (atoi(buf) != 321)
		fail("oom_score_adj %s, expected 321", buf);
	int thp = prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0);
	if (thp != 1)
		fail("PR_GET_THP_DISABLE %d, expected 1", thp);
	if (have_loginuid) {
		read_file("/proc/self/loginuid", buf, sizeof(buf));
		if (strtoul(buf, NULL, 10) != 4321)
			fail("loginuid %s, expected 4321", buf);
	}
	int sig = 0;
	if (prctl(PR_GET_PDEATHSIG, &sig, 0, 0, 0) || sig != SIGUSR2)
		fail("PR_GET_PDEATHSIG %d, expected SIGUSR2", sig);
	pass();
}
