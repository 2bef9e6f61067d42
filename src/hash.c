// SPDX-License-Identifier: MIT
/*
 * The "hash" backend: a 64-bit digest (XXH3, seeded at random per tracker)
 * of every present page, read with process_vm_readv.  A collect reports the
 * pages whose digest changed: it sees every change, whoever made it (the
 * process, the kernel, another process through shared memory, DMA), but not
 * a write of identical bytes.  No write-protection, no faults, any kernel.
 *
 * The digests live in one array of (page, digest) sorted by address, for
 * present (or swapped) pages only, so memory follows present pages, not
 * virtual size.  Present pages are found with PAGEMAP_SCAN where the kernel
 * has it (holes cost nothing), else by reading the pagemap.
 *
 * A collect with reset reads each page once, compares and keeps the new
 * digest: a write landing after the read changes the page again and is
 * seen by the next collect, so nothing is lost.  The new digests of the
 * walked part are built aside and spliced in at the end, so an error
 * leaves the old state whole and a full vector resets only
 * [start, walk_end).
 *
 * Pages we could not read (no PROT_READ, or process_vm_readv refused the
 * page) get the digest DIGEST_UNK, which never matches: they are reported
 * again once readable.
 *
 * Rule 2 (new regions) has no kernel marker here: besides sd->known, the
 * identity of each mapping at the reset (shared, inode, file offset) is
 * kept, so a different mapping at a known address is NEW.  An anonymous
 * private region unmapped and mapped again in the same place cannot be
 * told apart; its pages read as before (zeros), so no contents are missed.
 * A change inside a transparent huge page reports all of it, as the
 * kernel's PMD bit does.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>
#if defined(__x86_64__) || defined(__i386__)
/*
 * libxxhash's run-time choice of SSE2/AVX2/AVX-512 (2-3x the SSE2 speed).
 * Weak: Debian's shared library has it, its static archive does not.
 */
#define XXH_DISPATCH_DISABLE_REPLACE
#include <xxh_x86dispatch.h>
#pragma weak XXH3_64bits_withSeed_dispatch
#define HAVE_DISPATCH	1
#endif

#include "internal.h"
#include "uapi.h"

/* pages per flush: a whole huge page, so its verdict is taken at once */
#define BATCH_PAGES	512
/* pages per process_vm_readv: 256 KiB, hashed while still in L2 */
#define READ_PAGES	64
#define BATCH_ITEMS	(2 * BATCH_PAGES)
#define HUGE_SZ		(2ULL << 20)
#define SCAN_VEC	512
#define PM_CHUNK	8192
#define DIGEST_UNK	UINT64_MAX

struct hent {
	uint64_t page;
	uint64_t digest;
};

/*
 * What a mapping is, as far as /proc/PID/maps tells: a page of [start, end)
 * whose mapping says otherwise now was unmapped and mapped again since the
 * last reset (its absent pages may read differently: zeros, another file).
 */
struct ident {
	uint64_t start, end;
	uint64_t offset;	/* file offset of start (0: anonymous) */
	uint64_t inode;
	bool shared;
};

/* One page of the walk: present now, known at the last reset, or both. */
struct item {
	uint64_t page;
	uint64_t old;
	uint64_t d;		/* digest now */
	uint32_t slot;		/* buffer slot when read */
	uint8_t flags;
	uint8_t report;		/* SOFTDIRTY_RANGE_* */
};

enum {
	IT_OLD = 1 << 0,	/* had a digest at the last reset */
	IT_PRESENT = 1 << 1,	/* present or swapped now */
	IT_ZERO = 1 << 2,	/* maps the shared zero page */
	IT_READ = 1 << 3,	/* has a slot in the read buffer */
	IT_HUGE = 1 << 4,	/* in a transparent huge page */
};

