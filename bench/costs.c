// SPDX-License-Identifier: MIT
/*
 * costs: what tracking a populated region costs, per backend, as ratios to
 * baselines measured in the same run.
 *
 * Baselines: a first-touch page fault (one byte written to each page of a
 * fresh anonymous mapping), a pread() of /proc/self/pagemap over the region,
 * a memcpy() of the region.  Per backend that softdirty_probe() reports
 * working: softdirty_reset(), softdirty_collect() with and without
 * SOFTDIRTY_COLLECT_RESET after 0 %, 1 % (random pages) and 100 % of the
 * pages were written, and the first write to each page after a reset.  For
 * "uffd" the same operations are also done with the raw kernel calls
 * (userfaultfd WP_ASYNC + PAGEMAP_SCAN, with the library's arguments) so
 * that what the library adds shows as a ratio, and once more with the masks
 * that take the kernel's per-PTE path instead of its fast path.
 *
 * Each subject (baselines, each backend, the raw calls) runs in a child
 * process of its own, on a region that child mapped and populated itself (a
 * region inherited across fork() would take copy-on-write faults, and
 * trackers must not fight over one process).  The children of a group (a
 * baseline process and up to MAX_GROUP regions: uffd with its two raw
 * variants, or the other backends) take turns, one timed operation each, so
 * that the numbers compared were taken moments apart and never while
 * another child ran; groups run one after the other to bound memory.  Each
 * operation is repeated; the tables show the median and the minimum.
 * Nothing here ever fails on speed.
 *
 * Environment: SOFTDIRTY_BENCH_MB (region size, default 1024),
 * SOFTDIRTY_BENCH_REPS (repetitions, default 5), SOFTDIRTY_BENCH_THP=1
 * (regions of transparent huge pages), SOFTDIRTY_BENCH_VERBOSE=1 (every
 * sample on stderr).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "softdirty.h"
#include "uapi.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define PG		((size_t)SOFTDIRTY_PAGE_SIZE)
#define MAX_REPS	15
/* pread() chunk of the pagemap baseline: 64 Ki entries = 256 MiB mapped */
#define PREAD_CHUNK	(512UL << 10)
/* room for the 1 % case in one call (it is ~npages / 100 ranges) */
#define VEC_LEN		65536
/*
 * PAGEMAP_SCAN output vector of the raw measurement: the kernel's own
 * buffer size, as the library uses.  With more, Linux 6.18 returns a stale
 * walk_end when the output needed more than one internal 512-entry flush
 * (the walk_end of the last flush, not the end), so a caller looping on
 * walk_end walks the tail again and, without PM_SCAN_WP_MATCHING, gets its
 * ranges twice.
 */
#define RAW_VEC_LEN	512
/* regions of one group of processes taking turns (memory: GiB at 1 GiB) */
#define MAX_GROUP	3

enum metric {
	M_TOUCH,	/* first-touch fault, whole region */
	M_MEMCPY,	/* memcpy of the region */
	M_PREAD,	/* pread of the pagemap over the region */
	M_MAPS,		/* read of /proc/self/maps */
	M_RESET0,	/* reset, nothing written since the last one */
	M_RESET1,	/* reset, 1 % written */
	M_C0,		/* collect, 0 % written */
	M_C0R,		/* collect + reset, 0 % written */
	M_C1,
	M_C1R,
	M_C100,
	M_C100R,
	M_WRITE,	/* first write after reset, whole region */
	M_WRITE1,	/* first write after reset, 1 % at random */
	M_TOUCH1,	/* first-touch fault, 1 % at random */
	M_N,
};

struct result {
	int err;			/* 0, or -errno of what failed */
	char msg[200];			/* what failed */
	int n[M_N];			/* samples taken */
	double med[M_N], min[M_N];	/* seconds */
	uint64_t pages[3];		/* reported at 0, 1, 100 % (last rep) */
	uint64_t written1;		/* pages written in the 1 % case */
	uint64_t untracked;		/* most pages reported UNTRACKED */
};

struct bench {
	size_t len;
	size_t npages;
	int reps;
};

/* What one child measures: raw calls, or a backend through the library. */
struct ops {
	void *ctx;
	int (*reset)(void *ctx);
	/* *pages: dirty pages reported inside the region */
	int (*collect)(void *ctx, bool reset, uint64_t *pages);
};

static double samples[M_N][MAX_REPS];

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/*
 * Lockstep: every child waits for its turn before each timed operation, so
 * only one runs at a time and the same operation of every child is timed
 * within moments of the others (this machine's speed drifts over seconds).
 */
static int turn_ready_fd = -1, turn_go_fd = -1;

