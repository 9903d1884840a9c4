/*
 * inv_busy: a busy, quiet tree for comparing cairn's two inventory
 * collectors (BPF iterators and /proc). Nothing changes once it is ready:
 * every thread sleeps.
 *
 * root: 4 extra threads; 300 fds (regular files with various flags and
 *   offsets, /dev/null, a directory, an O_PATH fd, a named FIFO, pipes, a
 *   unix socketpair, TCP and UDP sockets on 127.0.0.1, eventfd, epoll,
 *   signalfd, timerfd, inotify, a memfd, a deleted file); 300 VMAs
 *   (anonymous ones with alternating protections, private and shared maps
 *   of a file, a map of the memfd, a map of a file with a newline and a
 *   space in its name, shared anonymous memory).
 * children: A (3 threads, a pipe to the root, a shared map), B (setsid) ->
 *   C (own process group; memfd and a deleted file), Z (a zombie that
 *   exited with 7), S (stopped by SIGSTOP).
 *
 * After the go the root kills and reaps its children (C dies with B, by
 * PR_SET_PDEATHSIG) and passes.
 */
#include "zdtm.h"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#define NFDS 300
#define NVMAS 300

static void *sleeper(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

static void threads(int n)
{
	sigset_t old;

	test_term_block(&old);
	for (int i = 0; i < n; i++) {
		pthread_t t;

		if (pthread_create(&t, NULL, sleeper, NULL))
			fail("pthread_create");
	}
	test_term_unblock(&old);
}

static int xopen(const char *path, int flags, int mode)
{
	int fd = open(path, flags, mode);

	if (fd < 0)
		pfail("open %s", path);
	return fd;
}

static void write_file(const char *path, size_t len)
{
	int fd = xopen(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	char buf[4096];

	memset(buf, 'x', sizeof(buf));
	for (size_t done = 0; done < len; done += sizeof(buf))
		if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
			pfail("write %s", path);
	close(fd);
}

static void *xmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	void *p = mmap(addr, len, prot, flags, fd, off);

	if (p == MAP_FAILED)
		pfail("mmap");
	return p;
}

/* Children die with their parent, even if the root is SIGKILLed. */
static void die_with_parent(void)
{
	if (prctl(PR_SET_PDEATHSIG, SIGKILL))
		pfail("PR_SET_PDEATHSIG");
}

static void sleep_forever(void)
{
	for (;;)
		pause();
}

static void deleted_and_memfd(const char *tag)
{
	char path[64];
	int mfd, fd;

	snprintf(path, sizeof(path), "deleted-%s", tag);
	fd = xopen(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (write(fd, "gone", 4) != 4)
		pfail("write");
	if (unlink(path))
		pfail("unlink");
	mfd = memfd_create(tag, 0);
	if (mfd < 0)
		pfail("memfd_create");
	if (ftruncate(mfd, 8192))
		pfail("ftruncate memfd");
	xmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
}

int main(int argc, char **argv)
{
	int ready[2], p2a[2], sp[2], fds = 0;
	pid_t a, b, z, s;
	char name[64];

	test_init(argc, argv);
	if (pipe(ready))
		pfail("pipe");
	if (pipe(p2a))
		pfail("pipe");
	write_file("data", 64 * 4096);
	write_file("odd\nname file", 4 * 4096);
	if (mkfifo("fifo", 0600))
		pfail("mkfifo");
	fflush(NULL);

	/* A: threads, one end of a pipe from the root, a shared file map. */
	a = fork();
	if (a < 0)
		pfail("fork");
	if (a == 0) {
		int fd;

		die_with_parent();
		close(p2a[1]);
		fd = xopen("data", O_RDWR, 0);
		xmap(NULL, 8 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 4096);
		threads(3);
		if (write(ready[1], "a", 1) != 1)
			pfail("ready");
		sleep_forever();
	}
	close(p2a[0]);

	/* B: its own session; C: its own process group. */
	b = fork();
	if (b < 0)
		pfail("fork");
	if (b == 0) {
		pid_t c;

		die_with_parent();
		if (setsid() < 0)
			pfail("setsid");
		c = fork();
		if (c < 0)
			pfail("fork");
		if (c == 0) {
			die_with_parent();
			if (setpgid(0, 0))
				pfail("setpgid");
			deleted_and_memfd("c");
			if (write(ready[1], "c", 1) != 1)
				pfail("ready");
			sleep_forever();
		}
		if (write(ready[1], "b", 1) != 1)
			pfail("ready");
		sleep_forever();
	}

	/* Z: a zombie. */
	z = fork();
	if (z < 0)
		pfail("fork");
	if (z == 0)
		_exit(7);

	/* S: stopped. */
	s = fork();
	if (s < 0)
		pfail("fork");
	if (s == 0) {
		die_with_parent();
		raise(SIGSTOP);
		sleep_forever();
	}

	/* The root's own fds. */
	{
		int fd, efd, ep, sfd, tfd, ifd, un[2], tcp, udp;
		struct sockaddr_in sin = { .sin_family = AF_INET };
		struct epoll_event ev = { .events = EPOLLIN };
		struct itimerspec its = { .it_value = { 3600, 0 } };
		sigset_t mask;

		fd = xopen("data", O_RDWR, 0);
		if (lseek(fd, 12345, SEEK_SET) != 12345)
			pfail("lseek");
		xopen("data", O_RDONLY | O_CLOEXEC, 0);
		xopen("data", O_WRONLY | O_APPEND, 0);
		xopen("/dev/null", O_RDWR | O_NONBLOCK, 0);
		xopen(".", O_RDONLY | O_DIRECTORY, 0);
		xopen("data", O_PATH, 0);
		xopen("fifo", O_RDWR | O_NONBLOCK, 0);
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, un))
			pfail("socketpair");
		if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sp))
			pfail("socketpair");
		tcp = socket(AF_INET, SOCK_STREAM, 0);
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (tcp < 0 || bind(tcp, (struct sockaddr *)&sin, sizeof(sin)) || listen(tcp, 4))
			pfail("tcp socket");
		udp = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
		if (udp < 0 || bind(udp, (struct sockaddr *)&sin, sizeof(sin)))
			pfail("udp socket");
		efd = eventfd(3, EFD_NONBLOCK);
		ep = epoll_create1(EPOLL_CLOEXEC);
		if (efd < 0 || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev))
			pfail("eventfd/epoll");
		sigemptyset(&mask);
		sigaddset(&mask, SIGUSR1);
		sfd = signalfd(-1, &mask, SFD_NONBLOCK);
		tfd = timerfd_create(CLOCK_MONOTONIC, 0);
		if (sfd < 0 || tfd < 0 || timerfd_settime(tfd, 0, &its, NULL))
			pfail("signalfd/timerfd");
		ifd = inotify_init1(IN_NONBLOCK);
		if (ifd < 0 || inotify_add_watch(ifd, ".", IN_CREATE) < 0)
			pfail("inotify");
		deleted_and_memfd("root");
		for (int i = 0; i < 4; i++) {
			int p[2];

			if (pipe2(p, i % 2 ? O_CLOEXEC : 0))
				pfail("pipe2");
		}
		while ((fd = open(fds % 3 ? "/dev/null" : "data", O_RDONLY)) >= 0 && fd < NFDS) {
			if (fds % 5 == 0 && lseek(fd, fds, SEEK_SET) < 0)
				pfail("lseek");
			fds++;
		}
		if (fd < 0)
			pfail("open fd %d", fds);
	}

	/* The root's VMAs: alternating protections keep them apart. */
	{
		char *base = xmap(NULL, (NVMAS + 1) * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		int fd = xopen("data", O_RDWR, 0);
		int odd = xopen("odd\nname file", O_RDONLY, 0);

		for (int i = 0; i < NVMAS; i++) {
			int prot = i % 2 ? PROT_READ : PROT_READ | PROT_WRITE;

			if (i % 10 == 3)
				xmap(base + i * 4096, 4096, prot, MAP_PRIVATE | MAP_FIXED, fd, (i % 64) * 4096);
			else if (i % 10 == 7)
				xmap(base + i * 4096, 4096, prot, MAP_SHARED | MAP_FIXED, fd, (i % 64) * 4096);
			else
				xmap(base + i * 4096, 4096, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
			if (prot & PROT_WRITE)
				base[i * 4096] = 1;
		}
		xmap(NULL, 4 * 4096, PROT_READ, MAP_PRIVATE, odd, 0);
		xmap(NULL, 16 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (madvise(base + NVMAS * 4096, 4096, MADV_DONTFORK))
			pfail("madvise");
	}
	threads(4);

	/* A, B, C got ready; S is stopped; Z is a zombie. */
	close(ready[1]);
	ready[1] = -1;
	for (int got = 0; got < 3; got++) {
		char c;

		if (read(ready[0], &c, 1) != 1)
			fail("a child died before it was ready");
	}
	for (;;) {
		snprintf(name, sizeof(name), "/proc/%d/stat", s);
		pid_t pp;
		char st = 0, buf[512], *q;

		read_file(name, buf, sizeof(buf));
		q = strrchr(buf, ')');
		if (q && sscanf(q + 2, "%c %d", &st, &pp) == 2 && st == 'T')
			break;
		usleep(1000);
	}
	for (;;) {
		siginfo_t si = { 0 };

		if (waitid(P_PID, z, &si, WEXITED | WNOHANG | WNOWAIT))
			pfail("waitid");
		if (si.si_pid == z)
			break;
		usleep(1000);
	}
	test_msg("ready: %d extra fds", fds);
	test_daemon();
	test_waitsig();

	{
		pid_t kids[] = { a, b, s, z };

		for (int i = 0; i < 4; i++) {
			int st;

			if (kids[i] != z && kill(kids[i], SIGKILL))
				pfail("kill %d", kids[i]);
			if (waitpid(kids[i], &st, 0) != kids[i])
				pfail("waitpid %d", kids[i]);
		}
	}
	pass();
}
