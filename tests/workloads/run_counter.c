/*
 * run_counter: the job of tests/run.rs (`cairn run`).
 *
 *   run_counter PROGRESS STEPS [CHILDREN]
 *
 * Counts from 0 to STEPS, one step every 10 ms. Each step first checks
 * that the state is continuous: the progress file (created exclusively
 * at the start, so a job started afresh over an old one fails) holds the
 * count in memory and the pid, getpid() is the pid it started with, and
 * a 4 MiB buffer holds what the earlier steps wrote. Then it writes the
 * next count. A checkpoint restored brings back memory and the file's
 * contents together, so the job goes on from where it was. At STEPS it
 * prints "PASS count=STEPS" and exits 0; any discontinuity prints FAIL and
 * exits 1. With CHILDREN, that many children sleep until the parent ends
 * (each checks its own pid too): a tree of several processes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define PAGES 1024
#define REC 22

static void fail(const char *fmt, long a, long b)
{
	printf("FAIL: ");
	printf(fmt, a, b);
	printf("\n");
	fflush(stdout);
	exit(1);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: run_counter PROGRESS STEPS [CHILDREN]\n");
		return 2;
	}
	long steps = atol(argv[2]);
	int nchild = argc > 3 ? atoi(argv[3]) : 0;
	int fd = open(argv[1], O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		printf("FAIL: open %s: %s (started afresh over an old job?)\n", argv[1],
		       strerror(errno));
		return 1;
	}
	pid_t me = getpid();
	for (int i = 0; i < nchild; i++) {
		pid_t c = fork();
		if (c == 0) {
			pid_t mine = getpid();
			for (;;) {
				usleep(20000);
				if (getpid() != mine)
					_exit(1);
				if (getppid() != me)
					_exit(0);
			}
		}
	}
	unsigned char *buf = mmap(NULL, PAGES * 4096, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		fail("mmap %ld %ld", errno, 0);
	long count = 0, sum = 0;
	char rec[64];
	snprintf(rec, sizeof(rec), "%012ld %08d\n", 0L, (int)me);
	if (pwrite(fd, rec, REC, 0) != REC)
		fail("pwrite %ld %ld", errno, 0);
	printf("started pid %d\n", (int)me);
	fflush(stdout);
	while (count < steps) {
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		nanosleep(&ts, NULL);
		char got[REC + 1] = { 0 };
		if (pread(fd, got, REC, 0) != REC)
			fail("pread %ld %ld", errno, 0);
		long fc = atol(got);
		long fp = atol(got + 13);
		if (fc != count)
			fail("the progress file says %ld, memory says %ld", fc, count);
		if (fp != me || getpid() != me)
			fail("pid changed: %ld, was %ld", (long)getpid(), (long)me);
		long want = 0;
		for (long k = 0; k < count && k < PAGES; k++) {
			long i = count - 1 - k;
			long v;
			memcpy(&v, buf + (i % PAGES) * 4096, sizeof(v));
			if (v != i)
				fail("page of step %ld holds %ld", i, v);
		}
		for (long k = 0; k < count; k++)
			want += k;
		if (sum != want)
			fail("sum %ld, expected %ld", sum, want);
		memcpy(buf + (count % PAGES) * 4096, &count, sizeof(count));
		sum += count;
		count++;
		snprintf(rec, sizeof(rec), "%012ld %08d\n", count, (int)me);
		if (pwrite(fd, rec, REC, 0) != REC)
			fail("pwrite %ld %ld", errno, 0);
	}
	printf("PASS count=%ld\n", count);
	fflush(stdout);
	return 0;
}
