// SPDX-License-Identifier: GPL-2.0-only
/*
 * aio.bpf.c - the kernel's side of the AIO contexts (io_setup) of one
 * process, which /proc does not show: for every "[aio]" ring mapping of
 * the process `target_tgid`, its kioctx (the ring file's mapping's
 * private data) with what a restore needs (nr_events, max_reqs, the
 * kernel's tail) and what says whether it can be exact: whether the
 * context is this process's own (in mm->ioctx_table; a ring inherited
 * through fork is not), dead, and how many requests are in flight
 * (submitted, not completed). Every request holds one of the ring's
 * nr_events - 1 slots from io_submit until its completion is returned
 * to the pool: slots = free (atomic reqs_available plus every CPU's
 * kioctx_cpu.reqs_available) + completed_events + in flight.
 * One cairn_aio_rec per ring (records read by src/sys/aio.rs).
 */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

#define AIO_RING_MAGIC 0xa10a10a1UL

typedef struct {
	int counter;
} atomic_t;

struct list_head {
	struct list_head *next;
} PA;

struct address_space {
	void *i_private_data;
} PA;

/* Before Linux 6.7 the field was private_data. */
struct address_space___old {
	void *private_data;
} PA;

struct file___aio {
	struct address_space *f_mapping;
} PA;

struct super_block___aio {
	unsigned long s_magic;
} PA;

struct kioctx_cpu {
	unsigned int reqs_available;
} PA;

struct kioctx {
	atomic_t dead;
	unsigned long user_id;
	struct kioctx_cpu *cpu;
	unsigned int req_batch;
	unsigned int max_reqs;
	unsigned int nr_events;
	unsigned long mmap_base;
	unsigned long mmap_size;
	atomic_t reqs_available;
	struct list_head active_reqs;
	unsigned int tail;
	unsigned int completed_events;
	unsigned int id;
} PA;

struct kioctx_table {
	unsigned int nr;
	struct kioctx *table[];
} PA;

struct mm_struct___aio {
	struct kioctx_table *ioctx_table;
} PA;

/*
 * Per-CPU addresses without per-CPU symbols (kallsyms lists none without
 * CONFIG_KALLSYMS_ALL): the per-CPU array `pcpu` has one percpu pointer
 * (bpf_array.pptrs[0]); its element on CPU i lies at that pointer plus
 * CPU i's offset, the offset a kioctx's `cpu` pointer gets there too.
 */
struct bpf_array {
	void *pptrs[1];
} PA;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} pcpu SEC(".maps");

/* A pointer's value as a plain number (the verifier keeps pointers typed
 * through arithmetic; a copy through the stack is just bytes). */
static __always_inline unsigned long addr_of(const void *p)
{
	const void *slot = p;
	unsigned long v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), &slot);
	return v;
}

struct cairn_aio_rec {
	__u64 start;
	__u64 end;
	__u64 user_id;
	__u64 mmap_size;
	__s64 free_slots;
	__u32 nr_events;
	__u32 max_reqs;
	__u32 tail;
	__u32 completed_events;
	__u32 dead;
	__u32 owned;
	__u32 active_reqs;
	__u32 table_live;
	__u32 cpus;
	__u32 id;
};

int target_tgid;

SEC("iter/task_vma")
int aio_rings(struct bpf_iter__task_vma *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct vm_area_struct *vma = ctx->vma;
	struct cairn_aio_rec r = {};
	struct address_space *as;
	struct kioctx_table *table;
	struct mm_struct___aio *mm;
	struct kioctx *k = 0;
	struct super_block___aio *sb;
	struct file *file;
	unsigned long cpu_base, head, pptr;
	__u32 i, n;

	if (!task || !vma || task->tgid != target_tgid || task->pid != task->tgid)
		return 0;
	file = vma->vm_file;
	if (!file)
		return 0;
	sb = (struct super_block___aio *)BPF_CORE_READ(file, f_inode, i_sb);
	if (BPF_CORE_READ(sb, s_magic) != AIO_RING_MAGIC)
		return 0;
	as = BPF_CORE_READ((struct file___aio *)file, f_mapping);
	if (bpf_core_field_exists(as->i_private_data))
		k = BPF_CORE_READ(as, i_private_data);
	else
		k = BPF_CORE_READ((struct address_space___old *)as, private_data);
	r.start = vma->vm_start;
	r.end = vma->vm_end;
	if (!k) {
		bpf_seq_write(seq, &r, sizeof(r));
		return 0;
	}
	r.user_id = BPF_CORE_READ(k, user_id);
	r.mmap_size = BPF_CORE_READ(k, mmap_size);
	r.nr_events = BPF_CORE_READ(k, nr_events);
	r.max_reqs = BPF_CORE_READ(k, max_reqs);
	r.tail = BPF_CORE_READ(k, tail);
	r.completed_events = BPF_CORE_READ(k, completed_events);
	r.dead = BPF_CORE_READ(k, dead.counter);
	r.id = BPF_CORE_READ(k, id);
	r.free_slots = BPF_CORE_READ(k, reqs_available.counter);
	head = (unsigned long)k + bpf_core_field_offset(struct kioctx, active_reqs);
	r.active_reqs = (unsigned long)BPF_CORE_READ(k, active_reqs.next) != head;
	cpu_base = (unsigned long)BPF_CORE_READ(k, cpu);
	pptr = 0;
	bpf_probe_read_kernel(&pptr, sizeof(pptr),
			      (void *)(addr_of(&pcpu) +
				       bpf_core_field_offset(struct bpf_array, pptrs)));
	for (i = 0; i < 1024; i++) {
		__u32 zero = 0;
		void *elem = bpf_map_lookup_percpu_elem(&pcpu, &zero, i);
		unsigned int v = 0;

		if (!elem || !pptr)
			break;
		bpf_probe_read_kernel(&v, sizeof(v),
				      (void *)(cpu_base + (addr_of(elem) - pptr)));
		r.free_slots += v;
		r.cpus++;
	}
	mm = (struct mm_struct___aio *)task->mm;
	table = BPF_CORE_READ(mm, ioctx_table);
	n = table ? BPF_CORE_READ(table, nr) : 0;
	for (i = 0; i < 1024 && i < n; i++) {
		struct kioctx *e = 0;

		bpf_probe_read_kernel(&e, sizeof(e), &table->table[i]);
		if (e)
			r.table_live++;
		if (e == k)
			r.owned = 1;
	}
	bpf_seq_write(seq, &r, sizeof(r));
	return 0;
}
