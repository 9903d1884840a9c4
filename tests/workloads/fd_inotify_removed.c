/*
 * fd_inotify_removed: an inotify watch on a file that was removed while
 * it is still open (the kernel keeps the watch until the inode goes). The
 * restored process's watch still reports a write to the file (cairn
 * recreates the file as a ghost and adds the watch there).
 */
#include "zdtm.h"

#include <poll.h>
#include <sys/inotify.h>

int main(int argc, char **argv)
{
	char path[64], buf[4096];
	struct pollfd p;
	int in, f, wd;

	test_init(argc, argv);
	snprintf(path, sizeof(path), "watched.%d", getpid());
	f = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	in = inotify_init1(IN_NONBLOCK);
	if (f < 0 || in < 0)
		pfail("open/inotify_init1");
	wd = inotify_add_watch(in, path, IN_MODIFY);
	if (wd < 0)
		pfail("inotify_add_watch");
	if (unlink(path))
		pfail("unlink");
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", in);
	read_file(path, buf, sizeof(buf));
	if (!strstr(buf, "inotify wd:"))
		fail("the kernel dropped the watch of the removed file:\n%s", buf);
	test_msg("inotify fd %d watch %d", in, wd);
	test_daemon();
	test_waitsig();
	if (write(f, "x", 1) != 1)
		pfail("write");
	p.fd = in;
	p.events = POLLIN;
	if (poll(&p, 1, 1000) != 1)
		fail("the watch of the removed file reports nothing");
	pass();
}
