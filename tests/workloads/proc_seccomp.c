/*
 * proc_seccomp: seccomp filters and strict mode.
 *
 * The main thread sets NO_NEW_PRIVS and installs filter A (uname ->
 * EEXIST, with SECCOMP_FILTER_FLAG_LOG), starts threads T1 and T2, then
 * installs filter C (sysinfo -> EDOM) with SECCOMP_FILTER_FLAG_TSYNC, so
 * that all three threads share the chain A, C. T2 then adds filter B
 * (getcwd -> ENOTTY) for itself only. A forked child S enters strict mode
 * and waits in read() on a pipe.
 * After the restore: in each thread uname and sysinfo fail with the
 * filters' errnos, getcwd only in T2, getpid works, and
 * /proc/self/task/TID/status shows Seccomp 2 with 2 or 3 filters; S reads
 * the go byte, writes an answer (allowed in strict mode), then calls
 * getpid and is killed by SIGKILL, as strict mode wants; its status said
 * Seccomp 1 before.
 */
#include "zdtm.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <sys/wait.h>

static int install(int nr, int err, unsigned flags)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | err),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog p = { sizeof(f) / sizeof(f[0]), f };

	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &p);
}

static atomic_int phase, ready;
static char errs[3][256];

static void check(int idx, char *err, size_t len)
{
	struct utsname u;
	struct sysinfo si;
	char cwd[256], key[64], line[64];
	int want_filters = idx == 2 ? 3 : 2;

	err[0] = 0;
	if (uname(&u) != -1 || errno != EEXIST) {
		snprintf(err, len, "thread %d: uname not refused with EEXIST (errno %d)", idx, errno);
		return;
	}
	if (sysinfo(&si) != -1 || errno != EDOM) {
		snprintf(err, len, "thread %d: sysinfo not refused with EDOM (errno %d)", idx, errno);
		return;
	}
	char *c = getcwd(cwd, sizeof(cwd));
	if (idx == 2 ? (c || errno != ENOTTY) : !c) {
		snprintf(err, len, "thread %d: getcwd %s (errno %d)", idx, c ? "worked" : "failed",
			 errno);
		return;
	}
	if (syscall(SYS_getpid) != getpid()) {
		snprintf(err, len, "thread %d: getpid", idx);
		return;
	}
	snprintf(key, sizeof(key), "/proc/self/task/%ld/status", (long)syscall(SYS_gettid));
	char buf[4096];
	int fd = open(key, O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		close(fd);
	if (n <= 0) {
		snprintf(err, len, "thread %d: read %s", idx, key);
		return;
	}
	buf[n] = 0;
	snprintf(line, sizeof(line), "\nSeccomp:\t2\nSeccomp_filters:\t%d\n", want_filters);
	if (!strstr(buf, line))
		snprintf(err, len, "thread %d: status lacks 'Seccomp 2, %d filters'", idx,
			 want_filters);
}

static void *thread_main(void *arg)
{
	int idx = (int)(long)arg;

	atomic_fetch_add(&ready, 1);
	while (atomic_load(&phase) == 0)
		usleep(1000);
	if (idx == 2 && install(SYS_getcwd, ENOTTY, 0))
		pfail("filter B");
	atomic_fetch_add(&ready, 1);
	while (atomic_load(&phase) == 1)
		usleep(1000);
	check(idx, errs[idx], sizeof(errs[idx]));
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t th[3];
	int go[2], back[2];
	char b;

	test_init(argc, argv);
	if (pipe(go) || pipe(back))
		pfail("pipe");
	pid_t s = fork();
	if (s < 0)
		pfail("fork");
	if (s == 0) {
		close(go[1]);
		close(back[0]);
		if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT))
			_exit(3);
		if (read(go[0], &b, 1) != 1)
			syscall(SYS_exit, 4);
		if (write(back[1], "s", 1) != 1)
			syscall(SYS_exit, 5);
		syscall(SYS_getpid); /* killed here */
		syscall(SYS_exit, 6);
	}
	close(go[0]);
	close(back[1]);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		pfail("NO_NEW_PRIVS");
	if (install(SYS_uname, EEXIST, SECCOMP_FILTER_FLAG_LOG))
		pfail("filter A");
	sigset_t old;

	test_term_block(&old);
	for (long i = 1; i < 3; i++)
		if (pthread_create(&th[i], NULL, thread_main, (void *)i))
			fail("pthread_create");
	test_term_unblock(&old);
	while (atomic_load(&ready) < 2)
		usleep(1000);
	if (install(SYS_sysinfo, EDOM, SECCOMP_FILTER_FLAG_TSYNC))
		pfail("filter C with TSYNC");
	atomic_store(&phase, 1);
	while (atomic_load(&ready) < 4)
		usleep(1000);
	/* The child is in strict mode before we report ready. */
	char path[64], st[4096];
	snprintf(path, sizeof(path), "/proc/%d/status", s);
	for (int i = 0;; i++) {
		read_file(path, st, sizeof(st));
		if (strstr(st, "\nSeccomp:\t1\n"))
			break;
		if (i > 5000)
			fail("child not in strict mode");
		usleep(1000);
	}
	check(0, errs[0], sizeof(errs[0]));
	if (errs[0][0])
		fail("before the dump: %s", errs[0]);

	test_daemon();
	test_waitsig();

	atomic_store(&phase, 2);
	if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
		fail("NO_NEW_PRIVS lost");
	check(0, errs[0], sizeof(errs[0]));
	for (int i = 1; i < 3; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < 3; i++)
		if (errs[i][0])
			fail("%s", errs[i]);
	read_file(path, st, sizeof(st));
	if (!strstr(st, "\nSeccomp:\t1\n"))
		fail("child S: not in strict mode after the restore");
	if (write(go[1], "g", 1) != 1)
		pfail("write go");
	if (read(back[0], &b, 1) != 1 || b != 's')
		fail("child S did not answer");
	int ws;
	if (waitpid(s, &ws, 0) != s)
		pfail("waitpid S");
	if (!WIFSIGNALED(ws) || WTERMSIG(ws) != SIGKILL)
		fail("child S: status %#x, expected killed by SIGKILL (strict mode)", ws);
	pass();
}
