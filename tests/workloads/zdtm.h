/*
 * zdtm.h - the tiny test library every cairn workload uses (after CRIU's zdtm).
 *
 * Protocol:
 *   test_init(argc, argv)  parse --pidfile PATH, install the SIGTERM handler.
 *   ... set up the state under test ...
 *   test_daemon()          report readiness: write getpid() to PATH (atomically).
 *   test_waitsig()         wait for SIGTERM (race-free sigsuspend loop).
 *   ... verify the state ...
 *   pass() / fail(...)     print "PASS" / "FAIL: msg" and exit 0 / 1.
 *
 * The harness redirects stdout and stderr to one regular log file (one shared
 * open file description) and stdin from /dev/null; workloads talk to the
 * harness only through the pidfile, the log and their exit status.
 *
 * Everything here is static: each workload is a single translation unit.
 */
#ifndef ZDTM_H
#define ZDTM_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <unistd.h>

#define ZDTM_UNUSED __attribute__((unused))

/* Set by the SIGTERM handler. Workloads may read it (also from inline asm). */
static volatile sig_atomic_t test_sigterm_received ZDTM_UNUSED;

/*
 * Knobs a workload may set BEFORE test_init():
 *   test_sigterm_flags: sa_flags of the SIGTERM handler (default SA_RESTART).
 *   test_sigterm_hook:  called from the SIGTERM handler after the flag is set
 *                       (must be async-signal-safe).
 */
static int test_sigterm_flags ZDTM_UNUSED = SA_RESTART;
static void (*test_sigterm_hook)(void) ZDTM_UNUSED;

static const char *zdtm_pidfile ZDTM_UNUSED;
static int zdtm_argc ZDTM_UNUSED;
static char **zdtm_argv ZDTM_UNUSED;

static inline void zdtm_vreport(const char *prefix, int with_errno, int err,
				const char *fmt, va_list ap)
{
	char msg[1024];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	fflush(stderr);
	if (with_errno)
		printf("%s%s: %s (errno %d)\n", prefix, msg, strerror(err), err);
	else
		printf("%s%s\n", prefix, msg);
	fflush(stdout);
}

/* Print "FAIL: <msg>" and exit(1). */
static inline void __attribute__((noreturn, format(printf, 1, 2)))
fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	zdtm_vreport("FAIL: ", 0, 0, fmt, ap);
	va_end(ap);
	exit(1);
}

/* Print "FAIL: <msg>: <strerror(errno)>" and exit(1). */
static inline void __attribute__((noreturn, format(printf, 1, 2)))
pfail(const char *fmt, ...)
{
	int err = errno;
	va_list ap;

	va_start(ap, fmt);
	zdtm_vreport("FAIL: ", 1, err, fmt, ap);
	va_end(ap);
	exit(1);
}

/* An informational line in the log (stderr, same file as stdout). */
static inline void __attribute__((format(printf, 1, 2)))
test_msg(const char *fmt, ...)
{
	va_list ap;
	char msg[1024];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fflush(stdout);
	fprintf(stderr, "note: %s\n", msg);
	fflush(stderr);
}

static inline void __attribute__((noreturn)) pass(void)
{
	fflush(stderr);
	printf("PASS\n");
	fflush(stdout);
	exit(0);
}

static void zdtm_sigterm_handler(int sig)
{
	int saved_errno = errno;

	(void)sig;
	test_sigterm_received = 1;
	if (test_sigterm_hook)
		test_sigterm_hook();
	errno = saved_errno;
}

/* Value of "--NAME VALUE" (name given with the dashes), or NULL. */
static inline const char *test_arg(const char *name)
{
	for (int i = 1; i + 1 < zdtm_argc; i++)
		if (strcmp(zdtm_argv[i], name) == 0)
			return zdtm_argv[i + 1];
	return NULL;
}

/* Whether the flag "--NAME" (no value) was given. */
static inline int test_flag(const char *name)
{
	for (int i = 1; i < zdtm_argc; i++)
		if (strcmp(zdtm_argv[i], name) == 0)
			return 1;
	return 0;
}

static inline void test_init(int argc, char **argv)
{
	struct sigaction sa;

	zdtm_argc = argc;
	zdtm_argv = argv;
	zdtm_pidfile = test_arg("--pidfile");
	if (!zdtm_pidfile)
		fail("usage: %s --pidfile PATH [workload options]", argv[0]);
	/*
	 * The harness gives every run a fresh pidfile path, written once when
	 * the original gets ready. If it exists now, this program was started
	 * again (a "restore" that re-executed it) instead of being restored.
	 */
	if (access(zdtm_pidfile, F_OK) == 0)
		fail("%s already exists: this workload was started a second time, not restored",
		     zdtm_pidfile);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = zdtm_sigterm_handler;
	sa.sa_flags = test_sigterm_flags;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGTERM, &sa, NULL))
		pfail("sigaction(SIGTERM)");
}