/* Wait for our turn, then start the clock. */
static double tstart(void)
{
	char c = 'r';

	if (turn_ready_fd >= 0) {
		if (write(turn_ready_fd, &c, 1) != 1 ||
		    read(turn_go_fd, &c, 1) != 1)
			_exit(2);	/* the parent is gone */
	}
	return now();
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static void record(struct result *res, enum metric m, double t)
{
	if (res->n[m] < MAX_REPS)
		samples[m][res->n[m]++] = t;
}

/* SOFTDIRTY_BENCH_VERBOSE=1: every sample to stderr, in the order taken */
static void dump_samples(const struct result *res, const char *who)
{
	const char *v = getenv("SOFTDIRTY_BENCH_VERBOSE");
	int m, i;

	if (!v || strcmp(v, "1"))
		return;
	for (m = 0; m < M_N; m++) {
		if (!res->n[m])
			continue;
		fprintf(stderr, "costs: %s metric %d:", who, m);
		for (i = 0; i < res->n[m]; i++)
			fprintf(stderr, " %.1f", samples[m][i] * 1e6);
		fprintf(stderr, " µs\n");
	}
}

static void summarize(struct result *res)
{
	int m, n;

	for (m = 0; m < M_N; m++) {
		n = res->n[m];
		if (!n)
			continue;
		qsort(samples[m], (size_t)n, sizeof(double), cmp_double);
		res->min[m] = samples[m][0];
		res->med[m] = n % 2 ? samples[m][n / 2] :
			(samples[m][n / 2 - 1] + samples[m][n / 2]) / 2;
	}
}

static int fail(struct result *res, int err, const char *what)
{
	res->err = err < 0 ? err : -EIO;
	snprintf(res->msg, sizeof(res->msg), "%s: %s", what, strerror(-res->err));
	return res->err;
}

/* SOFTDIRTY_BENCH_THP=1: regions of transparent huge pages instead */
static bool bench_thp;
#define HUGE_SZ	(2UL << 20)

/*
 * An anonymous private mapping of 4 KiB pages (or THPs), populated if
 * asked, with one read-only page below it.  Without that page the mapping
 * may land right above a PROT_NONE mapping (the mprotect backend reserves
 * one), and the mprotect backend's thread-stack rule ("rw anonymous above a
 * PROT_NONE guard") then leaves the whole region untracked.  Freed with
 * unmap_region().
 */
static void *map_region(size_t len, bool populate)
{
	size_t extra = bench_thp ? HUGE_SZ : 0, i;
	unsigned char *raw, *p;

	raw = mmap(NULL, len + PG + extra, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED)
		return NULL;
	p = raw + PG;
	if (bench_thp) {
		/* huge pages only in aligned blocks: trim to [p - PG, p + len) */
		p = (unsigned char *)(((uintptr_t)p + HUGE_SZ - 1) &
				      ~(HUGE_SZ - 1));
		if (p - PG > raw)
			munmap(raw, (size_t)(p - PG - raw));
		if (raw + len + PG + extra > p + len)
			munmap(p + len, (size_t)(raw + len + PG + extra -
						 (p + len)));
	}
	if (mprotect(p - PG, PG, PROT_READ)) {
		munmap(p - PG, len + PG);
		return NULL;
	}
	madvise(p, len, bench_thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	if (populate && madvise(p, len, MADV_POPULATE_WRITE)) {
		for (i = 0; i < len; i += PG)
			p[i] = 1;
	}
	return p;
}

static void unmap_region(void *p, size_t len)
{
	munmap((unsigned char *)p - PG, len + PG);
}

/*
 * A byte value never stored by the previous pass: the hash backend sees
 * changed contents only.  Never 0 (the contents of a fresh page).
 */
static unsigned char gen;

static unsigned char next_gen(void)
{
	gen = gen % 250 + 1;
	return gen;
}

/*
 * Store one byte to each page: a plain store, no load first (a load of a
 * never-touched page would map the zero page and double the faults).
 */
static void write_pages(unsigned char *base, size_t npages)
{
	volatile unsigned char *p = base;
	unsigned char v = next_gen();
	size_t i;

	for (i = 0; i < npages; i++)
		p[i * PG] = v;
}

static uint64_t rnd_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

/* 1 % of the pages, at random: one page in each run of 100. */
static uint64_t write_one_percent(unsigned char *base, size_t npages)
{
	volatile unsigned char *p = base;
	unsigned char v = next_gen();
	size_t i, n = npages / 100, span;

	if (!n)
		n = 1;
	span = npages / n;
	for (i = 0; i < n; i++)
		p[(i * span + rnd() % span) * PG] = v;
	return n;
}

static ssize_t pread_pagemap(int fd, const void *start, size_t npages,
			     uint64_t *buf)
{
	off_t off = (off_t)((uintptr_t)start / PG * 8);
	size_t left = npages * 8;
	ssize_t r;

	while (left) {
		size_t n = left < PREAD_CHUNK ? left : PREAD_CHUNK;

		r = pread(fd, buf, n, off);
		if (r <= 0)
			return r < 0 ? -errno : -EIO;
		off += r;
		left -= (size_t)r;
	}
	return 0;
}

/* The pagemap baseline, in this process, on this region. */
static int measure_pread(struct result *res, const struct bench *b,
			 unsigned char *region)
{
	uint64_t *buf;
	ssize_t r = 0;
	off_t off;
	double t;
	int fd, mfd, i, err = 0;

	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	mfd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	buf = map_region(PREAD_CHUNK, true);
	if (fd < 0 || mfd < 0 || !buf) {
		err = fail(res, -errno, "open /proc/self/{pagemap,maps}");
		goto out;
	}
	for (i = 0; i < b->reps && !err; i++) {
		t = tstart();
		err = (int)pread_pagemap(fd, region, b->npages, buf);
		record(res, M_PREAD, now() - t);
	}
	if (err) {
		err = fail(res, err, "pread /proc/self/pagemap");
		goto out;
	}
	/* what the library reads at every reset and collect */
	for (i = 0; i < b->reps && r >= 0; i++) {
		t = tstart();
		off = 0;
		while ((r = pread(mfd, buf, PREAD_CHUNK, off)) > 0)
			off += r;
		record(res, M_MAPS, now() - t);
	}
	if (r < 0)
		err = fail(res, -errno, "read /proc/self/maps");
out:
	if (buf)
		unmap_region(buf, PREAD_CHUNK);
	if (mfd >= 0)
		close(mfd);
	if (fd >= 0)
		close(fd);
	return err;
}

/*
 * The common sequence, one repetition at a time:
 * collect 0 %, collect+reset 0 %, reset 0 %, write 1 %, collect 1 %,
 * collect+reset 1 %, write 1 %, reset 1 %, write 100 % (timed: the first
 * write after reset), collect 100 %, collect+reset 100 %.
 */
static int measure_ops(struct result *res, const struct bench *b,
		       unsigned char *region, const struct ops *o)
{
	uint64_t pages;
	double t;
	int i, err;

	err = o->reset(o->ctx);
	if (err)
		return fail(res, err, "reset");
	for (i = 0; i < b->reps; i++) {
		t = tstart();
		err = o->collect(o->ctx, false, &pages);
		record(res, M_C0, now() - t);
		if (err)
			return fail(res, err, "collect, 0 %");
		res->pages[0] = pages;

		t = tstart();
		err = o->collect(o->ctx, true, &pages);
		record(res, M_C0R, now() - t);
		if (err)
			return fail(res, err, "collect+reset, 0 %");

		t = tstart();
		err = o->reset(o->ctx);
		record(res, M_RESET0, now() - t);
		if (err)
			return fail(res, err, "reset, 0 %");

		t = tstart();
		res->written1 = write_one_percent(region, b->npages);
		record(res, M_WRITE1, (now() - t) / (double)res->written1);

		t = tstart();
		err = o->collect(o->ctx, false, &pages);
		record(res, M_C1, now() - t);
		if (err)
			return fail(res, err, "collect, 1 %");
		res->pages[1] = pages;

		t = tstart();
		err = o->collect(o->ctx, true, &pages);
		record(res, M_C1R, now() - t);
		if (err)
			return fail(res, err, "collect+reset, 1 %");

		write_one_percent(region, b->npages);
		t = tstart();
		err = o->reset(o->ctx);
		record(res, M_RESET1, now() - t);
		if (err)
			return fail(res, err, "reset, 1 %");

		t = tstart();
		write_pages(region, b->npages);
		record(res, M_WRITE, now() - t);

		t = tstart();
		err = o->collect(o->ctx, false, &pages);
		record(res, M_C100, now() - t);
		if (err)
			return fail(res, err, "collect, 100 %");
		res->pages[2] = pages;

		t = tstart();
		err = o->collect(o->ctx, true, &pages);
		record(res, M_C100R, now() - t);
		if (err)
			return fail(res, err, "collect+reset, 100 %");
	}
	return 0;
}

/* ---------- baselines ---------- */

static int run_baselines(struct result *res, const struct bench *b,
			 const void *arg)
{
	unsigned char *p = NULL, *q;
	uint64_t n;
	double t;
	int i;

	(void)arg;
	/* first-touch faults: a fresh mapping each time */
	for (i = 0; i < b->reps; i++) {
		q = map_region(b->len, false);
		if (!q)
			return fail(res, -errno, "mmap");
		t = tstart();
		n = write_one_percent(q, b->npages);
		record(res, M_TOUCH1, (now() - t) / (double)n);
		unmap_region(q, b->len);

		p = map_region(b->len, false);
		if (!p)
			return fail(res, -errno, "mmap");
		t = tstart();
		write_pages(p, b->npages);
		record(res, M_TOUCH, now() - t);
		if (i + 1 < b->reps)
			unmap_region(p, b->len);
	}
	if (measure_pread(res, b, p))
		return res->err;
	/* the region in two halves, copied both ways: len bytes in all */
	for (i = 0; i < b->reps; i++) {
		size_t half = b->len / 2;

		t = tstart();
		memcpy(p + half, p, half);
		memcpy(p, p + half, half);
		record(res, M_MEMCPY, now() - t);
		/* keep the copies from being optimized away */
		p[(size_t)i * PG] = p[half + (size_t)(i + 1) * PG] + 1;
	}
	return 0;
}

/* ---------- a backend through the library ---------- */

struct lib_ctx {
	struct softdirty *sd;
	uint64_t start, end;
	struct softdirty_range *vec;
	uint64_t untracked;
};

static int lib_reset(void *ctx)
{
	struct lib_ctx *c = ctx;

	return softdirty_reset(c->sd);
}

static int lib_collect(void *ctx, bool reset, uint64_t *pages)
{
	struct lib_ctx *c = ctx;
	uint64_t cur = c->start, we, n = 0, u = 0, k;
	long r, i;

	while (cur < c->end) {
		r = softdirty_collect(c->sd, cur, c->end, c->vec, VEC_LEN,
				      reset ? SOFTDIRTY_COLLECT_RESET : 0, &we);
		if (r < 0)
			return (int)r;
		for (i = 0; i < r; i++) {
			k = (c->vec[i].end - c->vec[i].start) / PG;
			n += k;
			if (c->vec[i].flags & SOFTDIRTY_RANGE_UNTRACKED)
				u += k;
		}
		if (we <= cur)
			return -EIO;
		cur = we;
	}
	*pages = n;
	if (u > c->untracked)
		c->untracked = u;
	return 0;
}

static int run_backend(struct result *res, const struct bench *b,
		       const void *arg)
{
	struct softdirty_opts opts = { .sz = sizeof(opts), .backend = arg };
	struct ops o = { .reset = lib_reset, .collect = lib_collect };
	struct lib_ctx c = { 0 };
	unsigned char *region;
	int err;

	region = map_region(b->len, true);
	c.vec = map_region(VEC_LEN * sizeof(*c.vec), true);
	if (!region || !c.vec)
		return fail(res, -errno, "mmap");
	c.start = (uintptr_t)region;
	c.end = c.start + b->len;
	if (measure_pread(res, b, region))
		return res->err;
	err = softdirty_open(&c.sd, 0, &opts);
	if (err)
		return fail(res, err, "softdirty_open");
	o.ctx = &c;
	err = measure_ops(res, b, region, &o);
	res->untracked = c.untracked;
	softdirty_close(c.sd);
	return err;
}

/* ---------- uffd without the library ---------- */

struct raw_ctx {
	int pm;
	bool general;	/* the masks of the kernel's general path */
	uint64_t start, end;
	struct page_region *vec;
};

static int raw_scan(struct raw_ctx *c, uint64_t start, uint64_t end, bool wp,
		    uint64_t *pages)
{
	struct pm_scan_arg a;
	uint64_t n = 0;
	long r, i;

	while (start < end) {
		memset(&a, 0, sizeof(a));
		a.size = sizeof(a);
		a.flags = wp ? PM_SCAN_WP_MATCHING : 0;
		a.start = start;
		a.end = end;
		a.vec = (uintptr_t)c->vec;
		a.vec_len = RAW_VEC_LEN;
		if (c->general) {
			/* written and not the zero page: the per-PTE path */
			a.category_inverted = PAGE_IS_PFNZERO;
			a.category_mask = PAGE_IS_WRITTEN | PAGE_IS_PFNZERO;
			a.return_mask = PAGE_IS_WRITTEN | PAGE_IS_HUGE;
		} else {
			/* exactly "written": the kernel's fast path, as the
			 * library asks */
			a.category_mask = PAGE_IS_WRITTEN;
			a.return_mask = PAGE_IS_WRITTEN;
		}
		r = ioctl(c->pm, PAGEMAP_SCAN, &a);
		if (r < 0)
			return -errno;
		for (i = 0; i < r; i++)
			n += (c->vec[i].end - c->vec[i].start) / PG;
		if (a.walk_end <= start)
			return -EIO;
		start = a.walk_end;
	}
	if (pages)
		*pages = n;
	return 0;
}

static int raw_reset(void *ctx)
{
	struct raw_ctx *c = ctx;

	return raw_scan(c, c->start, c->end, true, NULL);
}

static int raw_collect(void *ctx, bool reset, uint64_t *pages)
{
	struct raw_ctx *c = ctx;

	return raw_scan(c, c->start, c->end, reset, pages);
}

static int run_raw_uffd(struct result *res, const struct bench *b,
			const void *arg)
{
	struct uffdio_api api = {
		.api = UFFD_API,
		.features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED,
	};
	struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_WP };
	struct ops o = { .reset = raw_reset, .collect = raw_collect };
	struct raw_ctx c = { .pm = -1 };
	unsigned char *region;
	int fd;

	c.general = !strcmp(arg, "general");
	region = map_region(b->len, true);
	c.vec = map_region(VEC_LEN * sizeof(*c.vec), true);
	if (!region || !c.vec)
		return fail(res, -errno, "mmap");
	c.start = (uintptr_t)region;
	c.end = c.start + b->len;
	if (measure_pread(res, b, region))
		return res->err;
	fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0 && errno == EPERM)
		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK |
				  UFFD_USER_MODE_ONLY);
	if (fd < 0)
		return fail(res, -errno, "userfaultfd");
	if (ioctl(fd, UFFDIO_API, &api))
		return fail(res, -errno, "UFFDIO_API");
	reg.range.start = c.start;
	reg.range.len = b->len;
	if (ioctl(fd, UFFDIO_REGISTER, &reg))
		return fail(res, -errno, "UFFDIO_REGISTER");
	c.pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (c.pm < 0)
		return fail(res, -errno, "open /proc/self/pagemap");
	o.ctx = &c;
	return measure_ops(res, b, region, &o);
}

