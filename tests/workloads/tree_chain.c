/*
 * tree_chain: a chain of processes, root -> 1 -> 2 -> ... -> DEPTH-1,
 * each the only child of the one before (`--depth N`, default 100).
 *
 *   tree_chain --pidfile PATH [--depth N]
 *
 * Every process records its pid, its ppid and its level, and fills a heap
 * page and a static word with values derived from them. Readiness: every
 * process sends a byte on one pipe, the root collects DEPTH-1 and then
 * writes the pidfile. After the go (SIGTERM to the root) each process
 * forwards SIGTERM to its child, checks its pid, its ppid (not the root's:
 * it is restored as a child of `cairn restore`), its level and its
 * memory, then collects its child with waitpid (which proves the link to
 * its child too) and reports through its exit status: a failure anywhere
 * below makes every level above fail, and the root prints PASS only if
 * the whole chain checked itself.
 */
#include "tree.h"

#include <sys/wait.h>

#define WORDS (4096 / sizeof(uint64_t))

static pid_t my_pid, my_ppid, child;
static int level;
static uint64_t *page;
static volatile uint64_t word;

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return x;
}

static uint64_t value(int i)
{
	return mix(((uint64_t)my_pid << 32) ^ ((uint64_t)level << 16) ^ (uint64_t)i);
}

static void record(void)
{
	my_pid = getpid();
	my_ppid = getppid();
	page = malloc(4096);
	if (!page)
		fail("level %d: malloc", level);
	for (size_t i = 0; i < WORDS; i++)
		page[i] = value((int)i);
	word = value(-1) ^ (uint64_t)level;
}

static void verify(void)
{
	if (getpid() != my_pid)
		fail("level %d: getpid() = %d, was %d", level, getpid(), my_pid);
	if (syscall(SYS_getpid) != my_pid)
		fail("level %d: SYS_getpid = %ld, was %d", level, syscall(SYS_getpid), my_pid);
	if (level > 0 && getppid() != my_ppid)
		fail("level %d (pid %d): getppid() = %d, was %d", level, my_pid, getppid(),
		     my_ppid);
	if (word != (value(-1) ^ (uint64_t)level))
		fail("level %d (pid %d): the static word is %#llx, expected %#llx", level, my_pid,
		     (unsigned long long)word, (unsigned long long)(value(-1) ^ (uint64_t)level));
	for (size_t i = 0; i < WORDS; i++)
		if (page[i] != value((int)i))
			fail("level %d (pid %d): heap word %zu is %#llx, expected %#llx", level,
			     my_pid, i, (unsigned long long)page[i],
			     (unsigned long long)value((int)i));
}

int main(int argc, char **argv)
{
	const char *d;
	int depth = 100, rp[2];

	test_init(argc, argv);
	d = test_arg("--depth");
	if (d)
		depth = atoi(d);
	if (depth < 1 || depth > 100000)
		fail("bad --depth %s", d);
	if (pipe(rp))
		pfail("pipe");
	/* Each process forks the next level and stays as its parent. */
	while (level < depth - 1) {
		pid_t c = xfork();

		if (c > 0) {
			child = c;
			break;
		}
		level++;
	}
	record();
	if (level > 0) {
		char who[32];

		snprintf(who, sizeof(who), "level %d", level);
		close(rp[0]);
		ready_send(rp[1], who);
		close(rp[1]);
		test_waitsig();
	} else {
		close(rp[1]);
		ready_collect(rp[0], depth - 1);
		close(rp[0]);
		test_daemon();
		test_waitsig();
	}
	if (child && kill(child, SIGTERM))
		pfail("level %d: kill(child %d, SIGTERM)", level, child);
	verify();
	if (child) {
		char who[32];
		int st;

		/* The whole chain below exits before the child does: more
		 * time than tree.h's 20 s on a loaded machine. */
		snprintf(who, sizeof(who), "level %d", level + 1);
		st = wait_child(child, who, 110);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			fail("level %d (pid %d): %s (pid %d) ended with status %#x", level, my_pid,
			     who, child, st);
	}
	expect_no_children();
	if (level > 0)
		exit(0);
	test_msg("a chain of %d processes checked itself", depth);
	pass();
}
