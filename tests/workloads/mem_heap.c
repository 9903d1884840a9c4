/*
 * mem_heap: malloc'd buffers of several sizes (the largest one above the
 * mmap threshold, so glibc serves it with its own mmap) filled with a
 * pattern. After restore: the patterns are intact, the old buffers can be
 * freed and realloc'd, and new allocations work.
 */
#include "zdtm.h"

#include <malloc.h>

static const size_t sizes[] = {
	1, 24, 200, 1000, 4096, 4096 * 3 + 17, 100000, 300000,
	(2u << 20) + 123, /* > 1 MiB: mmapped by malloc */
};
#define NBUF (sizeof(sizes) / sizeof(sizes[0]))

int main(int argc, char **argv)
{
	void *bufs[NBUF];
	void *fresh[64];

	test_init(argc, argv);

	for (size_t i = 0; i < NBUF; i++) {
		bufs[i] = malloc(sizes[i]);
		if (!bufs[i])
			pfail("malloc(%zu)", sizes[i]);
		fill_pattern(bufs[i], sizes[i], 100 + i, 0);
	}
	/* Leave a few holes in the heap: freed chunks sit in the bins. */
	for (int i = 0; i < 16; i++) {
		fresh[i] = malloc(64 + 32 * i);
		if (!fresh[i])
			pfail("malloc");
	}
	for (int i = 0; i < 16; i += 2)
		free(fresh[i]);

	test_daemon();
	test_waitsig();

	for (size_t i = 0; i < NBUF; i++) {
		long bad = check_pattern(bufs[i], sizes[i], 100 + i, 0);
		if (bad >= 0)
			fail("buffer %zu (%zu bytes at %p) differs at offset %ld",
			     i, sizes[i], bufs[i], bad);
	}

	/* The allocator's metadata must be consistent: free, realloc, allocate. */
	for (int i = 1; i < 16; i += 2)
		free(fresh[i]);
	for (size_t i = 0; i < NBUF; i += 2) {
		free(bufs[i]);
		bufs[i] = NULL;
	}
	for (size_t i = 1; i < NBUF; i += 2) {
		void *p = realloc(bufs[i], sizes[i] * 2 + 1);
		if (!p)
			pfail("realloc(%zu)", sizes[i] * 2 + 1);
		bufs[i] = p;
		long bad = check_pattern(p, sizes[i], 100 + i, 0);
		if (bad >= 0)
			fail("realloc'd buffer %zu differs at offset %ld", i, bad);
		memset((char *)p + sizes[i], 0x5a, sizes[i] + 1);
	}
	for (int i = 0; i < 64; i++) {
		size_t sz = 16 + (size_t)i * 4099;
		if (i == 63)
			sz = 3u << 20; /* another mmapped chunk */
		fresh[i] = malloc(sz);
		if (!fresh[i])
			pfail("malloc(%zu) after restore", sz);
		fill_pattern(fresh[i], sz, 7000 + i, 0);
	}
	for (int i = 0; i < 64; i++) {
		size_t sz = i == 63 ? 3u << 20 : 16 + (size_t)i * 4099;
		if (check_pattern(fresh[i], sz, 7000 + i, 0) >= 0)
			fail("new allocation %d overlaps something", i);
		free(fresh[i]);
	}
	for (size_t i = 1; i < NBUF; i += 2)
		free(bufs[i]);
	malloc_trim(0);
	pass();
}
