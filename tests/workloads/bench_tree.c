/*
 * bench_tree: a flat tree of PROCS processes (the root and PROCS-1
 * children), each with THREADS threads (the extra ones blocked in
 * pthread_cond_wait), for `cargo xtask bench tree`.
 *
 *   bench_tree PROCS THREADS --pidfile PATH
 *
 * The pidfile (written as PATH.tmp, then renamed) appears once every
 * process and thread is up. Then everything sleeps until killed.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static void *idle(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&mu);
	for (;;)
		pthread_cond_wait(&cv, &mu);
	return NULL;
}

static void start_threads(int n)
{
	for (int i = 1; i < n; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, idle, NULL)) {
			perror("pthread_create");
			exit(1);
		}
	}
}

int main(int argc, char **argv)
{
	if (argc != 5 || strcmp(argv[3], "--pidfile")) {
		fprintf(stderr, "usage: bench_tree PROCS THREADS --pidfile PATH\n");
		return 2;
	}
	int procs = atoi(argv[1]), threads = atoi(argv[2]);
	int ready[2];
	if (procs < 1 || threads < 1 || pipe(ready)) {
		fprintf(stderr, "bad arguments\n");
		return 2;
	}
	for (int i = 1; i < procs; i++) {
		pid_t c = fork();
		if (c < 0) {
			perror("fork");
			return 1;
		}
		if (c == 0) {
			close(ready[0]);
			start_threads(threads);
			if (write(ready[1], "r", 1) != 1)
				_exit(1);
			close(ready[1]);
			for (;;)
				pause();
		}
	}
	close(ready[1]);
	start_threads(threads);
	char c;
	for (int i = 1; i < procs; i++)
		if (read(ready[0], &c, 1) != 1) {
			fprintf(stderr, "a child died before it was ready\n");
			return 1;
		}
	close(ready[0]);
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", argv[4]);
	FILE *f = fopen(tmp, "w");
	if (!f || fprintf(f, "%d\n", getpid()) < 0 || fclose(f) || rename(tmp, argv[4])) {
		perror("pidfile");
		return 1;
	}
	for (;;)
		pause();
}
