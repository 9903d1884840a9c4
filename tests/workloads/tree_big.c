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
#include "zdtm.h"

#include <dirent.h>
#include <pthread.h>
#include <sys/wait.h>
#include <time.h>

/* ---- tree helpers (the same in every tree_* workload) ---- */

static inline pid_t xfork(void)
{
	pid_t p;

	fflush(NULL);
	p = fork();
	if (p < 0)
		pfail("fork");
	return p;
}

static inline void ready_send(int fd, const char *who)
{
	char c = 'r';

	if (write(fd, &c, 1) != 1)
		pfail("%s: write to the ready pipe", who);
}

/* Read n readiness bytes; EOF first means a process died before it was ready. */
static inline void ready_collect(int fd, int n)
{
	for (int got = 0; got < n;) {
		char c;
		ssize_t r = read(fd, &c, 1);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			pfail("read the ready pipe");
		if (r == 0)
			fail("only %d of %d processes got ready (one died before; see above)", got, n);
		got++;
	}
}

/* waitpid(pid) with a timeout; returns the wait status. */
static inline int wait_child(pid_t pid, const char *who, int timeout_s)
{
	int st;

	for (long ms = 0;; ms++) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid)
			return st;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			pfail("waitpid(%s, pid %d) (not my child any more?)", who, pid);
		if (ms >= timeout_s * 1000L)
			fail("%s (pid %d) did not exit within %d s", who, pid, timeout_s);
		usleep(1000);
	}
}

static inline void expect_exit(pid_t pid, const char *who, int code)
{
	int st = wait_child(pid, who, 20);

	if (WIFEXITED(st) && WEXITSTATUS(st) == code)
		return;
	if (WIFEXITED(st))
		fail("%s (pid %d) exited with %d, expected %d", who, pid, WEXITSTATUS(st), code);
	if (WIFSIGNALED(st))
		fail("%s (pid %d) was killed by signal %d", who, pid, WTERMSIG(st));
	fail("%s (pid %d): unexpected wait status %#x", who, pid, st);
}

/* No children left (a restore must not leave helpers as our children). */
static inline void expect_no_children(void)
{
	int st;
	pid_t r = waitpid(-1, &st, WNOHANG);

	if (r < 0 && errno == ECHILD)
		return;
	if (r > 0)
		fail("reaped an unexpected child, pid %d (status %#x)", r, st);
	if (r == 0)
		fail("there are unexpected live children left");
	pfail("waitpid(-1)");
}

/* State letter of another process (and its ppid), from /proc/PID/stat. */
static inline char proc_state(pid_t pid, pid_t *ppid)
{
	char path[64], buf[4096], *p;
	char st = 0;
	int pp = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	read_file(path, buf, sizeof(buf));
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%c %d", &st, &pp) != 2)
		fail("cannot parse %s: %s", path, buf);
	if (ppid)
		*ppid = pp;
	return st;
}

/* ---- */

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
