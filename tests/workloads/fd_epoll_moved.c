/*
 * fd_epoll_moved: epoll watches whose registering fd no longer names the
 * watched file (the kernel keys a watch by file and fd number and keeps it
 * while the file lives on):
 *  - eventfd E1 added as its fd (EPOLLIN|EPOLLET, data 1), dup'ed, and the
 *    fd closed (the number stays free);
 *  - eventfd E2 added as its fd (EPOLLIN|EPOLLEXCLUSIVE, data 2), dup'ed,
 *    the fd closed and the number reused by /dev/null (not watched);
 *  - pipe read end P added as its fd (EPOLLIN|EPOLLONESHOT, armed, data 3),
 *    dup'ed, closed, the number reused by eventfd E3, which is watched under
 *    that same number too (EPOLLIN|EPOLLRDHUP, data 4): two watches with one
 *    number.
 * The epoll's fdinfo "tfd:" lines (number, events, data) must be the same
 * after restore, and each watch must still report its file.
 * With --elsewhere: E1's only fd is moved to a child (the watch's file lives
 * in another process): the dump must refuse it, and the watch still works.
 */
#include "zdtm.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define MAXL 16

static int tfd_lines(int ep, char lines[MAXL][128])
{
	char path[64], buf[8192], *l, *save;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", ep);
	read_file(path, buf, sizeof(buf));
	for (l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char *pos;
		if (strncmp(l, "tfd:", 4))
			continue;
		if (n == MAXL)
			fail("too many tfd lines");
		pos = strstr(l, " pos:");
		if (pos)
			*pos = 0; /* pos, ino, sdev: the file, not the watch */
		snprintf(lines[n++], 128, "%s", l);
	}
	qsort(lines, n, 128, (int (*)(const void *, const void *))strcmp);
	return n;
}

static void add(int ep, int fd, uint32_t events, uint64_t data)
{
	struct epoll_event ev = {.events = events, .data.u64 = data};

	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev))
		pfail("epoll_ctl ADD %d", fd);
}

/* Exactly the watches in `want` (data values) are ready. */
static void ready(int ep, uint64_t want, const char *when)
{
	struct epoll_event out[8];
	uint64_t got = 0;
	int n, i;

	n = epoll_wait(ep, out, 8, 100);
	if (n < 0)
		pfail("epoll_wait");
	for (i = 0; i < n; i++)
		got |= 1ull << out[i].data.u64;
	if (got != want)
		fail("%s: ready watches %#llx, expected %#llx", when,
		     (unsigned long long)got, (unsigned long long)want);
}

int main(int argc, char **argv)
{
	char before[MAXL][128], after[MAXL][128], c;
	int ep, e1, e1b, e2, e2b, p[2], pb, e3, nb, na, i, st;
	int elsewhere;
	uint64_t v = 1;
	pid_t child = 0;

	test_init(argc, argv);
	elsewhere = test_flag("--elsewhere");
	/* Fixed numbers: ep 3, E1 4, E2 5, P 6 (write end 7), dups 8, 9, 10. */
	ep = epoll_create1(0);
	e1 = eventfd(0, EFD_NONBLOCK);
	e2 = eventfd(0, EFD_NONBLOCK);
	if (ep != 3 || e1 != 4 || e2 != 5 || pipe(p) || p[0] != 6)
		fail("unexpected fd numbers %d %d %d %d", ep, e1, e2, p[0]);
	add(ep, e1, EPOLLIN | EPOLLET, 1);
	add(ep, e2, EPOLLIN | EPOLLEXCLUSIVE, 2);
	add(ep, p[0], EPOLLIN | EPOLLONESHOT, 3);
	e1b = dup(e1);
	e2b = dup(e2);
	pb = dup(p[0]);
	if (e1b != 8 || e2b != 9 || pb != 10)
		fail("dups at %d %d %d", e1b, e2b, pb);
	if (close(e1) || close(e2) || close(p[0]))
		pfail("close");
	/* 4 stays free, 5 is /dev/null, 6 is eventfd E3. */
	if (open("/dev/null", O_RDONLY) != 4 || dup2(4, 5) != 5 || close(4))
		pfail("/dev/null at 5");
	if (eventfd(0, EFD_NONBLOCK) != 4 || dup2(4, 6) != 6 || close(4))
		pfail("eventfd E3 at 6");
	e3 = 6;
	add(ep, e3, EPOLLIN | EPOLLRDHUP, 4);
	if (elsewhere) {
		child = fork();
		if (child < 0)
			pfail("fork");
		if (child == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			pause();
			_exit(0);
		}
		close(e1b);
	}
	nb = tfd_lines(ep, before);
	if (nb != 4)
		fail("%d watches before the dump, not 4", nb);
	ready(ep, 0, "before");
	test_daemon();
	test_waitsig();
	na = tfd_lines(ep, after);
	if (na != nb)
		fail("%d watches after restore, %d before", na, nb);
	for (i = 0; i < nb; i++)
		if (strcmp(before[i], after[i]))
			fail("watch \"%s\" is now \"%s\"", before[i], after[i]);
	if (!elsewhere && write(e1b, &v, 8) != 8)
		pfail("write E1");
	if (write(e2b, &v, 8) != 8 || write(p[1], "x", 1) != 1 || write(e3, &v, 8) != 8)
		pfail("write");
	ready(ep, (elsewhere ? 0 : 1 << 1) | 1 << 2 | 1 << 3 | 1 << 4, "after the writes");
	/* Edge-triggered E1 and one-shot P report once; E2 and E3 again. */
	ready(ep, 1 << 2 | 1 << 4, "again");
	if (read(pb, &c, 1) != 1)
		pfail("read P");
	if (child) {
		kill(child, SIGKILL);
		waitpid(child, &st, 0);
	}
	pass();
}
