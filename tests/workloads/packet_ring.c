/*
 * packet_ring: a packet socket with a mapped ring, in a network namespace
 * of its own (the test makes it and brings lo up). Traffic: frames of
 * ethertype 0x88b6 (IEEE 802 local experimental) that the workload sends
 * itself on lo, a handful each time.
 *
 *   --v2  TPACKET_V2 PACKET_RX_RING (2 blocks of 8192, 8 frames of 2048),
 *         SOCK_RAW bound to lo/0x88b6, PACKET_RESERVE 16: three frames
 *         received, the first released by the program, the other two
 *         still the program's (TP_STATUS_USER). The kernel fills frame 3
 *         next.
 *   --v3  TPACKET_V3 PACKET_RX_RING (4 blocks of 4096, retire timeout
 *         20 ms, 16 bytes of private area): two blocks retired by the timer
 *         with one frame each, the first released; block 2 is the open,
 *         empty one, with sequence number 3.
 *   --tx  TPACKET_V2 PACKET_TX_RING (4 frames of 2048), SOCK_DGRAM: two
 *         frames sent (the kernel sends frame 2 next), frame 2 filled and
 *         marked TP_STATUS_SEND_REQUEST, not sent yet; a plain socket
 *         bound to lo/0x88b6 receives what the ring sends.
 *
 * After the restore: the ring is mapped at the same address from the same
 * socket (/proc/self/maps), the version and binding are the same, every
 * frame (or block) has its status and contents as before, and a new frame
 * lands where the kernel's position says (RX: frame 3 / block 2 with
 * sequence 3; TX: send() sends frame 2, which the plain socket receives).
 */
#include "zdtm.h"

#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>

#define ETH_P_TEST 0x88b6

static int lo;

static struct sockaddr_ll to_lo(void)
{
	return (struct sockaddr_ll){ .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_TEST),
				     .sll_ifindex = lo, .sll_halen = 6 };
}

static void set_opt(int s, int opt, int v)
{
	if (setsockopt(s, SOL_PACKET, opt, &v, sizeof(v)))
		pfail("setsockopt SOL_PACKET %d = %d", opt, v);
}

static int get_opt(int s, int opt)
{
	int v = -1;
	socklen_t len = sizeof(v);

	if (getsockopt(s, SOL_PACKET, opt, &v, &len))
		pfail("getsockopt SOL_PACKET %d", opt);
	return v;
}

/* Sends one frame of ethertype 0x88b6 whose payload starts with tag. */
static void send_frame(int sender, const char *tag)
{
	unsigned char f[64] = { 0 };
	struct sockaddr_ll a = to_lo();

	f[12] = ETH_P_TEST >> 8;
	f[13] = ETH_P_TEST & 0xff;
	snprintf((char *)f + 14, sizeof(f) - 14, "%s", tag);
	if (sendto(sender, f, sizeof(f), 0, (struct sockaddr *)&a, sizeof(a)) != sizeof(f))
		pfail("send frame %s", tag);
}

static volatile uint32_t *word(void *base, size_t off)
{
	return (volatile uint32_t *)((char *)base + off);
}

/* Waits until the word at off has bit 1 (TP_STATUS_USER) set. */
static void wait_user(void *base, size_t off, const char *what)
{
	for (int i = 0; i < 2000; i++) {
		if (*word(base, off) & TP_STATUS_USER)
			return;
		usleep(1000);
	}
	fail("%s was not filled", what);
}

/* The ring is mapped at ring from socket s (same inode), len bytes. */
static void check_mapping(int s, void *ring, size_t len)
{
	char want[64], lines[4096];
	struct stat st;

	if (fstat(s, &st))
		pfail("fstat the ring socket");
	snprintf(want, sizeof(want), "socket:[%lu]", (unsigned long)st.st_ino);
	if (maps_lines((unsigned long)ring, (unsigned long)ring + len, lines, sizeof(lines)) != 1)
		fail("the ring area %p holds other mappings: %s", ring, lines);
	if (!strstr(lines, want) || strtoul(lines, NULL, 16) != (unsigned long)ring)
		fail("the ring %p is not a mapping of %s: %s", ring, want, lines);
	if (!strstr(lines, " rw-s "))
		fail("the ring mapping lost its protections: %s", lines);
}

static void check_bound(int s, int ifindex, int proto)
{
	struct sockaddr_ll a;
	socklen_t len = sizeof(a);

	if (getsockname(s, (struct sockaddr *)&a, &len))
		pfail("getsockname");
	if (a.sll_ifindex != ifindex || a.sll_protocol != htons(proto))
		fail("bound to %d/%#x, was %d/%#x", a.sll_ifindex, ntohs(a.sll_protocol), ifindex, proto);
}

/* V1/V2 frame i of a ring of frames of fsize in blocks of bsize. */
static size_t frame_at(size_t i, size_t bsize, size_t fsize)
{
	return (i / (bsize / fsize)) * bsize + (i % (bsize / fsize)) * fsize;
}

