/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The few kernel types cairn's BPF programs touch, written by hand instead
 * of a generated vmlinux.h (so the build needs no bpftool and no header of
 * the build machine's kernel).
 *
 * Only the fields that are read are declared, and every struct carries
 * preserve_access_index: clang records each field access as a CO-RE
 * relocation, and libbpf resolves it against the running kernel's BTF
 * (/sys/kernel/btf/vmlinux) at load time. Field order and offsets here
 * therefore do not matter; names and types do. A field a kernel may lack
 * is read only behind bpf_core_field_exists() on a "___flavor" struct.
 */
#ifndef CAIRN_KERNEL_H
#define CAIRN_KERNEL_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;
typedef _Bool bool;
#define true 1
#define false 0

/* UAPI constants of linux/bpf.h (stable ABI). */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_RINGBUF = 27,
};
#define BPF_ANY 0

#define PA __attribute__((preserve_access_index))

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
	u64 session_id;
	u64 seq_num;
} PA;

struct upid {
	int nr;
} PA;

struct pid {
	unsigned int level;
	struct upid numbers[1];
} PA;

struct signal_struct {
	unsigned int flags;
	int group_exit_code;
	struct pid *pids[4];
} PA;

#define SIGNAL_STOP_STOPPED 0x00000001
#define SIGNAL_GROUP_EXIT 0x00000004

/* enum pid_type */
#define PIDTYPE_PID 0
#define PIDTYPE_TGID 1
#define PIDTYPE_PGID 2
#define PIDTYPE_SID 3

struct mm_struct {
	unsigned long start_brk;
	unsigned long brk;
	unsigned long start_stack;
} PA;

struct fdtable {
	unsigned int max_fds;
	unsigned long *close_on_exec;
} PA;

struct files_struct {
	struct fdtable *fdt;
} PA;

struct task_struct {
	unsigned int __state; /* 5.14+; see task_struct___pre514 */
	unsigned int flags;
	int exit_state;
	int exit_code;
	int exit_signal;
	int pid;
	int tgid;
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	u64 start_boottime;
	char comm[16];
	struct mm_struct *mm;
	struct files_struct *files;
	struct signal_struct *signal;
} PA;

/* Before Linux 5.14 the task's state is `long state` (renamed __state). */
struct task_struct___pre514 {
	long state;
} PA;

struct super_block {
	u32 s_dev;
	unsigned long s_magic;
} PA;

/* Whose getattr reports another st_dev than the super block's s_dev. */
#define OVERLAYFS_SUPER_MAGIC 0x794c7630
#define BTRFS_SUPER_MAGIC 0x9123683e

struct inode {
	unsigned short i_mode;
	unsigned long i_ino;
	struct super_block *i_sb;
} PA;

struct dentry {
	struct super_block *d_sb;
} PA;

struct vfsmount {
	struct dentry *mnt_root;
} PA;

struct mount {
	struct vfsmount mnt;
	int mnt_id;
} PA;

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
} PA;

struct file {
	unsigned int f_flags;
	long long f_pos;
	struct path f_path;
	struct inode *f_inode;
} PA;

struct vm_area_struct;

struct vm_operations_struct {
	const char *(*name)(struct vm_area_struct *vma);
} PA;

struct vm_special_mapping {
	const char *name;
} PA;

struct vm_area_struct {
	unsigned long vm_start;
	unsigned long vm_end;
	struct mm_struct *vm_mm;
	unsigned long vm_flags;
	const struct vm_operations_struct *vm_ops;
	unsigned long vm_pgoff;
	struct file *vm_file;
	void *vm_private_data;
} PA;

/* Only with CONFIG_ANON_VMA_NAME. */
struct anon_vma_name {
	char name[1];
} PA;

struct vm_area_struct___anon_name {
	struct anon_vma_name *anon_name;
	/* The i_mmap node of a file's VMA. Before Linux 6.2 anon_name
	 * shares a union with it and means something only without vm_file
	 * (anon_vma_name() there); only its offset is read. */
	struct {
		unsigned long rb_subtree_last;
	} shared;
} PA;

/* Iterator contexts (include/linux/bpf.h, kernel/bpf/task_iter.c). */
struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
} PA;

struct bpf_iter__task_vma {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
	struct vm_area_struct *vma;
} PA;

struct bpf_iter__task_file {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
	u32 fd;
	struct file *file;
} PA;

#endif /* CAIRN_KERNEL_H */
