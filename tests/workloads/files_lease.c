/*
 * files_lease: leases (F_SETLEASE).
 *
 * Holds a read lease on "rd" and a write lease on "wr" (files it created
 * and owns), and counts SIGIO, the signal of a lease break. After the
 * restore: both leases are back (F_GETLEASE, and the fdinfo "lock:" lines
 * as before the dump), no break happened (no SIGIO: the dump must not
 * have opened the files), the file owner is still this process, and the
 * leases still work: a helper's non-blocking open of "wr" fails with
 * EWOULDBLOCK and starts a break, which this process sees as SIGIO.
 *
 * --expect-break: for the refusal test, another process opens "wr" for
 * writing while the workload runs, so its lease is being broken; the dump
 * must refuse, and the workload checks that it got that one SIGIO and that
 * its read lease is untouched.
 */
#include "zdtm.h"

#include <poll.h>
#include <sys/wait.h>

static volatile sig_atomic_t sigio;

static void on_sigio(int sig)
{
	(void)sig;
	sigio++;
}

static int make(const char *name)
{
	int fd = open(name, O_RDWR | O_CREAT | O_EXCL, 0644);

	if (fd < 0)
		pfail("create %s", name);
	if (write(fd, name, strlen(name)) != (ssize_t)strlen(name))
		pfail("write %s", name);
	close(fd);
	fd = open(name, O_RDONLY);
	if (fd < 0)
		pfail("open %s", name);
	return fd;
}

static void lease_lines(int fd, char *out, size_t size)
{
	char path[64], buf[4096], *p;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	read_file(path, buf, sizeof(buf));
	out[0] = 0;
	for (p = buf; (p = strstr(p, "lock:\t"));) {
		char *eol = strchrnul(p, '\n');

		if (strlen(out) + (eol - p) + 2 > size)
			fail("lock lines do not fit");
		strncat(out, p, eol - p);
		strcat(out, "\n");
		p = eol;
	}
}

static void expect_lease(int fd, const char *name, int want)
{
	int l = fcntl(fd, F_GETLEASE);

	if (l != want)
		fail("%s: F_GETLEASE gives %d, expected %d", name, l, want);
}

int main(int argc, char **argv)
{
	char rd_before[512], wr_before[512], now[512];
	struct sigaction sa = { .sa_handler = on_sigio };
	int expect_break, rd, wr;
	pid_t h;

	test_init(argc, argv);
	expect_break = test_flag("--expect-break");
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGIO, &sa, NULL))
		pfail("sigaction(SIGIO)");
	rd = make("rd");
	wr = make("wr");
	if (fcntl(rd, F_SETLEASE, F_RDLCK))
		pfail("F_SETLEASE rd F_RDLCK");
	if (fcntl(wr, F_SETLEASE, F_WRLCK))
		pfail("F_SETLEASE wr F_WRLCK");
	lease_lines(rd, rd_before, sizeof(rd_before));
	lease_lines(wr, wr_before, sizeof(wr_before));
	test_msg("leases:\n%s%s", rd_before, wr_before);
	if (!strstr(rd_before, "LEASE  ACTIVE    READ") || !strstr(wr_before, "LEASE  ACTIVE    WRITE"))
		fail("unexpected lease lines:\n%s%s", rd_before, wr_before);
	test_daemon();
	test_waitsig();

	lease_lines(rd, now, sizeof(now));
	if (strcmp(now, rd_before))
		fail("rd: the lease differs.\nbefore:\n%safter:\n%s", rd_before, now);
	expect_lease(rd, "rd", F_RDLCK);
	if (expect_break) {
		if (sigio != 1)
			fail("%d SIGIO, expected the one of the break", (int)sigio);
		pass();
	}
	lease_lines(wr, now, sizeof(now));
	if (strcmp(now, wr_before))
		fail("wr: the lease differs.\nbefore:\n%safter:\n%s", wr_before, now);
	expect_lease(wr, "wr", F_WRLCK);
	if (sigio)
		fail("%d lease breaks (SIGIO) since the start", (int)sigio);
	if (fcntl(wr, F_GETOWN) != getpid() || fcntl(rd, F_GETOWN) != getpid())
		fail("file owners %d and %d, expected %d", fcntl(rd, F_GETOWN),
		     fcntl(wr, F_GETOWN), getpid());
	fflush(NULL);
	h = fork();
	if (h < 0)
		pfail("fork");
	if (h == 0) {
		int fd = open("wr", O_RDONLY | O_NONBLOCK);

		if (fd >= 0 || errno != EWOULDBLOCK)
			fail("helper: open of leased wr gave %d (%s), expected EWOULDBLOCK", fd,
			     strerror(errno));
		exit(0);
	}
	{
		int st = 0;
		pid_t r;

		/* SIGIO (the break the helper started) may interrupt the wait. */
		while ((r = waitpid(h, &st, 0)) < 0 && errno == EINTR)
			;
		if (r != h || !WIFEXITED(st) || WEXITSTATUS(st))
			fail("the helper failed (status %#x)", st);
	}
	for (int i = 0; i < 5000 && !sigio; i++)
		usleep(1000);
	if (sigio != 1)
		fail("%d SIGIO after the helper's open, expected 1", (int)sigio);
	if (fcntl(wr, F_SETLEASE, F_UNLCK) || fcntl(rd, F_SETLEASE, F_UNLCK))
		pfail("F_SETLEASE F_UNLCK");
	pass();
}
