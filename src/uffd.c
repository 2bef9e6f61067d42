// SPDX-License-Identifier: MIT
/*
 * The "uffd" backend: userfaultfd write-protection in asynchronous mode
 * (UFFD_FEATURE_WP_ASYNC, Linux 6.7+) read and re-armed atomically by the
 * PAGEMAP_SCAN ioctl.  A write to a protected page is resolved inside the
 * kernel (no thread of ours waits on the fd) by clearing the PTE's uffd-wp
 * bit; PAGEMAP_SCAN with PM_SCAN_WP_MATCHING reports the pages whose bit is
 * clear and sets it again under the page table lock, so no write falls
 * between the read and the reset.
 *
 * Registration is per VMA and does not follow munmap+mmap, mremap or brk
 * growth, so every collect looks for unregistered VMAs (PAGE_IS_WPALLOWED
 * clear) and reports them as new (rule 2).  Scans never use
 * PM_SCAN_CHECK_WPASYNC: it fails with EPERM after having reset the part
 * before the offending VMA, losing those writes.  A VMA that appears
 * between our look and the scan is skipped by the scan and found
 * unregistered by the next collect.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "inject.h"
#include "internal.h"
#include "uapi.h"

#define HUGE_SZ		(2ULL << 20)
#define SCAN_VEC	512

/* The features we need; WP_UNPOPULATED makes anonymous VMAs WP-allowed. */
#define WANT_FEATURES	(UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED)
#define OPT_FEATURES	UFFD_FEATURE_WP_HUGETLBFS_SHMEM

struct uffd_priv {
	int fd;
	/* ranges we registered: unregistered again at close */
	struct sd_rset mine;
	/* ranges whose VMA refused registration (EBUSY: another uffd) */
	struct sd_rset bad;
	/*
	 * 2 MiB blocks armed while mapped by a huge PMD: the first write
	 * after a reset splits the PMD under uffd-wp, where the kernel's
	 * soft-dirty bit is per PMD and reports all 512 pages; so do we,
	 * and for any other split since (scan_range()), until each page
	 * of the block has been reset once (a walk may stop inside it).
	 * A THP is armed huge either when its region is first armed or when
	 * a reset re-arms a block that was written whole (a THP fault), so
	 * only those are looked at: a census of every PMD at every reset
	 * would walk every PTE.
	 */
	struct sd_rset huge;
	struct sd_rset pmds;	/* scratch: blocks mapped huge now */
	struct sd_rset unreg;	/* scratch: unregistered ranges now */
	/*
	 * Special mappings ([vdso], ...) at the last reset of each address,
	 * never reported: sd_uffd_wp_exact() must not take their pages for
	 * written ones.  special_ok is false while the set may be incomplete.
	 */
	struct sd_rset special;
	bool special_ok;
	struct page_region vec[SCAN_VEC];
	struct page_region cvec[64];	/* the census's own */
};

/*
 * pagemap's uffd-wp bit (57) of a page in a registered VMA is exactly what
 * PAGEMAP_SCAN's PAGE_IS_WRITTEN negates, and a moved page loses it
 * (Linux 6.13+: mremap() clears it with the registration).  Set by
 * uffd_probe() when both hold here.
 */
static bool wp_bit_exact;

static int sys_userfaultfd(int flags)
{
	return (int)syscall(SYS_userfaultfd, flags);
}

/* A userfaultfd, user-mode-only when that is all we may create. */
static int uffd_create(void)
{
	int fd = sys_userfaultfd(O_CLOEXEC | O_NONBLOCK);

	if (fd < 0 && errno == EPERM)
		fd = sys_userfaultfd(O_CLOEXEC | O_NONBLOCK |
				     UFFD_USER_MODE_ONLY);
	return fd < 0 ? -errno : fd;
}

