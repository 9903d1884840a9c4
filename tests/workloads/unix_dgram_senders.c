/*
 * unix_dgram_senders: an unconnected datagram socket "rcv.sock" holding
 * datagrams from several senders, most of them gone:
 *  - "s1.sock" (absolute path), closed since: its socket file stays;
 *  - an abstract name, closed since;
 *  - an unnamed socket;
 *  - "s4.sock" (relative), still open;
 *  - "sub/s5.sock" (relative, in a subdirectory), closed since: cairn
 *    binds a stand-in with that name in a private directory, never in
 *    its own working directory or the tree's (its file here stays);
 * and a datagram socketpair whose writer was closed after writing two
 * datagrams. After the restore every datagram comes back with its sender
 * address, s1.sock is the same file as before, and the socketpair end
 * still has its dead peer (a send is refused).
 * --outside: also expects one datagram "ext" from a socket outside the
 * tree (the test sends it; such a dump is refused).
 */
#include "zdtm.h"
#include "unixsk.h"

#include <stddef.h>
#include <sys/stat.h>
#include <sys/un.h>

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

static int bound(const char *name, int abstract)
{
	struct sockaddr_un a;
	socklen_t l = addr(&a, name, abstract);
	int s = socket(AF_UNIX, SOCK_DGRAM, 0);

	if (s < 0 || bind(s, (struct sockaddr *)&a, l))
		pfail("bind %s", name);
	return s;
}

static void send_to(int s, const char *msg, const char *to)
{
	struct sockaddr_un a;
	socklen_t l = addr(&a, to, 0);

	if (sendto(s, msg, strlen(msg), 0, (struct sockaddr *)&a, l) != (ssize_t)strlen(msg))
		pfail("sendto %s", msg);
}

/* One datagram: data and sender (abstract: leading @). */
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
	if (strcmp(buf, want) || (from && strcmp(got, from)))
		fail("%s: got \"%s\" from \"%s\", want \"%s\" from \"%s\"", what, buf, got, want,
		     from ? from : "any");
}

int main(int argc, char **argv)
{
	char cwd[4096], s1path[4200], abs2[64], at2[80];
	struct stat st1, st;
	struct sockaddr_un a;
	int outside, r, s1, s2, s3, s4, s5, pr[2];
	struct stat st5;
	char c;

	test_init(argc, argv);
	outside = test_flag("--outside");
	if (!getcwd(cwd, sizeof(cwd)))
		pfail("getcwd");
	snprintf(s1path, sizeof(s1path), "%s/s1.sock", cwd);
	if (strlen(s1path) >= sizeof(a.sun_path))
		fail("cwd too long for the test");
	snprintf(abs2, sizeof(abs2), "cairn-snd2-%d", getpid());
	snprintf(at2, sizeof(at2), "@%s", abs2);

	r = bound("rcv.sock", 0);
	s1 = bound(s1path, 0);
	s2 = bound(abs2, 1);
	s3 = socket(AF_UNIX, SOCK_DGRAM, 0);
	s4 = bound("s4.sock", 0);
	if (mkdir("sub", 0700))
		pfail("mkdir sub");
	s5 = bound("sub/s5.sock", 0);
	if (s3 < 0)
		pfail("socket");
	send_to(s1, "m1", "rcv.sock");
	send_to(s2, "m2", "rcv.sock");
	send_to(s3, "m3", "rcv.sock");
	send_to(s4, "m4", "rcv.sock");
	send_to(s1, "m5", "rcv.sock");
	send_to(s5, "m6", "rcv.sock");
	close(s5);
	if (stat("sub/s5.sock", &st5))
		pfail("stat sub/s5.sock");
	close(s1);
	close(s2);
	close(s3);
	if (stat(s1path, &st1))
		pfail("stat s1.sock");

	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, pr))
		pfail("socketpair");
	put(pr[0], "p1");
	put(pr[0], "p2");
	close(pr[0]);

	test_daemon();
	test_waitsig();

	expect_from(r, "m1", s1path, "m1");
	expect_from(r, "m2", at2, "m2");
	expect_from(r, "m3", "", "m3");
	expect_from(r, "m4", "s4.sock", "m4");
	expect_from(r, "m5", s1path, "m5");
	expect_from(r, "m6", "sub/s5.sock", "m6");
	if (outside)
		expect_from(r, "ext", NULL, "ext");
	expect_empty(r, "receiver");
	if (stat(s1path, &st) || st.st_ino != st1.st_ino || !S_ISSOCK(st.st_mode))
		fail("s1.sock is no longer the closed sender's socket file");
	if (stat("sub/s5.sock", &st) || st.st_ino != st5.st_ino)
		fail("sub/s5.sock is no longer the closed sender's socket file");

	expect_from(pr[1], "p1", "", "p1");
	expect_from(pr[1], "p2", "", "p2");
	expect_empty(pr[1], "socketpair");
	if (send(pr[1], "x", 1, MSG_DONTWAIT) >= 0 || errno != ECONNREFUSED)
		fail("a send to the closed end of the socketpair was not refused (errno %d)", errno);
	(void)c;
	pass();
}
