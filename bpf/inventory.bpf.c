// SPDX-License-Identifier: GPL-2.0-only
/*
 * cairn's inventory: three BPF iterators that walk, in one pass each, the
 * tasks, the VMAs and the open files of every process of one tree, and
 * write compact records (records.h) into the iterator's seq_file. User
 * space reads them with read(2) on the iterator fd, in that order:
 *
 *   1. iter/task      every task whose real_parent chain reaches root_tgid
 *                     (the same tree /proc/PID/task/TID/children gives);
 *                     its tgid goes into the `tree` map;
 *   2. iter/task_vma  the VMAs of every thread-group leader in `tree`;
 *   3. iter/task_file the fds of every thread-group leader in `tree`.
 *
 * What each record holds, and how a VMA is named, follows
 * fs/proc/task_mmu.c (show_map_vma, get_vma_name) and fs/proc/fd.c
 * (seq_show), so user space can build exactly what /proc would show.
 */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "records.h"
#include "subtree.h"

char LICENSE[] SEC("license") = "GPL";

#define O_CLOEXEC 02000000

/* This collection's number, set by user space before the task pass
 * (with root_tgid and root_start_ns of subtree.h). */
__u32 generation;
/* Counters user space checks after the passes. */
__u64 tree_map_full;

/* tgid -> generation of the collection that found it in the tree (an
 * entry of an older collection does not count, so nothing is cleared). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __s32);
	__type(value, __u32);
} tree SEC(".maps");

struct name_buf {
	char buf[CAIRN_NAME_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct name_buf);
} names SEC(".maps");

/* Layout anchors: the skeleton generates Rust types for these, and a unit
 * test checks them against the decoder's sizes. Never written. */
const volatile struct cairn_task_rec layout_task_rec;
const volatile struct cairn_vma_rec layout_vma_rec;
const volatile struct cairn_fd_rec layout_fd_rec;

/* Leaders of tree processes only; the last answer is cached because the
 * vma and file iterators visit one task's objects in a row (per read
 * session: a new iterator fd starts afresh). */
__u64 last_session = ~0ULL;
int last_tgid = -1, last_in;

static __always_inline int tree_leader(struct bpf_iter_meta *meta,
				       struct task_struct *task)
{
	int tgid = task->tgid;

	if (meta->session_id != last_session) {
		last_session = meta->session_id;
		last_tgid = -1;
	}
	if (task->pid != tgid)
		return 0;
	if (tgid != last_tgid) {
		__u32 *gen = bpf_map_lookup_elem(&tree, &tgid);

		last_tgid = tgid;
		last_in = gen && *gen == generation;
	}
	return last_in;
}

static __always_inline int nr_of(struct pid *p)
{
	return p ? BPF_CORE_READ(p, numbers[0].nr) : 0;
}

SEC("iter/task")
int tasks(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct cairn_task_rec r = {};
	struct signal_struct *sig;
	int root = root_tgid;
	__u32 gen = generation;

	if (!task || !root)
		return 0;
	if (!in_subtree(task, root))
		return 0;
	r.hdr.kind = CAIRN_REC_TASK;
	r.hdr.len = sizeof(r);
	r.hdr.tgid = task->tgid;
	r.tid = task->pid;
	r.ppid = BPF_CORE_READ(task, real_parent, tgid);
	sig = task->signal;
	r.pgid = nr_of(BPF_CORE_READ(sig, pids[PIDTYPE_PGID]));
	r.sid = nr_of(BPF_CORE_READ(sig, pids[PIDTYPE_SID]));
	if (bpf_core_field_exists(task->__state))
		r.state = task->__state;
	else
		r.state = BPF_CORE_READ((struct task_struct___pre514 *)task, state);
	r.exit_state = task->exit_state;
	/* As /proc/PID/stat shows it for the thread group. */
	r.exit_code = task->exit_code;
	if (BPF_CORE_READ(sig, flags) & (SIGNAL_GROUP_EXIT | SIGNAL_STOP_STOPPED))
		r.exit_code = BPF_CORE_READ(sig, group_exit_code);
	r.exit_signal = task->exit_signal;
	r.flags = task->flags;
	bpf_core_read(r.comm, sizeof(r.comm), &task->comm);
	if (bpf_map_update_elem(&tree, &r.hdr.tgid, &gen, BPF_ANY))
		__sync_fetch_and_add(&tree_map_full, 1);
	bpf_seq_write(seq, &r, sizeof(r));
	return 0;
}

