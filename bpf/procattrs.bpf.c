// SPDX-License-Identifier: GPL-2.0-only
/*
 * procattrs.bpf.c - per-process state /proc does not show, for the oracle
 * (src/oracle): whether the process is a child subreaper
 * (signal->is_child_subreaper, what PR_GET_CHILD_SUBREAPER returns) and
 * its mm's membarrier registrations (mm->membarrier_state, the kernel's
 * MEMBARRIER_STATE_* bits; only with CONFIG_MEMBARRIER). An iter/task
 * program: one cairn_attrs_rec per thread-group leader that has an mm.
 * Read by src/sys/procattrs.rs.
 */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

typedef struct {
	int counter;
} atomic_t;

struct signal_struct___attrs {
	unsigned int is_child_subreaper : 1;
} PA;

struct mm_struct___membarrier {
	atomic_t membarrier_state;
} PA;

struct task_struct___attrs {
	struct signal_struct___attrs *signal;
	struct mm_struct___membarrier *mm;
} PA;

struct cairn_attrs_rec {
	__s32 tgid;
	__u32 subreaper;
	__s32 membarrier_state;
	/* 1 when the kernel has membarrier_state (CONFIG_MEMBARRIER). */
	__u32 membarrier_known;
};

SEC("iter/task")
int procattrs(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct task_struct___attrs *t = (struct task_struct___attrs *)task;
	struct signal_struct___attrs *sig;
	struct mm_struct___membarrier *mm;
	struct cairn_attrs_rec r = {};

	if (!task || BPF_CORE_READ(task, pid) != BPF_CORE_READ(task, tgid))
		return 0;
	mm = BPF_CORE_READ(t, mm);
	sig = BPF_CORE_READ(t, signal);
	if (!mm || !sig)
		return 0;
	r.tgid = BPF_CORE_READ(task, tgid);
	r.subreaper = BPF_CORE_READ_BITFIELD_PROBED(sig, is_child_subreaper);
	if (bpf_core_field_exists(mm->membarrier_state)) {
		r.membarrier_state = BPF_CORE_READ(mm, membarrier_state.counter);
		r.membarrier_known = 1;
	}
	bpf_seq_write(seq, &r, sizeof(r));
	return 0;
}
