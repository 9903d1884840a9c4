/*
 * unix_named: unix sockets with names.
 *  - a stream listener bound to a relative path (its file chmod 0640) with
 *    one accepted connection (the accepted end in a child process, data
 *    both ways) and two connections waiting in its backlog (the first
 *    with data, unless --quiet-backlog); after restore accept() returns
 *    them in order, with their data, and new clients can connect;
 *  - a connection whose accepted end was closed after writing "bye";
 *  - a seqpacket listener on an abstract name with an accepted connection;
 *  - a datagram socket bound to an absolute path holding datagrams from
 *    three senders (abstract name, relative path, unnamed), and a datagram
 *    socket connect()ed to it;
 *  - a datagram socket bound to a path that was unlinked since.
 * Names (getsockname/getpeername), data, order and boundaries are checked
 * after restore.
 */
#include "zdtm.h"
#include "unixsk.h"

#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

static socklen_t addr(struct sockaddr_un *a, const char *name, int abstract)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	if (abstract) {
		memcpy(a->sun_path + 1, name, strlen(name));
		return offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name);
	}
	strcpy(a->sun_path, name);
	return offsetof(struct sockaddr_un, sun_path) + strlen(name) + 1;
}

static int sock_at(int type, const char *name, int abstract)
{
	struct sockaddr_un a;
	socklen_t l = addr(&a, name, abstract);
	int s = socket(AF_UNIX, type, 0);

	if (s < 0 || bind(s, (struct sockaddr *)&a, l))
		pfail("bind %s", name);
	return s;
}

static int connect_to(int type, const char *name, int abstract)
{
	struct sockaddr_un a;
	socklen_t l = addr(&a, name, abstract);
	int s = socket(AF_UNIX, type, 0);

	if (s < 0 || connect(s, (struct sockaddr *)&a, l))
		pfail("connect %s", name);
	return s;
}

/* The name of a socket (or its peer) equals `want` (abstract: leading @). */
static void expect_name(int fd, int peer, const char *want, const char *what)
{
	struct sockaddr_un a;
	socklen_t l = sizeof(a);
	char got[120];

	if ((peer ? getpeername : getsockname)(fd, (struct sockaddr *)&a, &l))
		pfail("%s: get%sname", what, peer ? "peer" : "sock");
	if (l <= offsetof(struct sockaddr_un, sun_path))
		strcpy(got, "");
	else if (a.sun_path[0] == 0)
		snprintf(got, sizeof(got), "@%.*s",
			 (int)(l - offsetof(struct sockaddr_un, sun_path) - 1), a.sun_path + 1);
	else
		snprintf(got, sizeof(got), "%s", a.sun_path);
	if (strcmp(got, want))
		fail("%s: name \"%s\", want \"%s\"", what, got, want);
}

/* recvfrom one datagram; check data and sender name. */
static void expect_from(int fd, const char *want, const char *from, const char *what)
{
	struct sockaddr_un a;
	socklen_t l = sizeof(a);
	char buf[256], got[120];
	ssize_t n = recvfrom(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT, (struct sockaddr *)&a, &l);

	if (n < 0)
		pfail("%s: recvfrom", what);
	buf[n] = 0;
	if (l <= offsetof(struct sockaddr_un, sun_path))
		strcpy(got, "");
	else if (a.sun_path[0] == 0)
		snprintf(got, sizeof(got), "@%.*s",
			 (int)(l - offsetof(struct sockaddr_un, sun_path) - 1), a.sun_path + 1);
	else
		snprintf(got, sizeof(got), "%s", a.sun_path);
	if (strcmp(buf, want) || strcmp(got, from))
		fail("%s: got \"%s\" from \"%s\", want \"%s\" from \"%s\"", what, buf, got, want, from);
}

static int child_main(int acc)
{
	sigset_t s;
	int sig;

	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	if (sigwait(&s, &sig))
		return 10;
	expect(acc, "c1-to-server", "child: accepted end");
	expect_name(acc, 0, "sock.listen", "child: accepted end's name");
	put(acc, "server-reply");
	return 0;
}

