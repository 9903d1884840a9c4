/*
 * thread_mix: one process, the main thread and four others, each in a
 * different kind of sleep or busy state at dump time:
 *
 *   spin   in an inline-asm loop in user space, with distinctive values in
 *          rbx, r12-r15, ymm0-15 (xmm0-15 without AVX) and MXCSR
 *   cond   blocked in pthread_cond_wait (futex)
 *   sleep  in a nanosleep loop (50 ms naps)
 *   read   blocked in read(2) on a pipe
 *   main   in sigsuspend (test_waitsig)
 *
 * Every thread has its own name (pthread_setname_np), signal mask, TLS
 * value (__thread) and two thread-directed pending signals, both blocked:
 * a realtime one sent with pthread_sigqueue (it carries a value) and a
 * standard one sent with pthread_kill. SIGTERM is blocked in all
 * but the main thread. After SIGTERM the main thread wakes the others
 * (flag, cond_signal, flag, a byte into the pipe). Each thread checks:
 * gettid() equals the tid recorded before the dump, getpid(), its TLS value
 * and thread pointer, its signal mask (pthread_sigmask and SigBlk in
 * /proc/self/task/TID/status), its pending signals (SigPnd line, then
 * rt_sigtimedwait returns each: SI_QUEUE with its value, SI_TKILL), its name
 * (/proc/self/task/TID/comm) and its rseq registration (rseq(2) with the
 * thread's own glibc area must fail with EBUSY). The spinning thread also
 * checks its registers. The main thread checks that /proc/self/task lists
 * exactly the recorded tids and joins every thread with a timeout (a hang
 * there means clear_child_tid / the futex wake on thread exit was lost).
 */
#include "zdtm.h"
#include "vecregs.h"

#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/rseq.h>
#include <time.h>

enum { T_SPIN, T_COND, T_SLEEP, T_READ, T_MAIN, NT };

static const char *const names[NT] = { "tm-spin", "tm-cond", "tm-sleep", "tm-read", "tm-main" };
/* A second, distinct signal blocked in each thread's mask, sent with pthread_kill. */
static const int extra_sig[NT] = { SIGUSR1, SIGUSR2, SIGWINCH, SIGURG, SIGPWR };

struct tinfo {
	pthread_t th;
	int idx;
	pid_t tid;
	void *tp;
	int psig;		/* its pending, thread-directed signal */
	sigset_t mask;
	char sigblk[64];
	char sigpnd[64];
	unsigned int rseq_len;
	volatile int ready;
};

static struct tinfo ti[NT];
static __thread uint64_t tls_val;
static __thread struct tinfo *tls_self;
static pid_t main_pid;

static uint64_t tls_expect(int idx)
{
	return 0xC0FFEE0000000000ull | ((uint64_t)idx << 16) | 0x5a5a;
}

/* ---- per-thread helpers ---- */

static void task_status_line(pid_t tid, const char *key, char *out, size_t size)
{
	char path[64], buf[8192], *p;
	size_t klen = strlen(key);

	snprintf(path, sizeof(path), "/proc/self/task/%d/status", tid);
	read_file(path, buf, sizeof(buf));
	for (p = buf; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		if (strncmp(p, key, klen) == 0) {
			size_t n = strcspn(p, "\n");

			if (n >= size)
				n = size - 1;
			memcpy(out, p, n);
			out[n] = 0;
			return;
		}
	}
	fail("no %s line in %s", key, path);
}

