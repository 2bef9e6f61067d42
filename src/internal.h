/* SPDX-License-Identifier: MIT */
#ifndef SOFTDIRTY_INTERNAL_H
#define SOFTDIRTY_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "softdirty.h"

#define PAGE_SZ		SOFTDIRTY_PAGE_SIZE
#define PAGE_SHIFT_	12
#define PAGE_DOWN(a)	((a) & ~(PAGE_SZ - 1))
#define PAGE_UP(a)	(((a) + PAGE_SZ - 1) & ~(PAGE_SZ - 1))
/* The highest user address on x86-64 and arm64 (47/48-bit VA). */
#define SD_ADDR_MAX	(1ULL << 57)

#define MIN(a, b)	((a) < (b) ? (a) : (b))
#define MAX(a, b)	((a) > (b) ? (a) : (b))

#define MUST_CHECK	__attribute__((warn_unused_result))

/* ---------- range sets: sorted, disjoint, coalesced [start, end) ---------- */

struct sd_rset {
	struct softdirty_range *v;	/* flags unused (0) */
	size_t n, cap;
};

void sd_rset_free(struct sd_rset *s);
void sd_rset_clear(struct sd_rset *s);
/* Make room for @n ranges, so that adds up to that size cannot fail. */
MUST_CHECK int sd_rset_reserve(struct sd_rset *s, size_t n);
MUST_CHECK int sd_rset_add(struct sd_rset *s, uint64_t start, uint64_t end);
MUST_CHECK int sd_rset_remove(struct sd_rset *s, uint64_t start, uint64_t end);
/* First range of @s ending after @addr (index), or s->n. */
size_t sd_rset_find(const struct sd_rset *s, uint64_t addr);
bool sd_rset_contains(const struct sd_rset *s, uint64_t addr);

/* ---------- /proc/PID/maps ---------- */

struct sd_vma {
	uint64_t start, end;
	uint64_t offset;
	uint64_t inode;
	unsigned int prot;	/* PROT_READ | PROT_WRITE | PROT_EXEC */
	bool shared;
	const char *path;	/* "" for anonymous; points into the buffer */
};

struct sd_maps {
	struct sd_vma *v;
	size_t n, cap;
	char *buf;
	size_t buf_cap;
	bool text_only;		/* no PROCMAP_QUERY (before 6.11): text */
};

/* Read @fd (an open /proc/PID/maps) from offset 0. */
MUST_CHECK int sd_maps_read(struct sd_maps *m, int fd);
/*
 * Only the VMAs that intersect [start, end) (whole, not clipped): one
 * PROCMAP_QUERY each, or the text filtered where the kernel lacks it.
 */
MUST_CHECK int sd_maps_read_range(struct sd_maps *m, int fd, uint64_t start,
				  uint64_t end);
void sd_maps_free(struct sd_maps *m);
/* Special mappings nobody can track or write: [vvar], [vdso], [vsyscall]. */
bool sd_vma_special(const struct sd_vma *v);
/* hugetlbfs-backed (kernel soft-dirty cannot re-arm these). */
bool sd_vma_hugetlb(const struct sd_vma *v);

/* ---------- collect output ---------- */

struct sd_out {
	struct softdirty_range *vec;
	size_t len, n;
	bool discard;		/* reset only: drop everything, never full */
	bool full;
	uint64_t walk_end;	/* where the walk stopped when full */
};

/*
 * Append [start, end) (ascending order, after everything added so far),
 * merging with the previous range when adjacent with equal flags.
 * Returns -ENOSPC when there is no room: out->full is set and
 * out->walk_end = start.
 */
MUST_CHECK int sd_out_add(struct sd_out *o, uint64_t start, uint64_t end,
			  uint64_t flags);

/*
 * Walk [start, end) in address order: the pieces the baseline @known does
 * not cover are reported as SOFTDIRTY_RANGE_NEW and then handed to
 * @new_fn (may be NULL), the covered pieces are handed to @known_fn.
 * Stops at the first error (-ENOSPC when out is full).
 */
typedef int (*sd_piece_fn)(void *ctx, uint64_t start, uint64_t end);
MUST_CHECK int sd_emit_new_split(struct sd_out *o, const struct sd_rset *known,
				 uint64_t start, uint64_t end,
				 sd_piece_fn known_fn, sd_piece_fn new_fn,
				 void *ctx);

/* ---------- the tracker ---------- */

struct softdirty;

struct sd_backend {
	const char *name;
	int id;
	unsigned int caps;
	/* Test the mechanism for real; fill status/caps/reason. */
	void (*probe)(struct softdirty_probe_result *r);
	MUST_CHECK int (*open)(struct softdirty *sd);
	void (*close)(struct softdirty *sd);
	/*
	 * Report the dirty pages of [start, end) to @o in address order.
	 * With @reset, atomically reset exactly [start, o->walk_end) (all of
	 * it when @o did not fill up), including the baseline of mapped
	 * regions (sd->known).  Called with sd->lock held.
	 */
	MUST_CHECK int (*collect)(struct softdirty *sd, uint64_t start,
				  uint64_t end, struct sd_out *o, bool reset);
};

