/*
 * unix_deleted: unix sockets bound to path names whose files are gone.
 *  - a stream listener bound to "lst.sock" (relative) with an accepted
 *    connection and a connection waiting in its backlog; then its file is
 *    removed and a regular file "lst.sock" (holding "replaced") takes the
 *    name;
 *  - a datagram socket bound to "dg.sock" (absolute path) with a socket
 *    connected to it that sent "before"; then its file is removed;
 *  - a datagram socket bound to "dg2.sock" whose file was replaced by
 *    another socket's (an unrelated socket bound there, then closed).
 * After the restore: the names (getsockname) are the old ones, the files
 * now at the names are the same files (inode, contents) or absent as
 * before, the connected sockets still talk, the waiting connection is
 * accepted, and connecting by the name reaches what is there now, not the
 * restored socket.
 */
#include "zdtm.h"
#include "unixsk.h"

#include <fcntl.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/un.h>

static socklen_t addr(struct sockaddr_un *a, const char *name)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	strcpy(a->sun_path, name);
	return offsetof(struct sockaddr_un, sun_path) + strlen(name) + 1;
}

static int bound(int type, const char *name)
{
	struct sockaddr_un a;
	socklen_t l = addr(&a, name);
	int s = socket(AF_UNIX, type, 0);

	if (s < 0 || bind(s, (struct sockaddr *)&a, l))
		pfail("bind %s", name);
	return s;
}

static int connected(int type, const char *name)
{
	struct sockaddr_un a;
	socklen_t l = addr(&a, name);
	int s = socket(AF_UNIX, type, 0);

	if (s < 0 || connect(s, (struct sockaddr *)&a, l))
		pfail("connect %s", name);
	return s;
}

static void expect_name(int fd, const char *want, const char *what)
{
	struct sockaddr_un a;
	socklen_t l = sizeof(a);

	if (getsockname(fd, (struct sockaddr *)&a, &l))
		pfail("%s: getsockname", what);
	if (l <= offsetof(struct sockaddr_un, sun_path) || strcmp(a.sun_path, want))
		fail("%s: name \"%s\", want \"%s\"", what, a.sun_path, want);
}

int main(int argc, char **argv)
{
	char cwd[4096], dpath[4200], buf[32];
	struct stat st_lst, st_dg2, st;
	struct sockaddr_un a;
	int lst, c1, a1, c2, d, ds, d2, other, f;

	test_init(argc, argv);
	if (!getcwd(cwd, sizeof(cwd)))
		pfail("getcwd");
	snprintf(dpath, sizeof(dpath), "%s/dg.sock", cwd);
	if (strlen(dpath) >= sizeof(a.sun_path))
		fail("cwd too long for the test");

	lst = bound(SOCK_STREAM, "lst.sock");
	if (listen(lst, 4))
		pfail("listen");
	c1 = connected(SOCK_STREAM, "lst.sock");
	a1 = accept(lst, NULL, NULL);
	if (a1 < 0)
		pfail("accept");
	c2 = connected(SOCK_STREAM, "lst.sock");
	put(c2, "waiting");
	if (unlink("lst.sock"))
		pfail("unlink lst.sock");
	f = open("lst.sock", O_CREAT | O_EXCL | O_WRONLY, 0600);
	if (f < 0 || write(f, "replaced", 8) != 8 || close(f) || stat("lst.sock", &st_lst))
		pfail("replace lst.sock");

	d = bound(SOCK_DGRAM, dpath);
	ds = connected(SOCK_DGRAM, dpath);
	put(ds, "before");
	if (unlink(dpath))
		pfail("unlink dg.sock");

	d2 = bound(SOCK_DGRAM, "dg2.sock");
	if (unlink("dg2.sock"))
		pfail("unlink dg2.sock");
	other = bound(SOCK_DGRAM, "dg2.sock");
	close(other);
	if (stat("dg2.sock", &st_dg2))
		pfail("stat dg2.sock");

	test_daemon();
	test_waitsig();

	expect_name(lst, "lst.sock", "listener");
	expect_name(d, dpath, "dgram");
	expect_name(d2, "dg2.sock", "dgram 2");
	expect_name(a1, "lst.sock", "accepted");

	if (stat("lst.sock", &st) || st.st_ino != st_lst.st_ino || !S_ISREG(st.st_mode))
		fail("lst.sock is no longer the file that replaced the socket's");
	f = open("lst.sock", O_RDONLY);
	memset(buf, 0, sizeof(buf));
	if (f < 0 || read(f, buf, sizeof(buf)) != 8 || strcmp(buf, "replaced"))
		fail("lst.sock lost its contents (%s)", buf);
	close(f);
	if (stat("dg2.sock", &st) || st.st_ino != st_dg2.st_ino || !S_ISSOCK(st.st_mode))
		fail("dg2.sock is no longer the other socket's file");
	if (access(dpath, F_OK) == 0 || errno != ENOENT)
		fail("dg.sock exists again");

	put(c1, "c1-to-a1");
	expect(a1, "c1-to-a1", "accepted connection");
	put(a1, "a1-to-c1");
	expect(c1, "a1-to-c1", "client");
	int a2 = accept(lst, NULL, NULL);
	if (a2 < 0)
		pfail("accept the waiting connection");
	expect(a2, "waiting", "the waiting connection");

	expect(d, "before", "dgram queue");
	put(ds, "after");
	expect(d, "after", "dgram connected sender");
	expect_empty(d, "dgram");

	/* By name, the listener is unreachable: a regular file is there. */
	int probe = socket(AF_UNIX, SOCK_STREAM, 0);
	if (connect(probe, (struct sockaddr *)&a, addr(&a, "lst.sock")) == 0)
		fail("connected to the listener through a name it lost");
	pass();
}
