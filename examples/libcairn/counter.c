/*
 * A cooperating program (libcairn): STEPS steps of work, a restart
 * checkpoint every EVERY steps (cairn_checkpoint) and a nonrestart
 * checkpoint after every step (cairn_checkpoint_data: the step, the
 * running sum and 1 KiB of data derived from them).
 *
 *   cairn run -D DIR -- counter PROGRESS STEPS EVERY [PAUSE_AT [DELAY_MS [BACKUP]]]
 *   cairn pair -D DIR -- counter PROGRESS STEPS EVERY PAUSE_AT 0 1
 *
 * After step PAUSE_AT (its data sent) it writes "PAUSE_AT PID" to PROGRESS
 * and waits, to be killed there; `cairn run -D DIR` again restores it at
 * its last restart checkpoint, where cairn_checkpoint returns 1. The
 * program then checks, itself, that the sum in its memory is the one of
 * that step and that cairn_takeover_data gives the newest data, of step
 * PAUSE_AT, intact; goes on to the end and prints PASS (exit 0), or FAIL
 * and the reason (exit 1). PAUSE_AT 0: no pause. DELAY_MS: a sleep after
 * every step (for periodic checkpoints, `cairn run --interval`).
 * BACKUP: what cairn_is_backup() must say in the restored process: 0
 * (default) under `cairn run`, 1 under `cairn pair`, where the process
 * killed at PAUSE_AT is the primary and the one that resumes at the
 * restart checkpoint is the backup that took over.
 *
 *   counter --standalone
 *
 * checks that every call returns -ENOTCONN outside a supervisor.
 *
 * Build: gcc -O2 -I libcairn/include counter.c -L DIR -lcairn -Wl,-rpath,DIR
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn.h"

#define PAYLOAD 1024

struct data {
	long step;
	unsigned long long sum;
	unsigned char bytes[PAYLOAD];
};

static void fill(struct data *d, long step, unsigned long long sum)
{
	memset(d, 0, sizeof(*d));
	d->step = step;
	d->sum = sum;
	for (int i = 0; i < PAYLOAD; i++)
		d->bytes[i] = (unsigned char)(step * 31 + i * 7 + sum);
}

static unsigned long long sum_to(long n)
{
	unsigned long long s = 0;
	for (long i = 1; i <= n; i++)
		s += (unsigned long long)i * i;
	return s;
}

static int fail(const char *why, long v)
{
	printf("FAIL: %s (%ld)\n", why, v);
	fflush(stdout);
	return 1;
}

static void progress(const char *path, long step)
{
	char b[64];
	int n = snprintf(b, sizeof(b), "%ld %d\n", step, getpid());
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd >= 0) {
		if (write(fd, b, n) != n)
			perror("write progress");
		close(fd);
	}
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--standalone") == 0) {
		char b[16];
		int r1 = cairn_checkpoint();
		int r2 = cairn_checkpoint_data("x", 1);
		ssize_t r3 = cairn_takeover_data(b, sizeof(b));
		int r4 = cairn_is_backup();
		printf("standalone: %d %d %zd %d\n", r1, r2, r3, r4);
		if (r1 != -ENOTCONN || r2 != -ENOTCONN || r3 != -ENOTCONN || r4 != -ENOTCONN)
			return fail("not -ENOTCONN outside a supervisor", r1);
		printf("PASS\n");
		return 0;
	}
	if (argc < 4) {
		fprintf(stderr, "usage: %s PROGRESS STEPS EVERY [PAUSE_AT [DELAY_MS]] | --standalone\n", argv[0]);
		return 2;
	}
	const char *prog = argv[1];
	long steps = atol(argv[2]), every = atol(argv[3]);
	long pause_at = argc > 4 ? atol(argv[4]) : -1;
	long delay_ms = argc > 5 ? atol(argv[5]) : 0;
	int expect_backup = argc > 6 ? atoi(argv[6]) : 0;
	static struct data d, got;
	unsigned long long sum = 0;
	int restored = 0;

	if (cairn_is_backup() != 0)
		return fail("cairn_is_backup() is not 0 in the first process", cairn_is_backup());
	/* A fresh job has no nonrestart data yet. */
	ssize_t n = cairn_takeover_data(&got, sizeof(got));
	if (n != -ENODATA)
		return fail("cairn_takeover_data() of a fresh job is not -ENODATA", n);
	if (cairn_checkpoint_data(&d, CAIRN_DATA_MAX + 1) != -E2BIG)
		return fail("more than CAIRN_DATA_MAX is not -E2BIG", 0);

	for (long step = 1; step <= steps; step++) {
		sum += (unsigned long long)step * step;
		if (step % every == 0) {
			int r = cairn_checkpoint();
			if (r < 0)
				return fail("cairn_checkpoint() failed", r);
			if (r == 1) {
				restored++;
				/* Memory is the checkpoint's. */
				if (sum != sum_to(step))
					return fail("the sum in memory is not the restart point's", step);
				n = cairn_takeover_data(&got, sizeof(got));
				if (n != (ssize_t)sizeof(got))
					return fail("cairn_takeover_data() length", n);
				fill(&d, got.step, got.sum);
				if (memcmp(&d, &got, sizeof(got)) != 0)
					return fail("the takeover data is corrupt", got.step);
				if (got.sum != sum_to(got.step))
					return fail("the takeover data's sum", got.step);
				if (pause_at > 0 && got.step != pause_at)
					return fail("the takeover data is not the newest (of the pause step)", got.step);
				if (got.step < step)
					return fail("the takeover data is older than the restart point", got.step);
				int b = cairn_is_backup();
				if (b != expect_backup)
					return fail("cairn_is_backup() in the restored process", b);
				printf("restored at step %ld; takeover data of step %ld; backup %d\n", step,
				       got.step, b);
				fflush(stdout);
				pause_at = -1;
			}
		}
		fill(&d, step, sum);
		int r = cairn_checkpoint_data(&d, sizeof(d));
		if (r != 0)
			return fail("cairn_checkpoint_data() failed", r);
		progress(prog, step);
		if (step == pause_at) {
			for (;;)
				pause();
		}
		if (delay_ms > 0)
			usleep(delay_ms * 1000);
	}
	if (pause_at == -1 && restored != 1 && argc > 4)
		return fail("not restored exactly once", restored);
	printf("PASS %ld steps, restored %d\n", steps, restored);
	return 0;
}
