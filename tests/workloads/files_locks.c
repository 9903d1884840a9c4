/*
 * files_locks: file locks of a process tree.
 *
 * The parent holds POSIX read and write locks on several ranges of "a"
 * (one to EOF), an OFD write lock on "b", flock LOCK_SH on "c", LOCK_EX
 * on "d", LOCK_SH on its working directory and on a FIFO, an OFD read lock
 * on a memfd, and LOCK_EX on "e", whose
 * description child 1 inherits (one lock, shared). Child 1 holds POSIX
 * locks of its own ("f", and a read range of "a"). Child 2 waits in
 * F_SETLKW for a range of "a" the parent holds, child 3 in flock(LOCK_EX)
 * for "d". Child 4 shares the parent's fd table (clone(CLONE_FILES)) and
 * holds a POSIX lock on "g": the table owns it, the kernel names child 4.
 *
 * After the restore each process compares the "lock:" lines of its
 * fdinfo with the ones it saw before the dump (kind, type, pid, inode,
 * range); a fresh helper process checks that conflicting attempts fail
 * and see the right owner (F_GETLK, F_OFD_GETLK, flock LOCK_NB); then the
 * parent releases what children 2 and 3 wait for, and they must get it
 * (their waits were restarted, and had not succeeded before).
 */
#include "tree.h"

#include <dirent.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/mman.h>

#define SNAP 8192

static char c4_stack[256 * 1024];
static int memfd_fd = -1;
static int c4_ready, c4_go[2];

static void set_lock(int fd, int cmd, short type, off_t start, off_t len, const char *what)
{
	struct flock l = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };

	if (fcntl(fd, cmd, &l))
		pfail("lock %s", what);
}

static int open_file(const char *name, int flags)
{
	int fd = open(name, flags | O_CREAT, 0644);

	if (fd < 0)
		pfail("open %s", name);
	return fd;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Every "lock:" line of this process's fdinfo as "fd N: KIND TYPE PID
 * DEV:INO START END", sorted, one per line (the per-fd counter dropped).
 */
static void lock_lines(char *out, size_t size)
{
	static char buf[4096];
	char *lines[256];
	int n = 0;
	DIR *d = opendir("/proc/self/fdinfo");
	struct dirent *e;

	if (!d)
		pfail("opendir /proc/self/fdinfo");
	while ((e = readdir(d))) {
		char path[300];
		char *p;

		if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d))
			continue;
		snprintf(path, sizeof(path), "/proc/self/fdinfo/%s", e->d_name);
		read_file(path, buf, sizeof(buf));
		for (p = buf; (p = strstr(p, "lock:\t"));) {
			char *eol = strchr(p, '\n');
			char *rest = strchr(p, ' ');
			char line[600];

			if (!eol || !rest || rest > eol)
				fail("odd lock line in %s", path);
			snprintf(line, sizeof(line), "fd %.16s: %.300s", e->d_name, rest + 1);
			line[strcspn(line, "\n")] = 0;
			if (atoi(e->d_name) == memfd_fd) {
				/* A restored memfd is a new inode: compare all but that. */
				char k[16], m[16], t[16], pid[16], dev[64], st[32], en[32];

				if (sscanf(rest + 1, "%15s %15s %15s %15s %63s %31s %31s", k, m, t, pid,
					   dev, st, en) != 7)
					fail("odd memfd lock line in %s", path);
				snprintf(line, sizeof(line), "fd %.16s: %s %s %s %s (memfd) %s %s",
					 e->d_name, k, m, t, pid, st, en);
			}
			if (n == 256)
				fail("too many lock lines");
			lines[n++] = strdup(line);
			p = eol;
		}
	}
	closedir(d);
	qsort(lines, n, sizeof(lines[0]), cmp_str);
	out[0] = 0;
	for (int i = 0; i < n; i++) {
		if (strlen(out) + strlen(lines[i]) + 2 > size)
			fail("lock lines do not fit");
		strcat(out, lines[i]);
		strcat(out, "\n");
		free(lines[i]);
	}
}

static void check_lines(const char *who, const char *before)
{
	static char after[SNAP];

	lock_lines(after, sizeof(after));
	if (strcmp(before, after))
		fail("%s: the locks differ after the restore.\nbefore:\n%safter:\n%s", who, before,
		     after);
	test_msg("%s: locks as before:\n%s", who, after);
}

/* The helper: F_GETLK on a fresh description of `name`. */
static void expect_getlk(int cmd, const char *name, off_t start, off_t len, short want_type,
			 pid_t want_pid)
{
	int fd = open(name, O_RDWR);
	struct flock l = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = start, .l_len = len };

	if (fd < 0)
		pfail("helper: open %s", name);
	if (fcntl(fd, cmd, &l))
		pfail("helper: F_GETLK %s", name);
	if (l.l_type != want_type || (want_type != F_UNLCK && l.l_pid != want_pid))
		fail("helper: %s bytes %ld+%ld: lock type %d pid %d, expected type %d pid %d",
		     name, (long)start, (long)len, l.l_type, l.l_pid, want_type, want_pid);
	close(fd);
}

