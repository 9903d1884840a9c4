/*
 * fault_mem: memory and files for dumps that fail half-way (the dumper
 * killed, the disk full). MIB (--mib N, default 64) MiB of patterned
 * memory, a regular file open at an offset, the main thread with SIGUSR2
 * blocked, and a worker thread (SIGUSR1 blocked) that alternates between
 * nanosleep and a register-heavy loop that checks its own result. After
 * SIGTERM: the memory, the offset and both signal masks are as they were,
 * the worker still runs and never saw a wrong sum.
 */
#include "zdtm.h"

#include <pthread.h>
#include <time.h>

static volatile int stop_worker;
static volatile unsigned long worker_rounds;
static volatile int worker_bad;
static volatile int worker_mask_ok;

static void *worker(void *arg)
{
	sigset_t m, now;

	(void)arg;
	sigemptyset(&m);
	sigaddset(&m, SIGUSR1);
	sigaddset(&m, SIGTERM); /* SIGTERM goes to the main thread */
	pthread_sigmask(SIG_SETMASK, &m, NULL);
	while (!stop_worker) {
		unsigned long a = 1, b = 2, c = 3, d = 4, e = 5, f = 6;
		for (int i = 0; i < 100000; i++) {
			a += b ^ (unsigned long)i;
			b += c;
			c += d;
			d += e;
			e += f;
			f += a;
		}
		/* the same sums once more: the two must match */
		unsigned long a2 = 1, b2 = 2, c2 = 3, d2 = 4, e2 = 5, f2 = 6;
		for (int i = 0; i < 100000; i++) {
			a2 += b2 ^ (unsigned long)i;
			b2 += c2;
			c2 += d2;
			d2 += e2;
			e2 += f2;
			f2 += a2;
		}
		if (a != a2 || f != f2)
			worker_bad = 1;
		struct timespec ts = { 0, 500000 };
		nanosleep(&ts, NULL);
		worker_rounds++;
	}
	pthread_sigmask(SIG_SETMASK, NULL, &now);
	worker_mask_ok = sigismember(&now, SIGUSR1) == 1 && sigismember(&now, SIGUSR2) == 0 &&
			 sigismember(&now, SIGINT) == 0;
	return NULL;
}

int main(int argc, char **argv)
{
	const char *mib_s;
	size_t len;
	char *mem;
	int fd;
	pthread_t th;
	sigset_t m, now;
	char buf[4096];

	test_init(argc, argv);
	mib_s = test_arg("--mib");
	len = (size_t)(mib_s ? atoi(mib_s) : 64) << 20;
	mem = malloc(len);
	if (!mem)
		pfail("malloc(%zu)", len);
	fill_pattern(mem, len, 77, 0);

	fd = open("data.bin", O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		pfail("open data.bin");
	for (int i = 0; i < 256; i++) {
		fill_pattern(buf, sizeof(buf), 5, (uint64_t)i * sizeof(buf));
		if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
			pfail("write data.bin");
	}
	if (lseek(fd, 12345, SEEK_SET) != 12345)
		pfail("lseek");

	sigemptyset(&m);
	sigaddset(&m, SIGUSR2);
	sigprocmask(SIG_SETMASK, &m, NULL);
	if (pthread_create(&th, NULL, worker, NULL))
		fail("pthread_create");

	test_daemon();
	test_waitsig();

	unsigned long before = worker_rounds;
	for (int i = 0; i < 2000 && worker_rounds < before + 3; i++) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	if (worker_rounds < before + 3)
		fail("the worker thread does not run any more (%lu rounds)", worker_rounds);
	stop_worker = 1;
	pthread_join(th, NULL);
	if (worker_bad)
		fail("the worker computed a wrong sum (registers changed under it)");
	if (!worker_mask_ok)
		fail("the worker's signal mask changed");
	sigprocmask(SIG_SETMASK, NULL, &now);
	if (sigismember(&now, SIGUSR2) != 1 || sigismember(&now, SIGUSR1) != 0 ||
	    sigismember(&now, SIGINT) != 0)
		fail("the main thread's signal mask changed");
	long bad = check_pattern(mem, len, 77, 0);
	if (bad >= 0)
		fail("memory differs at offset %ld", bad);
	off_t off = lseek(fd, 0, SEEK_CUR);
	if (off != 12345)
		fail("file offset %ld, expected 12345", (long)off);
	if (pread(fd, buf, 100, 4096) != 100 || check_pattern(buf, 100, 5, 4096) >= 0)
		fail("data.bin contents differ");
	pass();
}
