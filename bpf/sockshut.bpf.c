// SPDX-License-Identifier: GPL-2.0-only
/*
 * sockshut.bpf.c - the shutdown bits of one socket (sk->sk_shutdown:
 * 1 RCV_SHUTDOWN, 2 SEND_SHUTDOWN), which no other interface shows for a
 * socket sock_diag does not list (an unbound UDP socket) and poll() shows
 * only in part (SHUT_WR alone is invisible). An iter/task_file program:
 * for the fd `target_fd` of the process `target_tgid` (cairn's own copy of
 * the socket, from pidfd_getfd), if it is a socket, `found` is set and
 * `shutdown` holds the bits. Read by src/sys/sockshut.rs.
 */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

#define S_IFMT 00170000
#define S_IFSOCK 0140000

/* Set by user space. */
int target_tgid;
__u32 target_fd;
/* Written here. */
__u32 found;
__u32 shutdown;

struct file___sock {
	void *private_data;
} PA;

struct sock___shut {
	/* A u8 since Linux 4.x; a bitfield before: read either way. */
	u8 sk_shutdown;
} PA;

struct socket___shut {
	struct sock___shut *sk;
} PA;

SEC("iter/task_file")
int sockshut(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct file___sock *f;
	struct socket___shut *sock;
	struct sock___shut *sk;

	if (!task || !file)
		return 0;
	if (BPF_CORE_READ(task, tgid) != target_tgid || ctx->fd != target_fd)
		return 0;
	if ((BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return 0;
	f = (struct file___sock *)file;
	sock = BPF_CORE_READ(f, private_data);
	if (!sock)
		return 0;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return 0;
	shutdown = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_shutdown);
	found = 1;
	return 0;
}
