/*
 * rseq: glibc registers restartable sequences for the main thread at
 * startup. After restore the registration must still be in place with the
 * same area, length and signature: registering again with exactly glibc's
 * arguments must fail with EBUSY ("already registered"). Success means the
 * thread was unregistered (a FAIL); EINVAL/EPERM mean it was registered
 * with other arguments (also a FAIL). The rseq cpu_id and sched_getcpu()
 * must name a valid cpu.
 *
 * --own: the program's own rseq area instead of glibc's. The workload
 * execs itself once with GLIBC_TUNABLES=glibc.pthread.rseq=0 (same pid),
 * so glibc registers nothing, and registers a static area of its own,
 * which a dump can only find with PTRACE_GET_RSEQ_CONFIGURATION (Linux
 * 5.13); after restore exactly that area must be registered.
 */
#include "zdtm.h"

#include <sched.h>
#include <sys/rseq.h>

static struct rseq own_area __attribute__((aligned(32)));
static int own;

static struct rseq *area(void)
{
	if (own)
		return &own_area;
	return (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
}

/* 0 if registered with glibc's arguments, else a message. */
static const char *registration(unsigned int *len_used)
{
	/* Newer glibc reports the feature size in __rseq_size but registers >= 32 bytes. */
	unsigned int lens[2] = { own ? 32 : __rseq_size, 32 };
	static char msg[256];

	for (int i = 0; i < 2; i++) {
		long r = syscall(SYS_rseq, area(), lens[i], 0, RSEQ_SIG);
		int e = errno;

		if (r == 0) {
			snprintf(msg, sizeof(msg),
				 "rseq(area %p, len %u) succeeded: the thread had no rseq registered",
				 (void *)area(), lens[i]);
			return msg;
		}
		if (e == EBUSY) {
			*len_used = lens[i];
			return NULL;
		}
		snprintf(msg, sizeof(msg), "rseq(area %p, len %u, RSEQ_SIG) failed: %s "
			 "(registered with other arguments?)", (void *)area(), lens[i], strerror(e));
		if (e != EINVAL)
			return msg;
	}
	return msg;
}

static void check_cpu(const char *when)
{
	long ncpu = sysconf(_SC_NPROCESSORS_CONF);
	int cpu = sched_getcpu();
	unsigned int sys_cpu = ~0u;

	if (cpu < 0)
		pfail("sched_getcpu %s", when);
	if (cpu >= ncpu)
		fail("sched_getcpu returned %d of %ld cpus %s", cpu, ncpu, when);
	if (syscall(SYS_getcpu, &sys_cpu, NULL, NULL))
		pfail("getcpu %s", when);
	if (sys_cpu >= (unsigned long)ncpu)
		fail("getcpu returned %u %s", sys_cpu, when);
	if (area()->cpu_id >= (unsigned long)ncpu || area()->cpu_id_start >= (unsigned long)ncpu)
		fail("rseq area cpu_id %u / cpu_id_start %u is not a cpu %s", area()->cpu_id,
		     area()->cpu_id_start, when);
}

int main(int argc, char **argv)
{
	unsigned int len_before = 0, len_after = 0;
	const char *err;

	for (int i = 1; i < argc; i++)
		own |= strcmp(argv[i], "--own") == 0;
	if (own && !getenv("CAIRN_RSEQ_OWN")) {
		setenv("GLIBC_TUNABLES", "glibc.pthread.rseq=0", 1);
		setenv("CAIRN_RSEQ_OWN", "1", 1);
		execv("/proc/self/exe", argv);
		perror("exec /proc/self/exe");
		return 1;
	}
	test_init(argc, argv);
	if (own) {
		if (__rseq_size != 0)
			fail("glibc registered rseq despite glibc.pthread.rseq=0");
		if (syscall(SYS_rseq, &own_area, 32, 0, RSEQ_SIG))
			pfail("rseq(own area)");
	} else if (__rseq_size == 0)
		fail("glibc did not register rseq (__rseq_size == 0; GLIBC_TUNABLES=glibc.pthread.rseq=0?)");
	if ((err = registration(&len_before)))
		fail("before the dump: %s", err);
	check_cpu("before the dump");

	test_daemon();
	test_waitsig();

	if ((err = registration(&len_after)))
		fail("after restore: %s", err);
	if (len_after != len_before)
		fail("rseq registered with length %u after restore, %u before", len_after, len_before);
	check_cpu("after restore");
	pass();
}