struct hash_priv {
	bool scan;		/* PAGEMAP_SCAN works */
	uint64_t seed;
	uint64_t zero_digest;
	struct hent *tab;	/* digests at the last reset, by address */
	size_t n, cap;
	struct hent *nt;	/* scratch: new digests of the walked part */
	size_t nn, ncap;
	struct ident *ids;	/* the mappings at the last reset, by address */
	size_t nids;
	struct item items[BATCH_ITEMS];
	size_t nitems, nslots;
	uint64_t slot_page[BATCH_PAGES];
	bool failed[BATCH_PAGES];
	struct iovec riov[READ_PAGES];
	struct page_region vec[SCAN_VEC];
	uint64_t pm[PM_CHUNK];
	unsigned char *buf;	/* READ_PAGES pages */
};

/* Present-page iterator over [pos, end). */
struct pres {
	uint64_t pos, end;
	size_t i, n;		/* PAGEMAP_SCAN: vec[i..n) pending */
	uint64_t base;		/* pagemap: address of pm[0] */
	size_t pi, pn;		/* pagemap: pm[pi..pn) pending */
};

struct walk {
	struct softdirty *sd;
	struct hash_priv *p;
	struct sd_out *o;
	const struct sd_vma *vma;
	bool reset;
	size_t ti;		/* first entry of p->tab not yet passed */
	uint64_t huge_blk;	/* huge page being queued, or 1 */
};

static uint64_t digest(const struct hash_priv *p, const void *page)
{
	uint64_t h;

#ifdef HAVE_DISPATCH
	if (XXH3_64bits_withSeed_dispatch)
		h = XXH3_64bits_withSeed_dispatch(page, PAGE_SZ, p->seed);
	else
#endif
		h = XXH3_64bits_withSeed(page, PAGE_SZ, p->seed);

	return h == DIGEST_UNK ? h - 1 : h;
}

