// SPDX-License-Identifier: GPL-2.0-only
/*
 * cairn's fork tracker: while a tree is being frozen, every task created
 * in it (process or thread) and every task of it that exits is reported
 * through a ring buffer, so the freezer learns of a child born during the
 * seize without re-reading /proc children lists.
 *
 * "In the tree" means: the task's real_parent chain reaches root_tgid, the
 * same relation /proc/PID/task/TID/children describes. The fork event is
 * submitted in kernel_clone() before the parent returns from fork, so once
 * a parent is in a ptrace stop every child it made is in the ring buffer.
 */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "records.h"
#include "subtree.h"

char LICENSE[] SEC("license") = "GPL";

/* root_tgid (subtree.h) is set by user space before attaching; 0 means
 * "off". */
/* Events that did not fit in the ring buffer: user space then takes a
 * fresh snapshot of the tree instead of trusting the events. */
__u64 lost;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/* Layout anchor for the user-space decoder's unit test. Never written. */
const volatile struct cairn_event layout_event;

static __always_inline void report(__u32 kind, struct task_struct *t, int ppid,
				   int exit_code)
{
	struct cairn_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		__sync_fetch_and_add(&lost, 1);
		return;
	}
	e->kind = kind;
	e->tid = BPF_CORE_READ(t, pid);
	e->tgid = BPF_CORE_READ(t, tgid);
	e->ppid = ppid;
	e->exit_code = exit_code;
	e->pad = 0;
	bpf_ringbuf_submit(e, 0);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	int root = root_tgid;

	/* The child's own chain decides (CLONE_PARENT makes it a sibling). */
	if (!root || !in_subtree(child, root))
		return 0;
	report(CAIRN_EV_FORK, child, BPF_CORE_READ(child, real_parent, tgid), 0);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *p)
{
	int root = root_tgid;

	if (!root || !in_subtree(p, root))
		return 0;
	report(CAIRN_EV_EXIT, p, 0, BPF_CORE_READ(p, exit_code));
	return 0;
}
