/*
 * mem_sparse: a 1 GiB private anonymous MAP_NORESERVE mapping with only
 * three pages touched. After restore the three pages hold their patterns and
 * untouched pages read as zero. (The Rust test also requires a small image.)
 */
#include "zdtm.h"

#include <sys/mman.h>

#define PG 4096ul
#define SIZE (1ul << 30)

static const size_t offs[] = { 0, (512ul << 20) + 12345 * PG, SIZE - PG };

int main(int argc, char **argv)
{
	uint8_t *m;
	char lines[1024], lines_after[1024];

	test_init(argc, argv);
	m = mmap(NULL, SIZE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED)
		pfail("mmap 1 GiB");
	for (int i = 0; i < 3; i++)
		fill_pattern(m + offs[i], PG, 900 + i, 0);
	maps_lines((unsigned long)m, (unsigned long)m + SIZE, lines, sizeof(lines));

	test_daemon();
	test_waitsig();

	maps_lines((unsigned long)m, (unsigned long)m + SIZE, lines_after, sizeof(lines_after));
	if (strcmp(lines, lines_after))
		fail("maps lines changed.\nbefore:\n%safter:\n%s", lines, lines_after);
	for (int i = 0; i < 3; i++) {
		long bad = check_pattern(m + offs[i], PG, 900 + i, 0);
		if (bad >= 0)
			fail("touched page %d (offset %#zx) differs at byte %ld", i, offs[i], bad);
	}
	/* A sample of untouched pages, including the neighbours of touched ones. */
	static const size_t zero_offs[] = { PG, 2 * PG, (512ul << 20) + 12344 * PG,
		(512ul << 20) + 12346 * PG, 100ul << 20, SIZE - 2 * PG, SIZE / 2 };
	for (size_t i = 0; i < sizeof(zero_offs) / sizeof(zero_offs[0]); i++)
		for (size_t j = 0; j < PG; j++)
			if (m[zero_offs[i] + j])
				fail("untouched page at offset %#zx has a non-zero byte at %zu",
				     zero_offs[i], j);
	pass();
}