static struct rseq *rseq_area(void)
{
	return (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
}

/* Length rseq is registered with (glibc's area, RSEQ_SIG), or fail. */
static unsigned int rseq_registered(const char *who, const char *when)
{
	unsigned int lens[2] = { __rseq_size, 32 };

	if (__rseq_size == 0)
		fail("%s: glibc did not register rseq (__rseq_size == 0)", who);
	for (int i = 0; i < 2; i++) {
		long r = syscall(SYS_rseq, rseq_area(), lens[i], 0, RSEQ_SIG);
		int e = errno;

		if (r == 0)
			fail("%s %s: rseq(area %p, len %u) succeeded: the thread had no rseq "
			     "registered", who, when, (void *)rseq_area(), lens[i]);
		if (e == EBUSY)
			return lens[i];
		if (e != EINVAL || i == 1)
			fail("%s %s: rseq(area %p, len %u, RSEQ_SIG) failed: %s (registered with "
			     "other arguments?)", who, when, (void *)rseq_area(), lens[i], strerror(e));
	}
	return 0;
}

static void build_mask(int idx, sigset_t *m)
{
	sigemptyset(m);
	if (idx != T_MAIN)
		sigaddset(m, SIGTERM);
	sigaddset(m, SIGRTMIN + 1 + idx);	/* the pending one */
	sigaddset(m, SIGRTMIN + 10 + idx);
	sigaddset(m, extra_sig[idx]);
}

/* In the thread itself, before readiness. */
static void thread_setup(struct tinfo *t)
{
	int e;

	tls_self = t;
	t->tid = gettid();
	t->tp = __builtin_thread_pointer();
	tls_val = tls_expect(t->idx);
	t->psig = SIGRTMIN + 1 + t->idx;
	if ((e = pthread_setname_np(pthread_self(), names[t->idx]))) {
		errno = e;
		pfail("%s: pthread_setname_np", names[t->idx]);
	}
	build_mask(t->idx, &t->mask);
	if ((e = pthread_sigmask(SIG_SETMASK, &t->mask, NULL))) {
		errno = e;
		pfail("%s: pthread_sigmask", names[t->idx]);
	}
	task_status_line(t->tid, "SigBlk:", t->sigblk, sizeof(t->sigblk));
	t->rseq_len = rseq_registered(names[t->idx], "before the dump");
}

/* In the thread itself, after the go. */
static void thread_verify(struct tinfo *t)
{
	const char *who = names[t->idx];
	char line[64], path[64], comm[64];
	struct timespec zero = { 0, 0 };
	sigset_t cur, s;
	siginfo_t si;
	int r;

	if (gettid() != t->tid || syscall(SYS_gettid) != t->tid)
		fail("%s: gettid() = %d, was %d before the dump", who, gettid(), t->tid);
	if (getpid() != main_pid)
		fail("%s (tid %d): getpid() = %d, was %d", who, t->tid, getpid(), main_pid);
	if (tls_self != t || tls_val != tls_expect(t->idx))
		fail("%s (tid %d): TLS value %#llx (self %p), expected %#llx (%p)", who, t->tid,
		     (unsigned long long)tls_val, (void *)tls_self,
		     (unsigned long long)tls_expect(t->idx), (void *)t);
	if (__builtin_thread_pointer() != t->tp)
		fail("%s (tid %d): thread pointer %p, was %p", who, t->tid,
		     __builtin_thread_pointer(), t->tp);

	if ((r = pthread_sigmask(SIG_SETMASK, NULL, &cur))) {
		errno = r;
		pfail("%s: pthread_sigmask", who);
	}
	for (int sig = 1; sig <= SIGRTMAX; sig++) {
		if (sig == 32 || sig == 33 || sig == SIGKILL || sig == SIGSTOP)
			continue;
		if (sigismember(&cur, sig) != sigismember(&t->mask, sig))
			fail("%s (tid %d): signal %d is %sblocked, expected %sblocked", who, t->tid, sig,
			     sigismember(&cur, sig) ? "" : "not ",
			     sigismember(&t->mask, sig) ? "" : "not ");
	}
	task_status_line(t->tid, "SigBlk:", line, sizeof(line));
	if (strcmp(line, t->sigblk))
		fail("%s (tid %d): %s, was %s before the dump", who, t->tid, line, t->sigblk);
	task_status_line(t->tid, "SigPnd:", line, sizeof(line));
	if (strcmp(line, t->sigpnd))
		fail("%s (tid %d): %s, was %s before the dump (thread-private pending signals)", who,
		     t->tid, line, t->sigpnd);

	sigemptyset(&s);
	sigaddset(&s, t->psig);
	memset(&si, 0, sizeof(si));
	r = syscall(SYS_rt_sigtimedwait, &s, &si, &zero, 8);
	if (r < 0)
		pfail("%s (tid %d): rt_sigtimedwait(SIGRTMIN+%d): not pending", who, t->tid,
		      t->psig - SIGRTMIN);
	if (r != t->psig || si.si_code != SI_QUEUE || si.si_value.sival_int != 1000 + t->idx ||
	    si.si_pid != main_pid)
		fail("%s (tid %d): pending signal %d code %d value %d pid %d, expected %d SI_QUEUE "
		     "%d %d", who, t->tid, r, si.si_code, si.si_value.sival_int, si.si_pid, t->psig,
		     1000 + t->idx, main_pid);
	sigemptyset(&s);
	sigaddset(&s, extra_sig[t->idx]);
	memset(&si, 0, sizeof(si));
	/* Raw syscall: glibc's sigtimedwait() folds SI_TKILL into SI_USER. */
	r = syscall(SYS_rt_sigtimedwait, &s, &si, &zero, 8);
	if (r < 0)
		pfail("%s (tid %d): rt_sigtimedwait(%d): not pending", who, t->tid,
		      extra_sig[t->idx]);
	if (r != extra_sig[t->idx] || si.si_code != SI_TKILL || si.si_pid != main_pid)
		fail("%s (tid %d): pending signal %d code %d pid %d, expected %d SI_TKILL %d", who,
		     t->tid, r, si.si_code, si.si_pid, extra_sig[t->idx], main_pid);
	if (sigpending(&cur))
		pfail("sigpending");
	if (sigismember(&cur, t->psig) || sigismember(&cur, extra_sig[t->idx]))
		fail("%s (tid %d): signal %d or %d still pending after it was taken (queued twice?)",
		     who, t->tid, t->psig, extra_sig[t->idx]);

	snprintf(path, sizeof(path), "/proc/self/task/%d/comm", t->tid);
	read_file(path, comm, sizeof(comm));
	comm[strcspn(comm, "\n")] = 0;
	if (strcmp(comm, names[t->idx]))
		fail("%s (tid %d): %s is \"%s\"", who, t->tid, path, comm);
	if (rseq_registered(who, "after restore") != t->rseq_len)
		fail("%s (tid %d): rseq length changed", who, t->tid);
}

/* ---- the spinning thread ---- */

static uint8_t ymm_in[16 * 32] __attribute__((aligned(64)));
static uint8_t ymm_out[16 * 32] __attribute__((aligned(64)));
static uint32_t mxcsr_in = 0x1F80 | 0x4000; /* all masked, RC = round up */
static uint32_t mxcsr_out, mxcsr_default = 0x1F80;
static uint64_t gpr_out[5];
static const uint64_t gpr_in[5] = {
	0xa1a2a3a4a5a6a7a8ull, /* rbx */
	0x1357924680acebdfull, /* r12 */
	0x7fffffffffffffffull, /* r13 */
	0x0f0f0f0ff0f0f0f0ull, /* r14 */
	0x0000000100000002ull, /* r15 */
};
static const char *const gpr_names[5] = { "rbx", "r12", "r13", "r14", "r15" };
static volatile int spin_ready, stop_spin;
static int use_avx;

#define SPIN_LOAD_REST                                      \
	"ldmxcsr %[mxin]\n\t"                               \
	"movabs $0xa1a2a3a4a5a6a7a8, %%rbx\n\t"             \
	"movabs $0x1357924680acebdf, %%r12\n\t"             \
	"movabs $0x7fffffffffffffff, %%r13\n\t"             \
	"movabs $0x0f0f0f0ff0f0f0f0, %%r14\n\t"             \
	"movabs $0x0000000100000002, %%r15\n\t"             \
	"movl $1, %[ready]\n\t"                             \
	"1:\n\t"                                            \
	"pause\n\t"                                         \
	"cmpl $0, %[stop]\n\t"                              \
	"je 1b\n\t"

#define SPIN_STORE_REST                                     \
	"stmxcsr %[mxout]\n\t"                              \
	"mov %%rbx, 0+%[gout]\n\t"                          \
	"mov %%r12, 8+%[gout]\n\t"                          \
	"mov %%r13, 16+%[gout]\n\t"                         \
	"mov %%r14, 24+%[gout]\n\t"                         \
	"mov %%r15, 32+%[gout]\n\t"                         \
	"ldmxcsr %[mxdef]\n\t"

#define SPIN_OPERANDS                                                                    \
	: [yout] "=m"(ymm_out), [mxout] "=m"(mxcsr_out), [gout] "=m"(gpr_out),           \
	  [ready] "=m"(spin_ready)                                                       \
	: [yin] "m"(ymm_in), [mxin] "m"(mxcsr_in), [mxdef] "m"(mxcsr_default),           \
	  [stop] "m"(stop_spin)                                                          \
	: "rax", "rbx", "r12", "r13", "r14", "r15", "xmm0", "xmm1", "xmm2", "xmm3",      \
	  "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",     \
	  "xmm13", "xmm14", "xmm15", "memory", "cc"

static void spin_avx(void)
{
	asm volatile(
		"lea %[yin], %%rax\n\t"
		ASM_LOAD_YMM0_15
		SPIN_LOAD_REST
		"lea %[yout], %%rax\n\t"
		ASM_STORE_YMM0_15
		SPIN_STORE_REST
		"vzeroupper\n\t"
		SPIN_OPERANDS);
}

static void spin_sse(void)
{
	asm volatile(
		"lea %[yin], %%rax\n\t"
		ASM_LOAD_XMM0_15
		SPIN_LOAD_REST
		"lea %[yout], %%rax\n\t"
		ASM_STORE_XMM0_15
		SPIN_STORE_REST
		SPIN_OPERANDS);
}

static void *spin_thread(void *arg)
{
	struct tinfo *t = arg;
	int width;

	thread_setup(t);
	if (use_avx)
		spin_avx();
	else
		spin_sse();
	thread_verify(t);
	width = use_avx ? 32 : 16;
	for (int r = 0; r < 16; r++)
		for (int b = 0; b < width; b++)
			if (ymm_out[r * 32 + b] != ymm_in[r * 32 + b])
				fail("tm-spin: %s%d byte %d: 0x%02x, expected 0x%02x",
				     use_avx ? "ymm" : "xmm", r, b, ymm_out[r * 32 + b],
				     ymm_in[r * 32 + b]);
	if (mxcsr_out != mxcsr_in)
		fail("tm-spin: MXCSR %#x, expected %#x", mxcsr_out, mxcsr_in);
	for (int i = 0; i < 5; i++)
		if (gpr_out[i] != gpr_in[i])
			fail("tm-spin: %s = %#llx, expected %#llx", gpr_names[i],
			     (unsigned long long)gpr_out[i], (unsigned long long)gpr_in[i]);
	return NULL;
}

/* ---- the other threads ---- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int go_cond, cond_wakeups;
static volatile int stop_sleep;
static int wake_pipe[2];

static void *cond_thread(void *arg)
{
	struct tinfo *t = arg;

	thread_setup(t);
	pthread_mutex_lock(&mu);
	t->ready = 1;
	while (!go_cond) {
		pthread_cond_wait(&cv, &mu);
		cond_wakeups++;
	}
	pthread_mutex_unlock(&mu);
	thread_verify(t);
	return NULL;
}

static void *sleep_thread(void *arg)
{
	struct tinfo *t = arg;
	long naps = 0;

	thread_setup(t);
	t->ready = 1;
	while (!stop_sleep) {
		struct timespec ts = { 0, 50 * 1000 * 1000 };

		if (nanosleep(&ts, NULL) && errno != EINTR)
			pfail("tm-sleep: nanosleep");
		naps++;
	}
	thread_verify(t);
	return NULL;
}

static void *read_thread(void *arg)
{
	struct tinfo *t = arg;
	struct pollfd p = { .fd = wake_pipe[0], .events = POLLIN };
	ssize_t r;
	char c = 0;

	thread_setup(t);
	t->ready = 1;
	do
		r = read(wake_pipe[0], &c, 1);
	while (r < 0 && errno == EINTR);
	if (r != 1 || c != 'g')
		fail("tm-read: read returned %zd (byte 0x%02x), expected the byte 'g'", r,
		     (uint8_t)c);
	if (poll(&p, 1, 0) != 0)
		fail("tm-read: the pipe holds more than the one byte written");
	thread_verify(t);
	return NULL;
}

/* ---- main ---- */

static int cmp_pid(const void *a, const void *b)
{
	return *(const pid_t *)a - *(const pid_t *)b;
}

static void check_task_list(void)
{
	pid_t want[NT], have[NT + 8];
	int n = 0;
	struct dirent *de;
	DIR *d = opendir("/proc/self/task");

	if (!d)
		pfail("opendir /proc/self/task");
	while ((de = readdir(d)))
		if (de->d_name[0] != '.' && n < NT + 8)
			have[n++] = atoi(de->d_name);
	closedir(d);
	for (int i = 0; i < NT; i++)
		want[i] = ti[i].tid;
	qsort(want, NT, sizeof(pid_t), cmp_pid);
	qsort(have, n, sizeof(pid_t), cmp_pid);
	if (n != NT || memcmp(want, have, sizeof(want))) {
		char a[256] = "", b[256] = "";

		for (int i = 0; i < NT; i++)
			snprintf(a + strlen(a), sizeof(a) - strlen(a), " %d", want[i]);
		for (int i = 0; i < n; i++)
			snprintf(b + strlen(b), sizeof(b) - strlen(b), " %d", have[i]);
		fail("/proc/self/task lists%s, expected%s", b, a);
	}
}

static void wait_ready(volatile int *flag, const char *who)
{
	for (int i = 0; !*flag; i++) {
		if (i > 10000)
			fail("%s did not get ready within 10 s", who);
		usleep(1000);
	}
}

int main(int argc, char **argv)
{
	void *(*fn[4])(void *) = { spin_thread, cond_thread, sleep_thread, read_thread };
	struct timespec dl;
	sigset_t term, old;
	char shd_before[64], line[64];
	int e;

	test_init(argc, argv);
	main_pid = getpid();
	for (int r = 0; r < 16; r++)
		for (int b = 0; b < 32; b++)
			ymm_in[r * 32 + b] = (uint8_t)(r * 29 + b * 3 + 0x47) ^ (b >= 16 ? 0x3c : 0);
	__builtin_cpu_init();
	use_avx = __builtin_cpu_supports("avx");
	if (!use_avx)
		test_msg("the CPU (or OS) lacks AVX: checking xmm0-15 only");
	if (pipe(wake_pipe))
		pfail("pipe");
	for (int i = 0; i < NT; i++)
		ti[i].idx = i;

	/* Threads start with SIGTERM blocked; each then sets its own mask. */
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &term, &old);
	for (int i = 0; i < 4; i++)
		if ((e = pthread_create(&ti[i].th, NULL, fn[i], &ti[i]))) {
			errno = e;
			pfail("pthread_create %s", names[i]);
		}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	ti[T_MAIN].th = pthread_self();
	thread_setup(&ti[T_MAIN]);

