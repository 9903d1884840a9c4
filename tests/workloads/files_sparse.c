/*
 * files_sparse: a sparse deleted-but-open file: 4 GiB (--size BYTES) with
 * a few data extents (at 0, 1 GiB + 8 KiB, 3 GiB and at the end), the
 * rest holes; then unlinked. After restore: same size, the same
 * SEEK_DATA/SEEK_HOLE layout (holes are holes, not written zeros), the
 * same allocated blocks, the data of every extent, still unlinked.
 */
#include "zdtm.h"

#define MAXEXT 64

struct ext {
	off_t data, hole;
};

static int layout(int fd, off_t size, struct ext *e)
{
	off_t off = 0;
	int n = 0;

	while (off < size && n < MAXEXT) {
		off_t d = lseek(fd, off, SEEK_DATA);
		if (d < 0) {
			if (errno == ENXIO)
				break;
			pfail("SEEK_DATA");
		}
		off_t h = lseek(fd, d, SEEK_HOLE);
		if (h < 0)
			pfail("SEEK_HOLE");
		e[n].data = d;
		e[n].hole = h;
		n++;
		off = h;
	}
	return n;
}

int main(int argc, char **argv)
{
	static uint8_t buf[16384];
	struct ext before[MAXEXT], after[MAXEXT];
	const char *path, *sz;
	off_t size = 4LL << 30;
	struct {
		off_t off;
		size_t len;
	} w[4];
	struct stat s0, s1;
	int fd, n0, n1, i;

	test_init(argc, argv);
	path = test_arg("--file");
	if (!path)
		path = "files_sparse.data";
	sz = test_arg("--size");
	if (sz)
		size = strtoll(sz, NULL, 0);
	w[0].off = 0, w[0].len = 4096;
	w[1].off = size / 4 + 8192, w[1].len = 12288;
	w[2].off = size / 4 * 3, w[2].len = 4096;
	w[3].off = size - 4096, w[3].len = 4096;

	fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0)
		pfail("open %s", path);
	if (ftruncate(fd, size))
		pfail("ftruncate");
	for (i = 0; i < 4; i++) {
		fill_pattern(buf, w[i].len, 1000 + i, w[i].off);
		if (pwrite(fd, buf, w[i].len, w[i].off) != (ssize_t)w[i].len)
			pfail("pwrite %d", i);
	}
	if (fsync(fd))
		pfail("fsync");
	if (unlink(path))
		pfail("unlink");
	n0 = layout(fd, size, before);
	if (n0 < 2)
		fail("the file system keeps no holes (%d extents)", n0);
	if (fstat(fd, &s0))
		pfail("fstat");

	test_daemon();
	test_waitsig();

	if (fstat(fd, &s1))
		pfail("fstat");
	if (s1.st_size != size)
		fail("size %lld, expected %lld", (long long)s1.st_size, (long long)size);
	if (s1.st_nlink != 0)
		fail("nlink %lu, expected 0", (unsigned long)s1.st_nlink);
	n1 = layout(fd, size, after);
	if (n1 != n0)
		fail("%d data extents, expected %d (first: %lld-%lld)", n1, n0,
		     (long long)after[0].data, (long long)after[0].hole);
	for (i = 0; i < n0; i++)
		if (after[i].data != before[i].data || after[i].hole != before[i].hole)
			fail("extent %d is %lld-%lld, expected %lld-%lld", i,
			     (long long)after[i].data, (long long)after[i].hole,
			     (long long)before[i].data, (long long)before[i].hole);
	if (s1.st_blocks != s0.st_blocks)
		fail("%lld blocks allocated, expected %lld", (long long)s1.st_blocks,
		     (long long)s0.st_blocks);
	for (i = 0; i < 4; i++) {
		long bad;

		if (pread(fd, buf, w[i].len, w[i].off) != (ssize_t)w[i].len)
			pfail("pread %d", i);
		bad = check_pattern(buf, w[i].len, 1000 + i, w[i].off);
		if (bad >= 0)
			fail("extent %d differs at offset %lld", i, (long long)w[i].off + bad);
	}
	pass();
}
