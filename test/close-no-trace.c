// SPDX-License-Identifier: MIT
/*
 * softdirty_close() leaves the process as it was before open:
 *   - no userfaultfd left in /proc/self/fd;
 *   - no "uw" (uffd-wp) in any VmFlags line of /proc/self/smaps;
 *   - the SIGSEGV, SIGBUS, SIGRTMIN..SIGRTMAX actions identical to before
 *     (default ones, and then the test's own handlers);
 *   - the /proc/self/maps lines of the test's own regions identical
 *     (protections, splits);
 *   - every writable page of those regions still writable;
 *   - open/close 1000 times: the fd count is unchanged.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

#ifndef SA_RESTORER
#define SA_RESTORER 0x04000000
#endif

enum { NA = 16, NR = 4, NS = 4, NM = 6 };

static struct {
	char *anon, *ro, *shr, *mixed, *none;
	int shr_fd;
} R;

/* ---------- signal handlers ---------- */

static sigjmp_buf jb;
static volatile sig_atomic_t armed, hits;

static void test_handler(int sig, siginfo_t *si, void *uc)
{
	(void)si;
	(void)uc;
	hits++;
	if (armed)
		siglongjmp(jb, sig);
	/* not expected: die with the signal's default action */
	signal(sig, SIG_DFL);
	raise(sig);
}

#define NSIG_CHECK 64
static int sigs[NSIG_CHECK], nsigs;

static void sig_list(void)
{
	int s;

	nsigs = 0;
	sigs[nsigs++] = SIGSEGV;
	sigs[nsigs++] = SIGBUS;
	for (s = SIGRTMIN; s <= SIGRTMAX && nsigs < NSIG_CHECK; s++)
		sigs[nsigs++] = s;
}

static void sig_snapshot(struct sigaction *sa)
{
	int i;

	for (i = 0; i < nsigs; i++) {
		memset(&sa[i], 0, sizeof(sa[i]));
		sigaction(sigs[i], NULL, &sa[i]);
	}
}

static int sig_compare(const struct sigaction *a, const struct sigaction *b)
{
	int i, bad = 0;

	for (i = 0; i < nsigs; i++) {
		bool same = a[i].sa_handler == b[i].sa_handler &&
			    ((a[i].sa_flags ^ b[i].sa_flags) & ~SA_RESTORER) == 0;
		int s;

		/* the kernel's mask is 64 signals; the rest of sigset_t is
		 * not defined */
		for (s = 1; s < 65; s++)
			if (sigismember(&a[i].sa_mask, s) !=
			    sigismember(&b[i].sa_mask, s))
				same = false;

		if (!same) {
			bad++;
			tap_diag("signal %d: handler %p flags %#x -> handler %p "
				 "flags %#x", sigs[i], (void *)a[i].sa_sigaction,
				 a[i].sa_flags, (void *)b[i].sa_sigaction,
				 b[i].sa_flags);
		}
	}
	return bad;
}

/* ---------- regions and /proc ---------- */

/*
 * A mapping of @n pages between two guard pages that never merge with
 * anything (each its own shared anonymous object), so that no mapping of
 * the library or libc can merge with the test's regions and change their
 * maps lines.
 */
static void *guarded(size_t n, int prot, int flags, int fd)
{
	char *g = mmap(NULL, (n + 2) * PG, PROT_READ,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0), *p;

	if (g == MAP_FAILED)
		tap_bail("mmap: %s", strerror(errno));
	p = mmap(g + PG, n * PG, prot, flags | MAP_FIXED, fd, 0);
	if (p == MAP_FAILED)
		tap_bail("mmap: %s", strerror(errno));
	return p;
}

