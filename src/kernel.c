// SPDX-License-Identifier: MIT
/*
 * The "kernel" backend: the kernel's own soft-dirty bits
 * (CONFIG_MEM_SOFT_DIRTY): "4" to /proc/PID/clear_refs, bit 55 of
 * /proc/PID/pagemap (or PAGEMAP_SCAN with PAGE_IS_SOFT_DIRTY, 6.8+).
 *
 * clear_refs resets the whole process and is a separate call from the
 * read, so:
 *  - a collect-and-reset reads every mapping, clears, and keeps what it
 *    read outside the caller's range ("carry") for later collects;
 *  - the other threads are paused between the read and the clear, else a
 *    write landing between the two would be lost (another process: all
 *    its threads are stopped under ptrace, or softdirty_freeze() holds).
 * hugetlb pages are never re-armed by clear_refs: reported as untracked.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "inject.h"
#include "internal.h"
#include "stopworld.h"
#include "uapi.h"

#define PM_CHUNK	8192		/* pagemap entries per read */
#define SCAN_VEC	512
/*
 * Dirty runs are recorded while the world is stopped, when malloc is off
 * limits: room is made beforehand for one run per two mapped pages (the
 * most there can be), up to RUNS_CAP; past that, precision is given up.
 */
#define RUNS_CAP	(1UL << 22)

struct kernel_priv {
	int clear_fd;
	bool scan;		/* PAGEMAP_SCAN knows PAGE_IS_SOFT_DIRTY */
	bool world;		/* we hold the stop-the-world handler */
	struct sd_rset carry;	/* read and cleared, not yet reported */
	struct sd_rset dirty;	/* scratch */
	uint64_t pm[PM_CHUNK];
	struct page_region vec[SCAN_VEC];
	struct softdirty_range *runs;
	size_t nruns, runs_cap;
	size_t runs_max;	/* saturate beyond this many runs */
};

/*
 * Append a dirty run during the read: fixed storage, no malloc.  Past
 * runs_max the readers give up on precision and add the rest of each VMA
 * as one run: the storage has room for one read's worth plus one run per
 * VMA beyond it.
 */
static void run_add(struct kernel_priv *p, uint64_t a, uint64_t b)
{
	struct softdirty_range *last = p->nruns ? &p->runs[p->nruns - 1] : NULL;

	if (last && last->end >= a) {
		last->end = MAX(last->end, b);
		return;
	}
	p->runs[p->nruns++] = (struct softdirty_range){ a, b, 0 };
}

static bool saturated(struct kernel_priv *p, uint64_t a, uint64_t b)
{
	if (p->nruns < p->runs_max)
		return false;
	run_add(p, a, b);
	return true;
}

static int read_pagemap(struct softdirty *sd, struct kernel_priv *p,
			uint64_t a, uint64_t b)
{
	while (a < b && !saturated(p, a, b)) {
		size_t n = MIN((size_t)((b - a) / PAGE_SZ), (size_t)PM_CHUNK);
		ssize_t got;
		size_t i;

		got = sd_pread_full(sd->pagemap_fd, p->pm, n * 8,
				    (off_t)(a / PAGE_SZ * 8));
		if (got < 0)
			return (int)got;
		if ((size_t)got < n * 8)
			return -EIO;
		for (i = 0; i < n; i++)
			if (p->pm[i] & SOFTDIRTY_PM_SOFT_DIRTY)
				run_add(p, a + i * PAGE_SZ,
					a + (i + 1) * PAGE_SZ);
		a += n * PAGE_SZ;
	}
	return 0;
}

static int scan_pagemap(struct softdirty *sd, struct kernel_priv *p,
			uint64_t a, uint64_t b)
{
	while (a < b && !saturated(p, a, b)) {
		struct pm_scan_arg arg = {
			.size = sizeof(arg),
			.start = a,
			.end = b,
			.vec = (uintptr_t)p->vec,
			.vec_len = SCAN_VEC,
			.category_mask = PAGE_IS_SOFT_DIRTY,
			.return_mask = PAGE_IS_SOFT_DIRTY,
		};
		long r = sd_pm_scan(sd->pagemap_fd, &arg), i;

		if (r < 0)
			return (int)r;
		for (i = 0; i < r; i++)
			run_add(p, p->vec[i].start, p->vec[i].end);
		if (arg.walk_end <= a)
			return -EIO;
		a = arg.walk_end;
	}
	return 0;
}

/*
 * Read the soft-dirty pages of [start, end) into p->runs and, with @reset,
 * clear them all, with the other threads paused in between.
 */
