/*
 * mem_mixed: page data of every kind the dump's page pipeline tells apart,
 * in one 24 MiB private anonymous mapping:
 *   - 8 MiB of xorshift output (incompressible: stored as raw chunks), in
 *     which every 5th page is zero (data pages are compacted in place);
 *   - 8 MiB of 2:1 data (4 random bytes + 4 zero bytes per word: zstd);
 *   - 8 MiB alternating 1 MiB of random and 1 MiB of repeated text.
 * After restore every byte is generated again and compared.
 */
#include "zdtm.h"

#include <sys/mman.h>

#define PG 4096ul
#define MB (1ul << 20)
#define SIZE (24 * MB)

static uint64_t expect_word(size_t w)
{
	size_t off = w * 8, page = off / PG;
	uint64_t x = 0x9e3779b97f4a7c15ull ^ (w * 0xff51afd7ed558ccdull);

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	if (off < 8 * MB)
		return page % 5 == 3 ? 0 : x;
	if (off < 16 * MB)
		return x & 0xffffffffull;
	if ((off / MB) % 2 == 0)
		return x;
	return 0x6e69617263206e69ull + (w % 7);
}

int main(int argc, char **argv)
{
	uint64_t *m;

	test_init(argc, argv);
	m = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		pfail("mmap 24 MiB");
	for (size_t w = 0; w < SIZE / 8; w++)
		m[w] = expect_word(w);

	test_daemon();
	test_waitsig();

	for (size_t w = 0; w < SIZE / 8; w++)
		if (m[w] != expect_word(w))
			fail("word at offset %#zx is %#llx, expected %#llx", w * 8,
			     (unsigned long long)m[w], (unsigned long long)expect_word(w));
	pass();
}
