/*
 * fd_inotify_wronly: a file open write-only (fd 4), written to and
 * removed, so a dump must save its contents, and an inotify watch (fd 3)
 * on it for IN_OPEN, IN_ACCESS and IN_CLOSE_NOWRITE: the events a dump
 * that opens the file again to read it raises. The queue is empty before
 * the dump.
 *
 * --readable: the file is also open read-only (fd 5), through which a
 * dump can read it without an open.
 *
 * Checks after SIGTERM (the original after a --leave-running dump, or a
 * restored process): no event is queued, and the file holds what was
 * written (read through fd 5, or, after the check, through a new open of
 * fd 4's file).
 */
#include "zdtm.h"

#include <sys/inotify.h>

#define MASK (IN_OPEN | IN_ACCESS | IN_CLOSE_NOWRITE)
#define DATA "written-only"

static int in;

/* The queue is empty. */
static void expect_none(const char *what)
{
	char buf[4096] __attribute__((aligned(8)));
	ssize_t r = read(in, buf, sizeof(buf));

	if (r >= 0) {
		struct inotify_event *e = (struct inotify_event *)buf;

		fail("%s: unexpected event wd %d mask %#x (the dump opened or read the file?)",
		     what, e->wd, e->mask);
	}
	if (errno != EAGAIN)
		pfail("%s: read inotify", what);
}

int main(int argc, char **argv)
{
	char name[64], path[64], buf[64];
	int readable, f, r = -1;
	ssize_t n;

	test_init(argc, argv);
	readable = test_flag("--readable");
	snprintf(name, sizeof(name), "wronly.%d", getpid());
	in = inotify_init1(IN_NONBLOCK);
	if (in != 3)
		pfail("inotify_init1 gave fd %d, not 3", in);
	f = open(name, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (f != 4)
		pfail("open %s write-only gave fd %d, not 4", name, f);
	if (readable) {
		r = open(name, O_RDONLY);
		if (r != 5)
			pfail("open %s read-only gave fd %d, not 5", name, r);
	}
	if (write(f, DATA, strlen(DATA)) != (ssize_t)strlen(DATA))
		pfail("write");
	if (inotify_add_watch(in, name, MASK) != 1)
		pfail("inotify_add_watch");
	if (unlink(name))
		pfail("unlink");
	expect_none("before the dump");
	test_msg("inotify fd 3 watches the removed %s, open write-only as fd 4%s", name,
		 readable ? " and read-only as fd 5" : "");
	test_daemon();
	test_waitsig();

	expect_none("after the dump");
	if (r < 0) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", f);
		r = open(path, O_RDONLY);
		if (r < 0)
			pfail("open %s", path);
	}
	n = pread(r, buf, sizeof(buf) - 1, 0);
	if (n < 0)
		pfail("pread");
	buf[n] = 0;
	if (strcmp(buf, DATA))
		fail("the file holds \"%s\", not \"%s\"", buf, DATA);
	pass();
}