/* ---------- children ---------- */

typedef int (*run_fn)(struct result *res, const struct bench *b,
		      const void *arg);

struct child {
	pid_t pid;
	int res_fd;		/* the result comes back here */
	int ready_fd;		/* "my turn?": a byte, EOF when done */
	int go_fd;		/* "go": a byte */
	struct result *res;
};

static void close_pair(int fd[2])
{
	close(fd[0]);
	close(fd[1]);
}

/* Start @fn in a child of its own; it waits for its turns. */
static void spawn(struct child *c, run_fn fn, const struct bench *b,
		  const void *arg, struct result *res)
{
	int rp[2], ready[2], go[2];
	ssize_t r;

	memset(res, 0, sizeof(*res));
	c->pid = -1;
	c->res = res;
	if (pipe(rp)) {
		fail(res, -errno, "pipe");
		return;
	}
	if (pipe(ready)) {
		fail(res, -errno, "pipe");
		close_pair(rp);
		return;
	}
	if (pipe(go)) {
		fail(res, -errno, "pipe");
		close_pair(rp);
		close_pair(ready);
		return;
	}
	fflush(NULL);
	c->pid = fork();
	if (c->pid < 0) {
		fail(res, -errno, "fork");
		close_pair(rp);
		close_pair(ready);
		close_pair(go);
		return;
	}
	if (!c->pid) {
		close(rp[0]);
		close(ready[0]);
		close(go[1]);
		turn_ready_fd = ready[1];
		turn_go_fd = go[0];
		fn(res, b, arg);
		dump_samples(res, arg ? (const char *)arg : "baselines");
		summarize(res);
		r = write(rp[1], res, sizeof(*res));
		_exit(r == (ssize_t)sizeof(*res) ? 0 : 1);
	}
	close(rp[1]);
	close(ready[1]);
	close(go[0]);
	c->res_fd = rp[0];
	c->ready_fd = ready[0];
	c->go_fd = go[1];
}

