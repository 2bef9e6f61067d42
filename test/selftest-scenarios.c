// SPDX-License-Identifier: MIT
/*
 * The Linux kernel selftest's soft-dirty scenarios (selftests/mm/soft-dirty.c
 * and friends), re-expressed against the softdirty API and run on every
 * backend that works here:
 *   - 10 000 rounds of reset / clean / write / dirty on one page, checked
 *     half with softdirty_pagemap() bit 55, half with softdirty_collect();
 *   - a mapping created after the reset is dirty, all of it;
 *   - munmap + mmap at the same address is dirty without any write;
 *   - a THP: one write reports its 512 pages and none of the next THP;
 *   - mprotect(RO) + mprotect(RW) keeps pages clean until written
 *     (anonymous private and MAP_SHARED file);
 *   - mremap move: dirty at the new address, nothing at the old one;
 *   - mremap growth in place and brk growth: the grown part is dirty;
 *   - MADV_DONTNEED: not present (bit 63 clear), told apart from a clean
 *     present page (bit 63 set, bit 55 clear).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef MADV_HUGEPAGE
#define MADV_HUGEPAGE 14
#endif

#define HPAGE (2UL << 20)
#define HPAGES_PER (HPAGE / PG)

static unsigned long write_faults;

/* a write; a fault (tracker bug) is counted instead of killing the test */
static void wr(void *p)
{
	if (!td_try_write(p, 1))
		write_faults++;
}

static void wr_pages(void *base, size_t npages)
{
	size_t i;

	for (i = 0; i < npages; i++)
		wr((char *)base + i * PG);
}

static void *map_at(void *addr, size_t len, int prot, int flags, int fd)
{
	void *p = mmap(addr, len, prot, flags | MAP_FIXED_NOREPLACE, fd, 0);

	if (p == MAP_FAILED)
		return NULL;
	if (p != addr) {	/* old kernel: the flag was only a hint */
		munmap(p, len);
		return NULL;
	}
	return p;
}

static void do_reset(struct softdirty *sd)
{
	int r = softdirty_reset(sd);

	if (r < 0)
		tap_bail("softdirty_reset: %s", strerror(-r));
}

/* bit 55 of softdirty_pagemap() for one page; -1 on error */
static int pm_bit(struct softdirty *sd, void *p, uint64_t *ent)
{
	uint64_t e = 0;
	long r = softdirty_pagemap(sd, (uint64_t)(uintptr_t)p, &e, 1);

	if (r != 1) {
		tap_diag("softdirty_pagemap: %ld (%s)", r,
			 r < 0 ? strerror((int)-r) : "short");
		return -1;
	}
	if (ent)
		*ent = e;
	return !!(e & SOFTDIRTY_PM_SOFT_DIRTY);
}

