/*
 * bench_incr: the workload of `cargo xtask bench incremental`. It maps SIZE
 * bytes of private anonymous memory and fills them with xorshift64 output
 * (incompressible), writes its pid to the pidfile (PATH.tmp, then rename),
 * and waits. On SIGUSR1 it rewrites PERCENT percent of its pages, chosen
 * by a seeded hash of the page number (so they are spread over the whole
 * mapping, mostly one page apart), with new incompressible data, then
 * creates PATH.rewritten; then it waits again until it is killed.
 *
 *   bench_incr SIZE PERCENT --pidfile PATH
 *
 * SIZE is in bytes with an optional K, M or G suffix (powers of 1024).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t go;

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

static void die(const char *what)
{
	fprintf(stderr, "bench_incr: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void usage(void)
{
	fprintf(stderr, "usage: bench_incr SIZE PERCENT --pidfile PATH\n");
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

static void touch_file(const char *path, int with_pid)
{
	char tmp[4096];
	FILE *f;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		usage();
	f = fopen(tmp, "w");
	if (!f)
		die(tmp);
	if (with_pid)
		fprintf(f, "%d\n", getpid());
	if (fclose(f))
		die(tmp);
	if (rename(tmp, path))
		die(path);
}

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

int main(int argc, char **argv)
{
	uint64_t x = 0x9e3779b97f4a7c15ull, *w;
	size_t size, pages, rewritten = 0;
	char done[4200];
	sigset_t usr1, old;
	int percent;
	void *p;

	if (argc != 5 || strcmp(argv[3], "--pidfile") != 0)
		usage();
	size = parse_size(argv[1]);
	percent = atoi(argv[2]);
	if (percent < 0 || percent > 100)
		usage();
	setsid();
	signal(SIGUSR1, on_usr1);
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, &old);

	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	w = p;
	for (size_t i = 0; i < size / 8; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		w[i] = x;
	}
	touch_file(argv[4], 1);
	while (!go)
		sigsuspend(&old);
	pages = size / 4096;
	for (size_t pg = 0; pg < pages; pg++) {
		if (mix(pg + 12345) % 100 >= (uint64_t)percent)
			continue;
		uint64_t *q = (uint64_t *)((char *)p + pg * 4096);
		for (int i = 0; i < 512; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			q[i] = x;
		}
		rewritten++;
	}
	snprintf(done, sizeof(done), "%s.rewritten", argv[4]);
	fprintf(stderr, "bench_incr: rewrote %zu of %zu pages\n", rewritten, pages);
	touch_file(done, 0);
	for (;;)
		pause();
}
