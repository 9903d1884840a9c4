/*
 * oracle_attrs - per-process state /proc does not show, for the oracle's
 * test (tests/oracle.rs): the process is a child subreaper and its mm is
 * registered for MEMBARRIER_CMD_PRIVATE_EXPEDITED. After the restore both
 * must still hold (prctl, and membarrier's GET_REGISTRATIONS where the
 * kernel has it).
 */
#include "zdtm.h"
#include <linux/membarrier.h>
#include <sys/prctl.h>

#ifndef MEMBARRIER_CMD_GET_REGISTRATIONS
#define MEMBARRIER_CMD_GET_REGISTRATIONS (1 << 9)
#endif

static long membarrier(int cmd)
{
	return syscall(SYS_membarrier, cmd, 0, 0);
}

int main(int argc, char **argv)
{
	long before, after;
	int v = -1;

	test_init(argc, argv);
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
		pfail("PR_SET_CHILD_SUBREAPER");
	if (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED))
		pfail("MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED");
	before = membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS);
	test_daemon();
	test_waitsig();
	if (prctl(PR_GET_CHILD_SUBREAPER, &v, 0, 0, 0) || v != 1)
		fail("PR_GET_CHILD_SUBREAPER: %d, not 1", v);
	after = membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS);
	if (after != before)
		fail("membarrier registrations %#lx, were %#lx", after, before);
	if (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED))
		pfail("MEMBARRIER_CMD_PRIVATE_EXPEDITED");
	pass();
}