static size_t tab_lower_bound(const struct hent *t, size_t n, uint64_t addr)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (t[mid].page < addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static MUST_CHECK int reserve(struct hent **t, size_t *cap, size_t n)
{
	struct hent *nt;
	size_t c = *cap ? *cap : 1024;

	if (n <= *cap)
		return 0;
	while (c < n)
		c *= 2;
	nt = realloc(*t, c * sizeof(*nt));
	if (!nt)
		return -ENOMEM;
	*t = nt;
	*cap = c;
	return 0;
}


static MUST_CHECK int pres_scan_fill(struct walk *w, struct pres *it)
{
	struct pm_scan_arg a = {
		.size = sizeof(a),
		.start = it->pos,
		.end = it->end,
		.vec = (uintptr_t)w->p->vec,
		.vec_len = SCAN_VEC,
		.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
		.return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED |
			       PAGE_IS_PFNZERO | PAGE_IS_HUGE,
	};
	long r = sd_pm_scan(w->sd->pagemap_fd, &a);

	if (r < 0)
		return (int)r;
	if (a.walk_end <= it->pos && !r)
		return -EIO;
	it->i = 0;
	it->n = (size_t)r;
	it->pos = a.walk_end;
	return 0;
}

static MUST_CHECK int pres_pm_fill(struct walk *w, struct pres *it)
{
	size_t n = MIN((size_t)((it->end - it->pos) / PAGE_SZ),
		       (size_t)PM_CHUNK);
	ssize_t got = sd_pread_full(w->sd->pagemap_fd, w->p->pm, n * 8,
				    (off_t)(it->pos / PAGE_SZ * 8));

	if (got < 0)
		return (int)got;
	if ((size_t)got < n * 8)
		return -EIO;
	it->base = it->pos;
	it->pi = 0;
	it->pn = n;
	it->pos += n * PAGE_SZ;
	return 0;
}

/*
 * Next run of present (or swapped) pages: 1 and [*s, *e) with its IT_ZERO
 * and IT_HUGE flags in *kind, 0 at the end, or -errno.
 */
static MUST_CHECK int pres_next(struct walk *w, struct pres *it, uint64_t *s,
				uint64_t *e, uint8_t *kind)
{
	const uint64_t want = SOFTDIRTY_PM_PRESENT | SOFTDIRTY_PM_SWAPPED;
	struct hash_priv *p = w->p;
	size_t j;
	int err;

	if (p->scan) {
		while (it->i == it->n) {
			if (it->pos >= it->end)
				return 0;
			err = pres_scan_fill(w, it);
			if (err)
				return err;
		}
		*s = p->vec[it->i].start;
		*e = p->vec[it->i].end;
		*kind = ((p->vec[it->i].categories & PAGE_IS_PFNZERO) ?
			 IT_ZERO : 0) |
			((p->vec[it->i].categories & PAGE_IS_HUGE) ?
			 IT_HUGE : 0);
		it->i++;
		return 1;
	}
	for (;;) {
		while (it->pi < it->pn && !(p->pm[it->pi] & want))
			it->pi++;
		if (it->pi < it->pn)
			break;
		if (it->pos >= it->end)
			return 0;
		err = pres_pm_fill(w, it);
		if (err)
			return err;
	}
	for (j = it->pi; j < it->pn && (p->pm[j] & want); j++)
		;
	*s = it->base + it->pi * PAGE_SZ;
	*e = it->base + j * PAGE_SZ;
	*kind = 0;
	it->pi = j;
	return 1;
}

/*
 * Read slots [from, to) into the buffer (slot from at its start); a page
 * the kernel refuses is marked failed.
 */
static MUST_CHECK int read_slots(struct walk *w, size_t from, size_t to)
{
	struct hash_priv *p = w->p;
	size_t pos = from, i;

	while (pos < to) {
		struct iovec local = {
			.iov_base = p->buf + (pos - from) * PAGE_SZ,
			.iov_len = (to - pos) * PAGE_SZ,
		};
		size_t nr = 0;
		ssize_t r;

		for (i = pos; i < to; i++) {
			if (nr && (uint64_t)(uintptr_t)p->riov[nr - 1].iov_base +
				  p->riov[nr - 1].iov_len == p->slot_page[i]) {
				p->riov[nr - 1].iov_len += PAGE_SZ;
				continue;
			}
			p->riov[nr].iov_base = (void *)(uintptr_t)p->slot_page[i];
			p->riov[nr].iov_len = PAGE_SZ;
			nr++;
		}
		r = process_vm_readv(w->sd->pid, &local, 1, p->riov, nr, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno != EFAULT)
			return -errno;
		/* stopped at an unreadable page (unmapped meanwhile, VM_IO) */
		pos += r < 0 ? 0 : (size_t)r / PAGE_SZ;
		if (pos < to)
			p->failed[pos++] = true;
	}
	return 0;
}

static MUST_CHECK int store(struct hash_priv *p, uint64_t page, uint64_t d)
{
	int err = reserve(&p->nt, &p->ncap, p->nn + 1);

	if (err)
		return err;
	p->nt[p->nn++] = (struct hent){ page, d };
	return 0;
}

/* What to report for one page (0: unchanged). */
static uint64_t judge(const struct walk *w, const struct item *it,
		      uint64_t d)
{
	const struct sd_vma *v = w->vma;
	bool has_old = it->flags & IT_OLD;

	if (!(it->flags & IT_PRESENT))
		/* dropped (MADV_DONTNEED, swapped-less reclaim): now zeros */
		return has_old ? SOFTDIRTY_RANGE_WRITTEN : 0;
	if (d == DIGEST_UNK) {
		if ((v->prot & PROT_WRITE) ||
		    (has_old && it->old != DIGEST_UNK))
			return SOFTDIRTY_RANGE_UNTRACKED;
		return 0;
	}
	if (!has_old) {
		/* an absent private anonymous page read as zeros */
		if (!v->inode && !v->shared && d == w->p->zero_digest)
			return 0;
		return SOFTDIRTY_RANGE_WRITTEN;
	}
	return it->old != d ? SOFTDIRTY_RANGE_WRITTEN : 0;
}

/*
 * A transparent huge page is reported whole, as the kernel reports its PMD
 * bit: a change to one of its pages marks all its pages in the batch
 * (walk_range() keeps a huge page in one batch).
 */
static void widen_huge(struct hash_priv *p)
{
	size_t i = 0, j, k;

	while (i < p->nitems) {
		uint64_t blk = p->items[i].page & ~(HUGE_SZ - 1);
		bool any = false;

		if (!(p->items[i].flags & IT_HUGE)) {
			i++;
			continue;
		}
		for (j = i; j < p->nitems && (p->items[j].flags & IT_HUGE) &&
		     (p->items[j].page & ~(HUGE_SZ - 1)) == blk; j++)
			any |= p->items[j].report != 0;
		for (k = i; any && k < j; k++)
			if (!p->items[k].report)
				p->items[k].report = SOFTDIRTY_RANGE_WRITTEN;
		i = j;
	}
}

/*
 * Hash the queued pages, report changes (@compare) and keep the new
 * digests (reset).  Stops at the first page that does not fit in the
 * output, before storing it, so the store covers exactly what was walked.
 */
static MUST_CHECK int flush(struct walk *w, bool compare)
{
	struct hash_priv *p = w->p;
	size_t i, rbase = 0, rend = 0;
	int err = 0;

	memset(p->failed, 0, p->nslots * sizeof(p->failed[0]));
	for (i = 0; !err && i < p->nitems; i++) {
		struct item *it = &p->items[i];

		/* read a cache-sized piece, hash it while it is hot */
		if ((it->flags & IT_READ) && it->slot >= rend) {
			rbase = it->slot;
			rend = MIN(p->nslots, rbase + READ_PAGES);
			err = read_slots(w, rbase, rend);
			if (err)
				break;
		}
		it->d = DIGEST_UNK;
		if (it->flags & IT_ZERO)
			it->d = p->zero_digest;
		else if ((it->flags & IT_READ) && !p->failed[it->slot])
			it->d = digest(p, p->buf +
					  (size_t)(it->slot - rbase) * PAGE_SZ);
		it->report = compare ? (uint8_t)judge(w, it, it->d) : 0;
	}
	if (!err && compare)
		widen_huge(p);
	for (i = 0; !err && i < p->nitems; i++) {
		const struct item *it = &p->items[i];

		if (it->report)
			err = sd_out_add(w->o, it->page, it->page + PAGE_SZ,
					 it->report);
		if (!err && w->reset && (it->flags & IT_PRESENT))
			err = store(p, it->page, it->d);
	}
	p->nitems = 0;
	p->nslots = 0;
	return err;
}

/*
 * Walk [a, b) of w->vma: the union of the pages present now and the pages
 * with a digest.  @compare: report changes; otherwise only store (reset).
 */
static MUST_CHECK int walk_range(struct walk *w, uint64_t a, uint64_t b,
				 bool compare)
{
	struct hash_priv *p = w->p;
	struct pres it = { .pos = a, .end = b };
	bool readable = w->vma->prot & PROT_READ;
	uint64_t rs = b, re = b;
	uint8_t kind = 0;
	int err;

	w->ti += tab_lower_bound(p->tab + w->ti, p->n - w->ti, a);
	w->huge_blk = 1;
	err = pres_next(w, &it, &rs, &re, &kind);
	if (err <= 0)
		rs = re = b;
	if (err < 0)
		return err;
	for (;;) {
		uint64_t s = w->ti < p->n ? p->tab[w->ti].page : b;
		uint64_t x = MIN(MIN(rs, s), b);
		struct item *item;

		if (x >= b)
			break;
		/* a huge page starts: it must fit whole in this batch */
		if (rs == x && (kind & IT_HUGE) &&
		    (x & ~(HUGE_SZ - 1)) != w->huge_blk) {
			w->huge_blk = x & ~(HUGE_SZ - 1);
			if (p->nslots + HUGE_SZ / PAGE_SZ > BATCH_PAGES ||
			    p->nitems + HUGE_SZ / PAGE_SZ > BATCH_ITEMS) {
				err = flush(w, compare);
				if (err)
					return err;
			}
		}
		item = &p->items[p->nitems++];
		*item = (struct item){ .page = x };
		if (s == x) {
			item->flags |= IT_OLD;
			item->old = p->tab[w->ti++].digest;
		}
		if (rs == x) {
			item->flags |= IT_PRESENT | (kind & IT_HUGE);
			if (kind & IT_ZERO) {
				item->flags |= IT_ZERO;
			} else if (readable) {
				item->flags |= IT_READ;
				item->slot = (uint32_t)p->nslots;
				p->slot_page[p->nslots++] = x;
			}
			rs += PAGE_SZ;
			if (rs >= re) {
				err = pres_next(w, &it, &rs, &re, &kind);
				if (err <= 0)
					rs = re = b;
				if (err < 0)
					return err;
			}
		}
		if (p->nslots == BATCH_PAGES || p->nitems == BATCH_ITEMS) {
			err = flush(w, compare);
			if (err)
				return err;
		}
	}
	return flush(w, compare);
}

/* A piece whose mapping is the same as at the last reset. */
static int tracked_piece(struct walk *w, uint64_t a, uint64_t b)
{
	const struct sd_vma *v = w->vma;
	int err;

	if (!(v->prot & PROT_READ) && (v->prot & PROT_WRITE)) {
		/* writable but unreadable: cannot be hashed */
		err = sd_out_add(w->o, a, b, SOFTDIRTY_RANGE_UNTRACKED);
		if (!err && w->reset)
			err = walk_range(w, a, b, false);
		return err;
	}
	return walk_range(w, a, b, true);
}

static bool ident_same(const struct ident *id, const struct sd_vma *v,
		       uint64_t x)
{
	if (id->shared != v->shared || id->inode != v->inode)
		return false;
	/* anonymous offsets are not shown (always 0) */
	return !v->inode ||
	       id->offset + (x - id->start) == v->offset + (x - v->start);
}

/*
 * Mapped at the last reset: split by whether the mapping is still the same
 * one; a different one (munmap + mmap, MAP_FIXED) is new.
 */
static int known_piece(void *ctx, uint64_t a, uint64_t b)
{
	struct walk *w = ctx;
	struct hash_priv *p = w->p;
	size_t lo = 0, hi = p->nids;
	int err = 0;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (p->ids[mid].end <= a)
			lo = mid + 1;
		else
			hi = mid;
	}
	while (!err && a < b) {
		const struct ident *id = lo < p->nids ? &p->ids[lo] : NULL;
		uint64_t y;
		bool same = false;

		if (id && id->start <= a) {
			y = MIN(b, id->end);
			same = ident_same(id, w->vma, a);
			lo++;
		} else {
			y = id ? MIN(b, id->start) : b;
		}
		if (same) {
			err = tracked_piece(w, a, y);
		} else {
			err = sd_out_add(w->o, a, y, SOFTDIRTY_RANGE_NEW);
			if (!err && w->reset)
				err = walk_range(w, a, y, false);
		}
		a = y;
	}
	return err;
}

