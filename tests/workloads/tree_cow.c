/*
 * tree_cow: 64 MiB of random data shared copy-on-write by parent and child.
 *
 * The root mallocs 64 MiB, fills it with random bytes, computes a checksum
 * and forks C; neither touches the buffer again, so every page is still
 * shared copy-on-write at dump time. After the go both recompute the
 * checksum (C with its own copy of the expected value). The Rust test also
 * requires the image directory to stay below 1.5 x 64 MiB: shared pages
 * must be saved once, not once per process.
 */
#include "tree.h"

#include <sys/random.h>
#include <sys/wait.h>

#define SIZE (64UL << 20)

static uint64_t *buf;
static uint64_t sum_before;

static uint64_t checksum(void)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < SIZE / 8; i++)
		h = (h ^ buf[i]) * 0x100000001b3ull + (h >> 29);
	return h;
}

static void check(const char *who)
{
	uint64_t s = checksum();

	if (s != sum_before)
		fail("%s: checksum of the 64 MiB buffer is %#llx, was %#llx", who,
		     (unsigned long long)s, (unsigned long long)sum_before);
}

int main(int argc, char **argv)
{
	uint64_t x;
	pid_t c, me;

	test_init(argc, argv);
	me = getpid();
	buf = malloc(SIZE);
	if (!buf)
		pfail("malloc 64 MiB");
	if (getrandom(&x, sizeof(x), 0) != sizeof(x))
		pfail("getrandom");
	x |= 1;
	for (size_t i = 0; i < SIZE / 8; i++) {
		/* xorshift64* */
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		buf[i] = x * 0x2545F4914F6CDD1Dull;
	}
	sum_before = checksum();

	c = xfork();
	if (c == 0) {
		pid_t pid = getpid();

		test_waitsig();
		if (getpid() != pid || getppid() != me)
			fail("C: getpid() %d getppid() %d, expected %d/%d", getpid(), getppid(), pid,
			     me);
		check("C");
		exit(0);
	}

	test_daemon();
	test_waitsig();

	check("root");
	if (kill(c, SIGTERM))
		pfail("kill(C, SIGTERM)");
	expect_exit(c, "C", 0);
	expect_no_children();
	pass();
}