/*
 * Give the children their turns, one timed operation each, round robin,
 * until all are done; then bring their results back.
 */
static void run_children(struct child *c, int n)
{
	int i, live = 0, status;
	size_t got;
	ssize_t r;
	char x;

	for (i = 0; i < n; i++) {
		if (c[i].pid < 0)
			continue;
		/* wait until it is ready (set up) or done */
		if (read(c[i].ready_fd, &x, 1) == 1)
			live++;
		else
			c[i].ready_fd = -1;
	}
	while (live) {
		for (i = 0; i < n; i++) {
			if (c[i].pid < 0 || c[i].ready_fd < 0)
				continue;
			x = 'g';
			if (write(c[i].go_fd, &x, 1) != 1 ||
			    read(c[i].ready_fd, &x, 1) != 1) {
				close(c[i].ready_fd);
				c[i].ready_fd = -1;
				live--;
			}
		}
	}
	for (i = 0; i < n; i++) {
		if (c[i].pid < 0)
			continue;
		got = 0;
		while (got < sizeof(*c[i].res)) {
			r = read(c[i].res_fd, (char *)c[i].res + got,
				 sizeof(*c[i].res) - got);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			got += (size_t)r;
		}
		close(c[i].res_fd);
		close(c[i].go_fd);
		if (c[i].ready_fd >= 0)
			close(c[i].ready_fd);
		status = 0;
		while (waitpid(c[i].pid, &status, 0) < 0 && errno == EINTR)
			;
		if (got == sizeof(*c[i].res))
			continue;
		memset(c[i].res, 0, sizeof(*c[i].res));
		c[i].res->err = -EIO;
		if (WIFSIGNALED(status))
			snprintf(c[i].res->msg, sizeof(c[i].res->msg),
				 "the child died of signal %d (%s)",
				 WTERMSIG(status), strsignal(WTERMSIG(status)));
		else
			snprintf(c[i].res->msg, sizeof(c[i].res->msg),
				 "the child exited with status %d",
				 WEXITSTATUS(status));
	}
}

