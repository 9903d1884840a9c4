/*
 * bench_inv: a flat tree of PROCS processes (the root and PROCS-1
 * children), each with at least 50 fds and 50 VMAs, for
 * `cargo xtask bench inventory`.
 *
 *   bench_inv PROCS DIR --pidfile PATH [FDS PAGES]
 *
 * The root opens FDS (default 47) fds on 8 regular files it creates in DIR
 * (plus stdin, stdout and stderr: 50) and maps PAGES (default 50) pages
 * whose protections alternate (read-write, read-only), so they are PAGES
 * VMAs besides the usual ones
 * (text, data, heap, stack, libraries, vdso). The children inherit both.
 * The pidfile (written as PATH.tmp, then renamed) appears once every
 * child is forked. Then everything sleeps until killed.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define FILES 8

int main(int argc, char **argv)
{
	char path[4096], tmp[4096], buf[32];
	long page = sysconf(_SC_PAGESIZE);
	int procs, fd, len, nfds = 47, npages = 50;
	pid_t *kids;
	char *map;

	if ((argc != 5 && argc != 7) || strcmp(argv[3], "--pidfile") != 0) {
		fprintf(stderr, "usage: %s PROCS DIR --pidfile PATH [FDS PAGES]\n", argv[0]);
		return 2;
	}
	if (argc == 7) {
		nfds = atoi(argv[5]);
		npages = atoi(argv[6]);
		if (nfds < 0 || npages < 1) {
			fprintf(stderr, "FDS must be >= 0, PAGES >= 1\n");
			return 2;
		}
	}
	procs = atoi(argv[1]);
	kids = calloc(procs > 0 ? procs : 1, sizeof(*kids));
	if (!kids) {
		perror("calloc");
		return 1;
	}
	for (int i = 0; i < nfds; i++) {
		snprintf(path, sizeof(path), "%s/file-%d", argv[2], i % FILES);
		if (open(path, O_RDWR | O_CREAT, 0600) < 0) {
			perror(path);
			return 1;
		}
	}
	map = mmap(NULL, npages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	for (int i = 0; i < npages; i++) {
		map[i * page] = 1;
		if (i % 2 && mprotect(map + i * page, page, PROT_READ)) {
			perror("mprotect");
			return 1;
		}
	}
	for (int i = 1; i < procs; i++) {
		pid_t p = fork();

		if (p < 0) {
			perror("fork");
			for (int k = 1; k < i; k++)
				kill(kids[k], SIGKILL);
			return 1;
		}
		if (p == 0) {
			for (;;)
				pause();
		}
		kids[i] = p;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", argv[4]);
	len = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, buf, len) != len || close(fd) || rename(tmp, argv[4])) {
		perror(tmp);
		return 1;
	}
	for (;;)
		pause();
}