static int read_and_clear(struct softdirty *sd, struct kernel_priv *p,
			  uint64_t start, uint64_t end, bool reset)
{
	struct sd_world w = { 0 };
	struct sd_inject *held = NULL;
	size_t i, need, pages = 0;
	int err = 0;

	for (i = 0; i < sd->maps.n; i++)
		pages += (sd->maps.v[i].end - sd->maps.v[i].start) / PAGE_SZ;
	p->runs_max = MIN(pages / 2 + 1, RUNS_CAP);
	need = p->runs_max + PM_CHUNK + sd->maps.n + 1;
	if (p->runs_cap < need) {
		void *r = realloc(p->runs, need * sizeof(*p->runs));

		if (!r)
			return -ENOMEM;
		p->runs = r;
		p->runs_cap = need;
	}
	/* after the clear nothing may fail: reserve what the merge needs */
	err = sd_rset_reserve(&p->dirty, need + p->carry.n);
	if (!err)
		err = sd_rset_reserve(&p->carry, need + p->carry.n + 1);
	if (err)
		return err;
	p->nruns = 0;
	if (reset && p->world) {
		err = sd_world_stop(&w);
		if (err)
			return err;
	}
	/* another process: stop all of it, unless the caller already has */
	if (reset && !sd->self && !sd->frozen) {
		err = sd_inject_attach(&held, sd->pid);
		if (err)
			return err;
	}
	for (i = 0; !err && i < sd->maps.n; i++) {
		const struct sd_vma *v = &sd->maps.v[i];
		uint64_t a = MAX(v->start, start), b = MIN(v->end, end);

		if (a >= b || sd_vma_special(v) || sd_vma_hugetlb(v))
			continue;
		err = p->scan ? scan_pagemap(sd, p, a, b)
			      : read_pagemap(sd, p, a, b);
	}
	if (!err && reset)
		err = sd_write_str(p->clear_fd, "4");
	if (w.stopped)
		sd_world_resume(&w);
	sd_inject_detach(held);
	return err;
}

struct emit_ctx {
	struct softdirty *sd;
	struct kernel_priv *p;
	const struct sd_vma *vma;
	struct sd_out *o;
};

static int emit_known(void *ctx, uint64_t a, uint64_t b)
{
	struct emit_ctx *c = ctx;
	const struct sd_rset *d = &c->p->dirty;
	size_t i;
	int err;

	if (sd_vma_hugetlb(c->vma))
		return sd_out_add(c->o, a, b, SOFTDIRTY_RANGE_UNTRACKED);
	for (i = sd_rset_find(d, a); i < d->n && d->v[i].start < b; i++) {
		err = sd_out_add(c->o, MAX(a, d->v[i].start),
				 MIN(b, d->v[i].end), SOFTDIRTY_RANGE_WRITTEN);
		if (err)
			return err;
	}
	return 0;
}

static int kernel_collect(struct softdirty *sd, uint64_t start, uint64_t end,
			  struct sd_out *o, bool reset)
{
	struct kernel_priv *p = sd->priv;
	struct emit_ctx c = { .sd = sd, .p = p, .o = o };
	uint64_t done;
	size_t i;
	int err;

	/* a reset clears everything: read everything */
	err = reset ? sd_refresh_maps(sd)
		    : sd_refresh_maps_range(sd, start, end);
	if (err)
		return err;
	err = read_and_clear(sd, p, reset ? 0 : start, reset ? SD_ADDR_MAX : end,
			     reset);
	if (err)
		return err;
	/* with room reserved beforehand, these cannot fail */
	sd_rset_clear(&p->dirty);
	for (i = 0; !err && i < p->nruns; i++)
		err = sd_rset_add(&p->dirty, p->runs[i].start, p->runs[i].end);
	for (i = 0; !err && i < p->carry.n; i++)
		err = sd_rset_add(&p->dirty, p->carry.v[i].start,
				  p->carry.v[i].end);
	if (err)
		return err;
	for (i = 0; !err && i < sd->maps.n; i++) {
		const struct sd_vma *v = &sd->maps.v[i];
		uint64_t a = MAX(v->start, start), b = MIN(v->end, end);

		if (a >= b || sd_vma_special(v))
			continue;
		c.vma = v;
		err = sd_emit_new_split(o, &sd->known, a, b, emit_known, NULL,
					&c);
	}
	if (err && err != -ENOSPC)
		return err;
	if (!reset)
		return err;
	/* what was cleared but not reported is reported later */
	done = o->full ? o->walk_end : end;
	sd_rset_clear(&p->carry);
	err = 0;
	for (i = 0; !err && i < p->dirty.n; i++)
		err = sd_rset_add(&p->carry, p->dirty.v[i].start,
				  p->dirty.v[i].end);
	if (!err)
		err = sd_rset_remove(&p->carry, start, done);
	if (err)
		return err;
	sd_known_update(sd, start, done);
	return o->full ? -ENOSPC : 0;
}

