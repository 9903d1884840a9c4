// SPDX-License-Identifier: GPL-2.0-only
/*
 * cairn's view of one unix socket's receive queue: an iter/unix program
 * that writes, for the socket whose inode is `target_ino`, one record per
 * skb of its receive queue, in queue order: the bytes left in it
 * (skb->len - UNIXCB(skb).consumed) and whether it carries descriptors in
 * flight (UNIXCB(skb).fp). A stream peek glues the bytes of separate
 * writes and cannot tell where the write that carried descriptors began;
 * this can.
 *
 * A second program, `embryos`, writes one record per connection waiting
 * to be accepted in any listener (the "embryo" socket that accept() will
 * return: it has no struct socket yet, and its peer is the connecting
 * socket): the inode of the connecting socket and what SO_PEERCRED and
 * SO_PEERGROUPS of the accepted socket will show: the connecting task's pid (its number in
 * the pid namespace whose inode is `pidns_inum`, 0 when it has none
 * there) and its effective uid, gid and groups. A --leave-running dump
 * cannot accept the connection to ask getsockopt; this reads it in place.
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
	struct sock *sk;
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
	struct pid *sk_peer_pid;
	const struct cred *sk_peer_cred;
} PA;

struct unix_sock {
	struct sock sk;
	struct sock *peer;
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

/* ------------------------------------------------------------- embryos */

/* Set by user space: the inode of cairn's pid namespace. */
__u64 pidns_inum;

#define MAX_GROUPS 64
#define MAX_LEVELS 32

typedef struct {
	__u32 val;
} kid_t;

struct group_info {
	int ngroups;
	kid_t gid[];
} PA;

struct cred {
	kid_t euid;
	kid_t egid;
	struct group_info *group_info;
} PA;

struct ns_common {
	unsigned int inum;
} PA;

struct pid_namespace {
	struct ns_common ns;
} PA;

/* The kernel's struct upid and struct pid with the namespace of each
 * number (kernel.h declares the number alone). */
struct upid___ns {
	int nr;
	struct pid_namespace *ns;
} PA;

struct pid___ns {
	unsigned int level;
	struct upid___ns numbers[1];
} PA;

struct cairn_embryo_rec {
	__u64 client_ino;
	__s32 pid;
	__u32 uid;
	__u32 gid;
	/* The number of groups, also when more than MAX_GROUPS. */
	__u32 ngroups;
	/* 0: the connection records no credentials. */
	__u32 has_cred;
	__u32 pad;
	__u32 groups[MAX_GROUPS];
};

/* A record is too big for the stack next to the loop state. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cairn_embryo_rec);
} embryo_buf SEC(".maps");

static __always_inline __s32 pid_in_ns(struct pid___ns *p)
{
	__u32 level, i;

	if (!p)
		return 0;
	level = BPF_CORE_READ(p, level);
	for (i = 0; i < MAX_LEVELS; i++) {
		struct upid___ns u = {};

		if (i > level)
			break;
		bpf_core_read(&u, sizeof(u), &p->numbers[i]);
		if (u.ns && BPF_CORE_READ(u.ns, ns.inum) == pidns_inum)
			return u.nr;
	}
	return 0;
}

SEC("iter/unix")
int embryos(struct bpf_iter__unix *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct unix_sock *u = ctx->unix_sk;
	struct cairn_embryo_rec *r;
	struct sock *client;
	const struct cred *cred;
	struct group_info *gi;
	__u32 g, n, zero = 0;

	/* A waiting connection has no socket (no inode) until accept(), and
	 * its peer is the connecting socket. */
	if (!u || BPF_CORE_READ(u, sk.sk_socket))
		return 0;
	client = BPF_CORE_READ(u, peer);
	if (!client)
		return 0;
	r = bpf_map_lookup_elem(&embryo_buf, &zero);
	if (!r)
		return 0;
	__builtin_memset(r, 0, sizeof(*r));
	r->client_ino = BPF_CORE_READ(client, sk_socket, file, f_inode, i_ino);
	if (!r->client_ino)
		return 0;
	r->pid = pid_in_ns((struct pid___ns *)BPF_CORE_READ(u, sk.sk_peer_pid));
	cred = BPF_CORE_READ(u, sk.sk_peer_cred);
	if (cred) {
		r->has_cred = 1;
		r->uid = BPF_CORE_READ(cred, euid.val);
		r->gid = BPF_CORE_READ(cred, egid.val);
		gi = BPF_CORE_READ(cred, group_info);
		n = gi ? BPF_CORE_READ(gi, ngroups) : 0;
		r->ngroups = n;
		for (g = 0; g < MAX_GROUPS; g++) {
			if (g >= n)
				break;
			bpf_core_read(&r->groups[g], sizeof(__u32), &gi->gid[g]);
		}
	}
	bpf_seq_write(seq, r, sizeof(*r));
	return 0;
}