static void v2(int sender)
{
	const size_t bs = 8192, fs = 2048, nf = 8, len = 2 * bs;
	struct tpacket_req req = { bs, 2, fs, nf };
	struct sockaddr_ll a = to_lo();
	unsigned char before[2 * 8192];
	int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_TEST));
	char *ring;

	if (s < 0)
		pfail("socket");
	set_opt(s, PACKET_VERSION, TPACKET_V2);
	set_opt(s, PACKET_RESERVE, 16);
	if (setsockopt(s, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)))
		pfail("PACKET_RX_RING");
	if (bind(s, (struct sockaddr *)&a, sizeof(a)))
		pfail("bind");
	ring = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, s, 0);
	if (ring == MAP_FAILED)
		pfail("mmap");
	send_frame(sender, "one");
	send_frame(sender, "two");
	send_frame(sender, "three");
	wait_user(ring, frame_at(2, bs, fs), "frame 2");
	/* The program read frame 0 and gave it back. */
	*word(ring, 0) = TP_STATUS_KERNEL;
	memcpy(before, ring, len);

	test_daemon();
	test_waitsig();

	check_mapping(s, ring, len);
	check_bound(s, lo, ETH_P_TEST);
	if (get_opt(s, PACKET_VERSION) != TPACKET_V2 || get_opt(s, PACKET_RESERVE) != 16)
		fail("version %d reserve %d", get_opt(s, PACKET_VERSION), get_opt(s, PACKET_RESERVE));
	if (memcmp(before, ring, len))
		fail("the ring's bytes changed");
	for (size_t i = 0; i < nf; i++) {
		struct tpacket2_hdr *h = (void *)(ring + frame_at(i, bs, fs));
		uint32_t want = (i == 1 || i == 2) ? TP_STATUS_USER : TP_STATUS_KERNEL;

		if ((h->tp_status & TP_STATUS_USER) != want)
			fail("frame %zu has status %#x", i, h->tp_status);
	}
	{
		struct tpacket2_hdr *h = (void *)(ring + frame_at(2, bs, fs));

		if (memcmp((char *)h + h->tp_mac + 14, "three", 6))
			fail("frame 2 does not hold the third frame");
	}
	/* A new frame lands in frame 3: the kernel's position came back. */
	send_frame(sender, "after");
	wait_user(ring, frame_at(3, bs, fs), "frame 3 (the kernel's next frame)");
	{
		struct tpacket2_hdr *h = (void *)(ring + frame_at(3, bs, fs));

		if (memcmp((char *)h + h->tp_mac + 14, "after", 6))
			fail("frame 3 does not hold the frame sent after the restore");
	}
	for (size_t i = 4; i < nf; i++)
		if (*word(ring, frame_at(i, bs, fs)) != TP_STATUS_KERNEL)
			fail("frame %zu was filled too", i);
	pass();
}

/* struct tpacket_block_desc offsets: block_status 8, num_pkts 12,
 * offset_to_first_pkt 16, seq_num 24. */
#define BLK_STATUS 8
#define BLK_PKTS 12
#define BLK_FIRST 16
#define BLK_SEQ 24

static void v3(int sender)
{
	const size_t bs = 4096, nb = 4, len = nb * bs;
	struct tpacket_req3 req = { .tp_block_size = bs, .tp_block_nr = nb, .tp_frame_size = 2048,
				    .tp_frame_nr = 8, .tp_retire_blk_tov = 20, .tp_sizeof_priv = 16 };
	struct sockaddr_ll a = to_lo();
	unsigned char before[4 * 4096];
	int s = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_TEST));
	char *ring;

	if (s < 0)
		pfail("socket");
	set_opt(s, PACKET_VERSION, TPACKET_V3);
	if (setsockopt(s, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)))
		pfail("PACKET_RX_RING");
	if (bind(s, (struct sockaddr *)&a, sizeof(a)))
		pfail("bind");
	ring = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, s, 0);
	if (ring == MAP_FAILED)
		pfail("mmap");
	memcpy(ring + *word(ring, 4), "private!", 8); /* block 0's private area */
	send_frame(sender, "first");
	wait_user(ring, BLK_STATUS, "block 0");
	send_frame(sender, "second");
	wait_user(ring, bs + BLK_STATUS, "block 1");
	*word(ring, BLK_STATUS) = TP_STATUS_KERNEL;
	/* Block 2 is open and empty now; nothing else arrives. */
	usleep(50000);
	if (*word(ring, 2 * bs + BLK_PKTS) != 0)
		fail("block 2 is not empty");
	memcpy(before, ring, len);

	test_daemon();
	test_waitsig();

	check_mapping(s, ring, len);
	check_bound(s, lo, ETH_P_TEST);
	if (get_opt(s, PACKET_VERSION) != TPACKET_V3)
		fail("version %d", get_opt(s, PACKET_VERSION));
	if (memcmp(before, ring, len))
		fail("the ring's bytes changed");
	if (*word(ring, BLK_STATUS) != TP_STATUS_KERNEL || !(*word(ring, bs + BLK_STATUS) & TP_STATUS_USER))
		fail("block statuses %#x %#x", *word(ring, BLK_STATUS), *word(ring, bs + BLK_STATUS));
	{
		struct tpacket3_hdr *h = (void *)(ring + bs + *word(ring, bs + BLK_FIRST));

		if (memcmp((char *)h + h->tp_mac, "second", 7) || *(uint64_t *)(ring + bs + BLK_SEQ) != 2)
			fail("block 1 lost its frame or its sequence number");
	}
	send_frame(sender, "after");
	wait_user(ring, 2 * bs + BLK_STATUS, "block 2 (the kernel's active block)");
	{
		struct tpacket3_hdr *h = (void *)(ring + 2 * bs + *word(ring, 2 * bs + BLK_FIRST));

		if (*word(ring, 2 * bs + BLK_PKTS) != 1 || memcmp((char *)h + h->tp_mac, "after", 6))
			fail("block 2 does not hold the frame sent after the restore");
		if (*(uint64_t *)(ring + 2 * bs + BLK_SEQ) != 3)
			fail("block 2 has sequence number %llu, not 3",
			     (unsigned long long)*(uint64_t *)(ring + 2 * bs + BLK_SEQ));
	}
	pass();
}

