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
 *
 * With --tree a child C is forked first (a new mm starts with none) and
 * registers PRIVATE_EXPEDITED alone; after the restore it checks that it
 * has that one and none of its parent's (SYNC_CORE gives EPERM, and
 * GET_REGISTRATIONS where the kernel has it), and exits with the result:
 * the registrations of one process must not be taken for another's.
 */
#include "zdtm.h"

#include <linux/membarrier.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <sys/wait.h>

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

/* The child of --tree: registers PRIVATE_EXPEDITED alone, says so on
 * `back`, waits for a byte on `go` (sent after the restore), checks. */
static void __attribute__((noreturn)) child(long supported, int go, int back)
{
	int get = !!(supported & MEMBARRIER_CMD_GET_REGISTRATIONS);
	if (mb(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED))
		_exit(10);
	if (get && mb(MEMBARRIER_CMD_GET_REGISTRATIONS) != MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED)
		_exit(11);
	char c = 'r';
	if (write(back, &c, 1) != 1)
		_exit(12);
	if (read(go, &c, 1) != 1)
		_exit(13);
	if (mb(MEMBARRIER_CMD_PRIVATE_EXPEDITED))
		_exit(14);
	if ((supported & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE) &&
	    (mb(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE) != -1 || errno != EPERM))
		_exit(15); /* the parent's registration, given to the child */
	if (get && mb(MEMBARRIER_CMD_GET_REGISTRATIONS) != MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED)
		_exit(16);
	_exit(0);
}

int main(int argc, char **argv)
{
	test_init(argc, argv);
	long supported = mb(MEMBARRIER_CMD_QUERY);
	if (supported < 0)
		pfail("MEMBARRIER_CMD_QUERY");
	int get = !!(supported & MEMBARRIER_CMD_GET_REGISTRATIONS);
	int tree = test_flag("--tree");
	int go[2], back[2];
	pid_t c = -1;
	if (tree) {
		if (pipe(go) || pipe(back))
			pfail("pipe");
		c = fork();
		if (c < 0)
			pfail("fork");
		if (c == 0) {
			close(go[1]);
			close(back[0]);
			child(supported, go[0], back[1]);
		}
		close(go[0]);
		close(back[1]);
		char r;
		if (read(back[0], &r, 1) != 1)
			fail("child C did not register (status in waitpid)");
	}
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
	if (tree) {
		char g = 'g';
		int ws;
		if (write(go[1], &g, 1) != 1)
			pfail("write to child C");
		if (waitpid(c, &ws, 0) != c)
			pfail("waitpid C");
		if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
			fail("child C: status %#x (exit 14: its registration lost, 15/16: its "
			     "parent's given to it)", ws);
	}
	pass();
}
