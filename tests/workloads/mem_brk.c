/*
 * mem_brk: grow the heap with sbrk and fill the new memory with a pattern.
 * After restore: the kernel's brk (brk(0) syscall), start_brk (/proc/self/stat) and
 * glibc's sbrk(0) equal the saved value, the [heap] mapping is unchanged,
 * the pattern is intact, and the heap can grow (and shrink) further.
 * No malloc between recording and checking: malloc may move the break.
 */
#include "zdtm.h"

#include <sys/mman.h>

#define GROW ((256ul << 10) + 100)
#define MORE (1ul << 20)

int main(int argc, char **argv)
{
	static char heap_before[1024], heap_after[1024];
	unsigned long hs, he;
	unsigned long long stat_start_brk;
	uint8_t *start, *saved, *more;

	test_init(argc, argv);
	/* Let malloc set up its arena first, so nothing else moves the break later. */
	free(malloc(100));

	start = sbrk(0);
	if (sbrk(GROW) != start)
		pfail("sbrk(%lu)", GROW);
	saved = sbrk(0);
	if (saved != start + GROW)
		fail("sbrk(0) = %p, expected %p", (void *)saved, (void *)(start + GROW));
	if ((uint8_t *)syscall(SYS_brk, 0) != saved)
		fail("kernel brk %p differs from sbrk(0) %p", (void *)syscall(SYS_brk, 0), (void *)saved);
	fill_pattern(start, GROW, 1234, 0);
	if (!maps_find_named("[heap]", &hs, &he))
		fail("no [heap] mapping");
	maps_lines(hs, he, heap_before, sizeof(heap_before));
	stat_start_brk = proc_stat_field(47);
	if (stat_start_brk > (unsigned long)start)
		fail("/proc/self/stat start_brk %#llx is above the break %p", stat_start_brk,
		     (void *)start);

	test_daemon();
	test_waitsig();

	if ((uint8_t *)syscall(SYS_brk, 0) != saved)
		fail("kernel brk is %p after restore, expected %p",
		     (void *)syscall(SYS_brk, 0), (void *)saved);
	if (sbrk(0) != saved)
		fail("sbrk(0) is %p after restore, expected %p", sbrk(0), (void *)saved);
	if (proc_stat_field(47) != stat_start_brk)
		fail("/proc/self/stat start_brk is %#llx after restore, expected %#llx",
		     proc_stat_field(47), stat_start_brk);
	if (!maps_find_named("[heap]", &hs, &he))
		fail("no [heap] mapping after restore");
	maps_lines(hs, he, heap_after, sizeof(heap_after));
	if (strcmp(heap_before, heap_after))
		fail("[heap] mapping changed.\nbefore: %safter:  %s", heap_before, heap_after);
	long bad = check_pattern(start, GROW, 1234, 0);
	if (bad >= 0)
		fail("sbrk'd memory differs at offset %ld", bad);

	more = sbrk(MORE);
	if (more == (void *)-1)
		pfail("sbrk(%lu) after restore", MORE);
	if (more != saved)
		fail("sbrk returned %p, expected the old break %p", (void *)more, (void *)saved);
	if ((uint8_t *)syscall(SYS_brk, 0) != saved + MORE)
		fail("kernel brk did not grow");
	fill_pattern(more, MORE, 4321, 0);
	if ((bad = check_pattern(more, MORE, 4321, 0)) >= 0)
		fail("new heap memory differs at offset %ld", bad);
	if ((bad = check_pattern(start, GROW, 1234, 0)) >= 0)
		fail("old heap memory changed after growing, offset %ld", bad);
	if (sbrk(-(long)MORE) == (void *)-1)
		pfail("sbrk shrink");
	if (sbrk(0) != saved || (uint8_t *)syscall(SYS_brk, 0) != saved)
		fail("shrinking did not return the break to %p", (void *)saved);
	free(malloc(1000));
	pass();
}
