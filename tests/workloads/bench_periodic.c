/*
 * bench_periodic: the job of `cargo xtask bench periodic` (issue 17).
 *
 *   bench_periodic SIZE PERMILLE_PER_SECOND
 *
 * Maps SIZE bytes (K, M or G suffix) of private anonymous memory, fills
 * them with xorshift64 output (incompressible), prints "ready", then
 * rewrites PERMILLE_PER_SECOND / 1000 of its pages every second (in ten
 * slices of 100 ms) with new incompressible data, walking through the
 * memory from start to end and around again, as a simulation sweeping its
 * arrays would. Runs until killed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static size_t parse_size(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);

	switch (*end) {
	case 'G': case 'g': v <<= 10; /* fall through */
	case 'M': case 'm': v <<= 10; /* fall through */
	case 'K': case 'k': v <<= 10; break;
	default: break;
	}
	return (size_t)v;
}

int main(int argc, char **argv)
{
	uint64_t x = 0x9e3779b97f4a7c15ull;

	if (argc != 3) {
		fprintf(stderr, "usage: bench_periodic SIZE PERMILLE_PER_SECOND\n");
		return 2;
	}
	size_t size = parse_size(argv[1]), pages = size / 4096;
	long permille = atol(argv[2]);
	if (pages == 0 || permille < 0 || permille > 1000) {
		fprintf(stderr, "bench_periodic: bad arguments\n");
		return 2;
	}
	uint64_t *w = mmap(NULL, size, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (w == MAP_FAILED) {
		fprintf(stderr, "bench_periodic: mmap: %s\n", strerror(errno));
		return 1;
	}
	for (size_t i = 0; i < size / 8; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		w[i] = x;
	}
	printf("ready\n");
	fflush(stdout);
	/* Pages per 100 ms slice, with the remainder carried over. */
	size_t cursor = 0;
	double carry = 0;
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (;;) {
		carry += (double)pages * permille / 1000.0 / 10.0;
		size_t n = (size_t)carry;
		carry -= n;
		for (size_t k = 0; k < n; k++) {
			uint64_t *q = w + cursor * 512;
			for (int i = 0; i < 512; i++) {
				x ^= x << 13;
				x ^= x >> 7;
				x ^= x << 17;
				q[i] = x;
			}
			cursor = (cursor + 1) % pages;
		}
		next.tv_nsec += 100 * 1000 * 1000;
		if (next.tv_nsec >= 1000000000) {
			next.tv_nsec -= 1000000000;
			next.tv_sec++;
		}
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
	}
}