static void tx(void)
{
	const size_t bs = 4096, fs = 2048, nf = 4, len = 2 * bs;
	const size_t data = TPACKET2_HDRLEN - sizeof(struct sockaddr_ll);
	struct tpacket_req req = { bs, 2, fs, nf };
	struct sockaddr_ll a = to_lo();
	unsigned char before[2 * 4096];
	int s = socket(AF_PACKET, SOCK_DGRAM, 0); /* sends only */
	int r = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_TEST));
	char buf[256], *ring;

	if (s < 0 || r < 0)
		pfail("socket");
	if (bind(r, (struct sockaddr *)&a, sizeof(a)))
		pfail("bind the receiver");
	set_opt(s, PACKET_VERSION, TPACKET_V2);
	if (setsockopt(s, SOL_PACKET, PACKET_TX_RING, &req, sizeof(req)))
		pfail("PACKET_TX_RING");
	ring = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, s, 0);
	if (ring == MAP_FAILED)
		pfail("mmap");
	for (size_t i = 0; i < 3; i++) {
		struct tpacket2_hdr *h = (void *)(ring + frame_at(i, bs, fs));

		h->tp_len = snprintf(ring + frame_at(i, bs, fs) + data, 32, "tx frame %zu", i) + 1;
		if (i < 2)
			h->tp_status = TP_STATUS_SEND_REQUEST;
	}
	if (sendto(s, NULL, 0, 0, (struct sockaddr *)&a, sizeof(a)) < 0)
		pfail("send the TX ring");
	for (int i = 0; i < 2; i++) {
		struct pollfd p = { .fd = r, .events = POLLIN };

		if (poll(&p, 1, 2000) != 1 || recv(r, buf, sizeof(buf), 0) <= 0)
			fail("TX frame %d did not arrive", i);
	}
	((struct tpacket2_hdr *)(ring + frame_at(2, bs, fs)))->tp_status = TP_STATUS_SEND_REQUEST;
	memcpy(before, ring, len);

	test_daemon();
	test_waitsig();

	check_mapping(s, ring, len);
	if (memcmp(before, ring, len))
		fail("the ring's bytes changed");
	/* The kernel sends frame 2 next: the frame sent now is "tx frame 2". */
	if (sendto(s, NULL, 0, 0, (struct sockaddr *)&a, sizeof(a)) < 0)
		pfail("send the TX ring after the restore");
	{
		struct pollfd p = { .fd = r, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 2000) != 1)
			fail("nothing was sent from the TX ring after the restore");
		n = recv(r, buf, sizeof(buf), 0);
		if (n <= 0 || strcmp(buf, "tx frame 2"))
			fail("the TX ring sent \"%.*s\", not frame 2", (int)(n > 0 ? n : 0), buf);
	}
	if (*word(ring, frame_at(2, bs, fs)) != TP_STATUS_AVAILABLE)
		fail("frame 2 is not available after it was sent");
	pass();
}

int main(int argc, char **argv)
{
	int sender;

	test_init(argc, argv);
	lo = if_nametoindex("lo");
	if (!lo)
		pfail("if_nametoindex lo");
	sender = socket(AF_PACKET, SOCK_RAW, 0);
	if (sender < 0)
		pfail("socket sender");
	if (test_flag("--v3"))
		v3(sender);
	if (test_flag("--tx"))
		tx();
	v2(sender);
	return 0;
}