/* ---------- output ---------- */

/* A duration with a readable unit. */
static const char *fmt_time(char *buf, size_t n, double s)
{
	if (s >= 1)
		snprintf(buf, n, "%.2f s", s);
	else if (s >= 1e-3)
		snprintf(buf, n, "%.2f ms", s * 1e3);
	else if (s >= 10e-6)
		snprintf(buf, n, "%.1f µs", s * 1e6);
	else if (s >= 1e-6)
		snprintf(buf, n, "%.2f µs", s * 1e6);
	else
		snprintf(buf, n, "%.0f ns", s * 1e9);
	return buf;
}

static const char *fmt_cell(char *buf, size_t n, const struct result *r,
			    enum metric m, double div)
{
	char a[32], c[32];

	if (r->err)
		snprintf(buf, n, "failed");
	else if (!r->n[m])
		snprintf(buf, n, "–");
	else
		snprintf(buf, n, "%s (%s)", fmt_time(a, sizeof(a), r->med[m] / div),
			 fmt_time(c, sizeof(c), r->min[m] / div));
	return buf;
}

/* x / base, stated plainly: "0.04× (25× faster)" or "1.31×". */
static const char *fmt_ratio(char *buf, size_t n, double x, double base)
{
	double q;

	if (!(x > 0) || !(base > 0)) {
		snprintf(buf, n, "–");
		return buf;
	}
	q = x / base;
	if (q < 0.95)
		snprintf(buf, n, "%.3g× (%.3g× faster)", q, 1 / q);
	else
		snprintf(buf, n, "%.3g×", q);
	return buf;
}

