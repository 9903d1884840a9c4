/*
 * tree_fifo: named pipes (FIFOs) between two processes, with unread data.
 *
 *   fifo_a: the root reads (O_RDONLY|O_NONBLOCK), C writes (O_WRONLY);
 *           4000 bytes from C are queued at dump time.
 *   fifo_b: the root holds it O_RDWR and wrote 700 bytes into it; C reads
 *           it (O_RDONLY|O_NONBLOCK). The harness deletes fifo_b between
 *           dump and restore: cairn must recreate it (mode 0600).
 * After the go:
 *   both check their fds' access modes and O_NONBLOCK;
 *   C reads exactly the 700 bytes of fifo_b, writes "done" into fifo_a,
 *     checks that fifo_b is a FIFO again and exits;
 *   the root reads the 4000 bytes and "done" from fifo_a, then must see EOF
 *     on fifo_a once C is gone: no extra writer (such as one cairn used
 *     while restoring) may be left open.
 */
#include "tree.h"


#define A_LEN 4000
#define B_LEN 700

static void expect_flags(int fd, int want, const char *who, const char *what)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		pfail("%s: F_GETFL %s", who, what);
	fl &= O_ACCMODE | O_NONBLOCK;
	if (fl != want)
		fail("%s: %s has flags %#o, expected %#o", who, what, fl, want);
}

static void expect_fifo(const char *path, mode_t mode, const char *who)
{
	struct stat st;

	if (stat(path, &st))
		pfail("%s: stat %s", who, path);
	if (!S_ISFIFO(st.st_mode))
		fail("%s: %s is not a FIFO (mode %#o)", who, path, st.st_mode);
	if ((st.st_mode & 07777) != mode)
		fail("%s: %s has mode %#o, expected %#o", who, path, st.st_mode & 07777, mode);
}

static void __attribute__((noreturn)) child(int ready)
{
	static uint8_t buf[A_LEN];
	int wa, rb;
	long bad;

	wa = open("fifo_a", O_WRONLY);
	if (wa < 0)
		pfail("C: open fifo_a O_WRONLY");
	rb = open("fifo_b", O_RDONLY | O_NONBLOCK);
	if (rb < 0)
		pfail("C: open fifo_b");
	fill_pattern(buf, A_LEN, 21, 0);
	if (write(wa, buf, A_LEN) != A_LEN)
		pfail("C: write %d bytes to fifo_a", A_LEN);
	ready_send(ready, "C");
	close(ready);
	test_waitsig();

	expect_flags(wa, O_WRONLY, "C", "fifo_a");
	expect_flags(rb, O_RDONLY | O_NONBLOCK, "C", "fifo_b");
	if (queued(rb, "fifo_b") != B_LEN)
		fail("C: fifo_b holds %d bytes after the go, expected %d", queued(rb, "fifo_b"),
		     B_LEN);
	if (read_full(rb, buf, B_LEN, "C", "fifo data") != B_LEN)
		fail("C: EOF on fifo_b before %d bytes", B_LEN);
	if ((bad = check_pattern(buf, B_LEN, 22, 0)) >= 0)
		fail("C: fifo_b byte %ld differs", bad);
	if (queued(rb, "fifo_b") != 0)
		fail("C: fifo_b still holds %d bytes", queued(rb, "fifo_b"));
	expect_fifo("fifo_b", 0600, "C");
	if (write(wa, "done", 4) != 4)
		pfail("C: write done");
	exit(0);
}

int main(int argc, char **argv)
{
	static uint8_t buf[A_LEN];
	int ra, wb, rp[2], n;
	long bad;
	pid_t c;

	test_init(argc, argv);
	umask(022);
	if (mkfifo("fifo_a", 0640) || mkfifo("fifo_b", 0600))
		pfail("mkfifo");
	ra = open("fifo_a", O_RDONLY | O_NONBLOCK);
	if (ra < 0)
		pfail("open fifo_a");
	wb = open("fifo_b", O_RDWR);
	if (wb < 0)
		pfail("open fifo_b");
	if (pipe(rp))
		pfail("pipe");
	c = xfork();
	if (c == 0) {
		close(rp[0]);
		close(ra);
		close(wb);
		child(rp[1]);
	}
	close(rp[1]);
	fill_pattern(buf, B_LEN, 22, 0);
	if (write(wb, buf, B_LEN) != B_LEN)
		pfail("write %d bytes to fifo_b", B_LEN);
	ready_collect(rp[0], 1);
	close(rp[0]);
	for (int i = 0; (n = queued(ra, "fifo_a")) < A_LEN; i++) {
		if (i > 10000)
			fail("C did not write its %d bytes within 10 s (fifo_a holds %d)", A_LEN, n);
		usleep(1000);
	}

	test_daemon();
	test_waitsig();

	expect_flags(ra, O_RDONLY | O_NONBLOCK, "root", "fifo_a");
	expect_flags(wb, O_RDWR, "root", "fifo_b");
	expect_fifo("fifo_a", 0640, "root");
	if ((n = queued(ra, "fifo_a")) != A_LEN)
		fail("fifo_a holds %d bytes after the go, expected %d", n, A_LEN);
	if (kill(c, SIGTERM))
		pfail("kill(C, SIGTERM)");
	if (read_full(ra, buf, A_LEN, "root", "fifo data") != A_LEN)
		fail("root: EOF on fifo_a before %d bytes", A_LEN);
	if ((bad = check_pattern(buf, A_LEN, 21, 0)) >= 0)
		fail("root: fifo_a byte %ld differs", bad);
	if (read_full(ra, buf, 4, "root", "fifo data") != 4 || memcmp(buf, "done", 4))
		fail("root: expected \"done\" on fifo_a, got \"%.4s\"", (char *)buf);
	expect_exit(c, "C", 0);
	if ((n = read_full(ra, buf, 1, "root", "fifo data")) != 0)
		fail("root: read data (0x%02x) on fifo_a where EOF was expected", buf[0]);
	expect_no_children();
	pass();
}
