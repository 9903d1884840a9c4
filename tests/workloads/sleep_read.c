/*
 * sleep_read: blocks in read(2) on a pipe whose both ends it holds. The
 * SIGTERM handler (SA_RESTART) writes 'T' into the pipe, so the restarted
 * read returns exactly that byte. A second pipe holds 3000 bytes of known,
 * unread data across the checkpoint; they are read back afterwards.
 */
#include "zdtm.h"

#define DATA_LEN 3000

static int wake[2], data[2];

static void on_sigterm(void)
{
	char t = 'T';

	if (write(wake[1], &t, 1) != 1)
		_exit(3);
}

int main(int argc, char **argv)
{
	uint8_t buf[DATA_LEN + 100];
	char c = 0;
	ssize_t r;
	size_t got = 0;
	int fl;

	test_sigterm_flags = SA_RESTART;
	test_sigterm_hook = on_sigterm;
	test_init(argc, argv);

	if (pipe(wake) || pipe(data))
		pfail("pipe");
	fill_pattern(buf, DATA_LEN, 3000, 0);
	if (write(data[1], buf, DATA_LEN) != DATA_LEN)
		pfail("write to the data pipe");

	test_daemon();

	r = read(wake[0], &c, 1);
	if (r < 0)
		pfail("read from the wake-up pipe (SA_RESTART should have restarted it)");
	if (r != 1)
		fail("read from the wake-up pipe returned %zd", r);
	if (c != 'T')
		fail("read 0x%02x from the wake-up pipe, expected 'T'", (uint8_t)c);
	if (!test_sigterm_received)
		fail("read returned before SIGTERM");

	/* Exactly the 3000 queued bytes, nothing more. */
	memset(buf, 0, sizeof(buf));
	fl = fcntl(data[0], F_GETFL);
	if (fl < 0 || fcntl(data[0], F_SETFL, fl | O_NONBLOCK))
		pfail("fcntl O_NONBLOCK");
	while (got < sizeof(buf)) {
		r = read(data[0], buf + got, sizeof(buf) - got);
		if (r < 0 && errno == EAGAIN)
			break;
		if (r < 0)
			pfail("read data pipe");
		if (r == 0)
			fail("data pipe: unexpected EOF (write end lost?)");
		got += r;
	}
	if (got != DATA_LEN)
		fail("read %zu bytes back from the data pipe, expected %d", got, DATA_LEN);
	long bad = check_pattern(buf, DATA_LEN, 3000, 0);
	if (bad >= 0)
		fail("data pipe content differs at offset %ld", bad);

	/* Both pipes still work as pipes. */
	if (write(data[1], "xyz", 3) != 3 || read(data[0], buf, 10) != 3 || memcmp(buf, "xyz", 3))
		fail("data pipe does not work after restore");
	fl = fcntl(wake[0], F_GETFL);
	if (fl < 0 || (fl & O_NONBLOCK))
		fail("wake-up pipe became non-blocking (flags %#x)", fl);
	if (fcntl(wake[0], F_SETFL, fl | O_NONBLOCK))
		pfail("fcntl");
	if (read(wake[0], &c, 1) != -1 || errno != EAGAIN)
		fail("the wake-up pipe holds more than the one 'T' byte");
	pass();
}
