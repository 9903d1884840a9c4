/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Records that cross the kernel/user boundary: the iterators write them
 * into their seq_file (read(2) on the iterator fd), the fork tracker into
 * its ring buffer. User space decodes them in src/inventory/records.rs,
 * which mirrors the layouts below field by field (little-endian, natural
 * alignment, no implicit padding: every struct is a multiple of 8 bytes
 * and pads explicitly). Change both together and bump CAIRN_REC_VERSION.
 *
 * Every iterator record starts with struct cairn_rec_hdr; `len` is the
 * whole record's length including the variable-length name that follows
 * the fixed part (no NUL), so a reader can skip kinds it does not know.
 */
#ifndef CAIRN_RECORDS_H
#define CAIRN_RECORDS_H

#define CAIRN_REC_VERSION 2

#define CAIRN_REC_TASK 1
#define CAIRN_REC_VMA 2
#define CAIRN_REC_FD 3

/* Longest name (path) a record carries; bpf_d_path's buffer. */
#define CAIRN_NAME_MAX 4096 /* a power of two: bpf masks lengths with it */

struct cairn_rec_hdr {
	__u16 kind;
	__u16 len;
	__s32 tgid;
};

/* One task (thread) of the tree: the task iterator. */
struct cairn_task_rec {
	struct cairn_rec_hdr hdr;
	__s32 tid;
	__s32 ppid; /* tgid of real_parent */
	__s32 pgid;
	__s32 sid;
	__u32 state; /* __state */
	__s32 exit_state;
	__s32 exit_code; /* as /proc/PID/stat: the group's while stopped or exiting */
	__s32 exit_signal;
	__u32 flags; /* PF_* */
	__u32 pad;
	char comm[16];
}; /* 64 bytes */

/* How a VMA's name is made (the rules of /proc/PID/maps). */
#define CAIRN_VMA_ANON 0        /* no name */
#define CAIRN_VMA_FILE 1        /* name: d_path of the mapped file */
#define CAIRN_VMA_SPECIAL 2     /* name: vm_special_mapping name ("[vdso]") */
#define CAIRN_VMA_HEAP 3        /* "[heap]" */
#define CAIRN_VMA_STACK 4       /* "[stack]" */
#define CAIRN_VMA_ANON_NAME 5   /* name: anon_vma_name -> "[anon:NAME]" */
#define CAIRN_VMA_SHMEM_NAME 6  /* name: anon_vma_name -> "[anon_shmem:NAME]" */
#define CAIRN_VMA_NAME_ERROR 7  /* bpf_d_path failed; user space asks /proc */
#define CAIRN_VMA_FILE_KEY 8    /* file: no name, path_mnt/path_dentry say
				 * which; user space names each distinct
				 * one once (from /proc/PID/maps) */

/* One VMA of a tree process (thread-group leaders only): task_vma. */
struct cairn_vma_rec {
	struct cairn_rec_hdr hdr;
	__u64 start;
	__u64 end;
	__u64 flags; /* vm_flags */
	__u64 pgoff; /* vm_pgoff, in pages */
	__u64 ino;
	__u32 dev; /* kernel dev_t: major << 20 | minor */
	__u16 name_len;
	__u8 name_kind;
	__u8 pad;
	/* CAIRN_VMA_FILE_KEY: vm_file->f_path (kernel addresses, only ever
	 * compared): the same (mnt, dentry) is the same name in /proc. */
	__u64 path_mnt;
	__u64 path_dentry;
}; /* 72 bytes, then name_len bytes of name */

/* One fd of a tree process (thread-group leaders only): task_file. */
struct cairn_fd_rec {
	struct cairn_rec_hdr hdr;
	__s32 fd;
	__u32 flags; /* f_flags, | O_CLOEXEC when close-on-exec (as fdinfo) */
	__u64 pos;
	__u64 ino;
	__u32 dev; /* kernel dev_t of the inode's super block */
	__u32 mode; /* i_mode */
	__s32 mnt_id;
	__u16 path_len; /* 0 with path_error set: user space reads the link */
	__u8 path_error;
	__u8 stat_dev; /* dev and mode differ from stat(2)'s: user space stats */
}; /* 48 bytes, then path_len bytes of path */

/* Fork tracker events (ring buffer). */
#define CAIRN_EV_FORK 1
#define CAIRN_EV_EXIT 2

struct cairn_event {
	__u32 kind;
	__s32 tid;       /* the new task (fork) or the exiting task (exit) */
	__s32 tgid;      /* its thread group */
	__s32 ppid;      /* fork: tgid of the new task's real_parent */
	__s32 exit_code; /* exit: exit_code */
	__u32 pad;
}; /* 24 bytes */

#endif /* CAIRN_RECORDS_H */