/*
 * Readiness: write getpid() to PATH.tmp, then rename it to PATH. Uses raw
 * calls only (no stdio, no malloc), so it does not disturb the heap or brk.
 */
static inline void test_daemon(void)
{
	char tmp[4096], buf[32];
	int fd, len;

	fflush(stdout);
	fflush(stderr);
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", zdtm_pidfile) >= (int)sizeof(tmp))
		fail("pidfile path too long");
	len = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		pfail("open %s", tmp);
	if (write(fd, buf, len) != len)
		pfail("write %s", tmp);
	if (close(fd))
		pfail("close %s", tmp);
	if (rename(tmp, zdtm_pidfile))
		pfail("rename %s -> %s", tmp, zdtm_pidfile);
}

/*
 * Threads that should not take the harness's SIGTERM: call
 * test_term_block(&old) before pthread_create() and test_term_unblock(&old)
 * after, so the new threads start with SIGTERM blocked and only the thread
 * in test_waitsig() takes it. Otherwise the kernel may hand the process's
 * SIGTERM to another thread (it prefers the main thread only while that
 * thread "wants" signals; just after a restore releases it, with
 * TIF_SIGPENDING still set, it does not until it has run), and the main
 * thread would sleep on in sigsuspend() with the flag already set.
 */
static inline void test_term_block(sigset_t *old)
{
	sigset_t term;

	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	if ((errno = pthread_sigmask(SIG_BLOCK, &term, old)))
		pfail("pthread_sigmask");
}

static inline void test_term_unblock(const sigset_t *old)
{
	if ((errno = pthread_sigmask(SIG_SETMASK, old, NULL)))
		pfail("pthread_sigmask");
}

/*
 * Wait for SIGTERM. SIGTERM is blocked outside sigsuspend(), so a signal
 * arriving between the flag check and the sleep is not lost. The caller's
 * signal mask is restored before returning.
 */
static inline void test_waitsig(void)
{
	sigset_t term, old, wait;

	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	if (sigprocmask(SIG_BLOCK, &term, &old))
		pfail("sigprocmask");
	wait = old;
	sigdelset(&wait, SIGTERM);
	while (!test_sigterm_received)
		sigsuspend(&wait);
	if (sigprocmask(SIG_SETMASK, &old, NULL))
		pfail("sigprocmask");
}

/* ---- small helpers shared by several workloads ---- */

/* A signal disposition as the kernel keeps it (raw rt_sigaction: handler,
 * flags with SA_RESTORER, restorer, mask). */
struct ksigaction {
	unsigned long handler;
	unsigned long flags;
	unsigned long restorer;
	uint64_t mask;
};

static inline void ksig_get(int sig, struct ksigaction *ks)
{
	memset(ks, 0, sizeof(*ks));
	if (syscall(SYS_rt_sigaction, sig, NULL, ks, 8))
		pfail("rt_sigaction(%d) query", sig);
}

