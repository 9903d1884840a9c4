/* fd_inotify: an inotify instance keeps its watches with their numbers
 * (wd) and masks: after restore, changes in the watched directories are
 * reported under the same wds.
 * --queued: an event is left unread in the queue before the checkpoint
 * (the dump must refuse: queued events cannot be put back); on SIGTERM
 * the event must still be there, unharmed by the refused dump. */
#include "zdtm.h"
#include <sys/inotify.h>

int main(int argc, char **argv)
{
	char cwd[2048], d1[4096], d2[4096], f[4200], buf[4096];

	test_init(argc, argv);
	if (!getcwd(cwd, sizeof(cwd)))
		pfail("getcwd");
	/* Not the cwd: the pidfile is written there. */
	snprintf(d1, sizeof(d1), "%s/inotify-1", cwd);
	snprintf(d2, sizeof(d2), "%s/inotify-2", cwd);
	if ((mkdir(d1, 0755) && errno != EEXIST) || (mkdir(d2, 0755) && errno != EEXIST))
		pfail("mkdir");
	int fd = inotify_init1(IN_NONBLOCK);
	if (fd < 0)
		pfail("inotify_init1");
	int w1 = inotify_add_watch(fd, d1, IN_CREATE);
	int w2 = inotify_add_watch(fd, d2, IN_CREATE | IN_DELETE);
	if (w1 < 0 || w2 < 0)
		pfail("inotify_add_watch");
	if (test_flag("--queued")) {
		snprintf(f, sizeof(f), "%s/queued-file", d2);
		int q = open(f, O_CREAT | O_WRONLY, 0600);
		if (q < 0)
			pfail("create queued");
		close(q);
		unlink(f);
		test_daemon();
		test_waitsig();
		ssize_t n = read(fd, buf, sizeof(buf));
		struct inotify_event *ev = (struct inotify_event *)buf;
		if (n <= 0 || ev->wd != w2 || !(ev->mask & IN_CREATE) ||
		    strcmp(ev->name, "queued-file"))
			fail("the queued IN_CREATE event is gone (read %zd)", n);
		rmdir(d2);
		rmdir(d1);
		pass();
	}
	test_daemon();
	test_waitsig();
	if (read(fd, buf, sizeof(buf)) > 0)
		fail("events queued before anything changed");
	snprintf(f, sizeof(f), "%s/new-file", d2);
	int t = open(f, O_CREAT | O_WRONLY, 0600);
	if (t < 0)
		pfail("create");
	close(t);
	unlink(f);
	usleep(10000);
	ssize_t n = read(fd, buf, sizeof(buf));
	if (n <= 0)
		fail("no inotify events after restore (errno %d)", errno);
	int seen_create = 0, seen_delete = 0;
	for (char *p = buf; p < buf + n;) {
		struct inotify_event *ev = (struct inotify_event *)p;
		if (ev->wd != w2)
			fail("event for wd %d, expected only wd %d", ev->wd, w2);
		seen_create |= !!(ev->mask & IN_CREATE);
		seen_delete |= !!(ev->mask & IN_DELETE);
		p += sizeof(*ev) + ev->len;
	}
	if (!seen_create || !seen_delete)
		fail("missing events: create %d delete %d", seen_create, seen_delete);
	snprintf(f, sizeof(f), "%s/new-file-2", d1);
	t = open(f, O_CREAT | O_WRONLY, 0600);
	if (t < 0)
		pfail("create 2");
	close(t);
	unlink(f);
	usleep(10000);
	n = read(fd, buf, sizeof(buf));
	if (n <= 0 || ((struct inotify_event *)buf)->wd != w1)
		fail("no IN_CREATE for wd %d", w1);
	rmdir(d2);
	rmdir(d1);
	pass();
}