	wait_ready(&spin_ready, "tm-spin");
	wait_ready(&ti[T_SLEEP].ready, "tm-sleep");
	wait_ready(&ti[T_READ].ready, "tm-read");
	for (int i = 0; !ti[T_COND].ready; i++) {
		/* Seen under the mutex: the thread is inside pthread_cond_wait. */
		pthread_mutex_lock(&mu);
		e = ti[T_COND].ready;
		pthread_mutex_unlock(&mu);
		if (e)
			break;
		if (i > 10000)
			fail("tm-cond did not get ready within 10 s");
		usleep(1000);
	}
	pthread_mutex_lock(&mu);
	pthread_mutex_unlock(&mu);

	/* Two thread-directed signals per thread (both blocked there). */
	for (int i = 0; i < NT; i++) {
		union sigval v = { .sival_int = 1000 + i };

		if ((e = pthread_sigqueue(ti[i].th, ti[i].psig, v))) {
			errno = e;
			pfail("pthread_sigqueue(%s)", names[i]);
		}
		if ((e = pthread_kill(ti[i].th, extra_sig[i]))) {
			errno = e;
			pfail("pthread_kill(%s)", names[i]);
		}
	}
	for (int i = 0; i < NT; i++) {
		unsigned long long pnd, want;

		want = 1ull << (ti[i].psig - 1) | 1ull << (extra_sig[i] - 1);
		task_status_line(ti[i].tid, "SigPnd:", ti[i].sigpnd, sizeof(ti[i].sigpnd));
		if (sscanf(ti[i].sigpnd, "SigPnd: %llx", &pnd) != 1 || pnd != want)
			fail("%s: %s, expected exactly signals %d and %d pending (%016llx)", names[i],
			     ti[i].sigpnd, ti[i].psig, extra_sig[i], want);
	}
	task_status_line(main_pid, "ShdPnd:", shd_before, sizeof(shd_before));
	/* Usually the sleeper has napped by now; not required. */
	usleep(60000);

