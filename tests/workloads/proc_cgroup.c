/*
 * proc_cgroup: cgroup v2 membership. With --cgroup DIR (a cgroup directory
 * the harness made), the workload and a forked child move themselves into
 * DIR (the child into DIR/child, which it creates) and note their
 * /proc/self/cgroup "0::" lines. After the restore (the harness removes
 * both directories between the dump and the restore, so the restore must
 * create them) each finds the same line again.
 */
#include "zdtm.h"

#include <sys/wait.h>

static void cg_line(char *out, size_t len)
{
	char buf[4096];

	read_file("/proc/self/cgroup", buf, sizeof(buf));
	char *p = strstr(buf, "0::");
	if (!p)
		fail("no cgroup v2 line in /proc/self/cgroup");
	if (p != buf && p[-1] != '\n')
		fail("malformed /proc/self/cgroup");
	char *e = strchr(p, '\n');
	if (e)
		*e = 0;
	snprintf(out, len, "%s", p);
}

static void join(const char *dir)
{
	char path[4096], pid[32];

	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	int fd = open(path, O_WRONLY);
	snprintf(pid, sizeof(pid), "%d", getpid());
	if (fd < 0 || write(fd, pid, strlen(pid)) < 0)
		pfail("join %s", dir);
	close(fd);
}

int main(int argc, char **argv)
{
	char before[4096], after[4096], sub[4096];
	int go[2], res[2];

	test_init(argc, argv);
	const char *dir = test_arg("--cgroup");
	if (!dir)
		fail("--cgroup DIR missing");
	join(dir);
	cg_line(before, sizeof(before));
	snprintf(sub, sizeof(sub), "%s/child", dir);
	if (mkdir(sub, 0755) && errno != EEXIST)
		pfail("mkdir %s", sub);
	if (pipe(go) || pipe(res))
		pfail("pipe");
	pid_t c = fork();
	if (c < 0)
		pfail("fork");
	if (c == 0) {
		char b, mine[4096], now[4096];
		join(sub);
		cg_line(mine, sizeof(mine));
		if (write(res[1], "r", 1) != 1)
			_exit(2);
		while (read(go[0], &b, 1) < 0 && errno == EINTR)
			;
		cg_line(now, sizeof(now));
		if (strcmp(mine, now)) {
			printf("FAIL: child in '%s', expected '%s'\n", now, mine);
			fflush(stdout);
			_exit(1);
		}
		_exit(0);
	}
	char b;
	if (read(res[0], &b, 1) != 1)
		fail("child not ready");

	test_daemon();
	test_waitsig();

	cg_line(after, sizeof(after));
	if (strcmp(before, after))
		fail("in '%s', expected '%s'", after, before);
	if (write(go[1], "g", 1) != 1)
		pfail("write");
	int st;
	if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail("child status %#x", st);
	pass();
}
