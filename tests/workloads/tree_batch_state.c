/*
 * tree_batch_state: resource limits and fd tables of a tree, which a
 * restore sets through batches of calls (issue 15): limits only where
 * they differ from the vessel's (read once for the tree), and each fd
 * table's fetches (pidfd_getfd), moves and dup3s in one batch.
 *
 *   root ── A   (forked first: the limits and fds the root started with)
 *        └─ B   (forked after the root changed both; changes more)
 *
 * The root lowers RLIMIT_NOFILE's soft limit, RLIMIT_CORE's hard limit
 * and RLIMIT_MSGQUEUE's soft limit, opens a.dat at fds 10 and 70 (one
 * description, 70 above the 64 a restore moves descriptions to), a pipe
 * at 40/41 (41 close-on-exec) and b.dat at 5 (close-on-exec), then forks
 * B. B closes 5, dups 70 to 3, sets FD_CLOEXEC on its 10 only, and lowers
 * its NOFILE and CORE soft limits again.
 *
 * Each process records its 16 limits and, per open fd, FD_CLOEXEC, the
 * status flags, the file type and a file's inode; the root records which fds of itself and
 * of B share a description (kcmp KCMP_FILE). After the restore each
 * compares them again. With --ignore-trap SIGTRAP is ignored in the whole
 * tree: a restore then runs every call one by one (no agent loop), the
 * same lists with each new fd passed from call to call by cairn.
 */
#include "tree.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <linux/kcmp.h>

#define MAXFD 128

struct state {
	struct rlimit rl[RLIM_NLIMITS];
	int open[MAXFD];
	int fdflags[MAXFD], flflags[MAXFD];
	dev_t dev[MAXFD];
	ino_t ino[MAXFD];
	mode_t mode[MAXFD];
};

static void take(struct state *s)
{
	memset(s, 0, sizeof(*s));
	for (int r = 0; r < RLIM_NLIMITS; r++)
		if (getrlimit(r, &s->rl[r]))
			pfail("getrlimit %d", r);
	for (int fd = 0; fd < MAXFD; fd++) {
		struct stat st;
		int f = fcntl(fd, F_GETFD);
		if (f < 0)
			continue;
		if (fstat(fd, &st))
			pfail("fstat %d", fd);
		s->open[fd] = 1;
		s->fdflags[fd] = f;
		s->flflags[fd] = fcntl(fd, F_GETFL);
		s->dev[fd] = st.st_dev;
		s->ino[fd] = st.st_ino;
		s->mode[fd] = st.st_mode & S_IFMT;
	}
}

static void compare(const char *who, const struct state *a, const struct state *b)
{
	for (int r = 0; r < RLIM_NLIMITS; r++)
		if (a->rl[r].rlim_cur != b->rl[r].rlim_cur || a->rl[r].rlim_max != b->rl[r].rlim_max)
			fail("%s: rlimit %d: %llu/%llu, expected %llu/%llu", who, r,
			     (unsigned long long)b->rl[r].rlim_cur,
			     (unsigned long long)b->rl[r].rlim_max,
			     (unsigned long long)a->rl[r].rlim_cur,
			     (unsigned long long)a->rl[r].rlim_max);
	for (int fd = 0; fd < MAXFD; fd++) {
		if (a->open[fd] != b->open[fd])
			fail("%s: fd %d %s after the restore", who, fd,
			     b->open[fd] ? "open" : "not open");
		if (!a->open[fd])
			continue;
		if (a->fdflags[fd] != b->fdflags[fd] || a->flflags[fd] != b->flflags[fd])
			fail("%s: fd %d: flags %#x/%#o, expected %#x/%#o", who, fd, b->fdflags[fd],
			     b->flflags[fd], a->fdflags[fd], a->flflags[fd]);
		if (a->mode[fd] != b->mode[fd])
			fail("%s: fd %d: file type %#o, expected %#o", who, fd, b->mode[fd], a->mode[fd]);
		/* A pipe comes back as a new pipe: only files keep their inode. */
		if (S_ISREG(a->mode[fd]) && (a->dev[fd] != b->dev[fd] || a->ino[fd] != b->ino[fd]))
			fail("%s: fd %d: inode %lu, expected %lu", who, fd, (unsigned long)b->ino[fd],
			     (unsigned long)a->ino[fd]);
	}
}

static void lower(int res, int soft, rlim_t by)
{
	struct rlimit rl;

	if (getrlimit(res, &rl))
		pfail("getrlimit %d", res);
	rlim_t *v = soft ? &rl.rlim_cur : &rl.rlim_max;
	if (*v == RLIM_INFINITY)
		*v = 1 << 30;
	else if (*v > by)
		*v -= by;
	else
		*v = 0;
	if (rl.rlim_cur > rl.rlim_max)
		rl.rlim_cur = rl.rlim_max;
	if (setrlimit(res, &rl))
		pfail("setrlimit %d", res);
}

