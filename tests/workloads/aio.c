/*
 * aio [--inflight]: AIO contexts (io_setup) across checkpoint/restore.
 *
 * Default: two contexts. A (io_setup(100): 255 events, two pages) got 8
 * preads of a memfd, 3 of them reaped (head 3, tail 8), 5 not; B
 * (io_setup(8)) is empty. The whole bytes of both rings are kept. After
 * restore: both rings are byte for byte as before; io_getevents on A
 * returns the 5 same events (data, obj, res) and the read buffers hold
 * the file's bytes; B has none; new preads on both complete; io_destroy
 * of both works and the ids are gone afterwards.
 *
 * Also a context C (io_setup(8)) whose events wrapped around the ring
 * end (head 120, tail 3: 10 unreaped), and a context destroyed between A
 * and B, so that B's index in the kernel's table (2) has a free index
 * below it.
 *
 * --fork: a child forked before any io_setup does all of it too, in its
 * own contexts; it is checked after the restore as well.
 *
 * --inherit: the child is forked after io_setup, so it holds the parent's
 * ring mappings without a context (the kernel's fork does not copy
 * contexts); prints "addr 0x..." (its lowest ring) and "child PID". The dump must
 * refuse, naming the child.
 *
 * --inflight: one context with an IOCB_CMD_POLL on an empty pipe (never
 * completes); prints "addr 0x..." (the context). The dump must refuse.
 * On SIGTERM the pipe gets a byte and the poll completes.
 */
#include "zdtm.h"

#include <linux/aio_abi.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

#define NREQ 8
#define REAPED 3
#define LEN 512

static long io_setup(unsigned n, aio_context_t *c) { return syscall(SYS_io_setup, n, c); }
static long io_submit(aio_context_t c, long n, struct iocb **p) { return syscall(SYS_io_submit, c, n, p); }
static long io_getevents(aio_context_t c, long min, long n, struct io_event *e, struct timespec *t)
{
	return syscall(SYS_io_getevents, c, min, n, e, t);
}
static long io_destroy(aio_context_t c) { return syscall(SYS_io_destroy, c); }

static struct iocb cbs[NREQ], more[2];
static char bufs[NREQ][LEN], mbufs[2][LEN];
static struct io_event before[NREQ];

static void prep(struct iocb *cb, int fd, char *buf, off_t off, uint64_t data)
{
	memset(cb, 0, sizeof(*cb));
	cb->aio_lio_opcode = IOCB_CMD_PREAD;
	cb->aio_fildes = fd;
	cb->aio_buf = (uint64_t)(uintptr_t)buf;
	cb->aio_nbytes = LEN;
	cb->aio_offset = off;
	cb->aio_data = data;
}

static size_t ring_size(aio_context_t c)
{
	unsigned nr = ((unsigned *)c)[1];
	return ((size_t)(nr + 1) * 32 + 4095) & ~(size_t)4095;
}

static void submit_and_check(aio_context_t c, struct iocb *cb, int fd, char *buf, off_t off,
			     uint64_t data, const char *name)
{
	struct iocb *p = cb;
	struct io_event ev;
	struct timespec ts = { 5, 0 };

	prep(cb, fd, buf, off, data);
	memset(buf, 0, LEN);
	if (io_submit(c, 1, &p) != 1)
		pfail("io_submit on %s after restore", name);
	if (io_getevents(c, 1, 1, &ev, &ts) != 1)
		pfail("io_getevents on %s after restore", name);
	if (ev.data != data || ev.obj != (uint64_t)(uintptr_t)cb || ev.res != LEN || ev.res2)
		fail("%s: new event data %llx obj %llx res %lld", name,
		     (unsigned long long)ev.data, (unsigned long long)ev.obj, (long long)ev.res);
	if (check_pattern(buf, LEN, 11, off) >= 0)
		fail("%s: new read has wrong bytes", name);
}

