/*
 * The cost of libcairn's calls under a supervisor (`cargo xtask bench
 * libcairn` runs it under `cairn run`): CALLS calls of
 * cairn_checkpoint_data for each size (16 B, 1 KiB, 64 KiB), each timed
 * with CLOCK_MONOTONIC, and RESTARTS restart checkpoints
 * (cairn_checkpoint). One line per measure:
 *
 *   bench NAME calls=N median_us=X p90_us=X p99_us=X mean_us=X
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cairn.h"

static double now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static void report(const char *name, double *v, int n)
{
	double sum = 0;
	for (int i = 0; i < n; i++)
		sum += v[i];
	qsort(v, n, sizeof(*v), cmp);
	printf("bench %s calls=%d median_us=%.2f p90_us=%.2f p99_us=%.2f mean_us=%.2f\n", name, n,
	       v[n / 2], v[n * 9 / 10], v[n * 99 / 100], sum / n);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	int calls = argc > 1 ? atoi(argv[1]) : 20000;
	int restarts = argc > 2 ? atoi(argv[2]) : 5;
	static unsigned char buf[CAIRN_DATA_MAX];
	double *t = calloc(calls > restarts ? calls : restarts, sizeof(double));
	size_t sizes[] = {16, 1024, CAIRN_DATA_MAX};
	const char *names[] = {"data_16B", "data_1KiB", "data_64KiB"};
	if (!t)
		return 1;
	for (int s = 0; s < 3; s++) {
		for (int i = 0; i < calls; i++) {
			buf[0] = (unsigned char)i;
			double a = now_us();
			int r = cairn_checkpoint_data(buf, sizes[s]);
			t[i] = now_us() - a;
			if (r != 0) {
				printf("FAIL cairn_checkpoint_data: %d\n", r);
				return 1;
			}
		}
		report(names[s], t, calls);
	}
	for (int i = 0; i < restarts; i++) {
		double a = now_us();
		int r = cairn_checkpoint();
		t[i] = now_us() - a;
		if (r != 0) {
			printf("FAIL cairn_checkpoint: %d\n", r);
			return 1;
		}
	}
	if (restarts > 0)
		report("checkpoint", t, restarts);
	return 0;
}
