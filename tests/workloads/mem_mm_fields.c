/*
 * mem_mm_fields: the mm_struct fields a restore has to put back. Saved
 * before the dump and compared after restore:
 *   /proc/self/stat 26-28 (startcode endcode startstack) and 45-51
 *   (start_data end_data start_brk arg_start arg_end env_start env_end),
 *   /proc/self/cmdline, /proc/self/environ, readlink /proc/self/exe,
 *   getauxval(AT_PHDR / AT_ENTRY / AT_RANDOM) and the 16 AT_RANDOM bytes,
 *   and /proc/self/auxv as a whole.
 */
#include "zdtm.h"

#include <sys/auxv.h>

static const int fields[] = { 26, 27, 28, 45, 46, 47, 48, 49, 50, 51 };
#define NFIELDS (sizeof(fields) / sizeof(fields[0]))

struct snap {
	unsigned long long stat[NFIELDS];
	char cmdline[65536];
	size_t cmdline_len;
	char environ[262144];
	size_t environ_len;
	char exe[4096];
	unsigned long phdr, entry, random;
	uint8_t random_bytes[16];
	char auxv[4096];
	size_t auxv_len;
};

static void take(struct snap *s)
{
	ssize_t n;

	for (size_t i = 0; i < NFIELDS; i++)
		s->stat[i] = proc_stat_field(fields[i]);
	s->cmdline_len = read_file("/proc/self/cmdline", s->cmdline, sizeof(s->cmdline));
	s->environ_len = read_file("/proc/self/environ", s->environ, sizeof(s->environ));
	s->auxv_len = read_file("/proc/self/auxv", s->auxv, sizeof(s->auxv));
	n = readlink("/proc/self/exe", s->exe, sizeof(s->exe) - 1);
	if (n < 0)
		pfail("readlink /proc/self/exe");
	s->exe[n] = 0;
	s->phdr = getauxval(AT_PHDR);
	s->entry = getauxval(AT_ENTRY);
	s->random = getauxval(AT_RANDOM);
	if (!s->phdr || !s->entry || !s->random)
		fail("getauxval returned 0 for AT_PHDR/AT_ENTRY/AT_RANDOM");
	memcpy(s->random_bytes, (void *)s->random, 16);
}

static struct snap before, after;

int main(int argc, char **argv)
{
	test_init(argc, argv);
	take(&before);
	if (before.cmdline_len == 0 || before.environ_len == 0)
		fail("empty cmdline or environ before the dump");

	test_daemon();
	test_waitsig();

	take(&after);
	for (size_t i = 0; i < NFIELDS; i++)
		if (before.stat[i] != after.stat[i])
			fail("/proc/self/stat field %d: %#llx before, %#llx after", fields[i],
			     before.stat[i], after.stat[i]);
	if (before.cmdline_len != after.cmdline_len ||
	    memcmp(before.cmdline, after.cmdline, before.cmdline_len))
		fail("/proc/self/cmdline changed (%zu -> %zu bytes)", before.cmdline_len,
		     after.cmdline_len);
	if (before.environ_len != after.environ_len ||
	    memcmp(before.environ, after.environ, before.environ_len))
		fail("/proc/self/environ changed (%zu -> %zu bytes)", before.environ_len,
		     after.environ_len);
	if (strcmp(before.exe, after.exe))
		fail("/proc/self/exe changed: %s -> %s", before.exe, after.exe);
	if (before.phdr != after.phdr || before.entry != after.entry || before.random != after.random)
		fail("auxv AT_PHDR/AT_ENTRY/AT_RANDOM changed: %#lx/%#lx/%#lx -> %#lx/%#lx/%#lx",
		     before.phdr, before.entry, before.random, after.phdr, after.entry, after.random);
	if (memcmp(before.random_bytes, after.random_bytes, 16))
		fail("the 16 AT_RANDOM bytes changed");
	if (before.auxv_len != after.auxv_len || memcmp(before.auxv, after.auxv, before.auxv_len)) {
		const unsigned long *b = (const void *)before.auxv, *a = (const void *)after.auxv;
		for (size_t i = 0; i + 1 < before.auxv_len / 8 && i + 1 < after.auxv_len / 8; i += 2)
			if (b[i] != a[i] || b[i + 1] != a[i + 1])
				fail("/proc/self/auxv changed: entry %zu was (%lu, %#lx), now (%lu, %#lx)",
				     i / 2, b[i], b[i + 1], a[i], a[i + 1]);
		fail("/proc/self/auxv changed length: %zu -> %zu bytes", before.auxv_len,
		     after.auxv_len);
	}
	pass();
}