/* UFFDIO_API may be called once per fd: ask on a throw-away fd first. */
static int uffd_features(uint64_t *features)
{
	struct uffdio_api api = { .api = UFFD_API };
	int fd = uffd_create(), err = 0;

	if (fd < 0)
		return fd;
	if (ioctl(fd, UFFDIO_API, &api))
		err = -errno;
	close(fd);
	*features = api.features;
	return err;
}

/* The UFFDIO_API handshake on @fd (closed on failure). */
static int uffd_api(int fd, uint64_t supported)
{
	struct uffdio_api api = {
		.api = UFFD_API,
		.features = WANT_FEATURES | (supported & OPT_FEATURES),
	};
	int err;

	if (fd < 0)
		return fd;
	if (ioctl(fd, UFFDIO_API, &api)) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

static void scan_args(struct pm_scan_arg *a, uint64_t start, uint64_t end,
		      struct page_region *vec, size_t len, bool wp)
{
	memset(a, 0, sizeof(*a));
	a->size = sizeof(*a);
	a->flags = wp ? PM_SCAN_WP_MATCHING : 0;
	a->start = start;
	a->end = end;
	a->vec = (uintptr_t)vec;
	a->vec_len = len;
	/*
	 * Exactly "written, report written": the kernel's fast path, which
	 * also reports (and re-arms) empty PTEs in existing page tables.
	 * That is what makes a page zapped, or unmapped and mapped again by
	 * an in-place mremap shrink and growth, show up: the PTE was armed
	 * at the reset, and now it is empty.
	 */
	a->category_mask = PAGE_IS_WRITTEN;
	a->return_mask = PAGE_IS_WRITTEN;
}

static int uffd_register(int fd, uint64_t start, uint64_t end)
{
	struct uffdio_register reg = {
		.range = { .start = start, .len = end - start },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};

	return ioctl(fd, UFFDIO_REGISTER, &reg) ? -errno : 0;
}

/* Unregistered pages of [a, b), which must lie within mapped memory. */
static int scan_unregistered(struct softdirty *sd, struct uffd_priv *p,
			     uint64_t a, uint64_t b)
{
	const struct pm_scan_arg masks = {
		.category_inverted = PAGE_IS_WPALLOWED,
		.category_mask = PAGE_IS_WPALLOWED,
		.return_mask = PAGE_IS_WPALLOWED,
	};

	return sd_pm_scan_rset(sd->pagemap_fd, a, b, &masks, p->vec,
			       MIN((size_t)SCAN_VEC, (b - a) / PAGE_SZ),
			       &p->unreg);
}

/*
 * The ranges of [start, end) in VMAs not registered with a WP-async
 * userfaultfd, into p->unreg.  The kernel refuses ranges beyond the user
 * address space, so scan runs of adjacent VMAs.
 */
static int find_unregistered(struct softdirty *sd, struct uffd_priv *p,
			     uint64_t start, uint64_t end)
{
	uint64_t a = 0, b = 0;
	size_t i;
	int err;

	sd_rset_clear(&p->unreg);
	for (i = 0; i <= sd->maps.n; i++) {
		const struct sd_vma *v = i < sd->maps.n ? &sd->maps.v[i] : NULL;
		uint64_t s = v ? MAX(v->start, start) : 0;
		uint64_t e = v ? MIN(v->end, end) : 0;

		if (v && (s >= e || sd_vma_special(v)))
			continue;
		if (v && s == b) {
			b = e;
			continue;
		}
		if (a < b) {
			err = scan_unregistered(sd, p, a, b);
			if (err)
				return err;
		}
		a = s;
		b = e;
	}
	return 0;
}

struct walk {
	struct softdirty *sd;
	struct uffd_priv *p;
	struct sd_out *o;
	const struct sd_vma *vma;
	uint64_t start, end;	/* the caller's range */
	uint64_t pos;		/* reported and reset up to here */
	bool reset;
};

/* Report [a, b) as written. */
static int emit_written(struct walk *w, uint64_t a, uint64_t b)
{
	struct sd_out *o = w->o;

	/* never go back over what was already reported (a split block) */
	if (o->n && o->vec[o->n - 1].end > a)
		a = o->vec[o->n - 1].end;
	if (a >= b)
		return 0;
	return sd_out_add(o, a, b, SOFTDIRTY_RANGE_WRITTEN);
}

/* Add the blocks of [a, b) mapped by a huge PMD right now to @out. */
static int huge_pmds(struct walk *w, uint64_t a, uint64_t b,
		     struct sd_rset *out)
{
	const struct pm_scan_arg masks = {
		.category_mask = PAGE_IS_HUGE,
		.return_mask = PAGE_IS_HUGE,
	};

	return sd_pm_scan_rset(w->sd->pagemap_fd, a, b, &masks, w->p->cvec,
			       sizeof(w->p->cvec) / sizeof(w->p->cvec[0]), out);
}

/*
 * Add the 2 MiB blocks of [a, b) mapped huge right now to p->huge (a huge
 * PMD always covers its whole aligned block).
 */
static int census(struct walk *w, uint64_t a, uint64_t b)
{
	a = (a + HUGE_SZ - 1) & ~(HUGE_SZ - 1);
	b &= ~(HUGE_SZ - 1);
	if (a >= b)
		return 0;
	return huge_pmds(w, a, b, &w->p->huge);
}

/*
 * Scan [a, b) of a registered VMA for written pages (re-protecting them
 * when resetting) and report them if @report.  The kernel is never given
 * more room than the caller's vector has left, so nothing it resets goes
 * unreported.  SCAN_VEC must stay at most 512: with a longer vector, 6.18
 * returns a stale walk_end after flushing its 512-entry buffer twice.
 */
static int scan_written(struct walk *w, uint64_t a, uint64_t b, bool report)
{
	struct uffd_priv *p = w->p;
	struct sd_out *o = w->o;
	struct pm_scan_arg arg;
	long r, i;
	int err;

	while (a < b) {
		/* n pages are at most n regions: no bigger kernel buffer */
		size_t room = MIN((size_t)SCAN_VEC, (b - a) / PAGE_SZ);

		if (report && !o->discard) {
			room = MIN(room, o->len - o->n);
			if (!room) {
				o->full = true;
				o->walk_end = a;
				return -ENOSPC;
			}
		}
		scan_args(&arg, a, b, p->vec, room, w->reset);
		r = sd_pm_scan(w->sd->pagemap_fd, &arg);
		if (r < 0)
			return (int)r;
		/*
		 * The kernel has reset these pages: from here on nothing may
		 * fail but a full vector, or their writes would be lost.
		 */
		for (i = 0; report && i < r; i++) {
			err = emit_written(w, p->vec[i].start, p->vec[i].end);
			if (err)
				return err;
		}
		/*
		 * A block written whole may be a THP faulted in since the
		 * reset, now re-armed as one PMD.  Best effort: failing, its
		 * next write is reported per page (only THP precision).
		 */
		for (i = w->reset ? 0 : r; i < r; i++)
			if (p->vec[i].end - p->vec[i].start >= HUGE_SZ)
				(void)!census(w, p->vec[i].start, p->vec[i].end);
		if (arg.walk_end <= a)
			return -EIO;
		a = arg.walk_end;
		if (report)
			w->pos = a;
	}
	return 0;
}

/*
 * Past this size a VMA is armed only where page tables hold something:
 * arming empty space installs uffd-wp markers, which allocates page tables
 * for all of it (16 MiB per 8 GiB of a sparse reservation, ASan's shadow is
 * terabytes).  A first write into a block left unarmed creates an unarmed
 * PTE, which reads as written: nothing is lost, but an empty block zapped
 * or shrunk and grown back there is not told from one never touched.
 */
#define SPARSE_VMA	(1ULL << 30)

/* scan_written() over the 2 MiB blocks of [a, b) that hold any page. */
static int scan_populated(struct walk *w, uint64_t a, uint64_t b, bool report)
{
	struct uffd_priv *p = w->p;
	struct pm_scan_arg arg;
	uint64_t cur = a;
	long r;
	int err;

	while (cur < b) {
		memset(&arg, 0, sizeof(arg));
		arg.size = sizeof(arg);
		arg.start = cur;
		arg.end = b;
		arg.vec = (uintptr_t)p->cvec;
		arg.vec_len = 1;
		arg.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
		arg.return_mask = PAGE_IS_PRESENT;
		r = sd_pm_scan(w->sd->pagemap_fd, &arg);
		if (r < 0)
			return (int)r;
		if (!r)
			break;
		/* whole blocks, so empty PTEs next to the pages are armed too */
		a = MAX(cur, p->cvec[0].start & ~(HUGE_SZ - 1));
		cur = MIN(b, (p->cvec[0].end + HUGE_SZ - 1) & ~(HUGE_SZ - 1));
		err = scan_written(w, a, cur, report);
		if (err)
			return err;
	}
	if (report)
		w->pos = b;
	return 0;
}

static int scan_plain(struct walk *w, uint64_t a, uint64_t b, bool report)
{
	if (w->vma->end - w->vma->start > SPARSE_VMA)
		return scan_populated(w, a, b, report);
	return scan_written(w, a, b, report);
}

/*
 * Which blocks of [a, b) (block-aligned) are mapped by a huge PMD now, into
 * p->pmds: one scan for a run of remembered blocks, not one per block.
 * Failing, none is: each is taken as split, a superset.
 */
static void pmds_now(struct walk *w, uint64_t a, uint64_t b)
{
	struct uffd_priv *p = w->p;

	sd_rset_clear(&p->pmds);
	if (huge_pmds(w, a, b, &p->pmds))
		sd_rset_clear(&p->pmds);
}

/* Is the 2 MiB block at @blk still mapped by one huge PMD (pmds_now())? */
static bool still_huge(struct walk *w, uint64_t blk)
{
	const struct sd_rset *s = &w->p->pmds;
	size_t i = sd_rset_find(s, blk);

	/* a huge PMD covers its whole block, inside one VMA */
	if (blk < w->vma->start || blk + HUGE_SZ > w->vma->end)
		return false;
	return i < s->n && s->v[i].start <= blk && s->v[i].end >= blk + HUGE_SZ;
}

/*
 * Scan [a, b) and report what was written.  A block armed while mapped
 * huge and split since, written or not (MADV_DONTNEED or an mremap shrink
 * cutting into it, a VMA split), is reported whole: on x86 the split marks
 * every PTE of a dirty PMD soft-dirty (pte_mkdirty implies it), so the
 * kernel's bit 55 reports all of it after a reset.
 */
static int scan_range(struct walk *w, uint64_t a, uint64_t b, bool report)
{
	struct uffd_priv *p = w->p;
	uint64_t looked = 0;	/* p->pmds holds [.., looked) */
	int err;

	if (!report)
		return scan_plain(w, a, b, false);
	while (a < b) {
		size_t i = sd_rset_find(&p->huge, a);
		uint64_t blk, e;

		if (i == p->huge.n || p->huge.v[i].start >= b)
			return scan_plain(w, a, b, true);
		if (p->huge.v[i].start > a) {
			err = scan_plain(w, a, p->huge.v[i].start, true);
			if (err)
				return err;
			a = p->huge.v[i].start;
		}
		blk = a & ~(HUGE_SZ - 1);
		e = MIN(b, blk + HUGE_SZ);
		if (blk >= looked) {
			looked = (MIN(b, p->huge.v[i].end) + HUGE_SZ - 1) &
				 ~(HUGE_SZ - 1);
			pmds_now(w, blk, looked);
		}
		if (!still_huge(w, blk)) {
			err = emit_written(w, a, e);
			if (err)
				return err;
			/* then reset it; what it reports is already in */
			err = scan_plain(w, a, e, true);
			/*
			 * Only what was reset is per page from now on: a walk
			 * cut inside the block (a range or a full vector ends
			 * there) leaves the rest to be reported whole.  Best
			 * effort: kept, it is reported whole again.
			 */
			if (w->reset && w->pos > a)
				(void)!sd_rset_remove(&p->huge, a,
						      MIN(w->pos, e));
			if (err)
				return err;
		} else {
			/* the run of blocks still huge: one scan */
			while (e < b && e < looked &&
			       sd_rset_contains(&p->huge, e) && still_huge(w, e))
				e = MIN(b, e + HUGE_SZ);
			err = scan_plain(w, a, e, true);
			if (err)
				return err;
		}
		a = e;
	}
	return 0;
}

/* Register what is not yet registered in [a, b) and protect it all. */
static int arm(struct walk *w, uint64_t a, uint64_t b)
{
	struct uffd_priv *p = w->p;
	size_t i;
	int err;

	for (i = sd_rset_find(&p->unreg, a);
	     i < p->unreg.n && p->unreg.v[i].start < b; i++) {
		uint64_t s = MAX(a, p->unreg.v[i].start);
		uint64_t e = MIN(b, p->unreg.v[i].end);

		err = uffd_register(p->fd, s, e);
		if (err == -ENOMEM)
			return err;
		if (!err) {
			/*
			 * Best effort both: unrecorded, the range is only not
			 * unregistered explicitly at close (closing the fd
			 * does it), or reported untracked once more.
			 */
			(void)!sd_rset_add(&p->mine, s, e);
			(void)!sd_rset_remove(&p->bad, s, e);
		} else {
			/* another userfaultfd owns it, or it cannot be */
			err = sd_rset_add(&p->bad, s, e);
			if (err)
				return err;
		}
	}
	/* before protecting: a write after it may split what it counts */
	err = census(w, a, b);
	return err ? err : scan_range(w, a, b, false);
}

/* A piece of a VMA that was mapped at its last reset. */
static int known_piece(void *ctx, uint64_t a, uint64_t b)
{
	struct walk *w = ctx;
	struct uffd_priv *p = w->p;
	size_t i = sd_rset_find(&p->unreg, a);
	int err;

	while (a < b) {
		uint64_t c;

		if (i < p->unreg.n && p->unreg.v[i].start <= a) {
			size_t j = sd_rset_find(&p->bad, a);
			bool bad = j < p->bad.n && p->bad.v[j].start <= a;

			c = MIN(b, p->unreg.v[i].end);
			/* split where the refused part starts or ends */
			if (j < p->bad.n)
				c = MIN(c, bad ? p->bad.v[j].end : p->bad.v[j].start);
			if (c == p->unreg.v[i].end)
				i++;
			if (bad) {
				/* we could not register it: cannot watch */
				err = 0;
				if (w->vma->prot & PROT_WRITE)
					err = sd_out_add(w->o, a, c,
						SOFTDIRTY_RANGE_UNTRACKED);
			} else {
				/* replaced since the reset (munmap + mmap) */
				err = sd_out_add(w->o, a, c,
						 SOFTDIRTY_RANGE_NEW);
			}
			if (!err && w->reset)
				err = arm(w, a, c);
		} else {
			c = i < p->unreg.n ? MIN(b, p->unreg.v[i].start) : b;
			err = scan_range(w, a, c, true);
		}
		if (err)
			return err;
		a = c;
		w->pos = a;
	}
	return 0;
}

/* A piece of a VMA created, grown or moved since the reset: arm it. */
static int new_piece(void *ctx, uint64_t a, uint64_t b)
{
	struct walk *w = ctx;
	int err = arm(w, a, b);

	if (!err)
		w->pos = b;
	return err;
}

/* After a reset of [start, end): the special mappings there now. */
static void special_update(struct softdirty *sd, struct uffd_priv *p,
			   uint64_t start, uint64_t end)
{
	size_t i;
	int err = sd_rset_remove(&p->special, start, end);

	for (i = 0; !err && i < sd->maps.n; i++) {
		const struct sd_vma *v = &sd->maps.v[i];

		if (v->end > start && v->start < end && sd_vma_special(v))
			err = sd_rset_add(&p->special, MAX(v->start, start),
					  MIN(v->end, end));
	}
	/* a whole reset makes it complete again */
	if (err)
		p->special_ok = false;
	else if (!start && end >= SD_ADDR_MAX)
		p->special_ok = true;
}

static bool rset_meets(const struct sd_rset *s, uint64_t start, uint64_t end)
{
	size_t i = sd_rset_find(s, start);

	return i < s->n && s->v[i].start < end;
}

bool sd_uffd_wp_exact(struct softdirty *sd, uint64_t start, uint64_t end)
{
	uint64_t hs = start & ~(HUGE_SZ - 1);
	uint64_t he = ((end - 1) | (HUGE_SZ - 1)) + 1;
	struct uffd_priv *p;
	bool ok = false;
	size_t i;

	if (!sd || sd->be != &sd_backend_uffd || !sd->self || start >= end ||
	    end > SD_ADDR_MAX || !wp_bit_exact)
		return false;
	pthread_mutex_lock(&sd->lock);
	p = sd->priv;
	if (sd->broken || !p || !p->special_ok)
		goto out;
	/* mapped at the last reset: not created, grown or moved since */
	i = sd_rset_find(&sd->known, start);
	if (i == sd->known.n || sd->known.v[i].start > start ||
	    sd->known.v[i].end < end)
		goto out;
	/* untracked, never reported, or reported by the 2 MiB block */
	ok = !rset_meets(&p->bad, start, end) &&
	     !rset_meets(&p->special, start, end) &&
	     !rset_meets(&p->huge, hs, he);
out:
	pthread_mutex_unlock(&sd->lock);
	return ok;
}

static int uffd_collect(struct softdirty *sd, uint64_t start, uint64_t end,
			struct sd_out *o, bool reset)
{
	struct uffd_priv *p = sd->priv;
	struct walk w = {
		.sd = sd, .p = p, .o = o, .reset = reset,
		.start = start, .end = end, .pos = start,
	};
	uint64_t done;
	size_t i;
	int err;

	err = sd_refresh_maps_range(sd, start, end);
	if (!err)
		err = find_unregistered(sd, p, start, end);
	if (err)
		return err;
	for (i = 0; !err && i < sd->maps.n; i++) {
		const struct sd_vma *v = &sd->maps.v[i];
		uint64_t a = MAX(v->start, start), b = MIN(v->end, end);

		if (a >= b || sd_vma_special(v))
			continue;
		w.vma = v;
		/* created, grown or moved since the reset: all of it is new */
		err = sd_emit_new_split(o, &sd->known, a, b, known_piece,
					reset ? new_piece : NULL, &w);
	}
	if (err && err != -ENOSPC) {
		if (!reset || (w.pos == start && !o->n))
			return err;
		/*
		 * Pages up to w.pos are reported and reset, and must reach
		 * the caller: end the walk there, as if the vector were full.
		 */
		o->full = true;
		o->walk_end = w.pos;
	}
	if (!reset)
		return err;
	done = o->full ? o->walk_end : end;
	sd_known_update(sd, start, done);
	special_update(sd, p, start, done);
	return o->full ? -ENOSPC : 0;
}

/* The kernel's answer to UFFDIO_API, asked once. */
static pthread_once_t features_once = PTHREAD_ONCE_INIT;
static uint64_t features_supported;
static int features_err;

static void features_init(void)
{
	features_err = uffd_features(&features_supported);
}

static int uffd_open(struct softdirty *sd)
{
	struct uffd_priv *p;
	int fd;

	pthread_once(&features_once, features_init);
	if (features_err)
		return features_err;
	/* the kernel writes the scan vector inside it */
	p = sd_kmem_alloc(sizeof(*p));
	if (!p)
		return -ENOMEM;
	/*
	 * Another process: the userfaultfd is created inside it (the kernel
	 * ties one to the mm of its creator), and registration,
	 * write-protection and PAGEMAP_SCAN then act on it from here.
	 */
	fd = uffd_api(sd->self ? uffd_create()
			       : sd_inject_userfaultfd(sd->pid, sd->frozen,
						       O_CLOEXEC | O_NONBLOCK),
		      features_supported);
	if (fd < 0) {
		sd_kmem_free(p, sizeof(*p));
		return fd;
	}
	p->fd = fd;
	sd->priv = p;
	return 0;
}

static void uffd_close(struct softdirty *sd)
{
	struct uffd_priv *p = sd->priv;
	size_t i, j;

	if (!p)
		return;
	/*
	 * Closing the fd unregisters everything only when it is the last
	 * reference; a forked child may hold another.  Unregister what we
	 * registered explicitly, VMA by VMA, so the process is left clean.
	 */
	if (!sd_refresh_maps(sd)) {
		for (i = 0; i < sd->maps.n; i++) {
			const struct sd_vma *v = &sd->maps.v[i];

			for (j = sd_rset_find(&p->mine, v->start);
			     j < p->mine.n && p->mine.v[j].start < v->end; j++) {
				struct uffdio_range r;
				uint64_t s = MAX(v->start, p->mine.v[j].start);

				r.start = s;
				r.len = MIN(v->end, p->mine.v[j].end) - s;
				(void)!ioctl(p->fd, UFFDIO_UNREGISTER, &r);
			}
		}
	}
	close(p->fd);
	sd_rset_free(&p->mine);
	sd_rset_free(&p->bad);
	sd_rset_free(&p->huge);
	sd_rset_free(&p->pmds);
	sd_rset_free(&p->unreg);
	sd_rset_free(&p->special);
	sd_kmem_free(p, sizeof(*p));
	sd->priv = NULL;
}

static uint64_t pm_entry(int pm, uintptr_t addr)
{
	uint64_t e = 0;

	if (pread(pm, &e, 8, (off_t)(addr / PAGE_SZ * 8)) != 8)
		return 0;
	return e;
}

/*
 * For wp_bit_exact: a page of @m (written, registered) armed again reads
 * bit 57, and moved by mremap() into a VMA without the registration reads
 * it clear (before 6.13 the moved PTE kept it).
 */
static bool probe_wp_bit(int pm, char *m, size_t len)
{
	struct page_region vec[4];
	struct pm_scan_arg a;
	void *dst;
	uint64_t e;

	scan_args(&a, (uintptr_t)m, (uintptr_t)m + len, vec, 4, true);
	if (sd_pm_scan(pm, &a) < 0 || !(pm_entry(pm, (uintptr_t)m) & SD_PM_UFFD_WP))
		return false;
	dst = mmap(NULL, PAGE_SZ, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (dst == MAP_FAILED)
		return false;
	if (mremap(m, PAGE_SZ, PAGE_SZ, MREMAP_MAYMOVE | MREMAP_FIXED,
		   dst) != dst) {
		munmap(dst, PAGE_SZ);
		return false;
	}
	e = pm_entry(pm, (uintptr_t)dst);
	munmap(dst, PAGE_SZ);
	return (e & SOFTDIRTY_PM_PRESENT) && !(e & SD_PM_UFFD_WP);
}

/*
 * Test the mechanism for real: protect four written pages, write one, and
 * expect exactly that one back from PAGEMAP_SCAN.
 */
static void uffd_probe(struct softdirty_probe_result *r)
{
	const size_t len = 4 * PAGE_SZ;
	struct page_region vec[4];
	struct pm_scan_arg a;
	int fd = -1, pm = -1;
	char *m = MAP_FAILED;
	long n;

	pthread_once(&features_once, features_init);
	r->status = features_err;
	if (features_err == -ENOSYS) {
		snprintf(r->reason, sizeof(r->reason),
			 "no userfaultfd syscall (kernel built without CONFIG_USERFAULTFD)");
		return;
	}
	if (features_err) {
		snprintf(r->reason, sizeof(r->reason),
			 "userfaultfd refused: %s (vm.unprivileged_userfaultfd, seccomp?)",
			 strerror(-features_err));
		return;
	}
	if ((features_supported & WANT_FEATURES) != WANT_FEATURES) {
		r->status = -ENOTSUP;
		snprintf(r->reason, sizeof(r->reason),
			 "kernel lacks UFFD_FEATURE_WP_ASYNC/WP_UNPOPULATED (Linux 6.7+ with uffd-wp)");
		return;
	}
	r->status = -ENOTSUP;
	fd = uffd_api(uffd_create(), features_supported);
	pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	m = mmap(NULL, len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (fd < 0 || pm < 0 || m == MAP_FAILED) {
		snprintf(r->reason, sizeof(r->reason), "probe setup failed: %s",
			 strerror(errno));
		goto out;
	}
	memset(m, 1, len);
	if (uffd_register(fd, (uintptr_t)m, (uintptr_t)m + len)) {
		snprintf(r->reason, sizeof(r->reason),
			 "UFFDIO_REGISTER in write-protect mode failed: %s",
			 strerror(errno));
		goto out;
	}
	scan_args(&a, (uintptr_t)m, (uintptr_t)m + len, vec, 4, true);
	n = sd_pm_scan(pm, &a);
	if (n == -ENOTTY || n == -EINVAL) {
		snprintf(r->reason, sizeof(r->reason),
			 "kernel lacks the PAGEMAP_SCAN ioctl (Linux 6.7+)");
		goto out;
	}
	if (n < 0) {
		snprintf(r->reason, sizeof(r->reason), "PAGEMAP_SCAN failed: %s",
			 strerror((int)-n));
		goto out;
	}
	m[PAGE_SZ] = 2;
	scan_args(&a, (uintptr_t)m, (uintptr_t)m + len, vec, 4, true);
	n = sd_pm_scan(pm, &a);
	if (n != 1 || vec[0].start != (uintptr_t)m + PAGE_SZ ||
	    vec[0].end != (uintptr_t)m + 2 * PAGE_SZ) {
		snprintf(r->reason, sizeof(r->reason),
			 "write-protect test failed: wrote 1 page, PAGEMAP_SCAN reported %ld ranges",
			 n);
		goto out;
	}
	/*
	 * Recent kernels' fast path reports (and re-arms) empty PTEs in
	 * armed page tables: pages zapped, or unmapped and mapped again in
	 * place, since the reset.  Older ones may not: test it.
	 */
	madvise(m + 2 * PAGE_SZ, PAGE_SZ, MADV_DONTNEED);
	scan_args(&a, (uintptr_t)m, (uintptr_t)m + len, vec, 4, false);
	n = sd_pm_scan(pm, &a);
	r->status = 0;
	r->caps = sd_backend_uffd.caps;
#ifdef SD_INJECT_ARCH
	r->caps |= SOFTDIRTY_CAP_REMOTE;
#endif
	if (n == 1 && vec[0].start == (uintptr_t)m + 2 * PAGE_SZ)
		r->caps |= SOFTDIRTY_CAP_REGROWN;
	/* last: it moves the first page away */
	wp_bit_exact = probe_wp_bit(pm, m, len);
	snprintf(r->reason, sizeof(r->reason),
		 "does not see writes made through another process's mapping of shared memory, nor DMA");
out:
	if (m != MAP_FAILED)
		munmap(m, len);
	if (pm >= 0)
		close(pm);
	if (fd >= 0)
		close(fd);
}

const struct sd_backend sd_backend_uffd = {
	.name = "uffd",
	.id = SOFTDIRTY_BACKEND_UFFD,
	.caps = SOFTDIRTY_CAP_SELF | SOFTDIRTY_CAP_KERNEL_WRITES |
		SOFTDIRTY_CAP_EXACT | SOFTDIRTY_CAP_PROT_CHANGES |
		SOFTDIRTY_CAP_HUGE_PAGES,
	.probe = uffd_probe,
	.open = uffd_open,
	.close = uffd_close,
	.collect = uffd_collect,
};
