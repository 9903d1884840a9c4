/* fd_eventfd: counters of a plain eventfd (above 2^32) and of a
 * non-blocking semaphore eventfd survive; both still work as eventfds. */
#include "zdtm.h"
#include <sys/eventfd.h>

int main(int argc, char **argv)
{
	uint64_t v;

	test_init(argc, argv);
	int a = eventfd(0, EFD_CLOEXEC);
	int s = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK);
	if (a < 0 || s < 0)
		pfail("eventfd");
	v = 0x100000005ULL;
	if (write(a, &v, 8) != 8)
		pfail("write");
	test_daemon();
	test_waitsig();
	if (read(a, &v, 8) != 8 || v != 0x100000005ULL)
		fail("eventfd counter is %#llx, expected 0x100000005", (unsigned long long)v);
	for (int i = 0; i < 3; i++)
		if (read(s, &v, 8) != 8 || v != 1)
			fail("semaphore read %d gave %llu", i, (unsigned long long)v);
	if (read(s, &v, 8) != -1 || errno != EAGAIN)
		fail("semaphore eventfd is not empty and non-blocking after 3 reads");
	if (!(fcntl(a, F_GETFD) & FD_CLOEXEC) || (fcntl(s, F_GETFD) & FD_CLOEXEC))
		fail("close-on-exec flags changed");
	v = 7;
	if (write(a, &v, 8) != 8 || read(a, &v, 8) != 8 || v != 7)
		fail("eventfd does not work after restore");
	pass();
}