struct sd_inject;

struct softdirty {
	pid_t pid;
	bool self;
	int pidfd;		/* another process: tells exec from exit */
	struct sd_inject *frozen;	/* softdirty_freeze()'s hold */
	int broken;		/* -errno: a restart after exec failed */
	const struct sd_backend *be;
	pthread_mutex_t lock;
	int maps_fd;		/* /proc/PID/maps */
	int pagemap_fd;		/* /proc/PID/pagemap */
	struct sd_maps maps;	/* scratch: the latest maps */
	/*
	 * The mapped address ranges at the last reset of each address: a page
	 * mapped now but not here lies in a created, grown or moved region.
	 */
	struct sd_rset known;
	uint64_t *pm;		/* softdirty_pagemap()'s kernel-written chunk */
	void *priv;		/* backend state */
};

/* pagemap's uffd-wp bit */
#define SD_PM_UFFD_WP	(1ULL << 57)

/*
 * For the preload's pagemap reads: true when, for every page of [start,
 * end), the tracker @sd (uffd, own process) would report exactly the pages
 * whose pagemap entry is present or swapped without SD_PM_UFFD_WP, and
 * never one with it.  That holds inside the baseline (no page created,
 * grown or moved since the last reset), outside VMAs that refused
 * registration, special mappings and the 2 MiB blocks armed huge, on a
 * kernel whose mremap() clears the bit (probed).  Entries neither present
 * nor swapped without the bit (holes, zapped PTEs) are not covered.  A
 * userfaultfd of the program's own that write-protects memory breaks it:
 * the caller must know there is none.
 */
bool sd_uffd_wp_exact(struct softdirty *sd, uint64_t start, uint64_t end);

extern const struct sd_backend sd_backend_kernel;
extern const struct sd_backend sd_backend_uffd;
extern const struct sd_backend sd_backend_mprotect;
extern const struct sd_backend sd_backend_hash;

/* Re-read sd->maps. */
MUST_CHECK int sd_refresh_maps(struct softdirty *sd);
/*
 * Re-read the part of sd->maps that [start, end) needs: the VMAs that
 * intersect it, at least (all of them for another process or the whole
 * address space).  Whatever uses sd->maps must clip to [start, end).
 */
MUST_CHECK int sd_refresh_maps_range(struct softdirty *sd, uint64_t start,
				     uint64_t end);
/*
 * After a reset of [start, end): the baseline there becomes what is
 * mapped now (sd->maps).  Cannot fail: out of memory, the baseline is
 * emptied, which makes later collects report more as new, never less.
 */
void sd_known_update(struct softdirty *sd, uint64_t start, uint64_t end);

/*
 * The kernel's own view of a signal action.  glibc's sigaction() adds
 * SA_RESTORER to whatever it installs, so restoring an untouched default
 * through it would not leave the process exactly as it was; saving and
 * restoring this raw form does.
 */
struct sd_ksigaction {
	void *handler;
	unsigned long flags;
	void *restorer;
	unsigned long mask;	/* the kernel's sigset_t: 64 signals */
};
MUST_CHECK int sd_ksigaction_get(int sig, struct sd_ksigaction *ka);
MUST_CHECK int sd_ksigaction_set(int sig, const struct sd_ksigaction *ka);

/*
 * Buffers the kernel writes into (reads of /proc files, ioctl output):
 * zeroed, page-granular, never protected by the mprotect backend.
 */
void *sd_kmem_alloc(size_t len);
void sd_kmem_free(void *p, size_t len);
/* The ranges of all such buffers now (for the mprotect backend). */
MUST_CHECK int sd_kmem_ranges(struct sd_rset *out);

/* PAGEMAP_SCAN (uapi.h), retried on EINTR: ranges stored, or -errno. */
struct pm_scan_arg;
struct page_region;
MUST_CHECK long sd_pm_scan(int pagemap_fd, struct pm_scan_arg *a);
/*
 * Every range of [a, b) matching the category masks of @masks (its other
 * fields are ignored) added to @out, through @vec; no write-protection.
 */
MUST_CHECK int sd_pm_scan_rset(int pagemap_fd, uint64_t a, uint64_t b,
			       const struct pm_scan_arg *masks,
			       struct page_region *vec, size_t vec_len,
			       struct sd_rset *out);

/* Lowest-level helpers. */
/* pread until @len bytes or end of file: bytes read, or -errno */
MUST_CHECK ssize_t sd_pread_full(int fd, void *buf, size_t len, off_t off);
MUST_CHECK int sd_write_str(int fd, const char *s);
int sd_gettid(void);

#endif
