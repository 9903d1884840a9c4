/*
 * stream.h - a verified byte stream in both directions over one TCP
 * connection, for the TCP workloads and their peer. Each direction
 * carries zdtm_pattern(seed, offset), so the receiver checks every byte
 * (nothing lost, duplicated or reordered). Non-blocking; rate-limited by
 * the caller's budget per step.
 */
#ifndef STREAM_H
#define STREAM_H

#include "zdtm.h"
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

struct stream {
	int fd;
	uint32_t txseed, rxseed;
	uint64_t sent, rcvd;
	int eof;      /* the peer shut its side down */
	int tx_shut;  /* we shut ours down */
	double last_rx;  /* time of the last byte received */
	double last_tx;  /* time of the last send */
	double max_gap;  /* longest time without incoming bytes */
};

static inline double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline void stream_init(struct stream *s, int fd, uint32_t txseed, uint32_t rxseed)
{
	memset(s, 0, sizeof(*s));
	s->fd = fd;
	s->txseed = txseed;
	s->rxseed = rxseed;
	s->last_rx = now_s();
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK))
		pfail("O_NONBLOCK");
}

/*
 * One step: wait up to timeout_ms for the socket, send up to `budget`
 * bytes (if may_send, and at most once per 10 ms), read and check what
 * arrived. Fails (exits) on any error, a reset included.
 */
static inline void stream_step(struct stream *s, size_t budget, int timeout_ms, int may_send)
{
	static uint8_t buf[65536];
	struct pollfd p = { .fd = s->fd, .events = POLLIN };
	double t0 = now_s();
	int want_out = may_send && budget > 0 && !s->tx_shut && t0 - s->last_tx >= 0.01;

	if (may_send && budget > 0 && !want_out && timeout_ms > 10)
		timeout_ms = 10;

	if (want_out)
		p.events |= POLLOUT;
	if (poll(&p, 1, timeout_ms) < 0) {
		if (errno == EINTR)
			return;
		pfail("poll");
	}
	if (p.revents & (POLLERR | POLLNVAL)) {
		int err = 0;
		socklen_t l = sizeof(err);
		getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &l);
		errno = err;
		pfail("socket error after %llu bytes in, %llu out",
		      (unsigned long long)s->rcvd, (unsigned long long)s->sent);
	}
	if (want_out && (p.revents & POLLOUT)) {
		size_t n = budget > sizeof(buf) ? sizeof(buf) : budget;
		ssize_t w;

		fill_pattern(buf, n, s->txseed, s->sent);
		w = send(s->fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && errno != EAGAIN && errno != EINTR)
			pfail("send after %llu bytes out", (unsigned long long)s->sent);
		if (w > 0)
			s->sent += w;
		s->last_tx = t0;
	}
	if (p.revents & (POLLIN | POLLHUP)) {
		for (;;) {
			ssize_t r = recv(s->fd, buf, sizeof(buf), MSG_DONTWAIT);
			long bad;

			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				break;
			if (r < 0)
				pfail("recv after %llu bytes in", (unsigned long long)s->rcvd);
			if (r == 0) {
				s->eof = 1;
				break;
			}
			bad = check_pattern(buf, r, s->rxseed, s->rcvd);
			if (bad >= 0)
				fail("byte %llu of the incoming stream is wrong",
				     (unsigned long long)(s->rcvd + bad));
			double t = now_s();
			if (t - s->last_rx > s->max_gap)
				s->max_gap = t - s->last_rx;
			s->last_rx = t;
			s->rcvd += r;
		}
	}
}

static inline void stream_shut(struct stream *s)
{
	if (shutdown(s->fd, SHUT_WR))
		pfail("shutdown");
	s->tx_shut = 1;
}

/* Blocking exact write / read-and-check, for bulk transfers. */
static inline void bulk_write(int fd, uint32_t seed, uint64_t from, uint64_t to)
{
	static uint8_t buf[16384];

	while (from < to) {
		size_t n = to - from > sizeof(buf) ? sizeof(buf) : to - from;
		ssize_t w;

		fill_pattern(buf, n, seed, from);
		w = send(fd, buf, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) {
			struct pollfd p = { .fd = fd, .events = POLLOUT };
			poll(&p, 1, 1000);
			continue;
		}
		if (w <= 0)
			pfail("bulk write at %llu", (unsigned long long)from);
		from += w;
	}
}

static inline void bulk_read(int fd, uint32_t seed, uint64_t from, uint64_t to)
{
	static uint8_t buf[16384];

	while (from < to) {
		size_t n = to - from > sizeof(buf) ? sizeof(buf) : to - from;
		ssize_t r = recv(fd, buf, n, 0);
		long bad;

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN) {
			struct pollfd p = { .fd = fd, .events = POLLIN };
			poll(&p, 1, 1000);
			continue;
		}
		if (r < 0)
			pfail("bulk read at %llu", (unsigned long long)from);
		if (r == 0)
			fail("bulk read: EOF at %llu of %llu", (unsigned long long)from,
			     (unsigned long long)to);
		bad = check_pattern(buf, r, seed, from);
		if (bad >= 0)
			fail("bulk byte %llu is wrong", (unsigned long long)(from + bad));
		from += r;
	}
}

#endif /* STREAM_H */
