/*
 * tree_pipe: pipes between two processes, with unread data at dump time.
 *
 *   p1: root -> C, holding 5000 bytes the root wrote before readiness
 *   p2: C -> root, holding 3000 bytes C wrote before readiness
 * Each process closed the ends it does not use. After the go:
 *   C reads exactly the 5000 bytes (FIONREAD first) and finds nothing more,
 *     then writes "ok" on p2;
 *   the root reads the 3000 bytes and "ok", writes "ping"; C answers "pong";
 *   the root closes p1: C must see EOF (no stray write end survived), closes
 *     p2 and exits; the root must see EOF on p2.
 */
#include "tree.h"

#include <sys/wait.h>

#define DOWN_LEN 5000
#define UP_LEN 3000

static void expect_eof(int fd, const char *who, const char *what)
{
	char c;

	if (read_full(fd, &c, 1, who, what) != 0)
		fail("%s: read data (0x%02x) where %s was expected", who, (uint8_t)c, what);
}

static void __attribute__((noreturn)) child(pid_t root, int rfd, int wfd)
{
	static uint8_t buf[DOWN_LEN + 16];
	struct pollfd p = { .fd = rfd, .events = POLLIN };
	pid_t pid = getpid();
	long bad;
	int n;

	fill_pattern(buf, UP_LEN, 12, 0);
	if (write(wfd, buf, UP_LEN) != UP_LEN)
		pfail("C: write %d bytes to p2", UP_LEN);
	test_waitsig();

	if (getpid() != pid || getppid() != root)
		fail("C: getpid() %d getppid() %d, expected %d/%d", getpid(), getppid(), pid, root);
	if ((n = queued(rfd, "p1 (C)")) != DOWN_LEN)
		fail("C: p1 holds %d bytes after the go, expected %d", n, DOWN_LEN);
	if (read_full(rfd, buf, DOWN_LEN, "C", "p1 data") != DOWN_LEN)
		fail("C: EOF on p1 before %d bytes", DOWN_LEN);
	if ((bad = check_pattern(buf, DOWN_LEN, 11, 0)) >= 0)
		fail("C: p1 byte %ld differs", bad);
	if (poll(&p, 1, 0) != 0)
		fail("C: p1 is readable (revents %#x) after the %d bytes: more data than written",
		     p.revents, DOWN_LEN);
	if (write(wfd, "ok", 2) != 2)
		pfail("C: write ok");
	if (read_full(rfd, buf, 4, "C", "ping") != 4 || memcmp(buf, "ping", 4))
		fail("C: expected \"ping\" on p1, got \"%.4s\"", (char *)buf);
	if (write(wfd, "pong", 4) != 4)
		pfail("C: write pong");
	expect_eof(rfd, "C", "EOF on p1 after the root closed its write end");
	close(wfd);
	exit(0);
}

int main(int argc, char **argv)
{
	static uint8_t buf[DOWN_LEN + 16];
	int p1[2], p2[2], n;
	pid_t c, me;
	long bad;

	test_init(argc, argv);
	me = getpid();
	if (pipe(p1) || pipe(p2))
		pfail("pipe");
	c = xfork();
	if (c == 0) {
		close(p1[1]);
		close(p2[0]);
		child(me, p1[0], p2[1]);
	}
	close(p1[0]);
	close(p2[1]);
	fill_pattern(buf, DOWN_LEN, 11, 0);
	if (write(p1[1], buf, DOWN_LEN) != DOWN_LEN)
		pfail("write %d bytes to p1", DOWN_LEN);
	/* Ready once C's 3000 bytes are in p2. */
	for (int i = 0; (n = queued(p2[0], "p2")) < UP_LEN; i++) {
		if (i > 10000)
			fail("C did not write its %d bytes within 10 s (p2 holds %d)", UP_LEN, n);
		usleep(1000);
	}
	if ((n = queued(p1[1], "p1")) != DOWN_LEN)
		fail("p1 holds %d bytes before the dump, expected %d", n, DOWN_LEN);

	test_daemon();
	test_waitsig();

	if ((n = queued(p2[0], "p2")) != UP_LEN)
		fail("p2 holds %d bytes after the go, expected %d", n, UP_LEN);
	if (kill(c, SIGTERM))
		pfail("kill(C, SIGTERM)");
	if (read_full(p2[0], buf, UP_LEN, "root", "p2 data") != UP_LEN)
		fail("root: EOF on p2 before %d bytes", UP_LEN);
	if ((bad = check_pattern(buf, UP_LEN, 12, 0)) >= 0)
		fail("root: p2 byte %ld differs", bad);
	if (read_full(p2[0], buf, 2, "root", "ok") != 2 || memcmp(buf, "ok", 2))
		fail("root: expected \"ok\" on p2, got \"%.2s\"", (char *)buf);
	if (write(p1[1], "ping", 4) != 4)
		pfail("root: write ping");
	if (read_full(p2[0], buf, 4, "root", "pong") != 4 || memcmp(buf, "pong", 4))
		fail("root: expected \"pong\" on p2, got \"%.4s\"", (char *)buf);
	close(p1[1]);
	expect_eof(p2[0], "root", "EOF on p2 after C closed its write end");
	expect_exit(c, "C", 0);
	expect_no_children();
	pass();
}