static MUST_CHECK int ident_add(struct ident **v, size_t *n, size_t *cap,
				struct ident id)
{
	if (id.start >= id.end)
		return 0;
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 64;
		struct ident *nv = realloc(*v, c * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		*v = nv;
		*cap = c;
	}
	(*v)[(*n)++] = id;
	return 0;
}

/*
 * After a reset of [start, end) the mappings there are the current ones:
 * the new list in *out (*out_n entries), to be committed by the caller.
 */
static MUST_CHECK int ident_build(struct softdirty *sd, uint64_t start,
				  uint64_t end, struct ident **out,
				  size_t *out_n)
{
	struct hash_priv *p = sd->priv;
	struct ident *nv = NULL;
	size_t n = 0, cap = 0, i;
	int err = 0;

	for (i = 0; !err && i < p->nids && p->ids[i].start < start; i++) {
		struct ident id = p->ids[i];

		id.end = MIN(id.end, start);
		err = ident_add(&nv, &n, &cap, id);
	}
	for (i = 0; !err && i < sd->maps.n; i++) {
		const struct sd_vma *v = &sd->maps.v[i];
		uint64_t a = MAX(v->start, start), b = MIN(v->end, end);

		if (a < b)
			err = ident_add(&nv, &n, &cap, (struct ident){
				a, b, v->offset + (a - v->start), v->inode,
				v->shared });
	}
	for (i = 0; !err && i < p->nids; i++) {
		struct ident id = p->ids[i];

		if (id.end <= end)
			continue;
		if (id.start < end) {
			id.offset += end - id.start;
			id.start = end;
		}
		err = ident_add(&nv, &n, &cap, id);
	}
	if (err) {
		free(nv);
		return err;
	}
	*out = nv;
	*out_n = n;
	return 0;
}

