/*
 * tree_shared_fd: open file descriptions shared between processes.
 *
 * Before forking, the root opens
 *   fd1  shared.dat (O_RDWR), writes 100 bytes: offset 100
 *   fd2  append.dat (O_WRONLY), writes "R0"
 * and forks C. Then the root sets O_APPEND on fd2 with F_SETFL and C checks
 * it sees the flag (status flags live in the shared description); C sets
 * FD_CLOEXEC on its fd1 (a per-descriptor flag: only C's copy has it).
 *
 * After the go: both check offset 100, access modes and flags; C lseek()s
 * fd1 to 1000 and writes 50 bytes, appends "child" to fd2 and exits; the
 * root must then see fd1's offset at 1050 (one shared offset, not two
 * copies) and the 50 bytes, appends "root" and append.dat must read
 * "R0childroot".
 */
#include "tree.h"

#include <sys/wait.h>

#define FIRST_LEN 100
#define CHILD_OFF 1000
#define CHILD_LEN 50

static int fd1, fd2;

static off_t offset(int fd)
{
	off_t o = lseek(fd, 0, SEEK_CUR);

	if (o < 0)
		pfail("lseek(%d, 0, SEEK_CUR)", fd);
	return o;
}

/* Access mode, status flags and FD_CLOEXEC of both fds. */
static void check_flags(const char *who, int fd1_cloexec)
{
	int fl1 = fcntl(fd1, F_GETFL), fl2 = fcntl(fd2, F_GETFL);
	int fd1fl = fcntl(fd1, F_GETFD), fd2fl = fcntl(fd2, F_GETFD);

	if (fl1 < 0 || fl2 < 0 || fd1fl < 0 || fd2fl < 0)
		pfail("%s: fcntl", who);
	if ((fl1 & O_ACCMODE) != O_RDWR || (fl1 & O_APPEND))
		fail("%s: fd1 flags %#o, expected O_RDWR without O_APPEND", who, fl1);
	if ((fl2 & O_ACCMODE) != O_WRONLY || !(fl2 & O_APPEND))
		fail("%s: fd2 flags %#o, expected O_WRONLY|O_APPEND (set by the root after the fork)",
		     who, fl2);
	if (!!(fd1fl & FD_CLOEXEC) != fd1_cloexec)
		fail("%s: fd1 FD_CLOEXEC is %d, expected %d (per-descriptor flag)", who,
		     !!(fd1fl & FD_CLOEXEC), fd1_cloexec);
	if (fd2fl & FD_CLOEXEC)
		fail("%s: fd2 has FD_CLOEXEC", who);
}

static void __attribute__((noreturn)) child(pid_t root, int go_fd, int ready_fd)
{
	pid_t pid = getpid();
	uint8_t buf[CHILD_LEN];
	char c;

	if (read(go_fd, &c, 1) != 1)
		pfail("C: read the go-ahead");
	close(go_fd);
	if (fcntl(fd1, F_SETFD, FD_CLOEXEC))
		pfail("C: F_SETFD");
	check_flags("C before the dump", 1);
	if (offset(fd1) != FIRST_LEN)
		fail("C: fd1 offset %ld before the dump, expected %d", (long)offset(fd1), FIRST_LEN);
	ready_send(ready_fd, "C");
	close(ready_fd);

	test_waitsig();

	if (getpid() != pid || getppid() != root)
		fail("C: getpid() %d getppid() %d, expected %d/%d", getpid(), getppid(), pid, root);
	check_flags("C after the go", 1);
	if (offset(fd1) != FIRST_LEN)
		fail("C: fd1 offset %ld after the go, expected %d", (long)offset(fd1), FIRST_LEN);
	if (lseek(fd1, CHILD_OFF, SEEK_SET) != CHILD_OFF)
		pfail("C: lseek(fd1, %d)", CHILD_OFF);
	fill_pattern(buf, CHILD_LEN, 2, CHILD_OFF);
	if (write(fd1, buf, CHILD_LEN) != CHILD_LEN)
		pfail("C: write fd1");
	if (write(fd2, "child", 5) != 5)
		pfail("C: write fd2");
	exit(0);
}

int main(int argc, char **argv)
{
	uint8_t buf[FIRST_LEN + CHILD_LEN];
	int go[2], rdy[2], fl;
	char text[64];
	struct stat st;
	pid_t c, me;
	long bad;

	test_init(argc, argv);
	me = getpid();
	fd1 = open("shared.dat", O_RDWR | O_CREAT | O_TRUNC, 0644);
	fd2 = open("append.dat", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd1 < 0 || fd2 < 0)
		pfail("open");
	fill_pattern(buf, FIRST_LEN, 1, 0);
	if (write(fd1, buf, FIRST_LEN) != FIRST_LEN)
		pfail("write fd1");
	if (write(fd2, "R0", 2) != 2)
		pfail("write fd2");
	if (pipe(go) || pipe(rdy))
		pfail("pipe");

	c = xfork();
	if (c == 0) {
		close(go[1]);
		close(rdy[0]);
		child(me, go[0], rdy[1]);
	}
	close(go[0]);
	close(rdy[1]);
	fl = fcntl(fd2, F_GETFL);
	if (fl < 0 || fcntl(fd2, F_SETFL, fl | O_APPEND))
		pfail("F_SETFL O_APPEND on fd2");
	if (write(go[1], "g", 1) != 1)
		pfail("write the go-ahead");
	close(go[1]);
	ready_collect(rdy[0], 1);
	close(rdy[0]);
	check_flags("root before the dump", 0);
	if (offset(fd1) != FIRST_LEN)
		fail("root: fd1 offset %ld before the dump", (long)offset(fd1));

	test_daemon();
	test_waitsig();

	check_flags("root after the go", 0);
	if (offset(fd1) != FIRST_LEN)
		fail("root: fd1 offset %ld after the go, expected %d", (long)offset(fd1), FIRST_LEN);
	if (kill(c, SIGTERM))
		pfail("kill(C, SIGTERM)");
	expect_exit(c, "C", 0);

	if (offset(fd1) != CHILD_OFF + CHILD_LEN)
		fail("root: fd1 offset is %ld after C moved the shared offset to %d: the two fds "
		     "are not one open file description", (long)offset(fd1), CHILD_OFF + CHILD_LEN);
	if (pread(fd1, buf, FIRST_LEN, 0) != FIRST_LEN)
		pfail("pread fd1");
	if ((bad = check_pattern(buf, FIRST_LEN, 1, 0)) >= 0)
		fail("shared.dat byte %ld differs", bad);
	if (pread(fd1, buf, CHILD_LEN, CHILD_OFF) != CHILD_LEN)
		pfail("pread fd1 at %d", CHILD_OFF);
	if ((bad = check_pattern(buf, CHILD_LEN, 2, CHILD_OFF)) >= 0)
		fail("shared.dat byte %ld (written by C) differs", CHILD_OFF + bad);
	if (write(fd2, "root", 4) != 4)
		pfail("write fd2");
	if (fstat(fd2, &st))
		pfail("fstat fd2");
	if (st.st_size != 11)
		fail("append.dat has %ld bytes, expected 11", (long)st.st_size);
	memset(text, 0, sizeof(text));
	{
		int r = open("append.dat", O_RDONLY);

		if (r < 0 || read(r, text, sizeof(text) - 1) != 11)
			pfail("read append.dat");
		close(r);
	}
	if (strcmp(text, "R0childroot"))
		fail("append.dat reads \"%s\", expected \"R0childroot\"", text);
	expect_no_children();
	pass();
}
