/*
 * vol_files: files on volatile file systems (tmpfs) that a checkpoint must
 * bring back after they were wiped, as an Open MPI job's.
 *   --seg PATH  a "shared memory segment" (as vader_segment.*): a sparse
 *               file of 1 MiB (data at 0 and 512 KiB, holes between), mode
 *               0640, mapped MAP_SHARED read-write, fd closed, not unlinked.
 *               The child inherits the mapping.
 *   --dir DIR   a session directory made here: DIR/sess (0711) and
 *               DIR/sess/pid.N (0700), holding
 *                 dstor  3 pages + 10 bytes, mapped MAP_SHARED, fd closed
 *                        (as pmix_dstor_*: only mapped);
 *                 priv   2 pages mapped MAP_PRIVATE, page 1 written (copied
 *                        on write), fd closed;
 *                 sock   a listening unix socket bound there;
 *                 fifo   a FIFO held open O_RDWR.
 * After restore (parent): the files are back at their paths with their
 * contents, holes, modes and the directories' modes; each path is the
 * file the process maps (same inode as map_files), not deleted; writes by
 * the parent through the segment and dstor are seen by the child and the
 * child's writes by the parent (one file, shared); priv keeps its private
 * page; a client connects to sock and is accepted; the FIFO carries a byte.
 */
#include "zdtm.h"
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#define PG 4096ul
#define SEG_SIZE (1ul << 20)
#define D_SIZE (3 * PG + 10)

static char sess[4096], pdir[4200], dpath[4300], ppath[4300], spath[4300], fpath[4300];

static void check_file(const char *what, const char *path, const void *addr, size_t len,
		       off_t size, mode_t mode)
{
	struct stat sp, sm;
	char m[128];

	snprintf(m, sizeof(m), "/proc/self/map_files/%lx-%lx", (unsigned long)addr,
		 (unsigned long)addr + len);
	if (stat(m, &sm))
		pfail("%s: stat %s", what, m);
	if (lstat(path, &sp))
		pfail("%s: lstat %s", what, path);
	if (!S_ISREG(sp.st_mode))
		fail("%s: %s is not a regular file", what, path);
	if (sp.st_ino != sm.st_ino || sp.st_dev != sm.st_dev)
		fail("%s: %s is inode %lu, the mapping maps inode %lu", what, path,
		     (unsigned long)sp.st_ino, (unsigned long)sm.st_ino);
	if (sm.st_nlink != 1)
		fail("%s: nlink %lu", what, (unsigned long)sm.st_nlink);
	if (sp.st_size != size)
		fail("%s: size %ld, expected %ld", what, (long)sp.st_size, (long)size);
	if ((sp.st_mode & 07777) != mode)
		fail("%s: mode %o, expected %o", what, sp.st_mode & 07777, mode);
}

static void check_dir(const char *path, mode_t mode)
{
	struct stat st;

	if (lstat(path, &st))
		pfail("lstat %s", path);
	if (!S_ISDIR(st.st_mode) || (st.st_mode & 07777) != mode)
		fail("%s: mode %o, expected a directory of mode %o", path, st.st_mode & 07777,
		     mode);
}

static void *map_new(const char *path, size_t size, mode_t mode, int flags, size_t len)
{
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	void *p;

	if (fd < 0)
		pfail("open %s", path);
	if (fchmod(fd, mode) || ftruncate(fd, size))
		pfail("size %s", path);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, flags, fd, 0);
	if (p == MAP_FAILED)
		pfail("mmap %s", path);
	close(fd);
	return p;
}