static int new_piece(void *ctx, uint64_t a, uint64_t b)
{
	struct walk *w = ctx;

	/* already reported NEW: only the digests are needed */
	return w->reset ? walk_range(w, a, b, false) : 0;
}

/* p->tab[start, done) := p->nt, with room reserved by splice_prepare() */
static void splice_digests(struct hash_priv *p, uint64_t start, uint64_t done)
{
	size_t lo = tab_lower_bound(p->tab, p->n, start);
	size_t hi = tab_lower_bound(p->tab, p->n, done);

	while (p->nn && p->nt[p->nn - 1].page >= done)
		p->nn--;
	if (lo == 0 && hi == p->n) {
		struct hent *t = p->tab;
		size_t c = p->cap;

		p->tab = p->nt;
		p->cap = p->ncap;
		p->n = p->nn;
		p->nt = t;
		p->ncap = c;
		p->nn = 0;
		return;
	}
	memmove(p->tab + lo + p->nn, p->tab + hi,
		(p->n - hi) * sizeof(*p->tab));
	memcpy(p->tab + lo, p->nt, p->nn * sizeof(*p->tab));
	p->n = lo + p->nn + (p->n - hi);
	p->nn = 0;
}

static MUST_CHECK int splice_prepare(struct hash_priv *p, uint64_t start,
				     uint64_t done)
{
	size_t lo = tab_lower_bound(p->tab, p->n, start);
	size_t hi = tab_lower_bound(p->tab, p->n, done);

	return reserve(&p->tab, &p->cap, lo + p->nn + (p->n - hi));
}

