/*
 * pair_counter: the program of tests/pair.rs and `cargo xtask bench
 * pair` (`cairn pair`, process pairs).
 *
 *   pair_counter PROGRESS STEP_MS STEPS [MIB]
 *
 * Counts, one step every STEP_MS milliseconds, up to STEPS (0: forever),
 * then exits 0. At every step it writes one record at offset 0 of the
 * PROGRESS file (created exclusively at the start, so a program started
 * afresh over an old one fails at once):
 *
 *   COUNT REALTIME_NS PID
 *
 * REALTIME_NS is CLOCK_REALTIME when the record was written: the first
 * record after a takeover tells when the backup ran. Before each step it
 * checks its own continuity: the record in the file is the one it wrote
 * last (a backup puts the file back as it was at its checkpoint, with
 * the memory of that moment), a buffer of MIB MiB (default 1, every page
 * written at the start) holds at each slot the last count written there,
 * and getpid() is the pid it started with (a restore keeps it). A
 * discontinuity prints FAIL and exits 3.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define REC 43

static void fail(const char *what, long a, long b)
{
	printf("FAIL: %s (%ld, %ld)\n", what, a, b);
	fflush(stdout);
	exit(3);
}

static long long now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: pair_counter PROGRESS STEP_MS STEPS [MIB]\n");
		return 2;
	}
	long step_ms = atol(argv[2]);
	long steps = atol(argv[3]);
	long mib = argc > 4 ? atol(argv[4]) : 1;
	int fd = open(argv[1], O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		printf("FAIL: open %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	size_t len = (size_t)mib << 20;
	long *buf = mmap(NULL, len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		fail("mmap", errno, mib);
	size_t slots = len / sizeof(long);
	/* Every page holds data (-index-1 where no count was written yet). */
	for (size_t i = 0; i < slots; i++)
		buf[i] = -(long)i - 1;
	pid_t me = getpid();
	long count = 0;
	char rec[64], got[64];
	struct timespec d = {step_ms / 1000, (step_ms % 1000) * 1000000L};
	for (;;) {
		if (count > 0) {
			if (pread(fd, got, REC, 0) != REC)
				fail("pread", errno, count);
			if (memcmp(got, rec, REC) != 0)
				fail("the file's record is not the last one written", atol(got),
				     count);
			size_t prev = (size_t)((count - 1) * 4099) % slots;
			if (buf[prev] != count - 1 && count - 1 > 0)
				fail("memory lost the last count", buf[prev], count - 1);
		}
		if (getpid() != me)
			fail("pid changed", getpid(), me);
		if (steps > 0 && count >= steps) {
			printf("PASS count=%ld\n", count);
			fflush(stdout);
			return 0;
		}
		count++;
		buf[(size_t)(count * 4099) % slots] = count;
		snprintf(rec, sizeof(rec), "%012ld %020lld %08d\n", count, now_ns(),
			 (int)me);
		if (pwrite(fd, rec, REC, 0) != REC)
			fail("pwrite", errno, count);
		nanosleep(&d, NULL);
	}
}
