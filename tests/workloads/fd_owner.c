/* fd_owner: who gets SIGIO, and which signal (F_SETOWN_EX, F_SETSIG), on
 * O_ASYNC descriptions; checked after the restore by the signals arriving.
 *   A: pipe, owner thread T (F_OWNER_TID), signal SIGRTMIN+4: T receives it
 *      with si_fd = A's read fd and si_code POLL_IN.
 *   S: socketpair, owner the process group (F_SETOWN -pgrp), SIGIO: the
 *      main thread receives SIGIO.
 *   B: pipe whose owner (child C, uid 2000) was set with uid/euid 1000,
 *      signal SIGRTMIN+2: the kernel refuses to send it (sigio_perm), as
 *      before the dump; F_GETOWNER_UIDS still says 1000/1000.
 *   D: pipe, owner C set as root, SIGRTMIN+3: C receives it.
 * Every F_GETOWN_EX and F_GETSIG must read back as set.
 * --outside: only a pipe (fd 3) whose owner is init, outside the tree,
 * which the dump must refuse. */
#include "zdtm.h"
#include <pthread.h>
#include <sys/socket.h>
#include <sys/wait.h>

#ifndef F_GETOWNER_UIDS
#define F_GETOWNER_UIDS 17
#endif

static int a[2], ctl_t[2];
static pid_t t_tid;
static int t_result = -1;

static void *thread_t(void *arg)
{
	char c;
	siginfo_t si;
	struct timespec ts = {5, 0};
	sigset_t s;

	(void)arg;
	t_tid = (pid_t)syscall(SYS_gettid);
	while (read(ctl_t[0], &c, 1) != 1)
		;
	sigemptyset(&s);
	sigaddset(&s, SIGRTMIN + 4);
	if (sigtimedwait(&s, &si, &ts) != SIGRTMIN + 4)
		t_result = 1;
	else if (si.si_fd != a[0] || si.si_code != POLL_IN)
		t_result = 2;
	else
		t_result = 0;
	return NULL;
}

static void check_owner(const char *what, int fd, int type, pid_t pid, int sig)
{
	struct f_owner_ex o;

	if (fcntl(fd, F_GETOWN_EX, &o))
		pfail("F_GETOWN_EX %s", what);
	if (o.type != type || o.pid != pid)
		fail("%s: owner type %d id %d, expected type %d id %d", what, o.type, o.pid, type,
		     pid);
	if (fcntl(fd, F_GETSIG) != sig)
		fail("%s: F_GETSIG %d, expected %d", what, fcntl(fd, F_GETSIG), sig);
}

static void set_async(int fd, int type, pid_t pid, int sig)
{
	struct f_owner_ex o = {.type = type, .pid = pid};

	if (fcntl(fd, F_SETOWN_EX, &o) || fcntl(fd, F_SETSIG, sig) ||
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC))
		pfail("owner of fd %d", fd);
}

int main(int argc, char **argv)
{
	int s[2], b[2], d[2], ctl_c[2];
	sigset_t mask;
	pthread_t th;

	test_init(argc, argv);
	if (test_flag("--outside")) {
		if (pipe(s) || s[0] != 3 || fcntl(s[0], F_SETOWN, 1))
			fail("pipe owned by init");
		test_daemon();
		test_waitsig();
		pass();
	}
	sigemptyset(&mask);
	sigaddset(&mask, SIGIO);
	sigaddset(&mask, SIGRTMIN + 2);
	sigaddset(&mask, SIGRTMIN + 3);
	sigaddset(&mask, SIGRTMIN + 4);
	if (sigprocmask(SIG_BLOCK, &mask, NULL))
		pfail("sigprocmask");
	if (pipe(a) || pipe(b) || pipe(d) || pipe(ctl_t) || pipe(ctl_c) ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, s))
		pfail("pipe");
	if (getpgrp() != getpid())
		fail("not a process group leader");

	pid_t c = fork();
	if (c < 0)
		pfail("fork");
	if (c == 0) {
		char x;
		sigset_t pend;

		if (setresuid(2000, 2000, 2000))
			pfail("setresuid child");
		while (read(ctl_c[0], &x, 1) != 1)
			;
		sigpending(&pend);
		if (!sigismember(&pend, SIGRTMIN + 3))
			_exit(3); /* D's signal, set as root, did not arrive */
		if (sigismember(&pend, SIGRTMIN + 2))
			_exit(2); /* B's signal arrived though its setter may not signal us */
		_exit(0);
	}

	if (pthread_create(&th, NULL, thread_t, NULL))
		fail("pthread_create");
	while (!__atomic_load_n(&t_tid, __ATOMIC_SEQ_CST))
		usleep(1000);

	set_async(a[0], F_OWNER_TID, t_tid, SIGRTMIN + 4);
	set_async(s[0], F_OWNER_PGRP, getpgrp(), 0);
	set_async(d[0], F_OWNER_PID, c, SIGRTMIN + 3);
	/* B's owner set with uid and euid 1000 (saved uid 0 to come back). */
	if (setresuid(1000, 1000, 0))
		pfail("setresuid 1000");
	set_async(b[0], F_OWNER_PID, c, SIGRTMIN + 2);
	if (setresuid(0, 0, 0))
		pfail("setresuid 0");

	test_daemon();
	test_waitsig();

	check_owner("A", a[0], F_OWNER_TID, t_tid, SIGRTMIN + 4);
	check_owner("S", s[0], F_OWNER_PGRP, getpgrp(), 0);
	check_owner("B", b[0], F_OWNER_PID, c, SIGRTMIN + 2);
	check_owner("D", d[0], F_OWNER_PID, c, SIGRTMIN + 3);
	uid_t u[2];
	if (fcntl(b[0], F_GETOWNER_UIDS, u))
		pfail("F_GETOWNER_UIDS");
	if (u[0] != 1000 || u[1] != 1000)
		fail("B's owner was set by uid %u euid %u, expected 1000/1000", u[0], u[1]);

	/* Data arrives: the signals go out now. */
	if (write(a[1], "x", 1) != 1 || write(s[1], "x", 1) != 1 || write(b[1], "x", 1) != 1 ||
	    write(d[1], "x", 1) != 1)
		pfail("write");
	if (write(ctl_t[1], "g", 1) != 1 || write(ctl_c[1], "g", 1) != 1)
		pfail("write ctl");
	pthread_join(th, NULL);
	if (t_result)
		fail("thread T: SIGRTMIN+4 for pipe A %s",
		     t_result == 1 ? "did not arrive" : "had the wrong si_fd or si_code");

	siginfo_t si;
	struct timespec ts = {5, 0};
	sigset_t io;
	sigemptyset(&io);
	sigaddset(&io, SIGIO);
	if (sigtimedwait(&io, &si, &ts) != SIGIO)
		fail("SIGIO for socket S did not arrive at the process group");

	int st;
	if (waitpid(c, &st, 0) != c)
		pfail("waitpid");
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail("child C: %s", WIFEXITED(st) && WEXITSTATUS(st) == 2
					    ? "got B's signal, which its setter's uid may not send"
				    : WIFEXITED(st) && WEXITSTATUS(st) == 3 ? "D's signal did not arrive"
									     : "died");
	pass();
}