static int hash_collect(struct softdirty *sd, uint64_t start, uint64_t end,
			struct sd_out *o, bool reset)
{
	struct hash_priv *p = sd->priv;
	struct walk w = { .sd = sd, .p = p, .o = o, .reset = reset };
	struct ident *ids = NULL;
	size_t i, nids = 0;
	uint64_t done;
	int err;

	err = sd_refresh_maps_range(sd, start, end);
	if (err)
		return err;
	p->nn = 0;
	p->nitems = p->nslots = 0;
	for (i = 0; !err && i < sd->maps.n; i++) {
		const struct sd_vma *v = &sd->maps.v[i];
		uint64_t a = MAX(v->start, start), b = MIN(v->end, end);

		if (a >= b || sd_vma_special(v))
			continue;
		w.vma = v;
		err = sd_emit_new_split(o, &sd->known, a, b, known_piece,
					new_piece, &w);
	}
	if (err && err != -ENOSPC)
		return err;
	if (!reset)
		return err;
	done = o->full ? o->walk_end : end;
	/*
	 * Whatever can fail comes first: an error must leave the digests as
	 * they were, since the caller drops the output.
	 */
	err = splice_prepare(p, start, done);
	if (!err)
		err = ident_build(sd, start, done, &ids, &nids);
	if (err)
		return err;
	splice_digests(p, start, done);
	free(p->ids);
	p->ids = ids;
	p->nids = nids;
	sd_known_update(sd, start, done);
	return o->full ? -ENOSPC : 0;
}

static bool scan_works(int pagemap_fd)
{
	struct page_region r;
	struct pm_scan_arg a = {
		.size = sizeof(a),
		.start = 0,
		.end = PAGE_SZ,
		.vec = (uintptr_t)&r,
		.vec_len = 1,
		.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
		.return_mask = PAGE_IS_PRESENT,
	};

	return sd_pm_scan(pagemap_fd, &a) >= 0;
}

static uint64_t random_seed(void)
{
	uint64_t s;
	struct timespec ts;

	if (getrandom(&s, sizeof(s), GRND_NONBLOCK) == sizeof(s))
		return s;
	/* no entropy yet: still unpredictable enough against accidents */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^
	       ((uint64_t)getpid() << 16) ^ (uint64_t)(uintptr_t)&s;
}