/* Every disposition 1..64 but SIGKILL's and SIGSTOP's, into all[1..64]. */
static inline void ksig_get_all(struct ksigaction all[65])
{
	for (int sig = 1; sig <= 64; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			ksig_get(sig, &all[sig]);
}

/* Fails naming the first disposition that differs from `before`. */
static inline void ksig_expect_same(const struct ksigaction before[65])
{
	struct ksigaction now;

	for (int sig = 1; sig <= 64; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		ksig_get(sig, &now);
		if (memcmp(&before[sig], &now, sizeof(now)))
			fail("signal %d (%s): disposition changed: handler %#lx flags %#lx restorer "
			     "%#lx mask %#llx -> handler %#lx flags %#lx restorer %#lx mask %#llx",
			     sig, strsignal(sig), before[sig].handler, before[sig].flags,
			     before[sig].restorer, (unsigned long long)before[sig].mask,
			     now.handler, now.flags, now.restorer, (unsigned long long)now.mask);
	}
}

/* Read a whole (small, e.g. /proc) file into buf; NUL-terminates. Returns length. */
static inline size_t read_file(const char *path, char *buf, size_t size)
{
	size_t off = 0;
	ssize_t r;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		pfail("open %s", path);
	while (off + 1 < size) {
		r = read(fd, buf + off, size - 1 - off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			pfail("read %s", path);
		}
		if (r == 0)
			break;
		off += r;
	}
	if (off + 1 >= size)
		fail("%s is larger than %zu bytes", path, size);
	buf[off] = 0;
	close(fd);
	return off;
}

/* Copy the line of /proc/self/status starting with key (e.g. "SigBlk:") into out. */
static inline void proc_status_line(const char *key, char *out, size_t size)
{
	static char buf[16384];
	size_t klen = strlen(key);
	char *p = buf;

	read_file("/proc/self/status", buf, sizeof(buf));
	while (*p) {
		char *e = strchr(p, '\n');
		size_t n = e ? (size_t)(e - p) : strlen(p);

		if (strncmp(p, key, klen) == 0) {
			if (n >= size)
				n = size - 1;
			memcpy(out, p, n);
			out[n] = 0;
			return;
		}
		if (!e)
			break;
		p = e + 1;
	}
	fail("no %s line in /proc/self/status", key);
}

/*
 * Copy into out the /proc/self/maps lines (each '\n'-terminated) of the
 * mappings that overlap [lo, hi). Returns the number of lines.
 */
static inline int maps_lines(unsigned long lo, unsigned long hi, char *out, size_t size)
{
	static char buf[1 << 20];
	char *p = buf;
	size_t used = 0;
	int count = 0;

	read_file("/proc/self/maps", buf, sizeof(buf));
	out[0] = 0;
	while (*p) {
		char *e = strchr(p, '\n');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		unsigned long start, end;

		if (sscanf(p, "%lx-%lx", &start, &end) != 2)
			fail("unparsable /proc/self/maps line: %.*s", (int)n, p);
		if (start < hi && end > lo) {
			if (used + n + 2 > size)
				fail("maps_lines: output buffer too small");
			memcpy(out + used, p, n);
			used += n;
			out[used++] = '\n';
			out[used] = 0;
			count++;
		}
		if (!e)
			break;
		p = e + 1;
	}
	return count;
}

/* Find the mapping whose maps line ends with name (e.g. "[vdso]"). Returns 0 if absent. */
static inline int maps_find_named(const char *name, unsigned long *start, unsigned long *end)
{
	static char buf[1 << 20];
	char *p = buf;
	size_t nlen = strlen(name);

	read_file("/proc/self/maps", buf, sizeof(buf));
	while (*p) {
		char *e = strchr(p, '\n');
		size_t n = e ? (size_t)(e - p) : strlen(p);

		if (n >= nlen && memcmp(p + n - nlen, name, nlen) == 0 &&
		    (n == nlen || p[n - nlen - 1] == ' ')) {
			if (sscanf(p, "%lx-%lx", start, end) != 2)
				fail("unparsable /proc/self/maps line: %.*s", (int)n, p);
			return 1;
		}
		if (!e)
			break;
		p = e + 1;
	}
	return 0;
}

/* Field n (1-based, as in proc(5)) of /proc/self/stat, as an unsigned number. */
static inline unsigned long long proc_stat_field(int n)
{
	char buf[4096];
	char *p;
	int field = 3;

	read_file("/proc/self/stat", buf, sizeof(buf));
	p = strrchr(buf, ')');
	if (!p || n < 3)
		fail("bad /proc/self/stat or field %d", n);
	p += 2; /* ") " : p is at field 3 (state) */
	while (field < n) {
		p = strchr(p, ' ');
		if (!p)
			fail("/proc/self/stat has no field %d", n);
		p++;
		field++;
	}
	return strtoull(p, NULL, 10);
}

/* Deterministic byte pattern: seed selects the pattern, i the position. */
static inline uint8_t zdtm_pattern(uint32_t seed, uint64_t i)
{
	uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ ((uint64_t)seed * 0xC2B2AE3D27D4EB4Full);

	x ^= x >> 29;
	x *= 0xBF58476D1CE4E5B9ull;
	x ^= x >> 32;
	return (uint8_t)x;
}

static inline void fill_pattern(void *p, size_t len, uint32_t seed, uint64_t base)
{
	uint8_t *b = p;

	for (size_t i = 0; i < len; i++)
		b[i] = zdtm_pattern(seed, base + i);
}

/* Index of the first byte that differs from the pattern, or -1. */
static inline long check_pattern(const void *p, size_t len, uint32_t seed, uint64_t base)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < len; i++)
		if (b[i] != zdtm_pattern(seed, base + i))
			return (long)i;
	return -1;
}

/* The smaps name of VM_LOCKONFAULT: "lf" since Linux 6.2, "??" (no name)
 * before. */
static inline const char *smaps_lockonfault_name(void)
{
	struct utsname u;
	int maj = 0, min = 0;

	if (uname(&u) || sscanf(u.release, "%d.%d", &maj, &min) != 2)
		pfail("uname");
	return maj > 6 || (maj == 6 && min >= 2) ? "lf" : "??";
}

#endif /* ZDTM_H */