static void regions_create(void)
{
	char path[64];

	R.anon = guarded(NA, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1);
	memset(R.anon, 3, NA * PG);
	R.ro = guarded(NR, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1);
	memset(R.ro, 4, NR * PG);
	mprotect(R.ro, NR * PG, PROT_READ);
	snprintf(path, sizeof(path), "/tmp/softdirty-cnt-%d", (int)getpid());
	R.shr_fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (R.shr_fd < 0 || ftruncate(R.shr_fd, NS * PG))
		tap_bail("%s: %s", path, strerror(errno));
	unlink(path);
	R.shr = guarded(NS, PROT_READ | PROT_WRITE, MAP_SHARED, R.shr_fd);
	memset(R.shr, 5, NS * PG);
	/* rw | ro | rw | none | rw rw : split VMAs */
	R.mixed = guarded(NM, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1);
	memset(R.mixed, 6, NM * PG);
	mprotect(R.mixed + PG, PG, PROT_READ);
	mprotect(R.mixed + 3 * PG, PG, PROT_NONE);
	R.none = guarded(2, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
}

static bool in_regions(uint64_t s, uint64_t e)
{
	struct { char *p; size_t n; } rs[] = {
		{ R.anon, NA }, { R.ro, NR }, { R.shr, NS }, { R.mixed, NM },
		{ R.none, 2 },
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(rs); i++) {
		uint64_t a = (uintptr_t)rs[i].p, b = a + rs[i].n * PG;

		if (s < b && e > a)
			return true;
	}
	return false;
}

/* the maps lines of the test's regions, concatenated */
static char *maps_lines(void)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	size_t cap = 8192, len = 0;
	char *out = calloc(cap, 1);

	if (!f || !out)
		tap_bail("/proc/self/maps: %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		unsigned long long s, e;

		if (sscanf(line, "%llx-%llx", &s, &e) != 2 || !in_regions(s, e))
			continue;
		if (len + strlen(line) + 1 > cap) {
			cap *= 2;
			out = realloc(out, cap);
			if (!out)
				tap_bail("out of memory");
		}
		memcpy(out + len, line, strlen(line) + 1);
		len += strlen(line);
	}
	fclose(f);
	return out;
}

static int count_uffd_fds(void)
{
	char path[64], target[128];
	int fd, n = 0;

	for (fd = 0; fd < 4096; fd++) {
		ssize_t r;

		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		r = readlink(path, target, sizeof(target) - 1);
		if (r < 0)
			continue;
		target[r] = 0;
		if (strstr(target, "userfaultfd"))
			n++;
	}
	return n;
}

static int count_uw(void)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	char line[1024];
	int n = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmFlags:", 8) && strstr(line, " uw"))
			n++;
	fclose(f);
	return n;
}

/* write every page that the test mapped writable; count faults */
static int write_everywhere(void)
{
	struct { char *p; size_t n; } rs[] = {
		{ R.anon, NA }, { R.shr, NS }, { R.mixed, 1 },
		{ R.mixed + 2 * PG, 1 }, { R.mixed + 4 * PG, 2 },
	};
	struct sigaction sa, old;
	/* volatile: live across the handler's siglongjmp */
	volatile size_t i, j;
	volatile int faults = 0;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = test_handler;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old);
	for (i = 0; i < ARRAY_SIZE(rs); i++)
		for (j = 0; j < rs[i].n; j++) {
			volatile char *c = rs[i].p + j * PG + 17;

			armed = 1;
			if (sigsetjmp(jb, 1)) {
				armed = 0;
				faults++;
				if (faults < 5)
					tap_diag("write to %p faulted after "
						 "close", (void *)c);
				continue;
			}
			*c = (char)(*c + 1);
			armed = 0;
		}
	sigaction(SIGSEGV, &old, NULL);
	return faults;
}

static void exercise(struct softdirty *sd)
{
	uint8_t pf[NA];

	R.anon[PG] ^= 1;
	if (td_collect_region(sd, R.anon, NA, 0, pf) < 0 ||
	    softdirty_reset(sd) < 0)
		tap_diag("collect/reset failed");
	R.anon[2 * PG] ^= 1;
	R.shr[PG] ^= 1;
	R.mixed[4 * PG] ^= 1;
	if (td_collect_region(sd, R.anon, NA, SOFTDIRTY_COLLECT_RESET, pf) < 0)
		tap_diag("collect failed");
	R.anon[3 * PG] ^= 1;	/* leave a written page and armed ones */
	R.mixed[0] ^= 1;
}

