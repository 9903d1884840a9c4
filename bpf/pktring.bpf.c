// SPDX-License-Identifier: GPL-2.0-only
/*
 * cairn's packet-socket reader: one iter/task_file pass that finds the
 * socket file of process `target_tgid` whose inode is `target_ino` and
 * copies, into `out`, the state of its struct packet_sock that neither
 * getsockopt nor packet_diag shows: the kernel's position in its
 * PACKET_RX_RING and PACKET_TX_RING (net/packet/internal.h: rx_ring.head,
 * tx_ring.head; for TPACKET_V3 the active block, its fill offset and the
 * next block sequence number, whether its queue is frozen), the
 * pending-drop count, and its fanout
 * group's member limit, member count and round-robin cursor (or whether
 * a fanout BPF program is set: they share a union), the socket's index in
 * the group's member array (which picks the member of each packet), and
 * the state of its rollover (the member it last rolled over to, whether
 * its flow history holds anything) and its receive-pressure flag.
 *
 * AF_PACKET may be built in (its types are in /sys/kernel/btf/vmlinux) or
 * a module (their BTF is in /sys/kernel/btf/af_packet, which libbpf
 * searches too); every access is a CO-RE relocation.
 */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

struct sock;

struct socket {
	struct sock *sk;
} PA;

struct file___pk {
	void *private_data;
	struct inode *f_inode;
} PA;

typedef struct {
	int counter;
} atomic_t;

struct tpacket_kbdq_core {
	unsigned char reset_pending_on_curr_blk;
	unsigned short kactive_blk_num;
	char *pkblk_start;
	char *nxt_offset;
	__u64 knxt_seq_num;
	unsigned int knum_blocks;
} PA;

struct packet_ring_buffer {
	void *pg_vec;
	unsigned int head;
	unsigned int frame_max;
	unsigned int frame_size;
	unsigned int pg_vec_len;
	struct tpacket_kbdq_core prb_bdqc;
} PA;

struct packet_fanout {
	unsigned int num_members;
	__u32 max_num_members;
	__u16 id;
	__u8 type;
	__u8 flags;
	/* One union in the kernel: the LB cursor or the CBPF/EBPF program. */
	atomic_t rr_cur;
	void *bpf_prog;
	/* struct sock __rcu *arr[]: a flexible array (a fixed one of
	 * PACKET_FANOUT_MAX before 5.12); only its offset is used. */
	void *arr[1];
} PA;

#define ROLLOVER_HLEN_MAX 32

struct packet_rollover {
	int sock;
	__u32 history[ROLLOVER_HLEN_MAX];
} PA;

/* The members' array is searched this far at most. */
#define FANOUT_SCAN 1024

/* enum packet_sock_flags (6.3 on); PACKET_SOCK_PRESSURE is a bit of
 * packet_sock.flags there, an int `pressure` before. */
enum packet_sock_flags___pk { PACKET_SOCK_PRESSURE___pk = 5 };

enum tpacket_versions { TPACKET_V1, TPACKET_V2, TPACKET_V3 };

struct packet_sock {
	struct packet_fanout *fanout;
	struct packet_rollover *rollover;
	unsigned long flags;
	struct packet_ring_buffer rx_ring;
	struct packet_ring_buffer tx_ring;
	enum tpacket_versions tp_version;
	atomic_t tp_drops;
} PA;

/* What user space reads back (src/sys/pktring.rs, same layout). */
struct pktring_state {
	__u32 found;
	__u32 version;
	__u32 rx_head;
	__u32 rx_frame_max;
	__u32 rx_blocks;
	__u32 tx_head;
	__u32 tx_frame_max;
	__u32 tx_blocks;
	/* TPACKET_V3 receive ring. */
	__u32 v3_active_block;
	__u64 v3_offset;
	__u64 v3_next_seq;
	__u32 drops;
	__u32 fanout;
	__u32 fanout_members;
	__u32 fanout_max_members;
	__u32 fanout_rr_cur;
	__u32 fanout_id_type_flags;
	/* TPACKET_V3: the queue is frozen (every block was the user's). */
	__u32 v3_frozen;
	/* The fanout group's program pointer is set (CBPF/EBPF groups). */
	__u32 fanout_prog;
	/* Index of the socket in the group's member array; FANOUT_SCAN + 1:
	 * not in it (its interface went down), FANOUT_SCAN: not searched
	 * that far. */
	__u32 fanout_index;
	/* Rollover: 1 when the socket has one; the member it rolls over to
	 * next; 1 when its flow history holds any hash. */
	__u32 rollover;
	__s32 rollover_sock;
	__u32 rollover_history;
	/* Receive pressure (set when its queue ran low on room). */
	__u32 pressure;
};

