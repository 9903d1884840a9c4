/*
 * fd_fanotify: a fanotify group (FAN_CLASS_NOTIF, FAN_NONBLOCK, events
 * opened O_RDONLY|O_LARGEFILE) with two inode marks: "marked" for
 * FAN_OPEN|FAN_CLOSE_WRITE, and "quiet" for FAN_ACCESS|FAN_MODIFY with
 * FAN_MODIFY ignored (FAN_MARK_IGNORED_SURV_MODIFY); and a mount mark and
 * a filesystem mark on the work directory's mount with ignored masks only
 * (so that nothing else on the machine queues events in the group).
 *
 * After the restore its fdinfo shows the same flags and marks, an open of
 * "marked" produces an FAN_OPEN event whose fd is that file (opened with
 * the group's event flags), and a write to "quiet" produces nothing.
 *
 * --queued: an event is queued at checkpoint time (refused); on SIGTERM
 * the original checks it is still there.
 * --perm: also holds a FAN_CLASS_CONTENT group with a FAN_OPEN_PERM mark
 * (refused).
 */
#include "zdtm.h"

#include <poll.h>
#include <sys/fanotify.h>

static void mark(int g, unsigned flags, uint64_t mask, const char *path)
{
	if (fanotify_mark(g, FAN_MARK_ADD | flags, mask, AT_FDCWD, path))
		pfail("fanotify_mark %s %#llx", path, (unsigned long long)mask);
}

static void touch(const char *path)
{
	int f = open(path, O_CREAT | O_WRONLY, 0644);

	if (f < 0)
		pfail("create %s", path);
	close(f);
}

/* The "fanotify" lines of our fdinfo of fd g, with fhandles cut. */
static void fdinfo_marks(int g, char *out, size_t size)
{
	char path[64], buf[8192], *l, *save;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", g);
	read_file(path, buf, sizeof(buf));
	out[0] = 0;
	for (l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char *h;

		if (strncmp(l, "fanotify ", 9))
			continue;
		if ((h = strstr(l, " fhandle-bytes")))
			*h = 0;
		strncat(out, l, size - strlen(out) - 2);
		strcat(out, "\n");
	}
}

int main(int argc, char **argv)
{
	char before[4096], after[4096];
	int g, perm = -1;

	test_init(argc, argv);
	touch("marked");
	touch("quiet");

	g = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE);
	if (g < 0)
		pfail("fanotify_init");
	mark(g, 0, FAN_OPEN | FAN_CLOSE_WRITE, "marked");
	mark(g, 0, FAN_ACCESS | FAN_MODIFY, "quiet");
	mark(g, FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY, FAN_MODIFY, "quiet");
	mark(g, FAN_MARK_MOUNT | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY, FAN_CLOSE_NOWRITE, ".");
	mark(g, FAN_MARK_FILESYSTEM | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY,
	     FAN_ACCESS, ".");
	fdinfo_marks(g, before, sizeof(before));
	if (!strstr(before, "fanotify mnt_id:") || !strstr(before, "\nfanotify sdev:"))
		fail("no mount or filesystem mark in fdinfo:\n%s", before);

	if (test_flag("--perm")) {
		perm = fanotify_init(FAN_CLASS_CONTENT, O_RDONLY);
		if (perm < 0)
			pfail("fanotify_init FAN_CLASS_CONTENT");
		mark(perm, 0, FAN_OPEN_PERM, "quiet");
	}
	if (test_flag("--queued"))
		close(open("marked", O_RDONLY));

	test_daemon();
	test_waitsig();

	if (test_flag("--queued")) {
		struct fanotify_event_metadata ev;

		if (read(g, &ev, sizeof(ev)) != sizeof(ev) || !(ev.mask & FAN_OPEN))
			fail("the queued event is gone");
		pass();
	}
	if (perm >= 0)
		pass();

	fdinfo_marks(g, after, sizeof(after));
	if (strcmp(before, after))
		fail("fanotify marks differ:\nbefore:\n%safter:\n%s", before, after);
	if ((fcntl(g, F_GETFL) & O_NONBLOCK) == 0)
		fail("the group lost FAN_NONBLOCK");

	{
		struct fanotify_event_metadata ev[8];
		struct pollfd p = { .fd = g, .events = POLLIN };
		char link[64], target[4096], want[4096];
		int f, w;
		ssize_t n;

		/* A write to "quiet" is ignored; an open of "marked" is not. */
		w = open("quiet", O_WRONLY);
		if (w < 0 || write(w, "x", 1) != 1)
			pfail("write quiet");
		close(w);
		f = open("marked", O_RDONLY);
		if (f < 0)
			pfail("open marked");
		if (poll(&p, 1, 5000) != 1)
			fail("no fanotify event after the restore");
		n = read(g, ev, sizeof(ev));
		if (n < (ssize_t)sizeof(ev[0]))
			pfail("read fanotify event");
		if (ev[0].vers != FANOTIFY_METADATA_VERSION || !(ev[0].mask & FAN_OPEN) || (ev[0].mask & FAN_MODIFY))
			fail("first event mask %#llx", (unsigned long long)ev[0].mask);
		snprintf(link, sizeof(link), "/proc/self/fd/%d", ev[0].fd);
		n = readlink(link, target, sizeof(target) - 1);
		if (n < 0)
			pfail("readlink event fd");
		target[n] = 0;
		if (!realpath("marked", want))
			pfail("realpath");
		if (strcmp(target, want))
			fail("event fd is %s, not %s", target, want);
		if ((fcntl(ev[0].fd, F_GETFL) & (O_ACCMODE | O_LARGEFILE)) != (O_RDONLY | O_LARGEFILE))
			fail("event fd flags %#x", fcntl(ev[0].fd, F_GETFL));
		close(f);
	}
	pass();
}
