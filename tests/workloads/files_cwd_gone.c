/*
 * files_cwd_gone: the cwd is a directory that was removed (mkdir DIR,
 * chdir DIR, rmdir DIR; DIR is --dir PATH, default cwd_gone.d). A dump
 * must refuse it (no path leads to it) and leave the process running;
 * on SIGTERM it checks that its cwd is still that removed directory.
 */
#include "zdtm.h"

int main(int argc, char **argv)
{
	const char *dir;
	struct stat s0, s1;

	test_init(argc, argv);
	dir = test_arg("--dir");
	if (!dir)
		dir = "cwd_gone.d";
	if (mkdir(dir, 0700))
		pfail("mkdir %s", dir);
	if (chdir(dir))
		pfail("chdir %s", dir);
	if (stat(".", &s0))
		pfail("stat .");
	if (rmdir(dir[0] == '/' ? dir : "../cwd_gone.d"))
		pfail("rmdir %s", dir);

	test_daemon();
	test_waitsig();

	if (stat(".", &s1))
		pfail("stat .");
	if (s1.st_ino != s0.st_ino || s1.st_nlink != 0)
		fail("the cwd is not the removed directory any more");
	pass();
}
