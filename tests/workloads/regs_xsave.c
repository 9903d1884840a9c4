/*
 * regs_xsave: register state across checkpoint/restore.
 *
 * One inline-asm block loads ymm0-ymm15 (xmm0-15 without AVX) with distinct
 * values, sets a non-default MXCSR (round toward zero + flush-to-zero) and
 * x87 control word (truncate, single precision), pushes a known 80-bit value
 * on the x87 stack, puts distinctive values in rbx and r12-r15, then reports
 * readiness itself (raw open/write/close/rename syscalls, which preserve all
 * of these), and spins on the SIGTERM flag. When the flag is set it stores
 * everything back and the C code compares. The SIGTERM handler runs in
 * between, but the kernel saves and restores the full register state around
 * a signal handler, so every value must survive.
 */
#include "zdtm.h"
#include "vecregs.h"

static uint8_t ymm_in[16 * 32] __attribute__((aligned(64)));
static uint8_t ymm_out[16 * 32] __attribute__((aligned(64)));
static uint32_t mxcsr_in = 0x1F80 | 0x6000 | 0x8000; /* all masked, RC=toward zero, FZ */
static uint32_t mxcsr_out, mxcsr_default = 0x1F80;
static uint16_t fcw_in = 0x0C7F; /* all masked, PC=single, RC=truncate */
static uint16_t fcw_out, fcw_default = 0x037F;
static uint8_t st0_in[16], st0_out[16];
static uint64_t gpr_out[5];
static const uint64_t gpr_in[5] = {
	0x1122334455667788ull, /* rbx */
	0x0123456789abcdefull, /* r12 */
	0xfedcba9876543210ull, /* r13 */
	0x5a5aa5a5c3c33c3cull, /* r14 */
	0x8000000000000001ull, /* r15 */
};
static const char *gpr_names[5] = { "rbx", "r12", "r13", "r14", "r15" };
static char tmp_path[4096], pid_path[4096], pid_buf[32];
static long pid_len, err_out, stage;

#define LOAD_REST                                                   \
	"ldmxcsr %[mxin]\n\t"                                       \
	"fldcw %[fcwin]\n\t"                                        \
	"fldt %[st0in]\n\t"                                         \
	"movabs $0x1122334455667788, %%rbx\n\t"                     \
	"movabs $0x0123456789abcdef, %%r12\n\t"                     \
	"movabs $0xfedcba9876543210, %%r13\n\t"                     \
	"movabs $0x5a5aa5a5c3c33c3c, %%r14\n\t"                     \
	"movabs $0x8000000000000001, %%r15\n\t"

/* open(tmp, O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0644); write; close; rename. */
#define READY_AND_SPIN                                              \
	"movq $1, %[stage]\n\t"                                     \
	"mov $2, %%eax\n\t"                                         \
	"lea %[tmp], %%rdi\n\t"                                     \
	"mov $0x80241, %%esi\n\t"                                   \
	"mov $0x1a4, %%edx\n\t"                                     \
	"syscall\n\t"                                               \
	"test %%rax, %%rax\n\t"                                     \
	"js 9f\n\t"                                                 \
	"movq $2, %[stage]\n\t"                                     \
	"mov %%rax, %%rdi\n\t"                                      \
	"mov $1, %%eax\n\t"                                         \
	"lea %[buf], %%rsi\n\t"                                     \
	"mov %[len], %%rdx\n\t"                                     \
	"syscall\n\t"                                               \
	"cmp %%rax, %%rdx\n\t"                                      \
	"jne 9f\n\t"                                                \
	"movq $3, %[stage]\n\t"                                     \
	"mov $3, %%eax\n\t"                                         \
	"syscall\n\t"                                               \
	"test %%rax, %%rax\n\t"                                     \
	"jnz 9f\n\t"                                                \
	"movq $4, %[stage]\n\t"                                     \
	"mov $82, %%eax\n\t"                                        \
	"lea %[tmp], %%rdi\n\t"                                     \
	"lea %[path], %%rsi\n\t"                                    \
	"syscall\n\t"                                               \
	"test %%rax, %%rax\n\t"                                     \
	"jnz 9f\n\t"                                                \
	"movq $0, %[stage]\n\t"                                     \
	"1:\n\t"                                                    \
	"pause\n\t"                                                 \
	"cmpl $0, %[flag]\n\t"                                      \
	"je 1b\n\t"                                                 \
	"9:\n\t"                                                    \
	"mov %%rax, %[err]\n\t"