struct column {
	const char *name;
	int be;		/* SOFTDIRTY_BACKEND_*, or -1: raw calls */
	int group;	/* the children that ran side by side */
	struct result res;
};

static const struct {
	enum metric m;
	const char *what;
	bool per_page;
} rows[] = {
	{ M_PREAD, "pread of the pagemap (same process, baseline)", false },
	{ M_MAPS, "read of /proc/self/maps (same process, context)", false },
	{ M_RESET0, "reset, nothing written", false },
	{ M_RESET1, "reset, 1 % written", false },
	{ M_C0, "collect, 0 % written", false },
	{ M_C0R, "collect + reset, 0 % written", false },
	{ M_C1, "collect, 1 % written", false },
	{ M_C1R, "collect + reset, 1 % written", false },
	{ M_C100, "collect, 100 % written", false },
	{ M_C100R, "collect + reset, 100 % written", false },
	{ M_WRITE, "first write after reset, per page (all pages in order)", true },
	{ M_WRITE1, "first write after reset, per page (1 % at random)", false },
};

#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))

static void print_header_row(const struct column *col, int ncol,
			     const char *first)
{
	int i;

	printf("| %s |", first);
	for (i = 0; i < ncol; i++)
		printf(" %s |", col[i].name);
	printf("\n|---|");
	for (i = 0; i < ncol; i++)
		printf("---|");
	printf("\n");
}

static void print_baselines(const struct bench *b, const struct result *base,
			    int ngroups, const struct column *col, int ncol)
{
	char s1[64];
	int g, j;

	printf("\n## Baselines\n\n");
	printf("Measured in turns with the backends named in the column head "
	       "(each group of processes ran on its own, to bound memory).\n\n");
	printf("| baseline |");
	for (g = 0; g < ngroups; g++) {
		const char *sep = " with ";

		for (j = 0; j < ncol; j++) {
			if (col[j].group != g)
				continue;
			printf("%s%s", sep, col[j].name);
			sep = ", ";
		}
		printf(" |");
	}
	printf("\n|---|");
	for (g = 0; g < ngroups; g++)
		printf("---|");
	printf("\n| first-touch page fault, per 4 KiB page (all pages in order) |");
	for (g = 0; g < ngroups; g++)
		printf(" %s |", fmt_cell(s1, sizeof(s1), &base[g], M_TOUCH,
					 (double)b->npages));
	printf("\n| first-touch page fault, per 4 KiB page (1 %% at random) |");
	for (g = 0; g < ngroups; g++)
		printf(" %s |", fmt_cell(s1, sizeof(s1), &base[g], M_TOUCH1, 1));
	printf("\n| pread of /proc/self/pagemap, %zu MiB (%zu KiB reads) |",
	       b->len >> 20, PREAD_CHUNK >> 10);
	for (g = 0; g < ngroups; g++)
		printf(" %s |", fmt_cell(s1, sizeof(s1), &base[g], M_PREAD, 1));
	printf("\n| memcpy of %zu MiB (two halves, both ways) |", b->len >> 20);
	for (g = 0; g < ngroups; g++) {
		printf(" %s", fmt_cell(s1, sizeof(s1), &base[g], M_MEMCPY, 1));
		if (!base[g].err)
			printf(" = %.1f GB/s", (double)b->len /
			       base[g].med[M_MEMCPY] / 1e9);
		printf(" |");
	}
	printf("\n");
	for (g = 0; g < ngroups; g++)
		if (base[g].err)
			printf("\nBaselines %d failed: %s\n", g + 1, base[g].msg);
}

static void print_tables(const struct bench *b, const struct result *bases,
			 struct column *col, int ncol, int nlib)
{
	char s1[64], s2[64], s3[64], s4[64], s5[64], s6[64];
	const struct result *raw = NULL, *pte = NULL, *base;
	double np = (double)b->npages;
	size_t i;
	int j;

	if (ncol > nlib + 1) {
		raw = &col[nlib].res;
		pte = &col[nlib + 1].res;
	}
	if (!ncol)
		return;

	printf("\n## Absolute costs on the %zu MiB region, median (min)\n\n",
	       b->len >> 20);
	printf("Context only: this machine's timings move from run to run.\n\n");
	print_header_row(col, ncol, "operation");
	for (i = 0; i < ARRAY_SIZE(rows); i++) {
		printf("| %s |", rows[i].what);
		for (j = 0; j < ncol; j++)
			printf(" %s |", fmt_cell(s1, sizeof(s1), &col[j].res,
						 rows[i].m,
						 rows[i].per_page ? np : 1));
		printf("\n");
	}
	printf("| pages reported at 0 / 1 / 100 %% (of %zu; 1 %% = %llu written) |",
	       b->npages, (unsigned long long)(ncol && !col[0].res.err ?
					       col[0].res.written1 : 0));
	for (j = 0; j < ncol; j++) {
		const struct result *r = &col[j].res;

		if (r->err)
			printf(" failed: %s |", r->msg);
		else
			printf(" %llu / %llu / %llu%s |",
			       (unsigned long long)r->pages[0],
			       (unsigned long long)r->pages[1],
			       (unsigned long long)r->pages[2],
			       r->untracked ?
			       " **(UNTRACKED: nothing was measured)**" : "");
	}
	printf("\n");