/* Writes a record and the first `len` bytes of its name. */
static __always_inline void emit(struct seq_file *seq, void *rec, __u32 rec_len,
				 struct name_buf *nb, __u32 len)
{
	bpf_seq_write(seq, rec, rec_len);
	if (!nb || len == 0 || len >= CAIRN_NAME_MAX)
		return;
	/* The verifiers of Linux 6.1 and 6.12 lose the range of a compared
	 * __u32 ("R3 min value is negative"): hide the value from clang so
	 * that the mask is emitted, and the mask gives every verifier the
	 * bound [0, CAIRN_NAME_MAX) (CAIRN_NAME_MAX is a power of two). */
	asm volatile("" : "+r"(len));
	len &= CAIRN_NAME_MAX - 1;
	if (len > 0)
		bpf_seq_write(seq, nb->buf, len);
}

/* d_path's length includes the NUL; 0 on failure. */
static __always_inline __u32 path_of(struct file *file, struct name_buf *nb)
{
	long n = bpf_d_path(&file->f_path, nb->buf, sizeof(nb->buf));

	if (n <= 1 || n > CAIRN_NAME_MAX)
		return 0;
	return n - 1;
}

static __always_inline __u32 str_into(const char *src, struct name_buf *nb)
{
	long n = bpf_probe_read_kernel_str(nb->buf, sizeof(nb->buf), src);

	if (n <= 1 || n > CAIRN_NAME_MAX)
		return 0;
	return n - 1;
}

SEC("iter/task_vma")
int vmas(struct bpf_iter__task_vma *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct vm_area_struct *vma = ctx->vma;
	struct cairn_vma_rec r = {};
	struct anon_vma_name *anon = 0;
	struct name_buf *nb;
	struct file *file;
	struct mm_struct *mm;
	__u32 zero = 0, len = 0;

	if (!task || !vma || !tree_leader(ctx->meta, task))
		return 0;
	nb = bpf_map_lookup_elem(&names, &zero);
	if (!nb)
		return 0;
	r.hdr.kind = CAIRN_REC_VMA;
	r.hdr.tgid = task->tgid;
	r.start = vma->vm_start;
	r.end = vma->vm_end;
	r.flags = vma->vm_flags;
	file = vma->vm_file;
	if (bpf_core_field_exists(((struct vm_area_struct___anon_name *)0)->anon_name) &&
	    (!file || bpf_core_field_offset(struct vm_area_struct___anon_name, anon_name) !=
			      bpf_core_field_offset(struct vm_area_struct___anon_name, shared)))
		anon = BPF_CORE_READ((struct vm_area_struct___anon_name *)vma, anon_name);
	mm = vma->vm_mm;
	if (file) {
		struct inode *inode = file->f_inode;

		r.pgoff = vma->vm_pgoff;
		r.ino = BPF_CORE_READ(inode, i_ino);
		r.dev = BPF_CORE_READ(inode, i_sb, s_dev);
		if (anon) {
			r.name_kind = CAIRN_VMA_SHMEM_NAME;
			len = str_into(anon->name, nb);
		} else {
			/* bpf_d_path refuses vm_file here: a pointer loaded
			 * through ctx->vma is untrusted (kernel 6.18). The
			 * path's identity goes to user space instead. */
			r.path_mnt = (__u64)BPF_CORE_READ(file, f_path.mnt);
			r.path_dentry = (__u64)BPF_CORE_READ(file, f_path.dentry);
			r.name_kind = CAIRN_VMA_FILE_KEY;
		}
	} else if (BPF_CORE_READ(vma, vm_ops, name)) {
		/* Only special mappings (vdso, vvar, ...) name themselves; the
		 * name lives in their vm_special_mapping. */
		const char *name = BPF_CORE_READ(
			(struct vm_special_mapping *)vma->vm_private_data, name);

		len = name ? str_into(name, nb) : 0;
		r.name_kind = len ? CAIRN_VMA_SPECIAL : CAIRN_VMA_NAME_ERROR;
	} else if (mm && r.start < BPF_CORE_READ(mm, brk) &&
		   r.end > BPF_CORE_READ(mm, start_brk)) {
		r.name_kind = CAIRN_VMA_HEAP;
	} else if (mm && r.start <= BPF_CORE_READ(mm, start_stack) &&
		   r.end >= BPF_CORE_READ(mm, start_stack)) {
		r.name_kind = CAIRN_VMA_STACK;
	} else if (anon) {
		r.name_kind = CAIRN_VMA_ANON_NAME;
		len = str_into(anon->name, nb);
	}
	r.name_len = len;
	r.hdr.len = sizeof(r) + len;
	emit(seq, &r, sizeof(r), nb, len);
	return 0;
}