#define STORE_REST                                                  \
	"stmxcsr %[mxout]\n\t"                                      \
	"fnstcw %[fcwout]\n\t"                                      \
	"fstpt %[st0out]\n\t"                                       \
	"mov %%rbx, 0+%[gout]\n\t"                                  \
	"mov %%r12, 8+%[gout]\n\t"                                  \
	"mov %%r13, 16+%[gout]\n\t"                                 \
	"mov %%r14, 24+%[gout]\n\t"                                 \
	"mov %%r15, 32+%[gout]\n\t"                                 \
	"ldmxcsr %[mxdef]\n\t"                                      \
	"fldcw %[fcwdef]\n\t"

#define OPERANDS                                                    \
	: [yout] "=m"(ymm_out), [mxout] "=m"(mxcsr_out), [fcwout] "=m"(fcw_out), \
	  [st0out] "=m"(st0_out), [gout] "=m"(gpr_out), [err] "=m"(err_out),     \
	  [stage] "=m"(stage)                                                     \
	: [yin] "m"(ymm_in), [mxin] "m"(mxcsr_in), [fcwin] "m"(fcw_in),           \
	  [st0in] "m"(st0_in), [tmp] "m"(tmp_path), [path] "m"(pid_path),         \
	  [buf] "m"(pid_buf), [len] "m"(pid_len), [flag] "m"(test_sigterm_received), \
	  [mxdef] "m"(mxcsr_default), [fcwdef] "m"(fcw_default)                   \
	: "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r11", "r12", "r13", "r14",   \
	  "r15", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",  \
	  "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15",   \
	  "memory", "cc"

static void run_avx(void)
{
	asm volatile(
		"lea %[yin], %%rax\n\t"
		ASM_LOAD_YMM0_15
		LOAD_REST
		READY_AND_SPIN
		"lea %[yout], %%rax\n\t"
		ASM_STORE_YMM0_15
		STORE_REST
		"vzeroupper\n\t"
		OPERANDS);
}

/* Same with the 16-byte xmm registers only (stored at the same 32-byte stride). */
static void run_sse(void)
{
	asm volatile(
		"lea %[yin], %%rax\n\t"
		ASM_LOAD_XMM0_15
		LOAD_REST
		READY_AND_SPIN
		"lea %[yout], %%rax\n\t"
		ASM_STORE_XMM0_15
		STORE_REST
		OPERANDS);
}

int main(int argc, char **argv)
{
	long double st0 = 1234.56789012345678901L;
	int avx, width;

	test_init(argc, argv);
	for (int r = 0; r < 16; r++)
		for (int b = 0; b < 32; b++)
			ymm_in[r * 32 + b] = (uint8_t)(r * 16 + b * 7 + 0x31) ^ (b >= 16 ? 0xa5 : 0);
	memcpy(st0_in, &st0, 10);
	memset(ymm_out, 0, sizeof(ymm_out));
	if (snprintf(tmp_path, sizeof(tmp_path), "%s.tmp", zdtm_pidfile) >= (int)sizeof(tmp_path))
		fail("pidfile path too long");
	snprintf(pid_path, sizeof(pid_path), "%s", zdtm_pidfile);
	pid_len = snprintf(pid_buf, sizeof(pid_buf), "%d\n", (int)getpid());

	__builtin_cpu_init();
	avx = __builtin_cpu_supports("avx");
	if (!avx)
		test_msg("the CPU (or OS) lacks AVX: checking xmm0-15 only");
	if (test_flag("--sse-only"))
		avx = 0;
	fflush(stdout);
	fflush(stderr);
	if (avx)
		run_avx();
	else
		run_sse();

	if (err_out)
		fail("readiness syscall (stage %ld) failed: %s", stage, strerror((int)-err_out));
	if (!test_sigterm_received)
		fail("left the spin loop without SIGTERM");

	width = avx ? 32 : 16;
	for (int r = 0; r < 16; r++)
		for (int b = 0; b < width; b++)
			if (ymm_out[r * 32 + b] != ymm_in[r * 32 + b])
				fail("%s%d byte %d: 0x%02x, expected 0x%02x", avx ? "ymm" : "xmm",
				     r, b, ymm_out[r * 32 + b], ymm_in[r * 32 + b]);
	if (mxcsr_out != mxcsr_in)
		fail("MXCSR 0x%x, expected 0x%x", mxcsr_out, mxcsr_in);
	if (fcw_out != fcw_in)
		fail("x87 control word 0x%x, expected 0x%x", fcw_out, fcw_in);
	if (memcmp(st0_out, st0_in, 10))
		fail("x87 st(0) changed");
	for (int i = 0; i < 5; i++)
		if (gpr_out[i] != gpr_in[i])
			fail("%s = %#llx, expected %#llx", gpr_names[i],
			     (unsigned long long)gpr_out[i], (unsigned long long)gpr_in[i]);
	pass();
}
