/*
 * proc_creds: credentials (the workload starts as root). Before the dump:
 * setgroups({1001, 1002}), setresgid(1000, 1001, 1002), PR_SET_KEEPCAPS,
 * setresuid(1000, 1001, 1002), then capset keeping only
 * CAP_NET_BIND_SERVICE in permitted and effective (inheritable empty).
 * Readiness is reported after that, as uid 1000/1001 (the harness makes the
 * work directory writable). After restore: getresuid, getresgid, getgroups,
 * capget, PR_GET_KEEPCAPS, PR_GET_SECUREBITS, PR_GET_NO_NEW_PRIVS, the
 * bounding set, and the Uid/Gid/Groups/Cap* lines of /proc/self/status are
 * unchanged. The parent-death signal and dumpable flag, which the uid
 * change cleared, are set again before the dump (SIGUSR1, 1) and must
 * survive the restore's own credential change; oom_score_adj raised to
 * 500 by the unprivileged process comes back, and can still be lowered to
 * 100 (a privileged write would have raised oom_score_adj_min to 500).
 */
#include "zdtm.h"

#include <grp.h>
#include <linux/capability.h>
#include <sys/prctl.h>

struct creds {
	uid_t r, e, s;
	gid_t rg, eg, sg;
	int ngroups;
	gid_t groups[64];
	struct __user_cap_data_struct cap[2];
	int keepcaps, securebits, nnp;
	uint64_t bset;
	char lines[8][256];
};

static const char *status_keys[8] = { "Uid:", "Gid:", "Groups:", "CapInh:", "CapPrm:",
				      "CapEff:", "CapBnd:", "CapAmb:" };

static void take(struct creds *c)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };

	memset(c, 0, sizeof(*c));
	if (getresuid(&c->r, &c->e, &c->s) || getresgid(&c->rg, &c->eg, &c->sg))
		pfail("getresuid/getresgid");
	c->ngroups = getgroups(64, c->groups);
	if (c->ngroups < 0)
		pfail("getgroups");
	if (syscall(SYS_capget, &h, c->cap))
		pfail("capget");
	c->keepcaps = prctl(PR_GET_KEEPCAPS);
	c->securebits = prctl(PR_GET_SECUREBITS);
	c->nnp = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
	for (int cap = 0; cap < 64; cap++) {
		int r = prctl(PR_CAPBSET_READ, cap);
		if (r > 0)
			c->bset |= 1ull << cap;
	}
	for (int i = 0; i < 8; i++)
		proc_status_line(status_keys[i], c->lines[i], sizeof(c->lines[i]));
}

static struct creds before, after;

int main(int argc, char **argv)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];
	gid_t groups[2] = { 1001, 1002 };

	test_init(argc, argv);
	if (geteuid() != 0)
		fail("proc_creds must start as root");
	if (setgroups(2, groups))
		pfail("setgroups");
	if (setresgid(1000, 1001, 1002))
		pfail("setresgid");
	if (prctl(PR_SET_KEEPCAPS, 1))
		pfail("PR_SET_KEEPCAPS");
	if (setresuid(1000, 1001, 1002))
		pfail("setresuid");
	memset(d, 0, sizeof(d));
	d[0].permitted = d[0].effective = 1u << CAP_NET_BIND_SERVICE;
	if (syscall(SYS_capset, &h, d))
		pfail("capset");

	if (prctl(PR_SET_PDEATHSIG, SIGUSR1, 0, 0, 0) || prctl(PR_SET_DUMPABLE, 1, 0, 0, 0))
		pfail("PR_SET_PDEATHSIG / PR_SET_DUMPABLE");
	int ofd = open("/proc/self/oom_score_adj", O_WRONLY);
	if (ofd < 0 || write(ofd, "500", 3) != 3)
		pfail("raise oom_score_adj");
	close(ofd);
	take(&before);
	if (before.e != 1001 || before.eg != 1001 || before.ngroups != 2 ||
	    before.cap[0].effective != 1u << CAP_NET_BIND_SERVICE || before.cap[1].permitted)
		fail("credentials not set as expected before the dump");

	test_daemon();
	test_waitsig();

	take(&after);
	int pdeath = 0;
	if (prctl(PR_GET_PDEATHSIG, &pdeath, 0, 0, 0) || pdeath != SIGUSR1)
		fail("parent-death signal %d, expected SIGUSR1", pdeath);
	if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 1)
		fail("not dumpable after the restore");
	char adj[32];
	read_file("/proc/self/oom_score_adj", adj, sizeof(adj));
	if (atoi(adj) != 500)
		fail("oom_score_adj %s, expected 500", adj);
	ofd = open("/proc/self/oom_score_adj", O_WRONLY);
	if (ofd < 0 || write(ofd, "100", 3) != 3)
		fail("oom_score_adj cannot be lowered to 100 (%s): oom_score_adj_min changed",
		     strerror(errno));
	close(ofd);
	if (before.r != after.r || before.e != after.e || before.s != after.s)
		fail("resuid %u/%u/%u, expected %u/%u/%u", after.r, after.e, after.s, before.r,
		     before.e, before.s);
	if (before.rg != after.rg || before.eg != after.eg || before.sg != after.sg)
		fail("resgid %u/%u/%u, expected %u/%u/%u", after.rg, after.eg, after.sg, before.rg,
		     before.eg, before.sg);
	if (before.ngroups != after.ngroups ||
	    memcmp(before.groups, after.groups, sizeof(gid_t) * before.ngroups))
		fail("supplementary groups changed ('%s' -> '%s')", before.lines[2], after.lines[2]);
	for (int i = 0; i < 2; i++)
		if (before.cap[i].effective != after.cap[i].effective ||
		    before.cap[i].permitted != after.cap[i].permitted ||
		    before.cap[i].inheritable != after.cap[i].inheritable)
			fail("capabilities word %d: eff %#x prm %#x inh %#x, expected %#x %#x %#x", i,
			     after.cap[i].effective, after.cap[i].permitted, after.cap[i].inheritable,
			     before.cap[i].effective, before.cap[i].permitted,
			     before.cap[i].inheritable);
	if (before.keepcaps != after.keepcaps)
		fail("PR_GET_KEEPCAPS %d, expected %d", after.keepcaps, before.keepcaps);
	if (before.securebits != after.securebits)
		fail("securebits %#x, expected %#x", after.securebits, before.securebits);
	if (before.nnp != after.nnp)
		fail("no_new_privs %d, expected %d", after.nnp, before.nnp);
	if (before.bset != after.bset)
		fail("bounding set %#llx, expected %#llx", (unsigned long long)after.bset,
		     (unsigned long long)before.bset);
	for (int i = 0; i < 8; i++)
		if (strcmp(before.lines[i], after.lines[i]))
			fail("/proc/self/status '%s' -> '%s'", before.lines[i], after.lines[i]);
	pass();
}