/* The helper: flock(op|LOCK_NB) on a fresh description must give `want` (0 or errno). */
static void expect_flock(const char *name, int op, int want)
{
	int fd = open(name, O_RDONLY);
	int r;

	if (fd < 0)
		pfail("helper: open %s", name);
	r = flock(fd, op | LOCK_NB) ? errno : 0;
	if (r != want)
		fail("helper: flock(%s, %s) gave %s, expected %s", name,
		     op == LOCK_EX ? "LOCK_EX" : "LOCK_SH", r ? strerror(r) : "success",
		     want ? strerror(want) : "success");
	close(fd);
}

static void nothing_yet(int fd, const char *who)
{
	char c;

	if (read(fd, &c, 1) != -1 || errno != EAGAIN)
		fail("%s got its lock while the parent still held it", who);
}

static void wait_byte(int fd, const char *who)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char c;

	if (poll(&p, 1, 10000) != 1 || read(fd, &c, 1) != 1)
		fail("%s did not get its lock within 10 s of its release", who);
}

/* Waits until /proc/locks shows `pid` blocked on a lock ("->" line). */
static void wait_blocked(pid_t pid, const char *who)
{
	static char buf[1 << 16];
	char pat[32];

	snprintf(pat, sizeof(pat), " %d ", pid);
	for (int i = 0; i < 10000; i++) {
		char *p = buf;

		read_file("/proc/locks", buf, sizeof(buf));
		while ((p = strstr(p, "->"))) {
			char *eol = strchrnul(p, '\n');

			if (memmem(p, eol - p, pat, strlen(pat)))
				return;
			p = eol;
		}
		usleep(1000);
	}
	fail("%s (pid %d) is not blocked on a lock after 10 s", who, pid);
}

/* Child 4: shares the parent's fd table. */
static int child4(void *arg)
{
	int fg = open("g", O_RDWR | O_CREAT, 0644);
	char c;

	(void)arg;
	if (fg < 0)
		_exit(11);
	set_lock(fg, F_SETLK, F_WRLCK, 0, 10, "child 4: g 0-9 write");
	ready_send(c4_ready, "child 4");
	while (read(c4_go[0], &c, 1) < 0 && errno == EINTR)
		;
	_exit(0);
}