static int inflight(void)
{
	aio_context_t c = 0;
	struct iocb cb, *p = &cb;
	struct io_event ev;
	struct timespec ts = { 5, 0 };
	int pfd[2];

	if (pipe(pfd))
		pfail("pipe");
	if (io_setup(4, &c))
		pfail("io_setup");
	memset(&cb, 0, sizeof(cb));
	cb.aio_lio_opcode = IOCB_CMD_POLL;
	cb.aio_fildes = pfd[0];
	cb.aio_buf = POLLIN;
	cb.aio_data = 77;
	if (io_submit(c, 1, &p) != 1)
		pfail("io_submit poll");
	printf("addr %#lx\n", (unsigned long)c);
	fflush(stdout);
	test_daemon();
	test_waitsig();
	if (write(pfd[1], "x", 1) != 1)
		pfail("write");
	if (io_getevents(c, 1, 1, &ev, &ts) != 1 || ev.data != 77 || !(ev.res & POLLIN))
		fail("the poll did not complete");
	if (io_destroy(c))
		pfail("io_destroy");
	pass();
}

static aio_context_t a, b, c;
static struct iocb cbc[NREQ + 2];
static struct io_event before_c[10];
static unsigned char *copy_a, *copy_b, *copy_c;
static size_t sa, sb, sc;
static int fd;
static char file[NREQ * LEN];

static void setup(void)
{
	aio_context_t x = 0;
	struct iocb *ptrs[NREQ], *pc[130];
	struct io_event ev[130];
	struct timespec ts = { 5, 0 };
	int i;

	fd = memfd_create("aio-data", 0);
	if (fd < 0)
		pfail("memfd_create");
	fill_pattern(file, sizeof(file), 11, 0);
	if (write(fd, file, sizeof(file)) != (ssize_t)sizeof(file))
		pfail("write");
	if (io_setup(100, &a) || io_setup(8, &x) || io_setup(8, &b) || io_setup(8, &c))
		pfail("io_setup");
	if (io_destroy(x))
		pfail("io_destroy");
	if (((unsigned *)b)[0] != 2)
		fail("ring B has index %u, 2 expected", ((unsigned *)b)[0]);
	for (i = 0; i < NREQ; i++) {
		prep(&cbs[i], fd, bufs[i], (off_t)i * LEN, 0x1000 + i);
		ptrs[i] = &cbs[i];
	}
	if (io_submit(a, REAPED, ptrs) != REAPED)
		pfail("io_submit");
	if (io_getevents(a, REAPED, REAPED, ev, &ts) != REAPED)
		pfail("io_getevents");
	if (io_submit(a, NREQ - REAPED, ptrs + REAPED) != NREQ - REAPED)
		pfail("io_submit");
	/* Buffered reads of a memfd complete in io_submit. */
	{
		unsigned *h = (unsigned *)a;
		if (h[2] != REAPED || h[3] != NREQ)
			fail("ring head %u tail %u, expected %d %d", h[2], h[3], REAPED, NREQ);
		memcpy(before, (char *)a + 32 + REAPED * 32, (NREQ - REAPED) * sizeof(before[0]));
	}
	/* C: 120 completions reaped, then 10 more: they wrap (nr 127). */
	for (i = 0; i < 130; i++) {
		prep(&cbc[i % (NREQ + 2)], fd, mbufs[0], 0, 0x2000 + i);
		pc[i] = &cbc[i % (NREQ + 2)];
		if (io_submit(c, 1, &pc[i]) != 1)
			pfail("io_submit C %d", i);
		if (i < 120 && io_getevents(c, 1, 1, ev, &ts) != 1)
			pfail("io_getevents C");
	}
	{
		unsigned *h = (unsigned *)c;
		if (h[1] != 127 || h[2] != 120 || h[3] != 3)
			fail("ring C nr %u head %u tail %u, expected 127 120 3", h[1], h[2], h[3]);
		memcpy(before_c, (char *)c + 32 + 120 * 32, 7 * 32);
		memcpy(before_c + 7, (char *)c + 32, 3 * 32);
	}
	sa = ring_size(a);
	sb = ring_size(b);
	sc = ring_size(c);
	copy_a = malloc(sa);
	copy_b = malloc(sb);
	copy_c = malloc(sc);
	if (!copy_a || !copy_b || !copy_c)
		pfail("malloc");
	memcpy(copy_a, (void *)a, sa);
	memcpy(copy_b, (void *)b, sb);
	memcpy(copy_c, (void *)c, sc);
}

