/* fd_signalfd: a signalfd's mask survives, and a signal pending before
 * the dump is read from it after restore with its siginfo. */
#include "zdtm.h"
#include <sys/signalfd.h>

int main(int argc, char **argv)
{
	sigset_t m;
	struct signalfd_siginfo si;

	test_init(argc, argv);
	sigemptyset(&m);
	sigaddset(&m, SIGUSR1);
	sigaddset(&m, SIGUSR2);
	if (sigprocmask(SIG_BLOCK, &m, NULL))
		pfail("sigprocmask");
	int fd = signalfd(-1, &m, SFD_NONBLOCK);
	if (fd < 0)
		pfail("signalfd");
	union sigval sv = {.sival_int = 4242};
	if (sigqueue(getpid(), SIGUSR1, sv))
		pfail("sigqueue");
	test_daemon();
	test_waitsig();
	if (read(fd, &si, sizeof(si)) != sizeof(si))
		pfail("read signalfd");
	if (si.ssi_signo != SIGUSR1 || si.ssi_int != 4242)
		fail("signalfd gave signal %u value %d, expected SIGUSR1 4242", si.ssi_signo, si.ssi_int);
	if (read(fd, &si, sizeof(si)) != -1 || errno != EAGAIN)
		fail("signalfd has more signals or is blocking");
	raise(SIGUSR2);
	if (read(fd, &si, sizeof(si)) != sizeof(si) || si.ssi_signo != SIGUSR2)
		fail("SIGUSR2 is not in the signalfd's mask any more");
	pass();
}
