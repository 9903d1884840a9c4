/*
 * bench_mem: the workload of `cargo xtask bench`. It maps SIZE bytes of
 * private anonymous memory, fills every byte, writes its pid to the pidfile
 * (PATH.tmp, then rename, as the test workloads do) and then sleeps until
 * it is killed.
 *
 *   bench_mem SIZE KIND --pidfile PATH
 *
 * SIZE is in bytes, with an optional K, M or G suffix (powers of 1024).
 * KIND is
 *   incompressible  xorshift64 output: zstd cannot shrink it (ratio 1.00);
 *   compressible    each 8-byte word is 4 random bytes and 4 zero bytes:
 *                   zstd -1 gets about 2:1 (measured 1.95 on a 64 MiB
 *                   stream, 1.93 in 1 MiB frames, 1.77 in 64 KiB frames).
 *
 * The generator is seeded with a constant, so every run holds the same data.
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

static void die(const char *what)
{
	fprintf(stderr, "bench_mem: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void usage(void)
{
	fprintf(stderr, "usage: bench_mem SIZE incompressible|compressible --pidfile PATH\n");
	exit(2);
}

static size_t parse_size(const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		usage();
	switch (*end) {
	case 'G': case 'g': v <<= 10; /* fall through */
	case 'M': case 'm': v <<= 10; /* fall through */
	case 'K': case 'k': v <<= 10; end++; break;
	case '\0': break;
	default: usage();
	}
	if (*end != '\0' || v == 0)
		usage();
	return (size_t)v;
}

static void write_pidfile(const char *path)
{
	char tmp[4096];
	FILE *f;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		usage();
	f = fopen(tmp, "w");
	if (!f)
		die(tmp);
	fprintf(f, "%d\n", getpid());
	if (fclose(f))
		die(tmp);
	if (rename(tmp, path))
		die(path);
}

int main(int argc, char **argv)
{
	const char *pidfile = NULL;
	uint64_t x = 0x9e3779b97f4a7c15ull, mask;
	uint64_t *w;
	size_t size, i;
	void *p;

	if (argc != 5 || strcmp(argv[3], "--pidfile") != 0)
		usage();
	size = parse_size(argv[1]);
	if (strcmp(argv[2], "incompressible") == 0)
		mask = ~0ull;
	else if (strcmp(argv[2], "compressible") == 0)
		mask = 0xffffffffull;
	else
		usage();
	pidfile = argv[4];

	/* Its own session: nothing outside the dumped tree. */
	setsid();

	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	w = p;
	for (i = 0; i < size / 8; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		w[i] = x & mask;
	}
	/* A tail shorter than a word. */
	memset((char *)p + size / 8 * 8, 0x5a, size % 8);

	write_pidfile(pidfile);
	for (;;) {
		struct timespec ts = { .tv_sec = 1, .tv_nsec = 0 };
		nanosleep(&ts, NULL);
	}
}