SEC("iter/task_file")
int files(struct bpf_iter__task_file *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct cairn_fd_rec r = {};
	struct name_buf *nb;
	struct inode *inode;
	struct mount *mnt;
	unsigned long *coe, word = 0;
	__u32 zero = 0, len;
	__u32 fd = ctx->fd;

	if (!task || !file || !tree_leader(ctx->meta, task))
		return 0;
	nb = bpf_map_lookup_elem(&names, &zero);
	if (!nb)
		return 0;
	r.hdr.kind = CAIRN_REC_FD;
	r.hdr.tgid = task->tgid;
	r.fd = fd;
	r.flags = file->f_flags;
	coe = BPF_CORE_READ(task, files, fdt, close_on_exec);
	if (coe && bpf_probe_read_kernel(&word, sizeof(word), coe + fd / 64) == 0 &&
	    (word >> (fd % 64)) & 1)
		r.flags |= O_CLOEXEC;
	r.pos = file->f_pos;
	inode = file->f_inode;
	r.ino = BPF_CORE_READ(inode, i_ino);
	r.dev = BPF_CORE_READ(inode, i_sb, s_dev);
	r.mode = BPF_CORE_READ(inode, i_mode);
	/* stat(2) of the fd, which /proc's view is, reports another st_dev
	 * than s_dev on overlayfs (the real file's inode, the overlay's
	 * path) and btrfs (one per subvolume): user space stats those. */
	{
		struct super_block *isb = BPF_CORE_READ(inode, i_sb);
		struct super_block *dsb = BPF_CORE_READ(file, f_path.dentry, d_sb);
		unsigned long im = BPF_CORE_READ(isb, s_magic);
		unsigned long dm = BPF_CORE_READ(dsb, s_magic);

		r.stat_dev = isb != dsb || im == OVERLAYFS_SUPER_MAGIC ||
			     dm == OVERLAYFS_SUPER_MAGIC || im == BTRFS_SUPER_MAGIC ||
			     dm == BTRFS_SUPER_MAGIC;
	}
	/* real_mount(): the vfsmount is embedded in struct mount. */
	mnt = (void *)((char *)BPF_CORE_READ(file, f_path.mnt) -
		       bpf_core_field_offset(struct mount, mnt));
	r.mnt_id = BPF_CORE_READ(mnt, mnt_id);
	len = path_of(file, nb);
	r.path_error = len == 0;
	r.path_len = len;
	r.hdr.len = sizeof(r) + len;
	emit(seq, &r, sizeof(r), nb, len);
	return 0;
}