int main(int argc, char **argv)
{
	const char *seg_path, *dir;
	uint8_t *seg, *d, *pv;
	int go[2], done[2], lsk, ff, st;
	struct sockaddr_un a = { .sun_family = AF_UNIX };

	test_init(argc, argv);
	seg_path = test_arg("--seg");
	dir = test_arg("--dir");
	if (!seg_path || !dir)
		fail("usage: --seg PATH --dir DIR");
	snprintf(sess, sizeof(sess), "%s/sess", dir);
	snprintf(pdir, sizeof(pdir), "%s/pid.%d", sess, getpid());
	snprintf(dpath, sizeof(dpath), "%s/dstor", pdir);
	snprintf(ppath, sizeof(ppath), "%s/priv", pdir);
	snprintf(spath, sizeof(spath), "%s/sock", pdir);
	snprintf(fpath, sizeof(fpath), "%s/fifo", pdir);
	if (mkdir(sess, 0700) || chmod(sess, 0711) || mkdir(pdir, 0700))
		pfail("mkdir %s", pdir);

	seg = map_new(seg_path, SEG_SIZE, 0640, MAP_SHARED, SEG_SIZE);
	fill_pattern(seg, 2 * PG, 41, 0);
	fill_pattern(seg + SEG_SIZE / 2, PG, 42, 0);
	d = map_new(dpath, D_SIZE, 0600, MAP_SHARED, 4 * PG);
	fill_pattern(d, D_SIZE, 43, 0);
	{
		int fd = open(ppath, O_RDWR | O_CREAT | O_EXCL, 0600);
		static uint8_t buf[2 * PG];
		if (fd < 0)
			pfail("open %s", ppath);
		fill_pattern(buf, sizeof(buf), 44, 0);
		if (pwrite(fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf))
			pfail("pwrite %s", ppath);
		pv = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
		if (pv == MAP_FAILED)
			pfail("mmap %s", ppath);
		close(fd);
		memset(pv + PG, 0x5c, PG);
	}
	lsk = socket(AF_UNIX, SOCK_STREAM, 0);
	if (lsk < 0 || strlen(spath) >= sizeof(a.sun_path))
		pfail("socket");
	strcpy(a.sun_path, spath);
	if (bind(lsk, (struct sockaddr *)&a, sizeof(a)) || listen(lsk, 4))
		pfail("bind %s", spath);
	if (mkfifo(fpath, 0620) || chmod(fpath, 0620))
		pfail("mkfifo %s", fpath);
	ff = open(fpath, O_RDWR);
	if (ff < 0)
		pfail("open %s", fpath);

	if (pipe(go) || pipe(done))
		pfail("pipe");
	pid_t child = fork();
	if (child < 0)
		pfail("fork");
	if (child == 0) {
		char x;
		if (read(go[0], &x, 1) != 1)
			_exit(10);
		if (seg[100] != 0x77 || d[200] != 0x66)
			_exit(11);
		seg[SEG_SIZE / 2 + 5] = 0x88;
		d[D_SIZE - 1] = 0x99;
		if (write(done[1], "d", 1) != 1)
			_exit(12);
		_exit(0);
	}

	test_daemon();
	test_waitsig();

	long bad;
	check_dir(sess, 0711);
	check_dir(pdir, 0700);
	check_file("segment", seg_path, seg, SEG_SIZE, SEG_SIZE, 0640);
	check_file("dstor", dpath, d, 4 * PG, D_SIZE, 0600);
	check_file("priv", ppath, pv, 2 * PG, 2 * PG, 0600);
	{
		/* The holes are holes again (before reading them: a read fault
		 * on a hole of a shared tmpfs mapping fills it). */
		int fd = open(seg_path, O_RDONLY);
		off_t h = fd < 0 ? -1 : lseek(fd, 0, SEEK_HOLE);
		struct stat ss;
		if (fd < 0 || fstat(fd, &ss))
			pfail("open %s", seg_path);
		if (h != (off_t)(2 * PG))
			fail("segment: first hole at %ld, expected %lu", (long)h, 2 * PG);
		if (ss.st_blocks * 512 > 64 * (long)PG)
			fail("segment: %ld blocks allocated, holes not kept", (long)ss.st_blocks);
		close(fd);
	}
	if ((bad = check_pattern(seg, 2 * PG, 41, 0)) >= 0)
		fail("segment differs at offset %ld", bad);
	if ((bad = check_pattern(seg + SEG_SIZE / 2, PG, 42, 0)) >= 0)
		fail("segment differs at offset %ld past 512 KiB", bad);
	for (size_t i = 2 * PG; i < SEG_SIZE / 2; i++)
		if (seg[i])
			fail("segment: byte %zu of a hole is %u", i, seg[i]);
	if ((bad = check_pattern(d, D_SIZE, 43, 0)) >= 0)
		fail("dstor differs at offset %ld", bad);
	if ((bad = check_pattern(pv, PG, 44, 0)) >= 0)
		fail("priv differs at offset %ld", bad);
	for (size_t i = PG; i < 2 * PG; i++)
		if (pv[i] != 0x5c)
			fail("priv: the private page lost its copy at %zu", i);
	{
		/* The file under priv still holds its own bytes. */
		static uint8_t buf[2 * PG];
		int fd = open(ppath, O_RDONLY);
		if (fd < 0 || pread(fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf))
			pfail("read %s", ppath);
		if ((bad = check_pattern(buf, sizeof(buf), 44, 0)) >= 0)
			fail("the file %s differs at %ld", ppath, bad);
		close(fd);
	}

	/* Sharing with the child: one file each. */
	seg[100] = 0x77;
	d[200] = 0x66;
	if (write(go[1], "g", 1) != 1)
		pfail("write go");
	char x;
	if (read(done[0], &x, 1) != 1)
		fail("the child did not answer");
	if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st))
		fail("child: status %#x", st);
	if (seg[SEG_SIZE / 2 + 5] != 0x88)
		fail("the child's write to the segment is not seen by the parent");
	if (d[D_SIZE - 1] != 0x99)
		fail("the child's write to dstor is not seen by the parent");
	{
		/* And through the path: the same file. */
		uint8_t b = 0;
		int fd = open(dpath, O_RDONLY);
		if (fd < 0 || pread(fd, &b, 1, 200) != 1 || b != 0x66)
			fail("%s: the parent's write is not in the file at the path", dpath);
		close(fd);
	}

	/* The socket is bound at its path again. */
	{
		int c = socket(AF_UNIX, SOCK_STREAM, 0), s;
		struct stat sst;
		if (lstat(spath, &sst) || !S_ISSOCK(sst.st_mode))
			fail("%s is not a socket", spath);
		if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)))
			pfail("connect %s", spath);
		s = accept(lsk, NULL, NULL);
		if (s < 0)
			pfail("accept");
		if (write(c, "s", 1) != 1 || read(s, &x, 1) != 1 || x != 's')
			fail("no byte over the accepted connection");
		close(c);
		close(s);
	}
	/* The FIFO too. */
	{
		struct stat fst;
		if (lstat(fpath, &fst) || !S_ISFIFO(fst.st_mode) || (fst.st_mode & 07777) != 0620)
			fail("%s is not the FIFO of mode 620", fpath);
		int w = open(fpath, O_WRONLY | O_NONBLOCK);
		if (w < 0 || write(w, "f", 1) != 1 || read(ff, &x, 1) != 1 || x != 'f')
			fail("no byte through the FIFO");
		close(w);
	}
	pass();
}
