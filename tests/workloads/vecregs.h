/*
 * vecregs.h - inline-asm fragments that load or store ymm0-15 / xmm0-15
 * from or to the memory %rax points at, one register every 32 bytes (the
 * xmm forms use the low 16 bytes of each slot), for the workloads that
 * check vector registers (regs_xsave, thread_mix).
 */
#ifndef VECREGS_H
#define VECREGS_H

#define ASM_LOAD_YMM0_15 \
	"vmovdqu 0(%%rax), %%ymm0\n\t" \
	"vmovdqu 32(%%rax), %%ymm1\n\t" \
	"vmovdqu 64(%%rax), %%ymm2\n\t" \
	"vmovdqu 96(%%rax), %%ymm3\n\t" \
	"vmovdqu 128(%%rax), %%ymm4\n\t" \
	"vmovdqu 160(%%rax), %%ymm5\n\t" \
	"vmovdqu 192(%%rax), %%ymm6\n\t" \
	"vmovdqu 224(%%rax), %%ymm7\n\t" \
	"vmovdqu 256(%%rax), %%ymm8\n\t" \
	"vmovdqu 288(%%rax), %%ymm9\n\t" \
	"vmovdqu 320(%%rax), %%ymm10\n\t" \
	"vmovdqu 352(%%rax), %%ymm11\n\t" \
	"vmovdqu 384(%%rax), %%ymm12\n\t" \
	"vmovdqu 416(%%rax), %%ymm13\n\t" \
	"vmovdqu 448(%%rax), %%ymm14\n\t" \
	"vmovdqu 480(%%rax), %%ymm15\n\t"

#define ASM_STORE_YMM0_15 \
	"vmovdqu %%ymm0, 0(%%rax)\n\t" \
	"vmovdqu %%ymm1, 32(%%rax)\n\t" \
	"vmovdqu %%ymm2, 64(%%rax)\n\t" \
	"vmovdqu %%ymm3, 96(%%rax)\n\t" \
	"vmovdqu %%ymm4, 128(%%rax)\n\t" \
	"vmovdqu %%ymm5, 160(%%rax)\n\t" \
	"vmovdqu %%ymm6, 192(%%rax)\n\t" \
	"vmovdqu %%ymm7, 224(%%rax)\n\t" \
	"vmovdqu %%ymm8, 256(%%rax)\n\t" \
	"vmovdqu %%ymm9, 288(%%rax)\n\t" \
	"vmovdqu %%ymm10, 320(%%rax)\n\t" \
	"vmovdqu %%ymm11, 352(%%rax)\n\t" \
	"vmovdqu %%ymm12, 384(%%rax)\n\t" \
	"vmovdqu %%ymm13, 416(%%rax)\n\t" \
	"vmovdqu %%ymm14, 448(%%rax)\n\t" \
	"vmovdqu %%ymm15, 480(%%rax)\n\t"

#define ASM_LOAD_XMM0_15 \
	"movdqu 0(%%rax), %%xmm0\n\t" \
	"movdqu 32(%%rax), %%xmm1\n\t" \
	"movdqu 64(%%rax), %%xmm2\n\t" \
	"movdqu 96(%%rax), %%xmm3\n\t" \
	"movdqu 128(%%rax), %%xmm4\n\t" \
	"movdqu 160(%%rax), %%xmm5\n\t" \
	"movdqu 192(%%rax), %%xmm6\n\t" \
	"movdqu 224(%%rax), %%xmm7\n\t" \
	"movdqu 256(%%rax), %%xmm8\n\t" \
	"movdqu 288(%%rax), %%xmm9\n\t" \
	"movdqu 320(%%rax), %%xmm10\n\t" \
	"movdqu 352(%%rax), %%xmm11\n\t" \
	"movdqu 384(%%rax), %%xmm12\n\t" \
	"movdqu 416(%%rax), %%xmm13\n\t" \
	"movdqu 448(%%rax), %%xmm14\n\t" \
	"movdqu 480(%%rax), %%xmm15\n\t"

#define ASM_STORE_XMM0_15 \
	"movdqu %%xmm0, 0(%%rax)\n\t" \
	"movdqu %%xmm1, 32(%%rax)\n\t" \
	"movdqu %%xmm2, 64(%%rax)\n\t" \
	"movdqu %%xmm3, 96(%%rax)\n\t" \
	"movdqu %%xmm4, 128(%%rax)\n\t" \
	"movdqu %%xmm5, 160(%%rax)\n\t" \
	"movdqu %%xmm6, 192(%%rax)\n\t" \
	"movdqu %%xmm7, 224(%%rax)\n\t" \
	"movdqu %%xmm8, 256(%%rax)\n\t" \
	"movdqu %%xmm9, 288(%%rax)\n\t" \
	"movdqu %%xmm10, 320(%%rax)\n\t" \
	"movdqu %%xmm11, 352(%%rax)\n\t" \
	"movdqu %%xmm12, 384(%%rax)\n\t" \
	"movdqu %%xmm13, 416(%%rax)\n\t" \
	"movdqu %%xmm14, 448(%%rax)\n\t" \
	"movdqu %%xmm15, 480(%%rax)\n\t"

#endif /* VECREGS_H */
