/*
 * unix_backlog_gone - a connection waiting in a listener's backlog whose
 * connecting process has exited: a child connects to the listener
 * "sock.listen", writes "from-child" and exits (reaped). The accepted
 * socket's SO_PEERCRED names the child (its pid, uid, gid), which no
 * restore can connect again: cairn must refuse the dump. After SIGTERM the
 * connection is accepted and its peer credentials and data checked.
 */
#include "zdtm.h"
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	struct ucred cred;
	socklen_t len = sizeof(cred);
	char buf[32] = "";
	int l, c, status;
	pid_t child;

	test_init(argc, argv);
	strcpy(a.sun_path, "sock.listen");
	unlink(a.sun_path);
	l = socket(AF_UNIX, SOCK_STREAM, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 4))
		pfail("listen on sock.listen");
	child = fork();
	if (child < 0)
		pfail("fork");
	if (child == 0) {
		int s = socket(AF_UNIX, SOCK_STREAM, 0);

		if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)))
			_exit(2);
		if (write(s, "from-child", 10) != 10)
			_exit(3);
		_exit(0);
	}
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0)
		fail("the connecting child failed (status %d)", status);
	test_daemon();
	test_waitsig();
	c = accept(l, NULL, NULL);
	if (c < 0)
		pfail("accept the waiting connection");
	if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len))
		pfail("SO_PEERCRED");
	if (cred.pid != child || cred.uid != getuid() || cred.gid != getgid())
		fail("SO_PEERCRED of the waiting connection: pid %d uid %u gid %u, "
		     "not the exited child's pid %d uid %u gid %u",
		     cred.pid, cred.uid, cred.gid, child, getuid(), getgid());
	if (read(c, buf, sizeof(buf) - 1) != 10 || strcmp(buf, "from-child"))
		fail("data of the waiting connection: \"%s\"", buf);
	pass();
}