	if (!nlib)
		return;
	printf("\n## Ratios (medians; the claim)\n\n");
	printf("Against the pagemap pread measured in the same process, and the\n"
	       "first-touch fault and the memcpy measured in turns with it (above).\n\n");
	print_header_row(col, nlib, "ratio");
	for (i = 0; i < ARRAY_SIZE(rows); i++) {
		if (rows[i].per_page || rows[i].m == M_PREAD ||
		    rows[i].m == M_MAPS || rows[i].m == M_WRITE1)
			continue;
		printf("| %s ÷ pagemap pread |", rows[i].what);
		for (j = 0; j < nlib; j++) {
			const struct result *r = &col[j].res;

			printf(" %s |", r->err ? "–" :
			       fmt_ratio(s1, sizeof(s1), r->med[rows[i].m],
					 r->med[M_PREAD]));
		}
		printf("\n");
	}
	printf("| first write after reset ÷ first-touch fault (all pages in order) |");
	for (j = 0; j < nlib; j++) {
		const struct result *r = &col[j].res;

		base = &bases[col[j].group];
		printf(" %s |", r->err || base->err ? "–" :
		       fmt_ratio(s1, sizeof(s1), r->med[M_WRITE],
				 base->med[M_TOUCH]));
	}
	printf("\n| first write after reset ÷ first-touch fault (1 %% at random) |");
	for (j = 0; j < nlib; j++) {
		const struct result *r = &col[j].res;

		base = &bases[col[j].group];
		printf(" %s |", r->err || base->err ? "–" :
		       fmt_ratio(s1, sizeof(s1), r->med[M_WRITE1],
				 base->med[M_TOUCH1]));
	}
	printf("\n| collect, 100 %% written ÷ memcpy of the region |");
	for (j = 0; j < nlib; j++) {
		const struct result *r = &col[j].res;

		base = &bases[col[j].group];
		printf(" %s |", r->err || base->err ? "–" :
		       fmt_ratio(s1, sizeof(s1), r->med[M_C100],
				 base->med[M_MEMCPY]));
	}
	printf("\n");

	if (!raw || raw->err)
		return;
	for (j = 0; j < nlib; j++)
		if (!strcmp(col[j].name, "uffd") && !col[j].res.err)
			break;
	if (j == nlib)
		return;
	printf("\n## What the library adds: uffd through softdirty vs the raw kernel calls\n\n");
	printf("raw: one userfaultfd registered (WP, WP_ASYNC) over the region only;\n"
	       "PAGEMAP_SCAN over the region (%d-entry vector), PM_SCAN_WP_MATCHING\n"
	       "for the resets, with the library's masks (category and return mask\n"
	       "PAGE_IS_WRITTEN: the kernel's fast path).  The library's reset covers\n"
	       "the whole address space, and each call re-reads /proc/self/maps.\n"
	       "Last two columns: the same raw calls with category mask\n"
	       "WRITTEN|PFNZERO, PFNZERO inverted (the kernel's per-PTE path).\n\n",
	       RAW_VEC_LEN);
	printf("| operation | library | raw | library ÷ raw, median | min "
	       "| raw, per-PTE path | fast ÷ per-PTE path, median |\n");
	printf("|---|---|---|---|---|---|---|\n");
	for (i = 0; i < ARRAY_SIZE(rows); i++) {
		const struct result *l = &col[j].res;
		double div = rows[i].per_page ? np : 1;

		printf("| %s | %s | %s | %s | %s | %s | %s |\n", rows[i].what,
		       fmt_cell(s1, sizeof(s1), l, rows[i].m, div),
		       fmt_cell(s2, sizeof(s2), raw, rows[i].m, div),
		       fmt_ratio(s3, sizeof(s3), l->med[rows[i].m],
				 raw->med[rows[i].m]),
		       fmt_ratio(s4, sizeof(s4), l->min[rows[i].m],
				 raw->min[rows[i].m]),
		       fmt_cell(s5, sizeof(s5), pte, rows[i].m, div),
		       pte->err ? "–" :
		       fmt_ratio(s6, sizeof(s6), raw->med[rows[i].m],
				 pte->med[rows[i].m]));
	}
}

/* System-wide AnonHugePages in kB (-1: unknown): the library's uffd takes
 * a THP census at each reset when any THP is mapped anywhere. */
static long anon_huge_kb(void)
{
	char buf[8192], *s;
	ssize_t r;
	int fd;

	fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	r = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (r <= 0)
		return -1;
	buf[r] = '\0';
	s = strstr(buf, "AnonHugePages:");
	return s ? strtol(s + strlen("AnonHugePages:"), NULL, 10) : -1;
}