struct packet_sock___old {
	int pressure;
} PA;

/* Set by user space before each run (one loaded program serves a whole
 * dump or restore). */
int target_tgid;
__u64 target_ino;

struct pktring_state out;

SEC("iter/task_file")
int packet_state(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file___pk *file = (void *)ctx->file;
	struct packet_sock *po;
	struct packet_fanout *f;
	struct packet_rollover *r;
	struct socket *sock;
	char *start, *next;
	__u32 i, n;
	__u64 off;

	if (!task || !file || task->tgid != target_tgid)
		return 0;
	if (BPF_CORE_READ(file, f_inode, i_ino) != target_ino)
		return 0;
	sock = BPF_CORE_READ(file, private_data);
	if (!sock)
		return 0;
	/* pkt_sk(): struct sock is the first member of struct packet_sock. */
	po = (void *)BPF_CORE_READ(sock, sk);
	if (!po)
		return 0;
	out.found = 1;
	out.version = BPF_CORE_READ(po, tp_version);
	out.rx_head = BPF_CORE_READ(po, rx_ring.head);
	out.rx_frame_max = BPF_CORE_READ(po, rx_ring.frame_max);
	out.rx_blocks = BPF_CORE_READ(po, rx_ring.pg_vec_len);
	out.tx_head = BPF_CORE_READ(po, tx_ring.head);
	out.tx_frame_max = BPF_CORE_READ(po, tx_ring.frame_max);
	out.tx_blocks = BPF_CORE_READ(po, tx_ring.pg_vec_len);
	out.v3_active_block = BPF_CORE_READ(po, rx_ring.prb_bdqc.kactive_blk_num);
	start = BPF_CORE_READ(po, rx_ring.prb_bdqc.pkblk_start);
	next = BPF_CORE_READ(po, rx_ring.prb_bdqc.nxt_offset);
	out.v3_offset = next - start;
	out.v3_next_seq = BPF_CORE_READ(po, rx_ring.prb_bdqc.knxt_seq_num);
	out.v3_frozen = BPF_CORE_READ(po, rx_ring.prb_bdqc.reset_pending_on_curr_blk);
	out.drops = BPF_CORE_READ(po, tp_drops.counter);
	f = BPF_CORE_READ(po, fanout);
	out.fanout = f != 0;
	if (f) {
		out.fanout_members = BPF_CORE_READ(f, num_members);
		out.fanout_max_members = BPF_CORE_READ(f, max_num_members);
		out.fanout_rr_cur = BPF_CORE_READ(f, rr_cur.counter);
		out.fanout_id_type_flags = BPF_CORE_READ(f, id) |
					   (__u32)BPF_CORE_READ(f, type) << 16 |
					   (__u32)BPF_CORE_READ(f, flags) << 24;
		out.fanout_prog = BPF_CORE_READ(f, bpf_prog) != 0;
		out.fanout_index = FANOUT_SCAN + 1;
		n = out.fanout_members;
		off = bpf_core_field_offset(struct packet_fanout, arr);
		for (i = 0; i < FANOUT_SCAN; i++) {
			void *m = 0;

			if (i >= n)
				break;
			bpf_probe_read_kernel(&m, sizeof(m), (char *)f + off + i * sizeof(m));
			if (m == (void *)po) {
				out.fanout_index = i;
				break;
			}
		}
		if (i == FANOUT_SCAN && n > FANOUT_SCAN)
			out.fanout_index = FANOUT_SCAN;
	}
	r = BPF_CORE_READ(po, rollover);
	out.rollover = r != 0;
	if (r) {
		__u32 h = 0, words;

		out.rollover_sock = BPF_CORE_READ(r, sock);
		words = bpf_core_field_size(struct packet_rollover, history) / sizeof(__u32);
		for (i = 0; i < ROLLOVER_HLEN_MAX; i++) {
			__u32 w = 0;

			if (i >= words)
				break;
			bpf_probe_read_kernel(&w, sizeof(w),
					      (char *)r + bpf_core_field_offset(struct packet_rollover,
										history) +
						      i * sizeof(w));
			h |= w;
		}
		out.rollover_history = h != 0;
	}
	if (bpf_core_enum_value_exists(enum packet_sock_flags___pk, PACKET_SOCK_PRESSURE___pk)) {
		unsigned long fl = BPF_CORE_READ(po, flags);
		int bit = bpf_core_enum_value(enum packet_sock_flags___pk, PACKET_SOCK_PRESSURE___pk);

		out.pressure = (fl >> (bit & 63)) & 1;
	} else if (bpf_core_field_exists(struct packet_sock___old, pressure)) {
		out.pressure = BPF_CORE_READ((struct packet_sock___old *)po, pressure) != 0;
	}
	return 0;
}
