/*
 * tree_big: 100 processes with 8 threads each.
 *
 * The root forks 99 children; every process (root included) then runs 7
 * extra threads that record gettid() and block in pthread_cond_wait. A
 * child reports readiness once its 7 threads are waiting; the root reports
 * readiness once all 99 children are. After the go (SIGTERM, forwarded by
 * the root to every child) each process checks its pid and ppid and that
 * /proc/self/task lists exactly its 8 recorded tids, wakes its threads,
 * which check gettid()/getpid() against the recorded values, and joins
 * them (with a timeout). Children report through their exit status.
 */
#include "tree.h"

#include <dirent.h>
#include <pthread.h>
#include <sys/wait.h>
#include <time.h>

#define NCHILD 99
#define NTHR 7

struct th {
	pthread_t t;
	pid_t tid;
	int bad;
	char err[200];
};

static struct th th[NTHR];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER, ready_cv = PTHREAD_COND_INITIALIZER;
static int nready, go;
static pid_t my_pid, my_ppid;
static char who[32];

static void *worker(void *arg)
{
	struct th *t = arg;

	pthread_mutex_lock(&mu);
	t->tid = gettid();
	nready++;
	pthread_cond_broadcast(&ready_cv);
	while (!go)
		pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
	if (gettid() != t->tid) {
		t->bad = 1;
		snprintf(t->err, sizeof(t->err), "gettid() = %d, was %d", gettid(), t->tid);
	} else if (getpid() != my_pid) {
		t->bad = 1;
		snprintf(t->err, sizeof(t->err), "thread %d: getpid() = %d, was %d", t->tid,
			 getpid(), my_pid);
	}
	return NULL;
}

static void start_threads(void)
{
	pthread_attr_t a;
	sigset_t term, old;
	int e;

	/* Only the main thread takes SIGTERM. */
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &term, &old);
	pthread_attr_init(&a);
	pthread_attr_setstacksize(&a, 64 << 10);
	for (int i = 0; i < NTHR; i++)
		if ((e = pthread_create(&th[i].t, &a, worker, &th[i]))) {
			errno = e;
			pfail("%s: pthread_create", who);
		}
	pthread_attr_destroy(&a);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_mutex_lock(&mu);
	while (nready < NTHR)
		pthread_cond_wait(&ready_cv, &mu);
	pthread_mutex_unlock(&mu);
}

static int cmp_pid(const void *a, const void *b)
{
	return *(const pid_t *)a - *(const pid_t *)b;
}

static void check_tasks(void)
{
	pid_t want[NTHR + 1], have[NTHR + 8];
	int n = 0;
	struct dirent *de;
	DIR *d = opendir("/proc/self/task");

	if (!d)
		pfail("%s: opendir /proc/self/task", who);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.') {
			if (n == NTHR + 8)
				fail("%s: more than %d tasks", who, NTHR + 8);
			have[n++] = atoi(de->d_name);
		}
	closedir(d);
	want[0] = my_pid;
	for (int i = 0; i < NTHR; i++)
		want[i + 1] = th[i].tid;
	qsort(want, NTHR + 1, sizeof(pid_t), cmp_pid);
	qsort(have, n, sizeof(pid_t), cmp_pid);
	if (n != NTHR + 1 || memcmp(want, have, sizeof(want))) {
		char a[256] = "", b[256] = "";

		for (int i = 0; i < NTHR + 1; i++)
			snprintf(a + strlen(a), sizeof(a) - strlen(a), " %d", want[i]);
		for (int i = 0; i < n; i++)
			snprintf(b + strlen(b), sizeof(b) - strlen(b), " %d", have[i]);
		fail("%s: /proc/self/task lists%s, expected%s", who, b, a);
	}
}

/* After the go: check ids and tasks, wake and join the threads. */
static void finish(int check_ppid)
{
	struct timespec dl;

	if (getpid() != my_pid)
		fail("%s: getpid() = %d, was %d", who, getpid(), my_pid);
	if (check_ppid && getppid() != my_ppid)
		fail("%s: getppid() = %d, was %d", who, getppid(), my_ppid);
	if (gettid() != my_pid)
		fail("%s: main thread gettid() = %d, expected %d", who, gettid(), my_pid);
	check_tasks();
	pthread_mutex_lock(&mu);
	go = 1;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 20;
	for (int i = 0; i < NTHR; i++) {
		int e = pthread_timedjoin_np(th[i].t, NULL, &dl);

		if (e)
			fail("%s: joining thread %d: %s", who, th[i].tid, strerror(e));
		if (th[i].bad)
			fail("%s: %s", who, th[i].err);
	}
}

int main(int argc, char **argv)
{
	pid_t kids[NCHILD];
	int rp[2];

	test_init(argc, argv);
	my_pid = getpid();
	snprintf(who, sizeof(who), "root");
	if (pipe(rp))
		pfail("pipe");
	/* Fork first, start the root's threads later: a child must not inherit a held mutex. */
	for (int i = 0; i < NCHILD; i++) {
		kids[i] = xfork();
		if (kids[i] == 0) {
			my_ppid = getppid();
			my_pid = getpid();
			snprintf(who, sizeof(who), "child %d (pid %d)", i, my_pid);
			close(rp[0]);
			start_threads();
			ready_send(rp[1], who);
			close(rp[1]);
			test_waitsig();
			finish(1);
			exit(0);
		}
	}
	close(rp[1]);
	ready_collect(rp[0], NCHILD);
	close(rp[0]);
	start_threads();

	test_daemon();
	test_waitsig();

	for (int i = 0; i < NCHILD; i++)
		if (kill(kids[i], SIGTERM))
			pfail("kill(child %d, SIGTERM)", kids[i]);
	finish(0);
	for (int i = 0; i < NCHILD; i++) {
		char w[32];

		snprintf(w, sizeof(w), "child %d", i);
		expect_exit(kids[i], w, 0);
	}
	expect_no_children();
	pass();
}
