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
 * --uid: the leases are taken by an unprivileged process: it drops to uid
 * and gid 1000 (no capabilities) first and creates the files as that
 * user. After the restore it is still uid 1000, /proc/locks lists both
 * leases under its pid, F_GETLEASE and the file owner are as before, and
 * the break's SIGIO reaches it (the file owner's credentials, which
 * F_SETLEASE records, must let the kernel signal it).
 *
 * --expect-break: for the refusal test, another process opens "wr" for
 * writing while the workload runs, so its lease is being broken; the dump
 * must refuse, and the workload checks that it got that one SIGIO and that
 * its read lease is untouched.
 */
#include "zdtm.h"

#include <grp.h>
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

/*
 * The /proc/locks lines of leases held by this process on the inode that
 * the fdinfo lock line `lock` names. Not fstat's st_dev:st_ino: /proc/locks
 * names the inode the lock is on, which on overlayfs is the overlay's
 * (fstat reports the real file's device, as the Debian guests' overlay root
 * on 6.1 does).
 */
static int proc_locks_leases(const char *lock)
{
	char buf[16384], want[96], devino[64], *p;
	int n = 0;

	if (sscanf(lock, "lock: %*d: %*s %*s %*s %*d %63s", devino) != 1)
		fail("no device and inode in the lock line %s", lock);
	read_file("/proc/locks", buf, sizeof(buf));
	snprintf(want, sizeof(want), " %d %s ", getpid(), devino);
	for (p = buf; *p;) {
		char *eol = strchrnul(p, '\n');
		char line[512];

		snprintf(line, sizeof(line), "%.*s ", (int)(eol - p), p);
		if (strstr(line, "LEASE") && strstr(line, want))
			n++;
		p = *eol ? eol + 1 : eol;
	}
	return n;
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
	int expect_break, as_user, rd, wr;
	pid_t h;

	test_init(argc, argv);
	expect_break = test_flag("--expect-break");
	as_user = test_flag("--uid");
	if (as_user && (setgroups(0, NULL) || setresgid(1000, 1000, 1000) ||
			setresuid(1000, 1000, 1000)))
		pfail("drop to uid 1000");
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
	if (proc_locks_leases(rd_before) != 1 || proc_locks_leases(wr_before) != 1)
		fail("/proc/locks lists %d and %d leases of pid %d on rd and wr, expected 1 each",
		     proc_locks_leases(rd_before), proc_locks_leases(wr_before), getpid());
	if (as_user && (getuid() != 1000 || geteuid() != 1000 || getgid() != 1000))
		fail("uid %d euid %d gid %d after the restore, expected 1000", getuid(), geteuid(),
		     getgid());
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
