/*
 * ptrace_probe: what the caller may do to another process through ptrace.
 *
 *   ptrace_probe --probe PID
 *       Tries PTRACE_ATTACH (detaching at once if it worked) and opening
 *       /proc/PID/mem for reading, and prints one line for each:
 *       "attach: ok" or "attach: <errno name>", "mem: ok" or
 *       "mem: <errno name>". Exits 0 (the caller judges the lines).
 *
 *   ptrace_probe --pidfile PATH --hold PID
 *       A tracer: PTRACE_SEIZEs PID (which keeps running), then reports
 *       readiness and waits for SIGTERM; exiting detaches it. PASS.
 */
#include "zdtm.h"

#include <sys/ptrace.h>
#include <sys/wait.h>

static const char *errname(int e)
{
	switch (e) {
	case EPERM:
		return "EPERM";
	case EACCES:
		return "EACCES";
	case ESRCH:
		return "ESRCH";
	default:
		return strerror(e);
	}
}

static int probe(pid_t pid)
{
	char path[64];
	int fd;

	if (ptrace(PTRACE_ATTACH, pid, 0, 0) == 0) {
		int st;

		waitpid(pid, &st, __WALL);
		ptrace(PTRACE_DETACH, pid, 0, 0);
		printf("attach: ok\n");
	} else {
		printf("attach: %s\n", errname(errno));
	}
	snprintf(path, sizeof(path), "/proc/%d/mem", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		close(fd);
		printf("mem: ok\n");
	} else {
		printf("mem: %s\n", errname(errno));
	}
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	pid_t target;

	if (argc == 3 && strcmp(argv[1], "--probe") == 0)
		return probe(atoi(argv[2]));
	test_init(argc, argv);
	if (!test_arg("--hold"))
		fail("usage: ptrace_probe --probe PID | --pidfile PATH --hold PID");
	target = atoi(test_arg("--hold"));
	if (ptrace(PTRACE_SEIZE, target, 0, 0))
		pfail("PTRACE_SEIZE %d", target);
	test_daemon();
	test_waitsig();
	pass();
}
