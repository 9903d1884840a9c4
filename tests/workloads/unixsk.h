/* unixsk.h - sending and checking messages in the unix socket workloads;
 * fail on error. */
#ifndef UNIXSK_H
#define UNIXSK_H

#include "zdtm.h"
#include <sys/socket.h>

/* Send a string as one message (or stream write). */
static inline void put(int fd, const char *s)
{
	if (send(fd, s, strlen(s), MSG_NOSIGNAL) != (ssize_t)strlen(s))
		pfail("send %s", s);
}

/* Receive one message/record (or what a stream has) and compare. */
static inline void expect(int fd, const char *want, const char *what)
{
	char buf[256];
	ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);

	if (n < 0)
		pfail("%s: recv", what);
	buf[n] = 0;
	if (strcmp(buf, want))
		fail("%s: got \"%s\" (%zd bytes), want \"%s\"", what, buf, n, want);
}

/* Nothing more is queued. */
static inline void expect_empty(int fd, const char *what)
{
	char c;
	ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);

	if (n >= 0 || errno != EAGAIN)
		fail("%s: queue not empty after the expected data (recv %zd, errno %d)", what, n, errno);
}

#endif /* UNIXSK_H */