static void one_round(const struct td_backend *be, const char *what)
{
	struct sigaction before[NSIG_CHECK], after[NSIG_CHECK];
	char *maps_before, *maps_after;
	struct softdirty *sd;
	int uffd_before = count_uffd_fds(), uffd_open, uw_before = count_uw();
	int fds_before = td_count_fds(), uw_open;

	sig_snapshot(before);
	maps_before = maps_lines();
	sd = td_open(be->name);
	exercise(sd);
	uffd_open = count_uffd_fds();
	uw_open = count_uw();
	tap_diag("%s: %s: while open: %d userfaultfd, %d VMAs with uw", be->name,
		 what, uffd_open, uw_open);
	softdirty_close(sd);
	sig_snapshot(after);
	maps_after = maps_lines();
	tap_ok(count_uffd_fds() == uffd_before,
	       "%s: %s: no userfaultfd left after close (%d before, %d open, "
	       "%d after)", be->name, what, uffd_before, uffd_open,
	       count_uffd_fds());
	tap_ok(count_uw() == uw_before, "%s: %s: no uw VmFlags left after "
	       "close", be->name, what);
	tap_ok(!sig_compare(before, after), "%s: %s: SIGSEGV/SIGBUS/SIGRT* "
	       "actions restored", be->name, what);
	if (!tap_ok(!strcmp(maps_before, maps_after), "%s: %s: maps of the "
		    "test's regions identical", be->name, what))
		tap_diag("before:\n%s# after:\n%s", maps_before, maps_after);
	tap_ok(!write_everywhere(), "%s: %s: every writable page still "
	       "writable", be->name, what);
	tap_ok(td_count_fds() == fds_before, "%s: %s: fd count unchanged "
	       "(%d -> %d)", be->name, what, fds_before, td_count_fds());
	free(maps_before);
	free(maps_after);
}

static void run(const struct td_backend *be, void *ctx)
{
	struct sigaction sa, old[NSIG_CHECK];
	int i, n = td_quick() ? 200 : 1000, fds, bad = 0;
	char *maps_before, *maps_after;

	(void)ctx;
	/* 1: default actions (and SIGSEGV catching for write_everywhere
	 * installed only after close would change nothing: use round 2) */
	sig_snapshot(old);
	one_round(be, "default signal actions");

	/* 2: the test's own handlers installed before open */
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = test_handler;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGUSR1);
	sigaction(SIGSEGV, &sa, NULL);
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGRTMIN + 1, &sa, NULL);
	one_round(be, "own handlers installed");
	/* the SIGSEGV handler still ours: a real fault reaches it */
	armed = 1;
	hits = 0;
	if (!sigsetjmp(jb, 1))
		*(volatile char *)R.none = 1;
	armed = 0;
	tap_ok(hits == 1, "%s: after close a fault on PROT_NONE reaches the "
	       "program's own SIGSEGV handler", be->name);
	for (i = 0; i < nsigs; i++)
		sigaction(sigs[i], &old[i], NULL);

	/* 3: open/close in a loop */
	fds = td_count_fds();
	maps_before = maps_lines();
	for (i = 0; i < n; i++) {
		struct softdirty *sd = td_open(be->name);

		if (i % 16 == 0) {
			R.anon[(i % NA) * PG] ^= 1;
			if (softdirty_reset(sd) < 0)
				bad++;
			R.anon[((i + 1) % NA) * PG] ^= 1;
		}
		softdirty_close(sd);
	}
	maps_after = maps_lines();
	tap_ok(td_count_fds() == fds && !bad, "%s: open/close %d times: fd "
	       "count unchanged (%d -> %d)", be->name, n, fds, td_count_fds());
	tap_ok(!strcmp(maps_before, maps_after), "%s: open/close %d times: "
	       "maps of the test's regions unchanged", be->name, n);
	free(maps_before);
	free(maps_after);
}

int main(int argc, char **argv)
{
	(void)argc;
	tap_init(argv[0]);
	sig_list();
	regions_create();
	td_for_each_backend("close leaves no trace", run, NULL);
	return tap_done();
}
