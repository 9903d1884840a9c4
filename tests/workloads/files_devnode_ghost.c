/*
 * files_devnode_ghost: deleted device nodes held open, with their owner:
 * a block device node (a copy of /dev/loop0's number, mode 0640, owner
 * 1234:5678, opened O_RDONLY) and a character device node of /dev/zero
 * (1:5, mode 0604, owner 4321:8765, opened O_RDWR), both unlinked. After
 * restore both are unlinked nodes of the same device, type, mode, owner
 * and access mode, and fd B still reads zeros.
 */
#include "zdtm.h"
#include <sys/stat.h>
#include <sys/sysmacros.h>

static void check(int fd, mode_t type, dev_t rdev, mode_t mode, uid_t uid, gid_t gid, int acc)
{
	struct stat st;

	if (fstat(fd, &st))
		pfail("fstat %d", fd);
	if ((st.st_mode & S_IFMT) != type || st.st_rdev != rdev)
		fail("fd %d: mode %o rdev %u:%u", fd, st.st_mode, major(st.st_rdev),
		     minor(st.st_rdev));
	if ((st.st_mode & 07777) != mode || st.st_uid != uid || st.st_gid != gid)
		fail("fd %d: mode %o owner %u:%u, not %o %u:%u", fd, st.st_mode & 07777, st.st_uid,
		     st.st_gid, mode, uid, gid);
	if (st.st_nlink != 0)
		fail("fd %d: %lu links", fd, (unsigned long)st.st_nlink);
	if ((fcntl(fd, F_GETFL) & O_ACCMODE) != acc)
		fail("fd %d: access mode", fd);
}

int main(int argc, char **argv)
{
	struct stat loop;
	char buf[4];
	int a, b;

	test_init(argc, argv);
	if (stat("/dev/loop0", &loop) || !S_ISBLK(loop.st_mode))
		pfail("/dev/loop0");
	if (mknod("blk.node", S_IFBLK | 0600, loop.st_rdev) || chmod("blk.node", 0640) ||
	    chown("blk.node", 1234, 5678))
		pfail("mknod blk.node");
	if (mknod("zero.node", S_IFCHR | 0600, makedev(1, 5)) || chown("zero.node", 4321, 8765) ||
	    chmod("zero.node", 0604))
		pfail("mknod zero.node");
	a = open("blk.node", O_RDONLY);
	b = open("zero.node", O_RDWR);
	if (a < 0 || b < 0)
		pfail("open");
	if (unlink("blk.node") || unlink("zero.node"))
		pfail("unlink");
	check(a, S_IFBLK, loop.st_rdev, 0640, 1234, 5678, O_RDONLY);
	check(b, S_IFCHR, makedev(1, 5), 0604, 4321, 8765, O_RDWR);

	test_daemon();
	test_waitsig();

	check(a, S_IFBLK, loop.st_rdev, 0640, 1234, 5678, O_RDONLY);
	check(b, S_IFCHR, makedev(1, 5), 0604, 4321, 8765, O_RDWR);
	if (access("blk.node", F_OK) == 0 || access("zero.node", F_OK) == 0)
		fail("a node is back at its path");
	memset(buf, 1, sizeof(buf));
	if (read(b, buf, sizeof(buf)) != sizeof(buf) || buf[0] || buf[3])
		fail("fd B does not read zeros");
	pass();
}