static bool scan_works(int pagemap_fd)
{
	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.start = 0,
		.end = PAGE_SZ,
		.category_mask = PAGE_IS_SOFT_DIRTY,
		.return_mask = PAGE_IS_SOFT_DIRTY,
	};

	return sd_pm_scan(pagemap_fd, &arg) >= 0;
}

static int kernel_open(struct softdirty *sd)
{
	struct kernel_priv *p;
	char path[64];
	int err;

	/* the kernel writes the pagemap chunk and scan vector inside it */
	p = sd_kmem_alloc(sizeof(*p));
	if (!p)
		return -ENOMEM;
	snprintf(path, sizeof(path), "/proc/%d/clear_refs", (int)sd->pid);
	p->clear_fd = open(path, O_WRONLY | O_CLOEXEC);
	if (p->clear_fd < 0) {
		err = -errno;
		sd_kmem_free(p, sizeof(*p));
		return err;
	}
	p->scan = scan_works(sd->pagemap_fd);
	if (!sd->self) {
		sd->priv = p;
		return 0;
	}
	/*
	 * Pausing is needed only while other threads may write; threads can
	 * be created later, so hold the handler whenever we track ourselves.
	 */
	err = sd_stopworld_get();
	if (err) {
		close(p->clear_fd);
		sd_kmem_free(p, sizeof(*p));
		return err;
	}
	p->world = true;
	sd->priv = p;
	return 0;
}

static void kernel_close(struct softdirty *sd)
{
	struct kernel_priv *p = sd->priv;

	if (!p)
		return;
	if (p->world)
		sd_stopworld_put();
	close(p->clear_fd);
	sd_rset_free(&p->carry);
	sd_rset_free(&p->dirty);
	free(p->runs);
	sd_kmem_free(p, sizeof(*p));
	sd->priv = NULL;
}

/*
 * In a child, so that clearing our own soft-dirty bits cannot disturb the
 * caller: write a page, clear, expect bit 55 clear; write, expect it set.
 */
static int probe_child(void)
{
	volatile char *m = mmap(NULL, PAGE_SZ, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int pm = open("/proc/self/pagemap", O_RDONLY);
	int cr = open("/proc/self/clear_refs", O_WRONLY);
	off_t off = (off_t)((uintptr_t)m / PAGE_SZ * 8);
	uint64_t e;

	if (m == MAP_FAILED || pm < 0)
		return 2;
	if (cr < 0)
		return 3;
	m[0] = 1;
	if (write(cr, "4", 1) != 1)
		return 4;
	if (pread(pm, &e, 8, off) != 8)
		return 2;
	if (e & SOFTDIRTY_PM_SOFT_DIRTY)
		return 5;
	m[0] = 2;
	if (pread(pm, &e, 8, off) != 8)
		return 2;
	return (e & SOFTDIRTY_PM_SOFT_DIRTY) ? 0 : 6;
}

static void kernel_probe(struct softdirty_probe_result *r)
{
	int status = 0, code;
	pid_t pid;

	r->status = -ENOTSUP;
	pid = fork();
	if (pid < 0) {
		r->status = -errno;
		snprintf(r->reason, sizeof(r->reason), "fork: %s",
			 strerror(errno));
		return;
	}
	if (!pid)
		_exit(probe_child());
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	code = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
	switch (code) {
	case 0:
		r->status = 0;
		r->caps = sd_backend_kernel.caps;
#ifdef SD_INJECT_ARCH
		r->caps |= SOFTDIRTY_CAP_REMOTE;	/* the stop needs it */
#endif
		snprintf(r->reason, sizeof(r->reason),
			 "does not see writes made through another process's mapping of shared memory, nor DMA; hugetlb pages always reported");
		return;
	case 3:
		snprintf(r->reason, sizeof(r->reason),
			 "cannot open /proc/self/clear_refs");
		return;
	case 4:
		snprintf(r->reason, sizeof(r->reason),
			 "clear_refs refuses \"4\" (kernel without CONFIG_MEM_SOFT_DIRTY)");
		return;
	case 5:
	case 6:
		snprintf(r->reason, sizeof(r->reason),
			 "pagemap bit 55 does not follow writes (kernel without CONFIG_MEM_SOFT_DIRTY)");
		return;
	default:
		snprintf(r->reason, sizeof(r->reason),
			 "probe failed (code %d)", code);
	}
}

const struct sd_backend sd_backend_kernel = {
	.name = "kernel",
	.id = SOFTDIRTY_BACKEND_KERNEL,
	.caps = SOFTDIRTY_CAP_SELF | SOFTDIRTY_CAP_KERNEL_WRITES |
		SOFTDIRTY_CAP_EXACT | SOFTDIRTY_CAP_PROT_CHANGES |
		SOFTDIRTY_CAP_HUGE_PAGES,
	.probe = kernel_probe,
	.open = kernel_open,
	.close = kernel_close,
	.collect = kernel_collect,
};