static int hash_open(struct softdirty *sd)
{
	/* the kernel writes into both (pagemap, process_vm_readv) */
	struct hash_priv *p = sd_kmem_alloc(sizeof(*p));

	if (!p)
		return -ENOMEM;
	p->buf = sd_kmem_alloc(READ_PAGES * PAGE_SZ);
	if (!p->buf) {
		sd_kmem_free(p, sizeof(*p));
		return -ENOMEM;
	}
	p->scan = scan_works(sd->pagemap_fd);
	/* a random seed: collisions cannot be crafted in advance */
	p->seed = random_seed();
	memset(p->buf, 0, PAGE_SZ);
	p->zero_digest = digest(p, p->buf);
	sd->priv = p;
	return 0;
}

static void hash_close(struct softdirty *sd)
{
	struct hash_priv *p = sd->priv;

	if (!p)
		return;
	free(p->tab);
	free(p->nt);
	free(p->ids);
	sd_kmem_free(p->buf, READ_PAGES * PAGE_SZ);
	sd_kmem_free(p, sizeof(*p));
	sd->priv = NULL;
}

/* Hash a page through process_vm_readv, change it, expect a new digest. */
static void hash_probe(struct softdirty_probe_result *r)
{
	struct hash_priv p = { .seed = 1 };
	unsigned char *m, *buf;
	struct iovec local, remote;
	uint64_t d1, d2;
	int err = 0;

	r->status = -ENOTSUP;
	m = mmap(NULL, 2 * PAGE_SZ, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED) {
		r->status = -errno;
		snprintf(r->reason, sizeof(r->reason), "mmap: %s",
			 strerror(errno));
		return;
	}
	buf = m + PAGE_SZ;
	memset(m, 0x5a, PAGE_SZ);
	local = (struct iovec){ buf, PAGE_SZ };
	remote = (struct iovec){ m, PAGE_SZ };
	if (process_vm_readv(getpid(), &local, 1, &remote, 1, 0) != PAGE_SZ)
		goto fail;
	d1 = digest(&p, buf);
	m[100] ^= 1;
	if (process_vm_readv(getpid(), &local, 1, &remote, 1, 0) != PAGE_SZ)
		goto fail;
	d2 = digest(&p, buf);
	munmap(m, 2 * PAGE_SZ);
	if (d1 == d2) {
		snprintf(r->reason, sizeof(r->reason),
			 "page digest did not change with the contents");
		return;
	}
	r->status = 0;
	r->caps = sd_backend_hash.caps;
	/* huge pages are found with PAGEMAP_SCAN's PAGE_IS_HUGE only */
	{
		int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

		if (pm < 0 || !scan_works(pm))
			r->caps &= ~SOFTDIRTY_CAP_HUGE_PAGES;
		if (pm >= 0)
			close(pm);
	}
	snprintf(r->reason, sizeof(r->reason),
		 "reports changed contents: sees every writer (kernel, other processes, DMA) but not a write of identical bytes; each collect reads all present pages");
	return;
fail:
	err = errno ? errno : EIO;
	munmap(m, 2 * PAGE_SZ);
	r->status = -err;
	if (err == ENOSYS)
		snprintf(r->reason, sizeof(r->reason),
			 "process_vm_readv unavailable (seccomp, or kernel without CONFIG_CROSS_MEMORY_ATTACH)");
	else if (err == EPERM)
		snprintf(r->reason, sizeof(r->reason),
			 "process_vm_readv refused (seccomp, YAMA or LSM)");
	else
		snprintf(r->reason, sizeof(r->reason), "process_vm_readv: %s",
			 strerror(err));
}

const struct sd_backend sd_backend_hash = {
	.name = "hash",
	.id = SOFTDIRTY_BACKEND_HASH,
	.caps = SOFTDIRTY_CAP_SELF | SOFTDIRTY_CAP_REMOTE |
		SOFTDIRTY_CAP_KERNEL_WRITES | SOFTDIRTY_CAP_CONTENTS | SOFTDIRTY_CAP_REGROWN |
		SOFTDIRTY_CAP_PROT_CHANGES | SOFTDIRTY_CAP_HUGE_PAGES,
	.probe = hash_probe,
	.open = hash_open,
	.close = hash_close,
	.collect = hash_collect,
};