static long env_long(const char *name, long def, long lo, long hi)
{
	const char *s = getenv(name);
	char *end;
	long v;

	if (!s || !*s)
		return def;
	v = strtol(s, &end, 10);
	if (*end || v < lo || v > hi) {
		fprintf(stderr, "costs: %s=%s: want %ld..%ld, using %ld\n",
			name, s, lo, hi, def);
		return def;
	}
	return v;
}

int main(void)
{
	struct softdirty_probe_result pr[SOFTDIRTY_BACKEND_COUNT];
	struct column col[SOFTDIRTY_BACKEND_COUNT + 2];
	struct child kids[MAX_GROUP + 1];
	struct result base[SOFTDIRTY_BACKEND_COUNT];
	struct bench b;
	struct utsname u;
	int i, g, n, ncol = 0, nlib, nkids, ngroups = 0, load = 0;
	long thp0;
	double t0 = now();

	b.len = (size_t)env_long("SOFTDIRTY_BENCH_MB", 1024, 1, 1 << 20) << 20;
	b.npages = b.len / PG;
	b.reps = (int)env_long("SOFTDIRTY_BENCH_REPS", 5, 1, MAX_REPS);
	bench_thp = env_long("SOFTDIRTY_BENCH_THP", 0, 0, 1);
	if (uname(&u))
		snprintf(u.release, sizeof(u.release), "?");

	n = softdirty_probe(pr, SOFTDIRTY_BACKEND_COUNT);
	if (n < 0) {
		fprintf(stderr, "costs: softdirty_probe: %s\n", strerror(-n));
		return 1;
	}

	printf("# softdirty costs\n\n");
	printf("Linux %s %s, %ld CPUs; region %zu MiB = %zu pages of 4 KiB "
	       "(anonymous, private, populated, %s); "
	       "%d repetitions, median (min).\n",
	       u.release, u.machine, sysconf(_SC_NPROCESSORS_ONLN),
	       b.len >> 20, b.npages,
	       bench_thp ? "MADV_HUGEPAGE: transparent huge pages" :
	       "MADV_NOHUGEPAGE", b.reps);

	printf("\n## Backends\n\n| backend | probe | measured |\n|---|---|---|\n");
	for (i = 0; i < SOFTDIRTY_BACKEND_COUNT; i++)
		printf("| %s | %s%s%s | %s |\n", pr[i].name,
		       pr[i].status ? "does not work: " : "works",
		       pr[i].status ? "" : (pr[i].reason[0] ? "; " : ""),
		       pr[i].reason, pr[i].status ? "no" : "yes");
	fflush(stdout);
	thp0 = anon_huge_kb();

	/*
	 * Groups of at most MAX_GROUP regions (plus a baseline process) run
	 * in turns; the groups one after the other, to bound memory.
	 */
	for (i = 0; i < SOFTDIRTY_BACKEND_COUNT; i++) {
		int k = i == SOFTDIRTY_BACKEND_UFFD ? 3 : 1;

		if (pr[i].status)
			continue;
		if (!ngroups || load + k > MAX_GROUP) {
			ngroups++;
			load = 0;
		}
		load += k;
		col[ncol].name = pr[i].name;
		col[ncol].be = i;
		col[ncol].group = ngroups - 1;
		ncol++;
	}
	nlib = ncol;
	for (i = 0; i < nlib; i++) {
		if (col[i].be != SOFTDIRTY_BACKEND_UFFD)
			continue;
		col[ncol].name = "raw uffd ioctl";
		col[ncol].be = -1;
		col[ncol++].group = col[i].group;
		col[ncol].name = "raw, per-PTE path";
		col[ncol].be = -1;
		col[ncol++].group = col[i].group;
	}
	if (!ngroups)
		ngroups = 1;
	for (g = 0; g < ngroups; g++) {
		nkids = 0;
		spawn(&kids[nkids++], run_baselines, &b, NULL, &base[g]);
		for (i = 0; i < nlib; i++) {
			if (col[i].group != g)
				continue;
			spawn(&kids[nkids++], run_backend, &b, col[i].name,
			      &col[i].res);
			/* the raw calls right after the library's uffd */
			if (col[i].be != SOFTDIRTY_BACKEND_UFFD)
				continue;
			spawn(&kids[nkids++], run_raw_uffd, &b, "fast",
			      &col[nlib].res);
			spawn(&kids[nkids++], run_raw_uffd, &b, "general",
			      &col[nlib + 1].res);
		}
		fprintf(stderr, "costs: group %d: %d processes of %zu MiB, in turns\n",
			g + 1, nkids, b.len >> 20);
		run_children(kids, nkids);
	}
	printf("\nTHP mapped in the whole system (/proc/meminfo AnonHugePages): "
	       "%ld kB at the start, %ld kB at the end.\n", thp0, anon_huge_kb());
	print_baselines(&b, base, ngroups, col, ncol);
	print_tables(&b, base, col, ncol, nlib);
	printf("\nWhole run: %.0f s.\n", now() - t0);
	return 0;
}
