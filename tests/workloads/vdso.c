/*
 * vdso: the vDSO must be where glibc (and the auxv) think it is: glibc
 * resolved its clock functions from it at startup. After restore:
 * getauxval(AT_SYSINFO_EHDR) is still the start of the [vdso] mapping,
 * the [vdso]/[vvar] mappings keep their sizes, clock_gettime(CLOCK_MONOTONIC)
 * did not go backwards and the vDSO-backed calls work and agree with the
 * real syscalls.
 */
#include "zdtm.h"

#include <sys/auxv.h>
#include <sys/time.h>
#include <time.h>

static double ts(const struct timespec *t)
{
	return t->tv_sec + t->tv_nsec / 1e9;
}

static void check_vdso(const char *when)
{
	unsigned long ehdr = getauxval(AT_SYSINFO_EHDR), s, e;

	if (!ehdr)
		fail("no AT_SYSINFO_EHDR %s", when);
	if (!maps_find_named("[vdso]", &s, &e))
		fail("no [vdso] mapping %s", when);
	if (s != ehdr)
		fail("[vdso] starts at %#lx but AT_SYSINFO_EHDR is %#lx %s", s, ehdr, when);
	if (memcmp((void *)ehdr, "\177ELF", 4))
		fail("no ELF header at AT_SYSINFO_EHDR %s", when);
}

static void check_clocks(const char *when)
{
	struct timespec v, k;
	struct timeval tv;
	clockid_t ids[] = { CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_BOOTTIME };

	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		if (clock_gettime(ids[i], &v))
			pfail("clock_gettime(%d) %s", ids[i], when);
		if (syscall(SYS_clock_gettime, ids[i], &k))
			pfail("SYS_clock_gettime(%d) %s", ids[i], when);
		/* vDSO value taken first, so it must not be later than the syscall's. */
		if (ts(&k) < ts(&v) || ts(&k) - ts(&v) > 5.0)
			fail("clock %d: vDSO says %.9f, the syscall %.9f %s", ids[i], ts(&v),
			     ts(&k), when);
	}
	if (gettimeofday(&tv, NULL))
		pfail("gettimeofday %s", when);
	if (tv.tv_sec < 1600000000)
		fail("gettimeofday returned %ld %s", (long)tv.tv_sec, when);
	if (time(NULL) < 1600000000)
		fail("time() is wrong %s", when);
}

int main(int argc, char **argv)
{
	struct timespec m1, m2, m3;
	struct timeval g1, g2;
	unsigned long vs, ve, vvs = 0, vve = 0, s, e;
	int have_vvar;

	test_init(argc, argv);
	check_vdso("before the dump");
	check_clocks("before the dump");
	maps_find_named("[vdso]", &vs, &ve);
	have_vvar = maps_find_named("[vvar]", &vvs, &vve);
	if (clock_gettime(CLOCK_MONOTONIC, &m1) || gettimeofday(&g1, NULL))
		pfail("clocks");

	test_daemon();
	test_waitsig();

	if (clock_gettime(CLOCK_MONOTONIC, &m2) || gettimeofday(&g2, NULL))
		pfail("clocks after restore");
	if (ts(&m2) < ts(&m1))
		fail("CLOCK_MONOTONIC went backwards: %.9f -> %.9f", ts(&m1), ts(&m2));
	check_vdso("after restore");
	maps_find_named("[vdso]", &s, &e);
	if (s != vs || e != ve)
		fail("[vdso] moved: %#lx-%#lx -> %#lx-%#lx", vs, ve, s, e);
	if (have_vvar) {
		if (!maps_find_named("[vvar]", &s, &e))
			fail("[vvar] mapping vanished");
		if (s != vvs || e != vve)
			fail("[vvar] moved: %#lx-%#lx -> %#lx-%#lx", vvs, vve, s, e);
	}
	check_clocks("after restore");
	for (int i = 0; i < 1000; i++) {
		if (clock_gettime(CLOCK_MONOTONIC, &m3))
			pfail("clock_gettime");
		if (ts(&m3) < ts(&m2))
			fail("CLOCK_MONOTONIC went backwards after restore");
		m2 = m3;
	}
	if (g2.tv_sec + 1 < g1.tv_sec)
		fail("gettimeofday went backwards: %ld -> %ld", (long)g1.tv_sec, (long)g2.tv_sec);
	pass();
}