static void move_fd(int from, int to, int cloexec)
{
	if (from == to)
		return;
	if (dup3(from, to, cloexec ? O_CLOEXEC : 0) != to)
		pfail("dup3 %d to %d", from, to);
	close(from);
}

/*
 * 1 where fd i of p1 and fd j of p2 are one description (fds below 100:
 * the children's readiness fds are above).
 */
static void share_matrix(pid_t p1, const struct state *s1, pid_t p2, const struct state *s2,
			 unsigned char m[MAXFD][MAXFD])
{
	memset(m, 0, MAXFD * MAXFD);
	for (int i = 0; i < 100; i++)
		for (int j = 0; j < 100; j++) {
			if (!s1->open[i] || !s2->open[j])
				continue;
			long r = syscall(SYS_kcmp, p1, p2, KCMP_FILE, i, j);
			if (r < 0)
				pfail("kcmp %d:%d %d:%d", p1, i, p2, j);
			m[i][j] = r == 0;
		}
}

static struct state me, now;
static unsigned char self_before[MAXFD][MAXFD], self_after[MAXFD][MAXFD];
static unsigned char b_before[MAXFD][MAXFD], b_after[MAXFD][MAXFD];

static void __attribute__((noreturn)) child(const char *who, int rfd, int wfd, int is_b)
{
	close(rfd);
	if (is_b) {
		close(5);
		if (dup2(70, 3) != 3)
			pfail("B: dup2");
		if (fcntl(10, F_SETFD, FD_CLOEXEC))
			pfail("B: F_SETFD");
		lower(RLIMIT_NOFILE, 1, 100);
		lower(RLIMIT_CORE, 1, 4096);
	}
	/* The readiness pipe is not part of the state. */
	int w = fcntl(wfd, F_DUPFD_CLOEXEC, 100);
	close(wfd);
	take(&me);
	me.open[w] = 0;
	ready_send(w, who);
	close(w);
	test_waitsig();
	take(&now);
	compare(who, &me, &now);
	exit(0);
}

int main(int argc, char **argv)
{
	int rp[2], p[2];
	pid_t a, b;

	test_init(argc, argv);
	if (test_flag("--ignore-trap") && signal(SIGTRAP, SIG_IGN) == SIG_ERR)
		pfail("SIG_IGN SIGTRAP");
	if (pipe(rp))
		pfail("pipe");
	a = xfork();
	if (a == 0)
		child("child A", rp[0], rp[1], 0);
	lower(RLIMIT_NOFILE, 1, 24);
	lower(RLIMIT_CORE, 0, 8192);
	lower(RLIMIT_MSGQUEUE, 1, 1024);
	int f = open("a.dat", O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (f < 0)
		pfail("open a.dat");
	move_fd(f, 10, 0);
	if (dup2(10, 70) != 70)
		pfail("dup2 70");
	if (write(10, "0123456789", 10) != 10)
		pfail("write");
	if (pipe(p))
		pfail("pipe");
	move_fd(p[0], 40, 0);
	move_fd(p[1], 41, 1);
	f = open("b.dat", O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
	if (f < 0)
		pfail("open b.dat");
	move_fd(f, 5, 1);
	b = xfork();
	if (b == 0)
		child("child B", rp[0], rp[1], 1);
	close(rp[1]);
	ready_collect(rp[0], 2);
	close(rp[0]);
	take(&me);
	share_matrix(getpid(), &me, getpid(), &me, self_before);
	struct state bs;
	memset(&bs, 0, sizeof(bs));
	for (int i = 0; i < MAXFD; i++) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/fd/%d", b, i);
		bs.open[i] = access(path, F_OK) == 0;
	}
	share_matrix(getpid(), &me, b, &bs, b_before);

	test_daemon();
	test_waitsig();

	take(&now);
	compare("root", &me, &now);
	share_matrix(getpid(), &now, getpid(), &now, self_after);
	share_matrix(getpid(), &now, b, &bs, b_after);
	if (memcmp(self_before, self_after, sizeof(self_before)))
		fail("root: its fds share descriptions otherwise than before the dump");
	if (memcmp(b_before, b_after, sizeof(b_before)))
		fail("root: its fds and B's share descriptions otherwise than before the dump");
	if (!b_before[10][3] || !b_before[40][40] || b_before[5][3])
		fail("root: the sharing checked is not the one set up");
	if (kill(a, SIGTERM) || kill(b, SIGTERM))
		pfail("kill");
	expect_exit(a, "child A", 0);
	expect_exit(b, "child B", 0);
	pass();
}
