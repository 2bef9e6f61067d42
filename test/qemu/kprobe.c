/* SPDX-License-Identifier: MIT */
/*
 * kprobe: what does the running kernel offer for write tracking?
 *
 * A tiny static TAP program used by test/qemu/run-kernels.sh to check that
 * the qemu harness really runs the kernel it thinks it runs.  It probes, for
 * real (never from version numbers):
 *
 *   sd      clear_refs "4" then a write sets pagemap bit 55
 *   scan    the PAGEMAP_SCAN ioctl exists on /proc/self/pagemap
 *   wpasync userfaultfd offers UFFD_FEATURE_WP_ASYNC (UFFDIO_API reply)
 *
 * Expectations come from, in order: argv[1], $SOFTDIRTY_EXPECT, or the
 * kernel command line parameter softdirty.expect=...  They are a comma list
 * of sd|nosd, scan|noscan, wpasync|nowpasync.  A feature without an
 * expectation is only reported (always "ok", value in the description).
 *
 * Exit status: 0 if every check passed, 1 otherwise.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/types.h>
#include <linux/userfaultfd.h>
#include <linux/fs.h>

/* Debian 12's headers are Linux 6.1's: define the newer uapi ourselves. */
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif

#ifndef PAGEMAP_SCAN
#define PAGE_IS_WPALLOWED	(1 << 0)
#define PAGE_IS_WRITTEN		(1 << 1)
#define PAGE_IS_FILE		(1 << 2)
#define PAGE_IS_PRESENT		(1 << 3)
#define PAGE_IS_SWAPPED		(1 << 4)
#define PAGE_IS_PFNZERO		(1 << 5)
#define PAGE_IS_HUGE		(1 << 6)
#define PAGE_IS_SOFT_DIRTY	(1 << 7)
struct page_region {
	__u64 start;
	__u64 end;
	__u64 categories;
};
struct pm_scan_arg {
	__u64 size;
	__u64 flags;
	__u64 start;
	__u64 end;
	__u64 walk_end;
	__u64 vec;
	__u64 vec_len;
	__u64 max_pages;
	__u64 category_inverted;
	__u64 category_mask;
	__u64 category_anyof_mask;
	__u64 return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

#define PM_SOFT_DIRTY (1ULL << 55)
#define PM_PRESENT (1ULL << 63)

enum { EXP_UNSET = -1, EXP_NO = 0, EXP_YES = 1 };

static int ntest;
static int nfail;
static long pagesz;

static void tap(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tap(int ok, const char *fmt, ...)
{
	va_list ap;

	printf("%sok %d - ", ok ? "" : "not ", ++ntest);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	if (!ok)
		nfail++;
}

static int pagemap_entry(int fd, void *addr, uint64_t *ent)
{
	off_t off = (off_t)((uintptr_t)addr / pagesz) * sizeof(*ent);

	if (pread(fd, ent, sizeof(*ent), off) != sizeof(*ent))
		return -1;
	return 0;
}

static int clear_refs(void)
{
	int fd = open("/proc/self/clear_refs", O_WRONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, "4", 1);
	close(fd);
	return n == 1 ? 0 : -1;
}

/* 1: soft-dirty works, 0: does not, sets *why. */
static int probe_softdirty(int pm, char *p, const char **why)
{
	uint64_t before, after;

	p[0] = 1;
	if (clear_refs()) {
		*why = "clear_refs write failed";
		return 0;
	}
	if (pagemap_entry(pm, p, &before)) {
		*why = "pagemap read failed";
		return 0;
	}
	p[0] = 2;
	if (pagemap_entry(pm, p, &after)) {
		*why = "pagemap read failed";
		return 0;
	}
	if (!(after & PM_PRESENT)) {
		*why = "page not present after write";
		return 0;
	}
	if (before & PM_SOFT_DIRTY) {
		*why = "bit 55 still set after clear_refs";
		return 0;
	}
	if (!(after & PM_SOFT_DIRTY)) {
		*why = "bit 55 not set by a write after clear_refs";
		return 0;
	}
	*why = "bit 55 clear after reset, set after write";
	return 1;
}

/* 1: PAGEMAP_SCAN exists, 0: ENOTTY, -1: other error (errno). */
static int probe_scan(int pm, char *p, struct page_region *vec, int nvec,
		      __u64 mask, long *nret)
{
	struct pm_scan_arg arg;
	long r;

	memset(&arg, 0, sizeof(arg));
	arg.size = sizeof(arg);
	arg.start = (uintptr_t)p;
	arg.end = (uintptr_t)p + 4 * pagesz;
	arg.vec = (uintptr_t)vec;
	arg.vec_len = nvec;
	arg.category_mask = mask;
	arg.return_mask = mask ? mask : PAGE_IS_PRESENT;
	r = ioctl(pm, PAGEMAP_SCAN, &arg);
	if (r < 0)
		return errno == ENOTTY ? 0 : -1;
	*nret = r;
	return 1;
}

/* 1: WP_ASYNC offered, 0: not, -1: userfaultfd unusable (errno). */
static int probe_wpasync(__u64 *features)
{
	struct uffdio_api api;
	int fd;

	fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -1;
	memset(&api, 0, sizeof(api));
	api.api = UFFD_API;
	api.features = 0;
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	close(fd);
	*features = api.features;
	return (api.features & UFFD_FEATURE_WP_ASYNC) ? 1 : 0;
}

static void parse_expect(const char *s, int *sd, int *scan, int *wpa)
{
	char buf[256], *tok, *save;

	snprintf(buf, sizeof(buf), "%s", s);
	for (tok = strtok_r(buf, ", \t\n", &save); tok;
	     tok = strtok_r(NULL, ", \t\n", &save)) {
		int val = EXP_YES;
		const char *name = tok;

		if (!strncmp(name, "no", 2) && strcmp(name, "none")) {
			val = EXP_NO;
			name += 2;
		}
		if (!strcmp(name, "sd") || !strcmp(name, "softdirty"))
			*sd = val;
		else if (!strcmp(name, "scan"))
			*scan = val;
		else if (!strcmp(name, "wpasync"))
			*wpa = val;
		else if (strcmp(name, "none") && *name)
			printf("# kprobe: ignoring unknown expectation '%s'\n", tok);
	}
}

static const char *find_expect(int argc, char **argv, char *cmdline, size_t sz)
{
	const char *e;
	FILE *f;

	if (argc > 1)
		return argv[1];
	e = getenv("SOFTDIRTY_EXPECT");
	if (e)
		return e;
	f = fopen("/proc/cmdline", "r");
	if (!f)
		return NULL;
	if (!fgets(cmdline, sz, f)) {
		fclose(f);
		return NULL;
	}
	fclose(f);
	for (char *t = strtok(cmdline, " \n"); t; t = strtok(NULL, " \n"))
		if (!strncmp(t, "softdirty.expect=", 17))
			return t + 17;
	return NULL;
}

static void check(const char *feat, int have, int expect, const char *detail)
{
	if (expect == EXP_UNSET)
		tap(1, "%s: %s (%s; no expectation)", feat, have ? "yes" : "no",
		    detail);
	else
		tap(have == expect, "%s: %s, expected %s (%s)", feat,
		    have ? "yes" : "no", expect ? "yes" : "no", detail);
}

int main(int argc, char **argv)
{
	int exp_sd = EXP_UNSET, exp_scan = EXP_UNSET, exp_wpa = EXP_UNSET;
	char cmdline[4096], detail[160];
	struct page_region vec[8];
	const char *expect, *why;
	int pm, sd, scan, wpa;
	__u64 features = 0;
	long nret = 0;
	char *p;

	setvbuf(stdout, NULL, _IOLBF, 0);
	pagesz = sysconf(_SC_PAGESIZE);
	expect = find_expect(argc, argv, cmdline, sizeof(cmdline));
	if (expect)
		parse_expect(expect, &exp_sd, &exp_scan, &exp_wpa);

	printf("TAP version 13\n1..4\n");
	printf("# kprobe: expectations: %s\n", expect ? expect : "(none)");

	p = mmap(NULL, 4 * pagesz, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	pm = open("/proc/self/pagemap", O_RDONLY);
	if (p == MAP_FAILED || pm < 0) {
		printf("Bail out! mmap or open(/proc/self/pagemap): %s\n",
		       strerror(errno));
		return 1;
	}
	memset(p, 0, 4 * pagesz);

	/* 1. soft-dirty */
	sd = probe_softdirty(pm, p, &why);
	check("soft-dirty (clear_refs 4 + pagemap bit 55)", sd, exp_sd, why);

	/* 2. PAGEMAP_SCAN */
	scan = probe_scan(pm, p, vec, 8, 0, &nret);
	if (scan < 0) {
		snprintf(detail, sizeof(detail),
			 "ioctl failed with %s, not ENOTTY", strerror(errno));
		tap(0, "PAGEMAP_SCAN: %s", detail);
	} else {
		snprintf(detail, sizeof(detail), "%s",
			 scan ? "ioctl accepted" : "ENOTTY");
		check("PAGEMAP_SCAN ioctl", scan, exp_scan, detail);
	}

	/* 3. userfaultfd WP_ASYNC */
	wpa = probe_wpasync(&features);
	if (wpa < 0) {
		snprintf(detail, sizeof(detail), "userfaultfd/UFFDIO_API: %s",
			 strerror(errno));
		wpa = 0;
	} else {
		snprintf(detail, sizeof(detail), "UFFDIO_API features 0x%llx",
			 (unsigned long long)features);
	}
	check("userfaultfd UFFD_FEATURE_WP_ASYNC", wpa, exp_wpa, detail);

	/* 4. Both together: PAGEMAP_SCAN with PAGE_IS_SOFT_DIRTY must agree. */
	if (scan == 1 && sd) {
		p[0] = 1;
		p[2 * pagesz] = 1;
		clear_refs();
		p[pagesz] = 3;
		nret = 0;
		memset(vec, 0, sizeof(vec));
		if (probe_scan(pm, p, vec, 8, PAGE_IS_SOFT_DIRTY, &nret) != 1)
			tap(0, "PAGEMAP_SCAN PAGE_IS_SOFT_DIRTY: ioctl failed: %s",
			    strerror(errno));
		else
			tap(nret == 1 && vec[0].start == (uintptr_t)p + pagesz &&
			    vec[0].end == (uintptr_t)p + 2 * pagesz,
			    "PAGEMAP_SCAN PAGE_IS_SOFT_DIRTY reports exactly the "
			    "written page (%ld region(s), first +0x%llx..+0x%llx)",
			    nret,
			    nret ? (unsigned long long)(vec[0].start - (uintptr_t)p) : 0ULL,
			    nret ? (unsigned long long)(vec[0].end - (uintptr_t)p) : 0ULL);
	} else {
		printf("ok %d - PAGEMAP_SCAN PAGE_IS_SOFT_DIRTY # SKIP needs "
		       "both soft-dirty and PAGEMAP_SCAN\n", ++ntest);
	}

	close(pm);
	munmap(p, 4 * pagesz);
	return nfail ? 1 : 0;
}