int main(int argc, char **argv)
{
	char cwd[4096], rpath[4200], abs1[64], abs2[64];
	int quiet, lst, c1, acc1, c2, c3, c4, a4, sql, sqc, sqa, r, s1, s2, s3, d, gone;
	struct sockaddr_un ra;
	socklen_t ral;
	sigset_t usr1;
	pid_t child;

	test_init(argc, argv);
	quiet = test_flag("--quiet-backlog");
	if (!getcwd(cwd, sizeof(cwd)))
		pfail("getcwd");
	snprintf(abs1, sizeof(abs1), "cairn-sq-%d", getpid());
	snprintf(abs2, sizeof(abs2), "cairn-s1-%d", getpid());

	/* Stream listener on a relative path. */
	lst = sock_at(SOCK_STREAM, "sock.listen", 0);
	if (chmod("sock.listen", 0640) || listen(lst, 8))
		pfail("listen");
	c1 = connect_to(SOCK_STREAM, "sock.listen", 0);
	acc1 = accept(lst, NULL, NULL);
	c4 = connect_to(SOCK_STREAM, "sock.listen", 0);
	a4 = accept(lst, NULL, NULL);
	if (acc1 < 0 || a4 < 0)
		pfail("accept");
	put(a4, "bye");
	close(a4);
	put(c1, "c1-to-server");
	put(acc1, "server-to-c1");
	c2 = connect_to(SOCK_STREAM, "sock.listen", 0);
	if (!quiet)
		put(c2, "hello-from-c2");
	c3 = connect_to(SOCK_STREAM, "sock.listen", 0);

	/* Seqpacket on an abstract name. */
	sql = sock_at(SOCK_SEQPACKET, abs1, 1);
	if (listen(sql, 2))
		pfail("listen");
	sqc = connect_to(SOCK_SEQPACKET, abs1, 1);
	sqa = accept(sql, NULL, NULL);
	if (sqa < 0)
		pfail("accept seqpacket");
	put(sqc, "rec-1");
	put(sqc, "rec-22");
	put(sqa, "rec-back");

	/* Datagrams from three senders. */
	snprintf(rpath, sizeof(rpath), "%s/dgram.sock", cwd);
	if (strlen(rpath) >= sizeof(ra.sun_path))
		fail("cwd too long for the test");
	r = sock_at(SOCK_DGRAM, rpath, 0);
	s1 = sock_at(SOCK_DGRAM, abs2, 1);
	s2 = sock_at(SOCK_DGRAM, "s2.sock", 0);
	s3 = socket(AF_UNIX, SOCK_DGRAM, 0);
	ral = addr(&ra, rpath, 0);
	if (sendto(s1, "m1", 2, 0, (struct sockaddr *)&ra, ral) != 2 ||
	    sendto(s2, "m2", 2, 0, (struct sockaddr *)&ra, ral) != 2 ||
	    sendto(s3, "m3", 2, 0, (struct sockaddr *)&ra, ral) != 2 ||
	    sendto(s1, "m4", 2, 0, (struct sockaddr *)&ra, ral) != 2)
		pfail("sendto");
	d = connect_to(SOCK_DGRAM, rpath, 0);

	/* Bound, then its file removed. */
	gone = sock_at(SOCK_DGRAM, "gone.sock", 0);
	if (unlink("gone.sock"))
		pfail("unlink");

	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, NULL);
	child = fork();
	if (child < 0)
		pfail("fork");
	if (child == 0)
		exit(child_main(acc1));
	close(acc1);

	test_daemon();
	test_waitsig();

	if (kill(child, SIGUSR1))
		pfail("kill");
	int status;
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status))
		fail("the child holding the accepted end failed (status %#x)", status);
	expect(c1, "server-to-c1server-reply", "client c1");
	expect_name(c1, 1, "sock.listen", "c1's peer");

	/* The peer of c4 is gone: its data, then EOF. */
	expect(c4, "bye", "c4");
	char ch;
	if (recv(c4, &ch, 1, MSG_DONTWAIT) != 0)
		fail("c4: no EOF after the data of the closed peer");

	/* The backlog, in order, with data. */
	struct stat st;
	if (stat("sock.listen", &st) || !S_ISSOCK(st.st_mode) || (st.st_mode & 0777) != 0640)
		fail("sock.listen: not a socket file of mode 0640 (mode %o)", st.st_mode);
	expect_name(lst, 0, "sock.listen", "listener");
	int b2 = accept(lst, NULL, NULL);
	if (b2 < 0)
		pfail("accept waiting connection 1");
	if (!quiet)
		expect(b2, "hello-from-c2", "first waiting connection");
	put(b2, "to-c2");
	expect(c2, "to-c2", "c2");
	int b3 = accept4(lst, NULL, NULL, SOCK_NONBLOCK);
	if (b3 < 0)
		pfail("accept waiting connection 2");
	put(c3, "c3-later");
	expect(b3, "c3-later", "second waiting connection");
	if (fcntl(lst, F_SETFL, O_NONBLOCK))
		pfail("fcntl");
	if (accept(lst, NULL, NULL) >= 0 || errno != EAGAIN)
		fail("a third connection was waiting");
	if (fcntl(lst, F_SETFL, 0))
		pfail("fcntl");
	int c5 = connect_to(SOCK_STREAM, "sock.listen", 0);
	int b5 = accept(lst, NULL, NULL);
	put(c5, "new");
	expect(b5, "new", "a new connection");

	/* Seqpacket records. */
	expect(sqa, "rec-1", "seqpacket 1");
	expect(sqa, "rec-22", "seqpacket 2");
	expect(sqc, "rec-back", "seqpacket back");
	char want[80];
	snprintf(want, sizeof(want), "@%s", abs1);
	expect_name(sqa, 0, want, "accepted seqpacket");
	expect_name(sqc, 1, want, "seqpacket client's peer");

	/* Datagrams, in order, with their senders. */
	char w1[80];
	snprintf(w1, sizeof(w1), "@%s", abs2);
	expect_from(r, "m1", w1, "datagram 1");
	expect_from(r, "m2", "s2.sock", "datagram 2");
	expect_from(r, "m3", "", "datagram 3");
	expect_from(r, "m4", w1, "datagram 4");
	put(d, "from-d");
	expect_from(r, "from-d", "", "datagram from the connected socket");
	expect_name(d, 1, rpath, "connected dgram's peer");
	expect_name(r, 0, rpath, "dgram receiver");
	expect_name(s2, 0, "s2.sock", "sender 2");

	/* The unlinked one keeps its name, without a file. */
	expect_name(gone, 0, "gone.sock", "unlinked socket");
	if (access("gone.sock", F_OK) == 0)
		fail("gone.sock exists again");
	pass();
}
