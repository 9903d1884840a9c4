/*
 * files_cwd_ghost: the cwd is a directory that was removed (mkdir
 * cwd_ghost.d, mode 0751, owner 1234:5678, chdir, rmdir). After the
 * restore the cwd is again a removed directory (no links, getcwd() fails
 * with ENOENT, /proc/self/cwd reads "PATH (deleted)" as before, nothing
 * can be created in it) with the same mode and owner, whose ".." is the
 * same parent directory.
 *
 * --nested: the removed cwd was inside a directory removed too
 * (nest.d/in.d): it cannot come back under its path, and the dump must
 * refuse it; the process keeps its cwd.
 */
#include "zdtm.h"

#include <sys/stat.h>

int main(int argc, char **argv)
{
	char link0[4096], link1[4096], cwd[4096];
	struct stat s0, p0, s1, p1;
	int nested, fd;
	ssize_t n;

	test_init(argc, argv);
	nested = test_flag("--nested");
	if (stat(".", &p0))
		pfail("stat .");
	if (nested) {
		if (mkdir("nest.d", 0700) || mkdir("nest.d/in.d", 0700) || chdir("nest.d/in.d"))
			pfail("mkdir/chdir nest.d/in.d");
		if (rmdir("../in.d") || rmdir("../../nest.d"))
			pfail("rmdir");
	} else {
		if (mkdir("cwd_ghost.d", 0700) || chmod("cwd_ghost.d", 0751) ||
		    chown("cwd_ghost.d", 1234, 5678) || chdir("cwd_ghost.d"))
			pfail("mkdir/chmod/chown/chdir cwd_ghost.d");
		if (rmdir("../cwd_ghost.d"))
			pfail("rmdir");
	}
	if (stat(".", &s0))
		pfail("stat .");
	n = readlink("/proc/self/cwd", link0, sizeof(link0) - 1);
	if (n < 0)
		pfail("readlink");
	link0[n] = 0;
	if (!strstr(link0, " (deleted)"))
		fail("cwd link %s", link0);
	test_msg("cwd %s", link0);

	test_daemon();
	test_waitsig();

	if (stat(".", &s1))
		pfail("stat .");
	if (!S_ISDIR(s1.st_mode) || s1.st_nlink != 0)
		fail("the cwd is no removed directory (mode %o, %lu links)", s1.st_mode,
		     (unsigned long)s1.st_nlink);
	if ((s1.st_mode & 07777) != (s0.st_mode & 07777) || s1.st_uid != s0.st_uid ||
	    s1.st_gid != s0.st_gid)
		fail("the cwd has mode %o owner %u:%u, not %o %u:%u", s1.st_mode & 07777,
		     s1.st_uid, s1.st_gid, s0.st_mode & 07777, s0.st_uid, s0.st_gid);
	n = readlink("/proc/self/cwd", link1, sizeof(link1) - 1);
	if (n < 0)
		pfail("readlink");
	link1[n] = 0;
	if (strcmp(link0, link1))
		fail("the cwd reads %s, not %s", link1, link0);
	if (getcwd(cwd, sizeof(cwd)) || errno != ENOENT)
		fail("getcwd() did not fail with ENOENT");
	fd = open("new", O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd >= 0 || errno != ENOENT)
		fail("a file could be created in the removed cwd");
	if (!nested) {
		if (stat("..", &p1))
			pfail("stat ..");
		if (p1.st_dev != p0.st_dev || p1.st_ino != p0.st_ino)
			fail("the cwd's parent is another directory");
	}
	pass();
}
