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
	if (!strstr(buf, "0::"))
		fail("no cgroup v2 line in /proc/self/cgroup");
	snprintf(out, len, "%s", buf);
}

/* Settings: file (relative to the cgroup dir), value to write, and the
 * controller it needs enabled in the parent ("" for none). */
struct setting {
	const char *where;
	const char *file;
	const char *value;
	const char *needs;
};

static const struct setting settings[] = {
	{ "", "cgroup.max.depth", "3", "" },
	{ "", "cgroup.max.descendants", "5", "" },
	{ "child", "cgroup.max.descendants", "1", "" },
};

static int has_controller(const char *dir, const char *c)
{
	char path[4096], buf[4096];
	snprintf(path, sizeof(path), "%s/cgroup.controllers", dir);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return 0;
	buf[n] = 0;
	for (char *t = strtok(buf, " \n"); t; t = strtok(NULL, " \n"))
		if (!strcmp(t, c))
			return 1;
	return 0;
}

static void setting_path(const char *dir, const struct setting *s, char *out, size_t len)
{
	snprintf(out, len, "%s%s%s/%s", dir, *s->where ? "/" : "", s->where, s->file);
}

static void write_str(const char *path, const char *v)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0 || write(fd, v, strlen(v)) < 0)
		pfail("write %s to %s", v, path);
	close(fd);
}

static void read_str(const char *path, char *out, size_t len)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		pfail("open %s", path);
	ssize_t n = read(fd, out, len - 1);
	if (n < 0)
		pfail("read %s", path);
	close(fd);
	out[n] = 0;
	char *e = strchr(out, '\n');
	if (e)
		*e = 0;
}

/* Which settings apply (1) here; sets them when `set`, else checks. */
static int applies[sizeof(settings) / sizeof(settings[0])];

static void do_settings(const char *dir, int set)
{
	char path[4096], got[4096];

	for (unsigned i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
		const struct setting *s = &settings[i];
		if (set) {
			applies[i] = !*s->needs || has_controller(dir, s->needs);
			if (*s->needs && applies[i]) {
				char ctl[4096], plus[64];
				snprintf(ctl, sizeof(ctl), "%s/cgroup.subtree_control", dir);
				snprintf(plus, sizeof(plus), "+%s", s->needs);
				write_str(ctl, plus);
			}
		}
		if (!applies[i])
			continue;
		setting_path(dir, s, path, sizeof(path));
		if (set) {
			write_str(path, s->value);
			test_msg("set %s to %s\n", path, s->value);
		} else {
			read_str(path, got, sizeof(got));
			if (strcmp(got, s->value))
				fail("%s reads '%s' after the restore, expected '%s'", path, got,
				     s->value);
		}
	}
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
	const char *v1 = test_arg("--v1");
	int with_settings = test_flag("--settings");
	join(dir);
	if (v1)
		join(v1);
	snprintf(sub, sizeof(sub), "%s/child", dir);
	if (mkdir(sub, 0755) && errno != EEXIST)
		pfail("mkdir %s", sub);
	if (with_settings)
		do_settings(dir, 1);
	cg_line(before, sizeof(before));
	if (pipe(go) || pipe(res))
		pfail("pipe");
	pid_t c = fork();
	if (c < 0)
		pfail("fork");
	if (c == 0) {
		char b, mine[4096], now[4096];
		/* EOF on go[0] when the parent is gone: no child left behind. */
		close(go[1]);
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
	if (with_settings)
		do_settings(dir, 0);
	if (write(go[1], "g", 1) != 1)
		pfail("write");
	int st;
	if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail("child status %#x", st);
	pass();
}
