/*
 * proc_attrs: per-process attributes. Before the dump: chdir into a fresh
 * directory, umask(027), lower soft and hard RLIMIT_NOFILE/CORE/STACK,
 * PR_SET_NAME "zdtm-attrs", personality |= ADDR_NO_RANDOMIZE. After restore
 * each is compared (every rlimit, not just the changed ones), plus the raw
 * getpid syscall, the session and process group (the harness makes the
 * workload a session leader), the cwd's inode and /proc/self/comm.
 * getppid() is not compared: the parent changes.
 */
#include "zdtm.h"

#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>

struct attrs {
	char cwd[4096];
	mode_t umask;
	struct rlimit rl[RLIM_NLIMITS];
	char name[32];
	char comm[64];
	int pers;
	pid_t pid, sid, pgid;
	char umask_line[64];
};

static void take(struct attrs *a)
{
	if (!getcwd(a->cwd, sizeof(a->cwd)))
		pfail("getcwd");
	a->umask = umask(0);
	umask(a->umask);
	proc_status_line("Umask:", a->umask_line, sizeof(a->umask_line));
	for (int r = 0; r < RLIM_NLIMITS; r++)
		if (getrlimit(r, &a->rl[r]))
			pfail("getrlimit %d", r);
	memset(a->name, 0, sizeof(a->name));
	if (prctl(PR_GET_NAME, a->name))
		pfail("PR_GET_NAME");
	read_file("/proc/self/comm", a->comm, sizeof(a->comm));
	a->pers = personality(0xffffffff);
	if (a->pers < 0)
		pfail("personality query");
	a->pid = syscall(SYS_getpid);
	a->sid = getsid(0);
	a->pgid = getpgid(0);
}

static struct attrs before, after;

/*
 * Set soft/hard to (at most) the given values. Never raises a hard limit:
 * that needs CAP_SYS_RESOURCE, which a root in a sandbox may lack.
 */
static void lower_limit(int res, rlim_t soft, rlim_t hard)
{
	struct rlimit rl;

	if (getrlimit(res, &rl))
		pfail("getrlimit %d", res);
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < hard)
		hard = rl.rlim_max > 1 ? rl.rlim_max - 1 : rl.rlim_max;
	if (soft > hard)
		soft = hard / 2;
	rl.rlim_cur = soft;
	rl.rlim_max = hard;
	if (setrlimit(res, &rl))
		pfail("setrlimit %d to %llu/%llu", res, (unsigned long long)soft,
		      (unsigned long long)hard);
}

int main(int argc, char **argv)
{
	test_init(argc, argv);
	if (mkdir("attrs-cwd", 0755) && errno != EEXIST)
		pfail("mkdir");
	if (chdir("attrs-cwd"))
		pfail("chdir");
	umask(027);
	lower_limit(RLIMIT_NOFILE, 512, 1000);
	lower_limit(RLIMIT_CORE, 1 << 20, 2 << 20);
	lower_limit(RLIMIT_STACK, 6 << 20, 16 << 20);
	if (prctl(PR_SET_NAME, "zdtm-attrs"))
		pfail("PR_SET_NAME");
	int p = personality(0xffffffff);
	if (p < 0 || personality(p | ADDR_NO_RANDOMIZE) < 0)
		pfail("personality");
	take(&before);
	if (!(before.pers & ADDR_NO_RANDOMIZE) || before.umask != 027 ||
	    strcmp(before.name, "zdtm-attrs") || before.rl[RLIMIT_NOFILE].rlim_max > 1000)
		fail("attributes not set as expected before the dump");

	test_daemon();
	test_waitsig();

	take(&after);
	if (strcmp(before.cwd, after.cwd))
		fail("cwd %s, expected %s", after.cwd, before.cwd);
	if (before.umask != after.umask || strcmp(before.umask_line, after.umask_line))
		fail("umask %#o, expected %#o", after.umask, before.umask);
	for (int r = 0; r < RLIM_NLIMITS; r++)
		if (before.rl[r].rlim_cur != after.rl[r].rlim_cur ||
		    before.rl[r].rlim_max != after.rl[r].rlim_max)
			fail("rlimit %d: %llu/%llu, expected %llu/%llu", r,
			     (unsigned long long)after.rl[r].rlim_cur,
			     (unsigned long long)after.rl[r].rlim_max,
			     (unsigned long long)before.rl[r].rlim_cur,
			     (unsigned long long)before.rl[r].rlim_max);
	if (strcmp(before.name, after.name) || strcmp(before.comm, after.comm))
		fail("name '%s' comm '%s', expected '%s'", after.name, after.comm, before.name);
	if (before.pers != after.pers)
		fail("personality %#x, expected %#x", after.pers, before.pers);
	if (before.pid != after.pid)
		fail("getpid syscall %d, expected %d", after.pid, before.pid);
	if (before.sid != after.sid || before.pgid != after.pgid)
		fail("session %d / process group %d, expected %d / %d", after.sid, after.pgid,
		     before.sid, before.pgid);
	/* The cwd is the real directory, not just a string. */
	struct stat a, b;
	if (stat(".", &a) || stat(before.cwd, &b) || a.st_ino != b.st_ino || a.st_dev != b.st_dev)
		fail("'.' is not %s", before.cwd);
	pass();
}
