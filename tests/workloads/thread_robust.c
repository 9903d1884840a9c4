/*
 * thread_robust: robust mutexes held by a thread across checkpoint/restore.
 *
 * Thread R locks two robust mutexes (PTHREAD_MUTEX_ROBUST) and waits on a
 * condition variable. Before the dump the main thread checks that both are
 * held (trylock: EBUSY, owner tid in the futex word) and records R's robust
 * list head (get_robust_list). After the go: R's tid, its robust list head
 * and the futex words are unchanged; R exits without unlocking; the kernel
 * must walk R's robust list on exit, so the main thread's timed lock of
 * each mutex returns EOWNERDEAD (ETIMEDOUT means the robust list was lost
 * or R's tid changed). Then pthread_mutex_consistent + unlock + lock work.
 */
#include "zdtm.h"

#include <linux/futex.h>
#include <pthread.h>
#include <time.h>

static pthread_mutex_t rm[2];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int ready, go;
static pid_t r_tid;
static void *r_head_before, *main_head_before;

struct robust_list_head_min {
	void *list_next;
	long futex_offset;
	void *list_op_pending;
};

static void *robust_head(pid_t tid, const char *who)
{
	void *head = NULL;
	size_t len = 0;

	if (syscall(SYS_get_robust_list, tid, &head, &len))
		pfail("get_robust_list(%s, tid %d)", who, tid);
	if (!head)
		fail("%s (tid %d) has no robust list registered", who, tid);
	if (len != sizeof(struct robust_list_head_min))
		fail("%s (tid %d): robust list length %zu, expected %zu", who, tid, len,
		     sizeof(struct robust_list_head_min));
	return head;
}

static unsigned int futex_word(pthread_mutex_t *m)
{
	return __atomic_load_n((unsigned int *)&m->__data.__lock, __ATOMIC_SEQ_CST);
}

static void *holder(void *arg)
{
	pid_t tid = gettid();
	int e;

	(void)arg;
	for (int i = 0; i < 2; i++)
		if ((e = pthread_mutex_lock(&rm[i]))) {
			errno = e;
			pfail("R: lock robust mutex %d", i);
		}
	pthread_mutex_lock(&mu);
	r_tid = tid;
	ready = 1;
	pthread_cond_broadcast(&cv);
	while (!go)
		pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
	if (gettid() != tid)
		fail("R: gettid() = %d, was %d", gettid(), tid);
	if (robust_head(0, "R itself") != r_head_before)
		fail("R: robust list head %p, was %p", robust_head(0, "R"), r_head_before);
	/* Exit still holding both robust mutexes. */
	return NULL;
}

static void check_held(const char *when)
{
	for (int i = 0; i < 2; i++) {
		int e = pthread_mutex_trylock(&rm[i]);
		unsigned int w = futex_word(&rm[i]);

		if (e != EBUSY)
			fail("%s: trylock of robust mutex %d returned %d (%s), expected EBUSY", when, i,
			     e, strerror(e));
		if ((w & FUTEX_TID_MASK) != (unsigned int)r_tid || (w & FUTEX_OWNER_DIED))
			fail("%s: robust mutex %d futex word %#x, expected owner tid %d", when, i, w,
			     r_tid);
	}
}

int main(int argc, char **argv)
{
	pthread_mutexattr_t a;
	pthread_t th;
	struct timespec dl;
	sigset_t term, old;
	int e;

	test_init(argc, argv);
	pthread_mutexattr_init(&a);
	if (pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST))
		fail("pthread_mutexattr_setrobust");
	for (int i = 0; i < 2; i++)
		if (pthread_mutex_init(&rm[i], &a))
			fail("pthread_mutex_init");
	pthread_mutexattr_destroy(&a);
	main_head_before = robust_head(0, "main");

	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &term, &old);
	if ((e = pthread_create(&th, NULL, holder, NULL))) {
		errno = e;
		pfail("pthread_create");
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_mutex_lock(&mu);
	while (!ready)
		pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
	check_held("before the dump");
	r_head_before = robust_head(r_tid, "R");

	test_daemon();
	test_waitsig();

	if (robust_head(0, "main") != main_head_before)
		fail("main: robust list head %p, was %p", robust_head(0, "main"), main_head_before);
	if (robust_head(r_tid, "R") != r_head_before)
		fail("R (tid %d): robust list head %p, was %p", r_tid, robust_head(r_tid, "R"),
		     r_head_before);
	check_held("after the go");

	pthread_mutex_lock(&mu);
	go = 1;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 20;
	if ((e = pthread_timedjoin_np(th, NULL, &dl)))
		fail("joining R (tid %d): %s", r_tid, strerror(e));

	for (int i = 0; i < 2; i++) {
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_sec += 5;
		e = pthread_mutex_timedlock(&rm[i], &dl);
		if (e == ETIMEDOUT)
			fail("robust mutex %d: still locked 5 s after its owner R exited (futex word "
			     "%#x): R's robust list was not walked on exit (lost in the restore?)", i,
			     futex_word(&rm[i]));
		if (e != EOWNERDEAD)
			fail("robust mutex %d: lock returned %d (%s) after its owner exited, expected "
			     "EOWNERDEAD", i, e, strerror(e));
		if ((e = pthread_mutex_consistent(&rm[i])))
			fail("pthread_mutex_consistent: %s", strerror(e));
		if ((e = pthread_mutex_unlock(&rm[i])))
			fail("unlock after consistent: %s", strerror(e));
		if ((e = pthread_mutex_lock(&rm[i])))
			fail("relock robust mutex %d: %s", i, strerror(e));
		if ((e = pthread_mutex_unlock(&rm[i])))
			fail("unlock robust mutex %d: %s", i, strerror(e));
	}
	pass();
}
