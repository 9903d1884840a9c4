/*
 * files_stdio: stdout and stderr are one open file description on the
 * harness's log file (not O_APPEND). Lines are written to both before the
 * dump and after restore; the offset must be preserved and still shared,
 * so the log ends up holding, in order:
 *   files_stdio: before the dump (stdout)
 *   files_stdio: before the dump (stderr)
 *   files_stdio: after restore (stdout)
 *   files_stdio: after restore (stderr)
 *   PASS
 * (The Rust test checks the log is exactly that.)
 */
#include "zdtm.h"

static off_t off(int fd)
{
	off_t o = lseek(fd, 0, SEEK_CUR);

	if (o < 0)
		pfail("lseek fd %d", fd);
	return o;
}

static void out(int fd, const char *line)
{
	off_t o1 = off(1);
	size_t n = strlen(line);

	if (fd == 1) {
		fputs(line, stdout);
		fflush(stdout);
	} else if (write(2, line, n) != (ssize_t)n) {
		pfail("write stderr");
	}
	if (off(1) != o1 + (off_t)n || off(2) != o1 + (off_t)n)
		fail("writing %zu bytes to fd %d moved the offsets of fd 1/2 from %lld to %lld/%lld",
		     n, fd, (long long)o1, (long long)off(1), (long long)off(2));
}

int main(int argc, char **argv)
{
	struct stat st1, st2, st;
	off_t saved;
	int fl1, fl2;

	test_init(argc, argv);
	if (fstat(1, &st1) || fstat(2, &st2))
		pfail("fstat");
	if (!S_ISREG(st1.st_mode) || st1.st_ino != st2.st_ino)
		fail("stdout/stderr are not the same regular file (harness problem)");
	fl1 = fcntl(1, F_GETFL) & ~O_LARGEFILE;
	fl2 = fcntl(2, F_GETFL) & ~O_LARGEFILE;
	if (fl1 & O_APPEND)
		fail("stdout is O_APPEND: the offset check would be meaningless (harness problem)");

	out(1, "files_stdio: before the dump (stdout)\n");
	out(2, "files_stdio: before the dump (stderr)\n");
	saved = off(1);

	test_daemon();
	test_waitsig();

	if (off(1) != saved || off(2) != saved)
		fail("stdout/stderr offsets %lld/%lld after restore, expected %lld",
		     (long long)off(1), (long long)off(2), (long long)saved);
	if ((fcntl(1, F_GETFL) & ~O_LARGEFILE) != fl1 || (fcntl(2, F_GETFL) & ~O_LARGEFILE) != fl2)
		fail("stdout/stderr F_GETFL changed");
	if (fstat(1, &st))
		pfail("fstat");
	if (st.st_ino != st1.st_ino || st.st_dev != st1.st_dev)
		fail("stdout is another file after restore");
	out(1, "files_stdio: after restore (stdout)\n");
	out(2, "files_stdio: after restore (stderr)\n");
	pass();
}