	test_daemon();
	test_waitsig();

	check_task_list();
	task_status_line(main_pid, "ShdPnd:", line, sizeof(line));
	if (strcmp(line, shd_before))
		fail("process-wide pending signals: %s, was %s", line, shd_before);
	thread_verify(&ti[T_MAIN]);

	stop_spin = 1;
	pthread_mutex_lock(&mu);
	go_cond = 1;
	pthread_cond_signal(&cv);
	pthread_mutex_unlock(&mu);
	stop_sleep = 1;
	if (write(wake_pipe[1], "g", 1) != 1)
		pfail("write to the wake-up pipe");

	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 20;
	for (int i = 0; i < 4; i++) {
		char path[64];

		e = pthread_timedjoin_np(ti[i].th, NULL, &dl);
		if (e == ETIMEDOUT) {
			snprintf(path, sizeof(path), "/proc/self/task/%d", ti[i].tid);
			if (access(path, F_OK))
				fail("pthread_join(%s, tid %d) hangs although the thread has exited: "
				     "clear_child_tid / the futex wake on exit was lost", names[i],
				     ti[i].tid);
			fail("%s (tid %d) did not finish within 20 s after the go", names[i],
			     ti[i].tid);
		}
		if (e) {
			errno = e;
			pfail("pthread_join(%s)", names[i]);
		}
	}
	pass();
}
