/*
 * files_inplace: a regular file that a later writer changes after a
 * `--leave-running` dump (what sqlite meets: it remembers the inode of its
 * database and refuses to write once the path names another file,
 * "attempt to write a readonly database").
 *
 * --file PATH (default files_inplace.data in the cwd): SIZE pattern bytes,
 * mode 0640, open O_RDWR at offset 100, with a second name PATH.link (a
 * hard link). The inode is remembered in memory before the dump.
 *
 * After restore (the harness changed the file in between, then killed
 * the original): stat(PATH) and fstat(fd) are the remembered inode (the
 * checkpointed contents were written back into the same file, not into a
 * new one), the hard link still shares it (nlink 2), size, contents and
 * mode are the checkpointed ones, the offset is 100, and a write through
 * the fd is seen through PATH and through the link.
 */
#include "zdtm.h"

#define SIZE (2 * 4096 + 321)
#define SEED 77

int main(int argc, char **argv)
{
	static uint8_t buf[SIZE];
	char link_path[4096];
	struct stat s0, sp, sf, sl;
	const char *path;
	int fd, p2;
	long bad;

	test_init(argc, argv);
	path = test_arg("--file");
	if (!path)
		path = "files_inplace.data";
	snprintf(link_path, sizeof(link_path), "%s.link", path);

	fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0640);
	if (fd < 0)
		pfail("open %s", path);
	if (fchmod(fd, 0640))
		pfail("fchmod");
	fill_pattern(buf, SIZE, SEED, 0);
	if (write(fd, buf, SIZE) != SIZE)
		pfail("write");
	if (link(path, link_path))
		pfail("link %s", link_path);
	if (lseek(fd, 100, SEEK_SET) != 100)
		pfail("lseek");
	if (fstat(fd, &s0))
		pfail("fstat");

	test_daemon();
	test_waitsig();

	if (fstat(fd, &sf) || stat(path, &sp) || stat(link_path, &sl))
		pfail("stat after restore");
	if (sp.st_ino != s0.st_ino || sp.st_dev != s0.st_dev)
		fail("%s is inode %lu now, not the inode %lu it was (the file was replaced)", path,
		     (unsigned long)sp.st_ino, (unsigned long)s0.st_ino);
	if (sf.st_ino != sp.st_ino || sf.st_dev != sp.st_dev)
		fail("the fd (inode %lu) and the path (inode %lu) are not the same file",
		     (unsigned long)sf.st_ino, (unsigned long)sp.st_ino);
	if (sl.st_ino != sp.st_ino)
		fail("the hard link %s is inode %lu, not %lu", link_path, (unsigned long)sl.st_ino,
		     (unsigned long)sp.st_ino);
	if (sf.st_nlink != 2)
		fail("nlink %lu, expected 2", (unsigned long)sf.st_nlink);
	if (sf.st_size != SIZE)
		fail("size %lld, expected %d", (long long)sf.st_size, SIZE);
	if ((sf.st_mode & 07777) != 0640)
		fail("mode %o, expected 640", sf.st_mode & 07777);
	if (lseek(fd, 0, SEEK_CUR) != 100)
		fail("offset %lld, expected 100", (long long)lseek(fd, 0, SEEK_CUR));
	memset(buf, 0, SIZE);
	if (pread(fd, buf, SIZE, 0) != SIZE)
		pfail("pread");
	bad = check_pattern(buf, SIZE, SEED, 0);
	if (bad >= 0)
		fail("contents differ from the checkpoint at offset %ld", bad);
	/* A write through the fd is seen through the path and the link. */
	if (write(fd, "INPLACE", 7) != 7)
		pfail("write through the fd");
	p2 = open(path, O_RDONLY);
	if (p2 < 0)
		pfail("open %s", path);
	if (pread(p2, buf, 7, 100) != 7 || memcmp(buf, "INPLACE", 7))
		fail("a write through the fd is not seen through %s", path);
	close(p2);
	p2 = open(link_path, O_RDONLY);
	if (p2 < 0)
		pfail("open %s", link_path);
	if (pread(p2, buf, 7, 100) != 7 || memcmp(buf, "INPLACE", 7))
		fail("a write through the fd is not seen through %s", link_path);
	close(p2);
	pass();
}
