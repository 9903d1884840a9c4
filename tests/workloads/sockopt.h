/* sockopt.h - integer socket options for the socket workloads; fail on error. */
#ifndef SOCKOPT_H
#define SOCKOPT_H

#include "zdtm.h"
#include <sys/socket.h>

static inline int getint(int fd, int level, int opt)
{
	int v = 0;
	socklen_t l = sizeof(v);

	if (getsockopt(fd, level, opt, &v, &l))
		pfail("getsockopt %d/%d", level, opt);
	return v;
}

static inline void setint(int fd, int level, int opt, int v)
{
	if (setsockopt(fd, level, opt, &v, sizeof(v)))
		pfail("setsockopt %d/%d=%d", level, opt, v);
}

#endif /* SOCKOPT_H */