static void verify(void)
{
	struct io_event ev[NREQ + 10];
	struct timespec zero = { 0, 0 }, ts = { 5, 0 };
	int i;

	if (memcmp(copy_a, (void *)a, sa))
		fail("ring A changed");
	if (memcmp(copy_b, (void *)b, sb))
		fail("ring B changed");
	if (memcmp(copy_c, (void *)c, sc))
		fail("ring C changed");
	if (io_getevents(a, NREQ - REAPED, NREQ, ev, &ts) != NREQ - REAPED)
		fail("ring A: not %d events after restore", NREQ - REAPED);
	for (i = 0; i < NREQ - REAPED; i++) {
		int k = REAPED + i;

		if (memcmp(&ev[i], &before[i], sizeof(ev[i])))
			fail("event %d differs", i);
		if (ev[i].data != (uint64_t)(0x1000 + k) ||
		    ev[i].obj != (uint64_t)(uintptr_t)&cbs[k] || ev[i].res != LEN || ev[i].res2)
			fail("event %d: data %llx res %lld", i, (unsigned long long)ev[i].data,
			     (long long)ev[i].res);
		if (check_pattern(bufs[k], LEN, 11, (uint64_t)k * LEN) >= 0)
			fail("read %d: wrong bytes", k);
	}
	if (io_getevents(a, 0, NREQ, ev, &zero) != 0)
		fail("ring A: more events than saved");
	if (io_getevents(b, 0, NREQ, ev, &zero) != 0)
		fail("ring B: events after restore");
	if (io_getevents(c, 10, 10, ev, &ts) != 10)
		fail("ring C: not 10 events after restore");
	for (i = 0; i < 10; i++)
		if (memcmp(&ev[i], &before_c[i], sizeof(ev[i])) || ev[i].data != (uint64_t)(0x2000 + 120 + i))
			fail("ring C: event %d differs", i);
	if (io_getevents(c, 0, 1, ev, &zero) != 0)
		fail("ring C: more events than saved");
	submit_and_check(a, &more[0], fd, mbufs[0], 2 * LEN, 0xa, "A");
	submit_and_check(b, &more[1], fd, mbufs[1], 5 * LEN, 0xb, "B");
	submit_and_check(c, &more[0], fd, mbufs[0], 3 * LEN, 0xc, "C");
	/* C keeps completing requests around its end after restore. */
	for (i = 0; i < 126; i++) {
		struct iocb *p = &cbc[0];

		prep(&cbc[0], fd, mbufs[0], 0, 0x3000 + i);
		if (io_submit(c, 1, &p) != 1)
			pfail("io_submit C after restore, request %d", i);
		if (io_getevents(c, 1, 1, ev, &ts) != 1 || ev[0].data != (uint64_t)(0x3000 + i))
			fail("ring C after restore: request %d", i);
	}
	if (io_destroy(a) || io_destroy(b) || io_destroy(c))
		pfail("io_destroy");
	if (io_getevents(a, 0, 1, ev, &zero) != -1 || errno != EINVAL)
		fail("context A still there after io_destroy");
}

int main(int argc, char **argv)
{
	int go[2], ready[2], st;
	pid_t child = -1;
	char ch;

	test_init(argc, argv);
	if (test_flag("--inflight"))
		return inflight();
	if (test_flag("--fork") || test_flag("--inherit")) {
		if (pipe(go) || pipe(ready))
			pfail("pipe");
	}
	if (test_flag("--inherit"))
		setup();
	if (test_flag("--fork") || test_flag("--inherit")) {
		child = fork();
		if (child < 0)
			pfail("fork");
		if (child == 0) {
			if (test_flag("--fork"))
				setup();
			if (write(ready[1], "r", 1) != 1)
				_exit(2);
			if (read(go[0], &ch, 1) != 1)
				_exit(3);
			if (test_flag("--fork"))
				verify();
			_exit(0);
		}
		if (read(ready[0], &ch, 1) != 1)
			pfail("child not ready");
		if (test_flag("--inherit")) {
			/* The lowest ring: the first the dump meets. */
			unsigned long lo = a < b ? a : b;

			lo = lo < c ? lo : c;
			printf("addr %#lx\nchild %d\n", lo, child);
			fflush(stdout);
		}
	}
	if (!test_flag("--inherit"))
		setup();

	test_daemon();
	test_waitsig();

	if (child > 0) {
		if (write(go[1], "g", 1) != 1)
			pfail("write go");
		if (waitpid(child, &st, 0) != child)
			pfail("waitpid");
		if (!WIFEXITED(st) || WEXITSTATUS(st))
			fail("the child failed (status %#x)", st);
	}
	verify();
	pass();
}
