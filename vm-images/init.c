/*
 * PID 1 of the test VMs of `cargo xtask vm-test` (see vm-images/README.md).
 *
 * Built static by the xtask (gcc -static) and put into each kernel's
 * initramfs with the kernel's own modules for virtio, 9p and overlayfs.
 * It:
 *   1. mounts /dev, /proc, /sys of the initramfs and loads /modules/list
 *      (in that order, repeating the list until nothing more loads, so an
 *      order mistake only costs a pass);
 *   2. mounts the host's root (9p tag "host", read-only) at /host and a
 *      tmpfs at /rw, and makes /newroot an overlay of the two: the guest sees
 *      the host's files (binaries, test executables, workloads) at the same
 *      paths and can write anywhere, into memory;
 *   3. moves into /newroot and mounts proc, sys, dev, devpts, /dev/shm,
 *      /run, cgroup2 and bpffs there, brings up lo;
 *   4. mounts the 9p tag "out" (read-write, the host's results directory)
 *      at /out;
 *   5. runs `/bin/sh SCRIPT` where SCRIPT is the kernel argument
 *      cairn.script=PATH (a host path), waits for it, prints
 *      "cairn-vm: script exit N" and powers the machine off.
 * Any failure before the script runs is printed as "cairn-vm: FATAL ..."
 * and powers off too: the xtask then reports the VM as failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "cairn-vm: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
}

static void off(void)
{
	sync();
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
}

static void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "cairn-vm: FATAL ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, " (%s)\n", strerror(errno));
	va_end(ap);
	off();
}

static void mnt(const char *src, const char *dst, const char *type,
		unsigned long flags, const char *data)
{
	mkdir(dst, 0755);
	if (mount(src, dst, type, flags, data))
		fatal("mount %s on %s (%s, %s)", src, dst, type, data ? data : "");
}

/* Like mnt, but a missing file system type is only reported. */
static void mnt_opt(const char *src, const char *dst, const char *type,
		    unsigned long flags, const char *data)
{
	mkdir(dst, 0755);
	if (mount(src, dst, type, flags, data))
		say("mount %s on %s (%s): %s, going on", src, dst, type,
		    strerror(errno));
}

/* Loads the modules named in /modules/list, one file name a line. */
static void load_modules(void)
{
	char names[64][128];
	int n = 0, loaded[64] = { 0 };
	FILE *f = fopen("/modules/list", "r");
	if (!f)
		return;
	while (n < 64 && fgets(names[n], sizeof names[n], f)) {
		names[n][strcspn(names[n], "\n")] = 0;
		if (names[n][0])
			n++;
	}
	fclose(f);
	for (int progress = 1; progress;) {
		progress = 0;
		for (int i = 0; i < n; i++) {
			char path[512];
			if (loaded[i])
				continue;
			snprintf(path, sizeof path, "/modules/%.200s", names[i]);
			int fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				fatal("open %s", path);
			if (syscall(SYS_finit_module, fd, "", 0) == 0 ||
			    errno == EEXIST) {
				loaded[i] = 1;
				progress = 1;
			}
			close(fd);
		}
	}
	for (int i = 0; i < n; i++)
		if (!loaded[i])
			say("module %s did not load", names[i]);
}

/* The value of NAME=... on the kernel command line, or NULL. */
static char *cmdline_arg(const char *name)
{
	static char buf[4096];
	int fd = open("/proc/cmdline", O_RDONLY);
	if (fd < 0)
		return NULL;
	ssize_t len = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (len <= 0)
		return NULL;
	buf[len] = 0;
	size_t nl = strlen(name);
	for (char *tok = strtok(buf, " \n"); tok; tok = strtok(NULL, " \n"))
		if (!strncmp(tok, name, nl) && tok[nl] == '=')
			return strdup(tok + nl + 1);
	return NULL;
}

static void lo_up(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct ifreq ifr = { 0 };
	if (s < 0)
		return;
	strcpy(ifr.ifr_name, "lo");
	if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
		if (ioctl(s, SIOCSIFFLAGS, &ifr))
			say("lo up: %s", strerror(errno));
	}
	close(s);
}

int main(void)
{
	mnt("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	mnt("proc", "/proc", "proc", 0, NULL);
	mnt("sysfs", "/sys", "sysfs", 0, NULL);
	load_modules();

	char *script = cmdline_arg("cairn.script");
	if (!script) {
		errno = EINVAL;
		fatal("no cairn.script= on the kernel command line");
	}

	mnt("host", "/host", "9p", MS_RDONLY,
	    "trans=virtio,version=9p2000.L,msize=512000,cache=loose");
	mnt("rw", "/rw", "tmpfs", 0, "mode=0755,size=80%");
	mkdir("/rw/upper", 0755);
	mkdir("/rw/work", 0755);
	mnt("overlay", "/newroot", "overlay", 0,
	    "lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work");
	mnt("out", "/newroot/out", "9p", 0,
	    "trans=virtio,version=9p2000.L,msize=512000");

	if (umount2("/proc", MNT_DETACH) || umount2("/sys", MNT_DETACH))
		fatal("unmount the initramfs /proc and /sys");
	if (chdir("/newroot") || mount(".", "/", NULL, MS_MOVE, NULL) ||
	    chroot(".") || chdir("/"))
		fatal("move into the new root");

	mnt("proc", "/proc", "proc", 0, NULL);
	mnt("sysfs", "/sys", "sysfs", 0, NULL);
	mnt("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	mnt("devpts", "/dev/pts", "devpts", 0, "newinstance,ptmxmode=0666");
	unlink("/dev/ptmx");
	if (symlink("pts/ptmx", "/dev/ptmx"))
		say("/dev/ptmx: %s", strerror(errno));
	mnt("shm", "/dev/shm", "tmpfs", 0, "mode=1777");
	/*
	 * No tmpfs on /tmp: the overlay already keeps the guest's writes in
	 * memory, and a checkout under the host's /tmp (a CI clone) must stay
	 * visible at the same path.
	 */
	mnt("run", "/run", "tmpfs", 0, "mode=0755");
	mnt_opt("cgroup2", "/sys/fs/cgroup", "cgroup2", 0, NULL);
	mnt_opt("bpf", "/sys/fs/bpf", "bpf", 0, NULL);
	mnt_opt("tracefs", "/sys/kernel/tracing", "tracefs", 0, NULL);
	lo_up();
	sethostname("cairn-vm", 8);

	setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1);
	setenv("HOME", "/root", 1);
	setenv("TERM", "dumb", 1);

	say("running %s", script);
	pid_t pid = fork();
	if (pid < 0)
		fatal("fork");
	if (pid == 0) {
		setsid();
		execl("/bin/sh", "sh", script, (char *)NULL);
		fatal("exec /bin/sh %s", script);
	}
	int code = 255;
	for (;;) {
		int st;
		pid_t w = wait(&st);
		if (w < 0 && errno == ECHILD)
			break;
		if (w == pid)
			code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		/* PID 1 also reaps every orphan; the script's exit ends the run. */
		if (w == pid)
			break;
	}
	say("script exit %d", code);
	off();
	return 0;
}
