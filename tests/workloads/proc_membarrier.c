/*
 * proc_membarrier: membarrier(2) registrations of the mm. The workload
 * registers PRIVATE_EXPEDITED, its SYNC_CORE (and, where the kernel
 * supports them, RSEQ) variant and GLOBAL_EXPEDITED, and notes
 * MEMBARRIER_CMD_GET_REGISTRATIONS (Linux 6.3+). After the restore,
 * MEMBARRIER_CMD_PRIVATE_EXPEDITED (EPERM when not registered) and its
 * SYNC_CORE and RSEQ variants succeed, and GET_REGISTRATIONS (where the
 * kernel has it) says the same as before. A thread that runs the
 * expedited barrier shows the registration is the mm's, not one task's.
 * Before 6.3 the dump reads the registrations with BPF; GLOBAL_EXPEDITED
 * is then checked by cairn's oracle (mm->membarrier_state) only.
 */
#include "zdtm.h"

#include <linux/membarrier.h>
#include <pthread.h>
#include <sys/syscall.h>

#ifndef MEMBARRIER_CMD_GET_REGISTRATIONS
#define MEMBARRIER_CMD_GET_REGISTRATIONS (1 << 9)
#endif

static long mb(int cmd)
{
	return syscall(__NR_membarrier, cmd, 0, 0);
}

static void *thread_barrier(void *arg)
{
	(void)arg;
	if (mb(MEMBARRIER_CMD_PRIVATE_EXPEDITED))
		return (void *)(long)errno;
	return NULL;
}

int main(int argc, char **argv)
{
	test_init(argc, argv);
	long supported = mb(MEMBARRIER_CMD_QUERY);
	if (supported < 0)
		pfail("MEMBARRIER_CMD_QUERY");
	int get = !!(supported & MEMBARRIER_CMD_GET_REGISTRATIONS);
	int cmds[] = {
		MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
		MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
		MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ,
		MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED,
	};
	long want = 0;
	for (unsigned i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (!(supported & cmds[i]))
			continue;
		if (mb(cmds[i]))
			pfail("register %#x", cmds[i]);
		want |= cmds[i];
	}
	long before = get ? mb(MEMBARRIER_CMD_GET_REGISTRATIONS) : want;
	if (before != want)
		fail("registrations %#lx, registered %#lx", before, want);
	if (!(want & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED))
		fail("PRIVATE_EXPEDITED not supported");

	test_daemon();
	test_waitsig();

	if (mb(MEMBARRIER_CMD_PRIVATE_EXPEDITED))
		pfail("MEMBARRIER_CMD_PRIVATE_EXPEDITED after the restore");
	if ((want & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE) &&
	    mb(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE))
		pfail("MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE after the restore");
	if ((want & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ) &&
	    mb(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ))
		pfail("MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ after the restore");
	long after = get ? mb(MEMBARRIER_CMD_GET_REGISTRATIONS) : before;
	if (after != before)
		fail("registrations %#lx after the restore, %#lx before", after, before);
	pthread_t t;
	void *res;
	if (pthread_create(&t, NULL, thread_barrier, NULL) || pthread_join(t, &res))
		fail("thread");
	if (res)
		fail("PRIVATE_EXPEDITED in a new thread: errno %ld", (long)res);
	pass();
}
