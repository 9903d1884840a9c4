// SPDX-License-Identifier: GPL-2.0-only
/*
 * cairn's view of one unix socket's receive queue: an iter/unix program
 * that writes, for the socket whose inode is `target_ino`, one record per
 * skb of its receive queue, in queue order: the bytes left in it
 * (skb->len - UNIXCB(skb).consumed) and whether it carries descriptors in
 * flight (UNIXCB(skb).fp). A stream peek glues the bytes of separate
 * writes and cannot tell where the write that carried descriptors began;
 * this can.
 */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

/* Set by user space: the socket's inode. */
__u64 target_ino;
/* Written here: the socket was seen; its queue had more skbs than the
 * program walks. */
__u64 found;
__u64 truncated;

#define MAX_SKBS 1024

struct sk_buff {
	struct sk_buff *next;
	unsigned int len;
	char cb[48];
} PA;

struct sk_buff_head {
	struct sk_buff *next;
	__u32 qlen;
} PA;

struct socket {
	struct file *file;
} PA;

struct sock {
	struct sk_buff_head sk_receive_queue;
	struct socket *sk_socket;
} PA;

struct unix_sock {
	struct sock sk;
} PA;

struct scm_fp_list;

struct unix_skb_parms {
	struct scm_fp_list *fp;
	__u32 consumed;
} PA;

struct bpf_iter__unix {
	struct bpf_iter_meta *meta;
	struct unix_sock *unix_sk;
} PA;

struct cairn_skb_rec {
	__u32 len;
	__u32 fp;
};


SEC("iter/unix")
int unixq(struct bpf_iter__unix *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct unix_sock *u = ctx->unix_sk;
	struct sock *sk;
	struct sk_buff *skb;
	__u32 qlen, i;

	if (!u)
		return 0;
	sk = &u->sk;
	if (BPF_CORE_READ(sk, sk_socket, file, f_inode, i_ino) != target_ino)
		return 0;
	found++;
	qlen = BPF_CORE_READ(sk, sk_receive_queue.qlen);
	skb = BPF_CORE_READ(sk, sk_receive_queue.next);
	for (i = 0; i < MAX_SKBS; i++) {
		struct cairn_skb_rec r = {};
		struct unix_skb_parms *cb;

		if (i >= qlen || !skb)
			break;
		cb = (struct unix_skb_parms *)__builtin_preserve_access_index(&skb->cb);
		r.len = BPF_CORE_READ(skb, len) - BPF_CORE_READ(cb, consumed);
		r.fp = BPF_CORE_READ(cb, fp) != 0;
		bpf_seq_write(seq, &r, sizeof(r));
		skb = BPF_CORE_READ(skb, next);
	}
	if (i < qlen)
		truncated = 1;
	return 0;
}
