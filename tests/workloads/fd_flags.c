/* fd_flags: file status flags (F_GETFL) and close-on-exec on every kind of
 * fd the process can make itself: a regular file (O_APPEND, O_SYNC,
 * O_NOATIME, O_DIRECT, O_NONBLOCK, O_ASYNC), both ends of a pipe (O_ASYNC,
 * O_DIRECT packet mode, O_APPEND), a FIFO, eventfd, signalfd, timerfd,
 * epoll, inotify, memfd, a unix socketpair, a UDP socket and a pty
 * master and slave (pidfds: fd_pidfd). After the restore every fd must
 * read back the same F_GETFL and FD_CLOEXEC.
 * --refuse: only a FIFO opened O_DSYNC (fd 3), a flag only open sets,
 * which cairn's FIFO restore does not give: the dump must refuse it. */
#include "zdtm.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#define MAXFD 32
static struct {
	const char *name;
	int fd;
	int fl;
	int fd_flags;
} fds[MAXFD];
static int nfds;

/* Adds `more` to fd's flags, requires them to stick (O_ASYNC sticks only
 * on files whose kind has fasync), and records F_GETFL. */
static void add(const char *name, int fd, int more, int cloexec)
{
	if (fd < 0)
		pfail("%s", name);
	if (more && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | more))
		pfail("F_SETFL %s %#o", name, more);
	int fl = fcntl(fd, F_GETFL);
	if ((fl & more & ~O_ASYNC) != (more & ~O_ASYNC))
		fail("%s: F_GETFL %#o lacks %#o", name, fl, more);
	if ((more & O_ASYNC) && !(fl & O_ASYNC))
		test_msg("%s: no O_ASYNC (no fasync)", name);
	if (fcntl(fd, F_SETFD, cloexec ? FD_CLOEXEC : 0))
		pfail("F_SETFD %s", name);
	fds[nfds].name = name;
	fds[nfds].fd = fd;
	fds[nfds].fl = fl;
	fds[nfds].fd_flags = fcntl(fd, F_GETFD);
	nfds++;
}

int main(int argc, char **argv)
{
	test_init(argc, argv);
	if (test_flag("--refuse")) {
		if (mkfifo("fifo", 0600) || open("fifo", O_RDWR | O_DSYNC) != 3)
			fail("fifo O_DSYNC");
		test_daemon();
		test_waitsig();
		pass();
	}

	/* A regular file: O_SYNC only open sets; O_DIRECT if the file system
	 * takes it. */
	int direct = O_DIRECT;
	int f = open("data", O_CREAT | O_RDWR | O_APPEND | O_SYNC, 0600);
	if (f < 0)
		pfail("open data");
	if (fcntl(f, F_SETFL, fcntl(f, F_GETFL) | O_DIRECT)) {
		test_msg("no O_DIRECT on this file system: %s", strerror(errno));
		direct = 0;
	}
	add("file", f, O_NOATIME | O_NONBLOCK | O_ASYNC | direct, 0);
	int rdonly = open("data", O_RDONLY | O_DSYNC);
	add("file O_DSYNC", rdonly, 0, 1);

	int p[2];
	if (pipe(p))
		pfail("pipe");
	add("pipe read end", p[0], O_NONBLOCK | O_ASYNC | O_NOATIME, 0);
	add("pipe write end", p[1], O_DIRECT | O_APPEND, 1);

	if (mkfifo("fifo", 0600))
		pfail("mkfifo");
	add("fifo", open("fifo", O_RDWR | O_NONBLOCK), O_APPEND | O_ASYNC, 0);

	add("eventfd", eventfd(2, 0), O_NONBLOCK | O_APPEND, 1);
	sigset_t m;
	sigemptyset(&m);
	sigaddset(&m, SIGUSR2);
	add("signalfd", signalfd(-1, &m, 0), O_NONBLOCK | O_ASYNC, 0);
	add("timerfd", timerfd_create(CLOCK_MONOTONIC, 0), O_NONBLOCK | O_APPEND, 0);
	add("epoll", epoll_create1(0), O_NONBLOCK, 1);
	add("inotify", inotify_init1(0), O_NONBLOCK | O_ASYNC, 0);
	add("memfd", memfd_create("flags", 0), O_APPEND | O_NOATIME, 0);

	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp))
		pfail("socketpair");
	add("unix socket", sp[0], O_NONBLOCK | O_ASYNC, 0);
	add("unix socket peer", sp[1], O_APPEND, 1);

	int u = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (u < 0 || bind(u, (struct sockaddr *)&a, sizeof(a)))
		pfail("udp socket");
	add("udp socket", u, O_NONBLOCK | O_NOATIME, 0);

	int ptm = posix_openpt(O_RDWR | O_NOCTTY);
	if (ptm < 0 || grantpt(ptm) || unlockpt(ptm))
		pfail("posix_openpt");
	add("pty master", ptm, O_NONBLOCK, 0);
	add("pty slave", open(ptsname(ptm), O_RDWR | O_NOCTTY), O_APPEND, 0);

	test_daemon();
	test_waitsig();

	int bad = 0;
	for (int i = 0; i < nfds; i++) {
		int fl = fcntl(fds[i].fd, F_GETFL), fdfl = fcntl(fds[i].fd, F_GETFD);
		if (fl != fds[i].fl) {
			printf("%s (fd %d): F_GETFL %#o, expected %#o\n", fds[i].name, fds[i].fd, fl,
			       fds[i].fl);
			bad++;
		}
		if (fdfl != fds[i].fd_flags) {
			printf("%s (fd %d): F_GETFD %#o, expected %#o\n", fds[i].name, fds[i].fd, fdfl,
			       fds[i].fd_flags);
			bad++;
		}
	}
	if (bad)
		fail("%d fd flag(s) changed", bad);
	pass();
}