static void scen_rounds(const struct td_backend *be, struct softdirty *sd)
{
	size_t rounds = td_quick() ? 1000 : 10000, i;
	size_t dirty_miss = 0, clean_extra = 0, errs = 0;
	/*
	 * Between two guard pages that never merge (shared anonymous): a
	 * mapping made later next to ours (by malloc, by the library) would
	 * otherwise merge with it, and the kernel marks a VMA that grew soft
	 * dirty as a whole.
	 */
	char *g = mmap(NULL, 5 * PG, PROT_READ, MAP_SHARED | MAP_ANONYMOUS,
		       -1, 0);
	char *p = g == MAP_FAILED ? MAP_FAILED :
		  mmap(g + PG, 3 * PG, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	char *page = p + PG;	/* neighbours must stay clean too */
	uint8_t pf[3];
	double t0 = td_now();

	if (p == MAP_FAILED)
		tap_bail("mmap: %s", strerror(errno));
	wr_pages(p, 3);
	for (i = 0; i < rounds; i++) {
		/* a time budget: some backends (hash) pay O(memory) per reset */
		if ((i & 63) == 0 && i >= 1000 &&
		    td_now() - t0 > (td_quick() ? 20.0 : 5.0)) {
			tap_diag("%s: time budget spent after %zu rounds",
				 be->name, i);
			break;
		}
		do_reset(sd);
		if (i & 1) {
			int b = pm_bit(sd, page, NULL);

			if (b < 0) {
				errs++;
				break;
			}
			clean_extra += b;
			wr(page);
			b = pm_bit(sd, page, NULL);
			if (b < 0) {
				errs++;
				break;
			}
			dirty_miss += !b;
		} else {
			if (td_collect_region(sd, p, 3, 0, pf) < 0) {
				errs++;
				break;
			}
			clean_extra += !!pf[1] + !!pf[0] + !!pf[2];
			wr(page);
			if (td_collect_region(sd, p, 3, 0, pf) < 0) {
				errs++;
				break;
			}
			dirty_miss += !pf[1];
			clean_extra += !!pf[0] + !!pf[2];
		}
		if (dirty_miss && dirty_miss < 4)
			tap_diag("%s: round %zu: written page not dirty",
				 be->name, i);
	}
	tap_diag("%s: %zu rounds in %.2f s, %zu misses, %zu clean pages "
		 "reported dirty", be->name, i, td_now() - t0, dirty_miss,
		 clean_extra);
	tap_ok(!errs && !dirty_miss && (!td_exact(be) || !clean_extra),
	       "%s: %zu rounds of reset/clean/write/dirty (pagemap bit 55 "
	       "and collect)", be->name, i);
	munmap(g, 5 * PG);
}

static void scen_new_mapping(const struct td_backend *be, struct softdirty *sd)
{
	enum { N = 16 };
	uint8_t pf[N], isnew[N], written[N];
	char *p;
	long r;

	do_reset(sd);
	p = td_mmap(N * PG);
	memset(isnew, 1, N);
	memset(written, 0, N);
	wr(p + 3 * PG);
	written[3] = 1;
	r = td_collect_region(sd, p, N, 0, pf);
	if (r < 0)
		tap_ok(false, "%s: mmap after reset: collect failed", be->name);
	else
		td_check_pages(be, "mmap after reset: every page dirty (one written)",
			       p, N, pf, written, isnew, NULL);
	/* the same via the pagemap view */
	{
		uint64_t ent[N];
		size_t i, bad = 0;

		r = softdirty_pagemap(sd, (uint64_t)(uintptr_t)p, ent, N);
		for (i = 0; r == N && i < N; i++)
			bad += !(ent[i] & SOFTDIRTY_PM_SOFT_DIRTY);
		tap_ok(r == N && !bad, "%s: mmap after reset: pagemap bit 55 on "
		       "all %d pages (got %ld entries, %zu clear)", be->name, N,
		       r, bad);
	}
	munmap(p, N * PG);
}

static void scen_remap_same_addr(const struct td_backend *be,
				 struct softdirty *sd)
{
	enum { N = 16 };
	uint8_t pf[N], isnew[N];
	char *p = td_mmap(N * PG), *q;
	long r;

	wr_pages(p, N);
	do_reset(sd);
	munmap(p, N * PG);
	q = map_at(p, N * PG, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1);
	if (!q) {
		tap_skip("could not map again at the same address",
			 "%s: munmap + mmap at the same address is dirty",
			 be->name);
		return;
	}
	memset(isnew, 1, N);
	r = td_collect_region(sd, q, N, 0, pf);
	if (r < 0)
		tap_ok(false, "%s: munmap + mmap same address: collect failed",
		       be->name);
	else
		td_check_pages(be, "munmap + mmap at the same address: dirty "
			       "without writes", q, N, pf, NULL, isnew, NULL);
	/* and after a reset it is clean again, written page dirty */
	do_reset(sd);
	wr(q + 5 * PG);
	memset(isnew, 0, N);
	{
		uint8_t w[N] = { 0 };

		w[5] = 1;
		r = td_collect_region(sd, q, N, 0, pf);
		if (r < 0)
			tap_ok(false, "%s: collect failed", be->name);
		else
			td_check_pages(be, "re-created mapping after reset: "
				       "only the written page", q, N, pf, w,
				       NULL, NULL);
	}
	munmap(q, N * PG);
}

static void scen_thp(const struct td_backend *be, struct softdirty *sd)
{
	size_t len = 2 * HPAGE, n = len / PG, i;
	char *raw = mmap(NULL, len + HPAGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *p;
	uint8_t *pf, *w;
	long kb, r;

	if (raw == MAP_FAILED)
		tap_bail("mmap: %s", strerror(errno));
	p = (char *)(((uintptr_t)raw + HPAGE - 1) & ~(HPAGE - 1));
	if (madvise(p, len, MADV_HUGEPAGE))
		tap_diag("madvise(MADV_HUGEPAGE): %s", strerror(errno));
	for (i = 0; i < n; i++)
		p[i * PG] = (char)(i + 1);
	kb = td_anon_huge_kb((uintptr_t)p, (uintptr_t)p + len);
	tap_diag("%s: AnonHugePages in the THP range: %ld kB", be->name, kb);
	if (kb < (long)(len >> 10)) {
		tap_skip("THP not available for this range",
			 "%s: THP: one write reports the 512 pages of its huge "
			 "page only", be->name);
		munmap(raw, len + HPAGE);
		return;
	}
	pf = calloc(n, 1);
	w = calloc(n, 1);
	do_reset(sd);
	wr(p + 7 * PG + 100);
	if (be->caps & SOFTDIRTY_CAP_HUGE_PAGES)
		memset(w, 1, HPAGES_PER);	/* the kernel reports the PMD bit */
	else
		w[7] = 1;	/* documented: per 4 KiB page, no caps bit */
	r = td_collect_region(sd, p, n, 0, pf);
	if (r < 0) {
		tap_ok(false, "%s: THP: collect failed", be->name);
	} else {
		size_t got1 = 0, got2 = 0;

		for (i = 0; i < n; i++)
			*(i < HPAGES_PER ? &got1 : &got2) += !!pf[i];
		tap_diag("%s: THP: %zu of first huge page reported, %zu of "
			 "second; write page reported: %s", be->name, got1,
			 got2, pf[7] ? "yes" : "NO");
		td_check_pages(be, (be->caps & SOFTDIRTY_CAP_HUGE_PAGES) ?
			       "THP: one write reports all 512 pages of its "
			       "huge page and none of the next" :
			       "THP: one write reports its page (no "
			       "SOFTDIRTY_CAP_HUGE_PAGES)", p, n, pf, w,
			       NULL, NULL);
	}
	free(pf);
	free(w);
	munmap(raw, len + HPAGE);
}

static void mprotect_case(const struct td_backend *be, struct softdirty *sd,
			  char *p, size_t n, const char *what)
{
	uint8_t pf[16], w[16] = { 0 };
	char desc[200];
	long r;

	wr_pages(p, n);
	do_reset(sd);
	if (mprotect(p, n * PG, PROT_READ) ||
	    mprotect(p, n * PG, PROT_READ | PROT_WRITE))
		tap_bail("mprotect: %s", strerror(errno));
	r = td_collect_region(sd, p, n, 0, pf);
	snprintf(desc, sizeof(desc), "%s: mprotect RO then RW: still clean",
		 what);
	if (r < 0)
		tap_ok(false, "%s: %s: collect failed", be->name, desc);
	else
		td_check_pages(be, desc, p, n, pf, NULL, NULL, NULL);
	wr(p + 5 * PG + 9);
	w[5] = 1;
	r = td_collect_region(sd, p, n, 0, pf);
	snprintf(desc, sizeof(desc), "%s: mprotect RO then RW, one write: "
		 "that page dirty", what);
	if (r < 0)
		tap_ok(false, "%s: %s: collect failed", be->name, desc);
	else
		td_check_pages(be, desc, p, n, pf, w, NULL, NULL);
	/* a second round after a reset: write-protection re-armed */
	do_reset(sd);
	if (mprotect(p, n * PG, PROT_READ) ||
	    mprotect(p, n * PG, PROT_READ | PROT_WRITE))
		tap_bail("mprotect: %s", strerror(errno));
	w[5] = 0;
	wr(p + 2 * PG);
	w[2] = 1;
	r = td_collect_region(sd, p, n, 0, pf);
	snprintf(desc, sizeof(desc), "%s: second round: only the new write",
		 what);
	if (r < 0)
		tap_ok(false, "%s: %s: collect failed", be->name, desc);
	else
		td_check_pages(be, desc, p, n, pf, w, NULL, NULL);
}

static void scen_mprotect(const struct td_backend *be, struct softdirty *sd)
{
	enum { N = 8 };
	char path[64];
	char *p = td_mmap(N * PG);
	int fd;

	mprotect_case(be, sd, p, N, "anonymous private");
	munmap(p, N * PG);

	snprintf(path, sizeof(path), "/tmp/softdirty-test-%d", (int)getpid());
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, N * PG))
		tap_bail("%s: %s", path, strerror(errno));
	unlink(path);
	p = mmap(NULL, N * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		tap_bail("mmap shared: %s", strerror(errno));
	mprotect_case(be, sd, p, N, "MAP_SHARED file in /tmp");
	munmap(p, N * PG);
	close(fd);
}

static void scen_mremap_move(const struct td_backend *be, struct softdirty *sd,
			     bool shared)
{
	enum { N = 8 };
	uint8_t pf[N], isnew[N];
	char *p = mmap(NULL, N * PG, PROT_READ | PROT_WRITE,
		       (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS, -1, 0);
	char *dst = td_free_range(N * PG), *q;
	const char *kind = shared ? "shared anonymous" : "private anonymous";
	long r;
	size_t i, ok_data = 1;

	if (p == MAP_FAILED)
		tap_bail("mmap: %s", strerror(errno));
	for (i = 0; i < N; i++)
		p[i * PG] = (char)(0x40 + i);
	do_reset(sd);
	q = mremap(p, N * PG, N * PG, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
	if (q == MAP_FAILED)
		tap_bail("mremap move: %s", strerror(errno));
	for (i = 0; i < N; i++)
		ok_data &= q[i * PG] == (char)(0x40 + i);
	/* a write at the new address right away, before any collect */
	tap_ok(td_try_write((volatile uint8_t *)q + 3 * PG + 1, 1),
	       "%s: mremap move (%s): a write at the new address right after "
	       "the move works", be->name, kind);
	memset(isnew, 1, N);
	r = td_collect_region(sd, q, N, 0, pf);
	if (r < 0)
		tap_ok(false, "%s: mremap move: collect failed", be->name);
	else
		td_check_pages(be, "mremap move: every page dirty at the new "
			       "address", q, N, pf, NULL, isnew, NULL);
	r = td_collect_region(sd, p, N, 0, pf);
	if (r < 0)
		tap_ok(false, "%s: mremap move: collect old failed", be->name);
	else
		td_check_pages(be, "mremap move: nothing reported at the old "
			       "(unmapped) address", p, N, pf, NULL, NULL, NULL);
	tap_ok(ok_data, "%s: mremap move (%s) kept the data", be->name, kind);
	/* writes at the new address work and are seen after a reset */
	do_reset(sd);
	{
		uint8_t w[N] = { 0 };

		w[2] = w[6] = 1;
		if (!tap_ok(td_try_write((volatile uint8_t *)q + 2 * PG, 1) &&
			    td_try_write((volatile uint8_t *)q + 6 * PG + 5, 1),
			    "%s: mremap move (%s): writes at the new address "
			    "work", be->name, kind))
			w[2] = w[6] = 0;
		r = td_collect_region(sd, q, N, 0, pf);
		if (r < 0)
			tap_ok(false, "%s: collect failed", be->name);
		else
			td_check_pages(be, "mremap move, reset, two writes: "
				       "those pages", q, N, pf, w, NULL, NULL);
	}
	munmap(q, N * PG);
}

static void scen_mremap_grow(const struct td_backend *be, struct softdirty *sd)
{
	enum { N = 4, G = 12 };
	uint8_t pf[N + G], isnew[N + G], may[N + G], w[N + G];
	char *base = td_free_range((N + G) * PG), *p, *q;
	long r;

	p = map_at(base, N * PG, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1);
	if (!p) {
		tap_skip("could not map at a free address",
			 "%s: mremap growth in place", be->name);
		return;
	}
	wr_pages(p, N);
	do_reset(sd);
	q = mremap(p, N * PG, (N + G) * PG, 0);
	if (q == MAP_FAILED) {
		tap_skip("mremap could not grow in place",
			 "%s: mremap growth in place", be->name);
		munmap(p, N * PG);
		return;
	}
	tap_ok(td_try_write((volatile uint8_t *)q + 1 * PG + 1, 1) &&
	       td_try_write((volatile uint8_t *)q + (N + 3) * PG + 1, 1),
	       "%s: mremap grow: writes to the old and the grown part right "
	       "after the growth work", be->name);
	memset(isnew, 0, sizeof(isnew));
	memset(isnew + N, 1, G);
	memset(w, 0, sizeof(w));
	w[1] = w[N + 3] = 1;
	/* the kernel marks the whole VMA soft-dirty: the old part may show */
	memset(may, 1, sizeof(may));
	(void)*(volatile char *)(q + (N + 2) * PG);	/* a read maps the zero page */
	r = td_collect_region(sd, q, N + G, 0, pf);
	if (r < 0) {
		tap_ok(false, "%s: mremap grow: collect failed", be->name);
	} else {
		td_check_pages(be, "mremap growth in place: grown part dirty "
			       "(one page read), writes seen", q, N + G, pf, w,
			       isnew, may);
		tap_diag("%s: mremap grow: old part reported: %d %d %d %d",
			 be->name, pf[0], pf[1], pf[2], pf[3]);
	}
	tap_ok(td_try_write((volatile uint8_t *)q + PG, 1) &&
	       td_try_write((volatile uint8_t *)q + (N + 1) * PG, 1),
	       "%s: mremap grow: writes to the old and the grown part work",
	       be->name);

	/* shrink and grow back between two resets: the pages that come back
	 * are new (zero-filled) even though the range was mapped at the
	 * reset */
	wr_pages(q, N + G);
	do_reset(sd);
	p = mremap(q, (N + G) * PG, N * PG, 0);
	if (p != q)
		tap_bail("mremap shrink: %s", strerror(errno));
	q = mremap(p, N * PG, (N + G) * PG, 0);
	if (q == MAP_FAILED) {
		tap_skip("mremap could not grow in place", "%s: mremap shrink "
			 "then grow back", be->name);
		munmap(p, N * PG);
		return;
	}
	memset(may, 1, sizeof(may));
	(void)*(volatile char *)(q + (N + 1) * PG);	/* read one page */
	r = td_collect_region(sd, q, N + G, 0, pf);
	if (r < 0) {
		tap_ok(false, "%s: collect failed", be->name);
	} else if (be->caps & SOFTDIRTY_CAP_REGROWN) {
		td_check_pages(be, "mremap shrink then grow back after a reset: "
			       "the re-grown (zero-filled) part is dirty, one "
			       "page read", q,
			       N + G, pf, NULL, isnew, may);
	} else {
		size_t k, got = 0;

		for (k = N; k < N + G; k++)
			got += !!pf[k];
		tap_diag("%s: shrink + grow back: %zu of %d re-grown pages "
			 "reported (caps lacks SOFTDIRTY_CAP_REGROWN)",
			 be->name, got, G);
		tap_ok(be->reason[0] != 0, "%s: mremap shrink then grow back: "
		       "not promised (no SOFTDIRTY_CAP_REGROWN), and probe's "
		       "reason says what it cannot see: \"%s\"", be->name,
		       be->reason);
	}
	munmap(q, (N + G) * PG);
}

static void scen_brk(const struct td_backend *be, struct softdirty *sd)
{
	enum { G = 16 };
	uintptr_t old, s, e;
	uint8_t pf[G], isnew[G], may[G];
	long r;
	size_t n;

	old = (uintptr_t)sbrk(0);
	do_reset(sd);
	if (sbrk(G * PG) == (void *)-1) {
		tap_skip("sbrk failed", "%s: brk growth is dirty", be->name);
		return;
	}
	s = (old + PG - 1) & ~(uintptr_t)(PG - 1);
	e = (old + G * PG) & ~(uintptr_t)(PG - 1);
	n = (e - s) / PG;
	memset(isnew, 1, n);
	memset(may, 1, n);
	r = td_collect_region(sd, (void *)s, n, 0, pf);
	if (r < 0)
		tap_ok(false, "%s: brk: collect failed", be->name);
	else
		td_check_pages(be, "brk growth (sbrk) is dirty", (void *)s, n,
			       pf, NULL, isnew, may);
}

static void scen_dontneed(const struct td_backend *be, struct softdirty *sd)
{
	enum { N = 4 };
	char *p = td_mmap(N * PG);
	uint64_t e0 = 0, e1 = 0, raw[N];
	uint64_t ent[N];
	long r;

	wr_pages(p, N);
	do_reset(sd);
	if (madvise(p, PG, MADV_DONTNEED))
		tap_bail("madvise: %s", strerror(errno));
	r = softdirty_pagemap(sd, (uint64_t)(uintptr_t)p, ent, N);
	if (r != N) {
		tap_ok(false, "%s: MADV_DONTNEED: softdirty_pagemap returned %ld",
		       be->name, r);
		munmap(p, N * PG);
		return;
	}
	e0 = ent[0];
	e1 = ent[1];
	tap_diag("%s: zapped page entry %#" PRIx64 ", clean page entry %#"
		 PRIx64, be->name, e0, e1);
	tap_ok(!(e0 & SOFTDIRTY_PM_PRESENT),
	       "%s: MADV_DONTNEED page: not present (bit 63 clear)", be->name);
	if (td_exact(be))
		tap_ok((e1 & SOFTDIRTY_PM_PRESENT) &&
		       !(e1 & SOFTDIRTY_PM_SOFT_DIRTY),
		       "%s: clean present page: bit 63 set, bit 55 clear",
		       be->name);
	else
		tap_ok(e1 & SOFTDIRTY_PM_PRESENT,
		       "%s: clean present page: bit 63 set (bit 55 %d: superset "
		       "backend)", be->name, !!(e1 & SOFTDIRTY_PM_SOFT_DIRTY));
	r = td_pagemap((uint64_t)(uintptr_t)p, raw, N);
	tap_ok(r == N && !(raw[0] & SOFTDIRTY_PM_PRESENT) &&
	       (raw[1] & SOFTDIRTY_PM_PRESENT),
	       "%s: /proc/self/pagemap agrees on presence", be->name);
	munmap(p, N * PG);
}

static void run(const struct td_backend *be, void *ctx)
{
	struct softdirty *sd = td_open(be->name);

	(void)ctx;
	if (strcmp(softdirty_backend(sd), be->name))
		tap_diag("opened %s, got %s", be->name, softdirty_backend(sd));
	scen_rounds(be, sd);
	scen_new_mapping(be, sd);
	scen_remap_same_addr(be, sd);
	scen_thp(be, sd);
	scen_mprotect(be, sd);
	scen_mremap_move(be, sd, false);
	scen_mremap_move(be, sd, true);
	scen_mremap_grow(be, sd);
	scen_brk(be, sd);
	scen_dontneed(be, sd);
	softdirty_close(sd);
	tap_ok(!write_faults, "%s: no write to a writable page faulted (%lu "
	       "did)", be->name, write_faults);
	write_faults = 0;
}

int main(int argc, char **argv)
{
	(void)argc;
	tap_init(argv[0]);
	td_catch_faults();
	td_for_each_backend("kernel selftest scenarios", run, NULL);
	return tap_done();
}