int main(int argc, char **argv)
{
	static char before[SNAP];
	int ready[2], got2[2], got3[2];
	int fa, fb, fc, fd, fe, fdir, fp, fm;
	char mpath[64];
	pid_t me, c1, c2, c3, c4, h;

	test_init(argc, argv);
	me = getpid();
	fa = open_file("a", O_RDWR);
	fb = open_file("b", O_RDWR);
	fc = open_file("c", O_RDONLY);
	fd = open_file("d", O_RDONLY);
	fe = open_file("e", O_RDONLY);
	fdir = open(".", O_RDONLY | O_DIRECTORY);
	if (fdir < 0)
		pfail("open .");
	if (mkfifo("p", 0644))
		pfail("mkfifo p");
	fp = open("p", O_RDWR);
	fm = memfd_create("locked", 0);
	if (fp < 0 || fm < 0 || write(fm, "0123456789", 10) != 10)
		pfail("open p, memfd");
	memfd_fd = fm;
	snprintf(mpath, sizeof(mpath), "/proc/self/fd/%d", fm);
	set_lock(fm, F_OFD_SETLK, F_RDLCK, 2, 4, "memfd 2-5 OFD read");
	if (flock(fp, LOCK_SH))
		pfail("flock p");
	set_lock(fa, F_SETLK, F_RDLCK, 0, 10, "a 0-9 read");
	set_lock(fa, F_SETLK, F_WRLCK, 20, 10, "a 20-29 write");
	set_lock(fa, F_SETLK, F_RDLCK, 60, 5, "a 60-64 read");
	set_lock(fa, F_SETLK, F_WRLCK, 100, 0, "a 100-EOF write");
	set_lock(fb, F_OFD_SETLK, F_WRLCK, 0, 100, "b 0-99 OFD write");
	if (flock(fc, LOCK_SH) || flock(fd, LOCK_EX) || flock(fe, LOCK_EX) ||
	    flock(fdir, LOCK_SH))
		pfail("flock");
	if (pipe(ready) || pipe2(got2, O_NONBLOCK) || pipe2(got3, O_NONBLOCK))
		pfail("pipe");

	c1 = xfork();
	if (c1 == 0) {
		static char mine[SNAP];
		int ff = open_file("f", O_RDWR);
		int fa1 = open("a", O_RDONLY);

		if (fa1 < 0)
			pfail("child 1: open a");
		set_lock(ff, F_SETLK, F_WRLCK, 0, 5, "f 0-4 write");
		set_lock(fa1, F_SETLK, F_RDLCK, 40, 10, "a 40-49 read");
		lock_lines(mine, sizeof(mine));
		ready_send(ready[1], "child 1");
		test_waitsig();
		check_lines("child 1", mine);
		exit(0);
	}
	c2 = xfork();
	if (c2 == 0) {
		int fa2 = open("a", O_RDWR);

		if (fa2 < 0)
			pfail("child 2: open a");
		set_lock(fa2, F_SETLKW, F_WRLCK, 20, 10, "child 2: a 20-29 write (waiting)");
		if (write(got2[1], "x", 1) != 1)
			pfail("child 2: write");
		exit(0);
	}
	c3 = xfork();
	if (c3 == 0) {
		int fd3 = open("d", O_RDONLY);

		if (fd3 < 0)
			pfail("child 3: open d");
		if (flock(fd3, LOCK_EX))
			pfail("child 3: flock d (waiting)");
		if (write(got3[1], "x", 1) != 1)
			pfail("child 3: write");
		exit(0);
	}
	c4_ready = ready[1];
	if (pipe(c4_go))
		pfail("pipe");
	fflush(NULL);
	c4 = clone(child4, c4_stack + sizeof(c4_stack), CLONE_FILES | SIGCHLD, NULL);
	if (c4 < 0)
		pfail("clone");
	ready_collect(ready[0], 2);
	wait_blocked(c2, "child 2");
	wait_blocked(c3, "child 3");
	lock_lines(before, sizeof(before));
	test_msg("locks before the dump:\n%s", before);
	test_daemon();
	test_waitsig();

	check_lines("parent", before);
	h = xfork();
	if (h == 0) {
		expect_getlk(F_GETLK, "a", 0, 10, F_RDLCK, me);
		expect_getlk(F_GETLK, "a", 5, 10, F_RDLCK, me);
		expect_getlk(F_GETLK, "a", 10, 10, F_UNLCK, 0);
		expect_getlk(F_GETLK, "a", 25, 1, F_WRLCK, me);
		expect_getlk(F_GETLK, "a", 40, 10, F_RDLCK, c1);
		expect_getlk(F_GETLK, "a", 62, 1, F_RDLCK, me);
		expect_getlk(F_GETLK, "a", 1000000, 1, F_WRLCK, me);
		expect_getlk(F_GETLK, "f", 0, 0, F_WRLCK, c1);
		expect_getlk(F_GETLK, "f", 5, 0, F_UNLCK, 0);
		expect_getlk(F_GETLK, "g", 9, 1, F_WRLCK, c4);
		expect_getlk(F_GETLK, "g", 10, 1, F_UNLCK, 0);
		expect_getlk(F_OFD_GETLK, "b", 99, 1, F_WRLCK, -1);
		expect_getlk(F_OFD_GETLK, "b", 100, 1, F_UNLCK, 0);
		expect_flock("c", LOCK_SH, 0);
		expect_flock("c", LOCK_EX, EWOULDBLOCK);
		expect_flock("d", LOCK_SH, EWOULDBLOCK);
		expect_flock("e", LOCK_SH, EWOULDBLOCK);
		expect_flock("p", LOCK_SH, 0);
		expect_flock("p", LOCK_EX, EWOULDBLOCK);
		expect_getlk(F_OFD_GETLK, mpath, 5, 1, F_RDLCK, -1);
		expect_getlk(F_OFD_GETLK, mpath, 6, 1, F_UNLCK, 0);
		expect_flock(".", LOCK_SH, 0);
		expect_flock(".", LOCK_EX, EWOULDBLOCK);
		exit(0);
	}
	expect_exit(h, "the checking helper", 0);
	if (kill(c1, SIGTERM))
		pfail("kill child 1");
	expect_exit(c1, "child 1", 0);
	if (write(c4_go[1], "g", 1) != 1)
		pfail("write go");
	expect_exit(c4, "child 4", 0);

	nothing_yet(got2[0], "child 2");
	set_lock(fa, F_SETLK, F_UNLCK, 20, 10, "a 20-29 unlock");
	wait_byte(got2[0], "child 2");
	expect_exit(c2, "child 2", 0);

	nothing_yet(got3[0], "child 3");
	if (flock(fd, LOCK_UN))
		pfail("flock(d, LOCK_UN)");
	wait_byte(got3[0], "child 3");
	expect_exit(c3, "child 3", 0);
	pass();
}
