/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * "Is this task in the tree?", shared by the inventory iterators and the
 * fork tracker: its real_parent chain reaches root_tgid, the relation
 * /proc/PID/task/TID/children describes.
 *
 * The walk stops early at a process that started before the root: every
 * descendant of the root started after it (copy_process sets a child's
 * start time after its parent's), so such a process is neither in the
 * tree nor on the chain of anything that is. Only chains that stay
 * younger than the root for MAX_DEPTH steps are left undecided; they
 * count in too_deep, and user space then does not trust the result.
 */
#ifndef CAIRN_SUBTREE_H
#define CAIRN_SUBTREE_H

#define MAX_DEPTH 64

/* Set by user space: the tree's root process (0: none), and its start
 * time in CLOCK_BOOTTIME nanoseconds rounded down (0: no early stop). */
int root_tgid;
__u64 root_start_ns;
/* Walks left undecided after MAX_DEPTH steps. */
__u64 too_deep;

static __always_inline int in_subtree(struct task_struct *t, int root)
{
	__u64 start = root_start_ns;

	for (int i = 0; i < MAX_DEPTH; i++) {
		int tgid = BPF_CORE_READ(t, tgid);

		if (tgid == root)
			return 1;
		if (tgid <= 1)
			return 0;
		if (start && BPF_CORE_READ(t, group_leader, start_boottime) < start)
			return 0;
		t = BPF_CORE_READ(t, real_parent);
		if (!t)
			return 0;
	}
	__sync_fetch_and_add(&too_deep, 1);
	return 0;
}

#endif
