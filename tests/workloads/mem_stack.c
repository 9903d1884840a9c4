/*
 * mem_stack: deep recursion, every frame holding a pattern in a local
 * array; the deepest frame also has a big local array. The process is
 * checkpointed while all the frames are live; after restore every frame
 * checks its array on the way back up.
 */
#include "zdtm.h"

#define DEPTH 1000
#define FRAME_BYTES 200
#define BIG_BYTES (1u << 20)

static int frames_ok;

static void __attribute__((noinline)) deepest(void)
{
	volatile uint8_t big[BIG_BYTES];

	for (size_t i = 0; i < BIG_BYTES; i++)
		big[i] = zdtm_pattern(424242, i);

	test_daemon();
	test_waitsig();

	for (size_t i = 0; i < BIG_BYTES; i++)
		if (big[i] != zdtm_pattern(424242, i))
			fail("big stack array differs at offset %zu (array at %p)",
			     i, (void *)big);
}

static int __attribute__((noinline)) recurse(int depth)
{
	volatile uint8_t frame[FRAME_BYTES];
	int ret;

	for (int i = 0; i < FRAME_BYTES; i++)
		frame[i] = zdtm_pattern(depth, i);

	if (depth == DEPTH)
		deepest();
	else if (recurse(depth + 1) != depth + 1)
		fail("bad return value below depth %d", depth);

	for (int i = 0; i < FRAME_BYTES; i++)
		if (frame[i] != zdtm_pattern(depth, i))
			fail("stack frame at depth %d (%p) differs at offset %d",
			     depth, (void *)frame, i);
	frames_ok++;
	ret = depth;
	return ret;
}

int main(int argc, char **argv)
{
	test_init(argc, argv);
	if (recurse(1) != 1)
		fail("bad return value at the top");
	if (frames_ok != DEPTH)
		fail("%d frames checked, expected %d", frames_ok, DEPTH);
	pass();
}
