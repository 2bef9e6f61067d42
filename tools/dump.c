// SPDX-License-Identifier: MIT
/*
 * softdirty dump / softdirty restore (softdirty-dump(1), softdirty-restore(1)).
 *
 * Both stop every thread of the target (softdirty_freeze()) so that what is
 * read or written is one moment of the process.  An increment is decided by
 * contents: every image holds a checksum of every present page, and a page
 * is stored again only when its checksum differs from the parent's at the
 * same address in the same mapping (docs/image-format.md says why).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "image-fmt.h"
#include "proc-mem.h"
#include "softdirty.h"

#define MiB (1024.0 * 1024.0)

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static pid_t parse_pid(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);

	return (*s && !*end && v > 0 && v < (1L << 30)) ? (pid_t)v : 0;
}

struct progress {
	bool on;
	uint64_t total, done, next;
	const char *what;
};

static void progress(struct progress *p, uint64_t add)
{
	p->done += add;
	if (!p->on || p->done < p->next)
		return;
	p->next = p->done + (64u << 20);
	fprintf(stderr, "\r%s: %.0f / %.0f MiB", p->what, p->done / MiB,
		p->total / MiB);
}

static void progress_end(struct progress *p)
{
	if (p->on && p->next)
		fprintf(stderr, "\r%s: %.0f / %.0f MiB\n", p->what,
			p->done / MiB, p->total / MiB);
}

/* Open a tracker on pid and freeze it. */
static int freeze(struct softdirty **sd, pid_t pid, const char *backend)
{
	struct softdirty_opts o = { .sz = sizeof(o), .backend = backend };
	int e = softdirty_open(sd, pid, &o);

	if (e) {
		fprintf(stderr, "softdirty: cannot attach to %d with backend %s: %s\n",
			(int)pid, backend ? backend : "auto", strerror(-e));
		return e;
	}
	e = softdirty_freeze(*sd);
	if (e) {
		fprintf(stderr, "softdirty: cannot stop %d: %s\n", (int)pid,
			strerror(-e));
		softdirty_close(*sd);
		*sd = NULL;
	}
	return e;
}

/* The region of @p (top image) a page may be taken from, or NULL. */
static const struct img_region *same_mapping(const struct img *p,
					     const struct img_region *r)
{
	const struct img_region *q = p ? img_find(p, r->start) : NULL;

	if (!q || q->start != r->start || q->offset != r->offset ||
	    (q->prot & IMG_PROT_SHARED) != (r->prot & IMG_PROT_SHARED) ||
	    strcmp(q->name, r->name) || (q->kind & IMG_KIND_SPECIAL))
		return NULL;
	return q;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Present pages now: sizes the copy buffer before the process is stopped. */
static uint64_t count_present(struct pmem *m)
{
	struct img_region *reg;
	uint32_t n, i;
	uint64_t c = 0;

	if (pmem_regions(m->pid, &reg, &n))
		return 0;
	for (i = 0; i < n; i++) {
		struct prange *pr;
		size_t np, j;

		if (!reg[i].npages ||
		    pmem_present(m, reg[i].start, reg[i].end, &pr, &np))
			continue;
		for (j = 0; j < np; j++)
			c += (pr[j].end - pr[j].start) / IMG_PAGE;
		free(pr);
	}
	pmem_free_regions(reg, n);
	return c;
}

/*
 * A buffer with its pages faulted in (huge pages where possible): faults
 * on our side would otherwise be most of the time the target is stopped.
 */
static uint8_t *copy_buffer(size_t len)
{
	uint8_t *b = mmap(NULL, len, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (b == MAP_FAILED)
		return b;
	(void)madvise(b, len, MADV_HUGEPAGE);
	(void)madvise(b, len, MADV_POPULATE_WRITE);
	return b;
}

/* Append page idx with state st to the region's runs. */
static int add_run(struct img_region *r, size_t *cap, uint64_t idx,
		   uint32_t st)
{
	struct img_run *x = r->nruns ? &r->runs[r->nruns - 1] : NULL;

	if (x && x->state == st && x->first + x->count == idx &&
	    x->count < IMG_MAX_RUN) {
		x->count++;
		return 0;
	}
	if (r->nruns == *cap) {
		size_t nc = *cap ? *cap * 2 : 16;
		struct img_run *nr = realloc(r->runs, nc * sizeof(*nr));

		if (!nr)
			return -ENOMEM;
		r->runs = nr;
		*cap = nc;
	}
	x = &r->runs[r->nruns++];
	memset(x, 0, sizeof(*x));
	x->first = idx;
	x->count = 1;
	x->state = st;
	return 0;
}

struct dump_opts {
	pid_t pid;
	const char *dir, *parent, *backend;
	bool leave_stopped, progress, quiet;
};

static int dump_usage(FILE *f)
{
	fprintf(f, "usage: softdirty dump PID -D DIR [--parent DIR] [--leave-stopped]\n"
		   "                      [--backend NAME] [--progress] [--quiet]\n");
	return 2;
}

static int do_dump(const struct dump_opts *o)
{
	struct img *parent = NULL;
	struct img_writer w;
	struct softdirty *sd = NULL;
	struct pmem m = { .mem_fd = -1, .pm_fd = -1 };
	struct img_region *reg = NULL;
	struct prange **pres = NULL;
	size_t *npres = NULL;
	uint32_t nreg = 0, i;
	uint64_t start_time, present = 0, nzero = 0, nparent = 0, off;
	char *exe = NULL, err[512];
	uint8_t *buf = MAP_FAILED;
	const uint8_t *pend = NULL;
	size_t buflen = 0, j, pn = 0;
	double ta, t0, t1, t2, t3;
	struct progress pr = { .on = o->progress, .what = "dump" };
	bool frozen = false, writer = false;
	int e, rc = 1;

	e = pmem_identity(o->pid, &start_time, &exe);
	if (e) {
		fprintf(stderr, "softdirty dump: process %d: %s\n", (int)o->pid,
			strerror(-e));
		return 1;
	}
	if (o->parent) {
		/* structure and links of the chain; data is not re-read */
		e = img_open(o->parent, true, false, &parent, err, sizeof(err));
		if (e) {
			fprintf(stderr, "softdirty dump: parent: %s\n", err);
			goto out;
		}
		if (parent->pid != (uint64_t)o->pid ||
		    parent->start_time != start_time || strcmp(parent->exe, exe)) {
			fprintf(stderr,
				"softdirty dump: parent %s is of another process (pid %" PRIu64
				" started at %" PRIu64 " running %s; this is pid %d started at %" PRIu64
				" running %s)\n", o->parent, parent->pid,
				parent->start_time, parent->exe, (int)o->pid,
				start_time, exe);
			goto out;
		}
	}
	e = img_writer_open(&w, o->dir, err, sizeof(err));
	if (e) {
		fprintf(stderr, "softdirty dump: %s\n", err);
		img_writer_abort(&w);
		goto out;
	}
	writer = true;
	e = pmem_open(&m, o->pid, false);
	if (e) {
		fprintf(stderr, "softdirty dump: /proc/%d: %s\n", (int)o->pid,
			strerror(-e));
		goto out;
	}
	buflen = (count_present(&m) * 9 / 8 + 256) * IMG_PAGE;
	buf = copy_buffer(buflen);
	if (buf == MAP_FAILED)
		goto nomem;
	ta = now();
	if (freeze(&sd, o->pid, o->backend))
		goto out;
	frozen = true;
	t0 = now();
	e = pmem_regions(o->pid, &reg, &nreg);
	if (e) {
		fprintf(stderr, "softdirty dump: /proc/%d/maps: %s\n",
			(int)o->pid, strerror(-e));
		goto out;
	}
	pres = calloc(nreg + 1, sizeof(*pres));
	npres = calloc(nreg + 1, sizeof(*npres));
	if (!pres || !npres)
		goto nomem;
	for (i = 0; i < nreg; i++) {
		if (!reg[i].npages)
			continue;
		e = pmem_present(&m, reg[i].start, reg[i].end, &pres[i], &npres[i]);
		if (e) {
			fprintf(stderr, "softdirty dump: pagemap of %#" PRIx64 "-%#" PRIx64 ": %s\n",
				reg[i].start, reg[i].end, strerror(-e));
			goto out;
		}
		for (j = 0; j < npres[i]; j++)
			present += (pres[i][j].end - pres[i][j].start) / IMG_PAGE;
	}
	/* copy every present page while stopped; checksums come after */
	if (present * IMG_PAGE > buflen) {
		uint8_t *nb = mremap(buf, buflen, present * IMG_PAGE,
				     MREMAP_MAYMOVE);

		if (nb == MAP_FAILED)
			goto nomem;
		buf = nb;
		buflen = present * IMG_PAGE;
	}
	pr.total = present * IMG_PAGE;
	off = 0;
	for (i = 0; i < nreg; i++)
		for (j = 0; j < npres[i]; j++) {
			uint64_t a = pres[i][j].start, len = pres[i][j].end - a;

			e = pmem_read(&m, a, buf + off, len);
			if (e) {
				fprintf(stderr, "softdirty dump: reading %#" PRIx64 "-%#" PRIx64 ": %s\n",
					a, a + len, strerror(-e));
				goto out;
			}
			off += len;
			progress(&pr, len);
		}
	progress_end(&pr);
	t1 = now();
	if (o->leave_stopped)
		kill(o->pid, SIGSTOP);	/* delivered as a group stop on thaw */
	if (softdirty_thaw(sd))
		fprintf(stderr, "softdirty dump: thaw failed\n");
	frozen = false;

	/* classify: the parent's contents, zero, or stored here */
	t2 = now();
	off = 0;
	for (i = 0; i < nreg; i++) {
		const struct img_region *q = same_mapping(parent, &reg[i]);
		uint64_t np = 0, h = 0, a;
		size_t cap = 0;
		uint8_t *hash;

		for (j = 0; j < npres[i]; j++)
			np += (pres[i][j].end - pres[i][j].start) / IMG_PAGE;
		hash = malloc(np * 16 + 16);
		if (!hash)
			goto nomem;
		reg[i].hash = hash;
		for (j = 0; j < npres[i]; j++)
			for (a = pres[i][j].start; a < pres[i][j].end; a += IMG_PAGE) {
				const uint8_t *pd, *ph, *page = buf + off;
				uint8_t *hp = hash + 16 * h++;
				uint32_t st;

				off += IMG_PAGE;
				img_page_hash(page, hp);
				if (q && a < q->end &&
				    img_page(parent, a, &pd, &ph) != IMG_NONE &&
				    !memcmp(ph, hp, 16)) {
					st = IMG_PARENT;
					nparent++;
				} else if (img_page_is_zero(page)) {
					st = IMG_ZERO;
					nzero++;
				} else {
					st = IMG_DATA;
					/* one write for consecutive stored pages */
					if (pn && pend + pn * IMG_PAGE == page &&
					    pn < 1024) {
						pn++;
					} else {
						e = img_writer_pages(&w, pend, pn);
						pend = page;
						pn = 1;
					}
				}
				if (st != IMG_DATA && pn) {
					e = img_writer_pages(&w, pend, pn);
					pn = 0;
				}
				if (e) {
					fprintf(stderr, "softdirty dump: writing %s: %s\n",
						o->dir, strerror(-e));
					goto out;
				}
				if (add_run(&reg[i], &cap,
					    (a - reg[i].start) / IMG_PAGE, st))
					goto nomem;
			}
	}
	e = img_writer_pages(&w, pend, pn);
	if (e) {
		fprintf(stderr, "softdirty dump: writing %s: %s\n", o->dir,
			strerror(-e));
		goto out;
	}
	w.meta.pid = (uint64_t)o->pid;
	w.meta.start_time = start_time;
	w.meta.exe = exe;
	w.meta.tracker = (char *)softdirty_backend(sd);
	w.meta.parent_path = "";
	{
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		w.meta.created_ns = (uint64_t)ts.tv_sec * 1000000000ULL +
				    (uint64_t)ts.tv_nsec;
	}
	w.meta.frozen_ns = (uint64_t)((t1 - t0) * 1e9);
	if (getrandom(w.meta.id, sizeof(w.meta.id), 0) != sizeof(w.meta.id)) {
		fprintf(stderr, "softdirty dump: getrandom: %s\n", strerror(errno));
		goto out;
	}
	if (parent) {
		char *rp = realpath(o->parent, NULL);

		if (!rp)
			goto nomem;
		w.meta.parent_path = rp;
		memcpy(w.meta.parent_id, parent->id, 16);
		w.meta.mode = IMG_MODE_CONTENTS;
	}
	w.meta.nreg = nreg;
	w.meta.reg = reg;
	w.meta.ndata = w.ndata;
	e = img_writer_commit(&w, err, sizeof(err));
	if (parent)
		free(w.meta.parent_path);
	if (e) {
		fprintf(stderr, "softdirty dump: %s\n", err);
		goto out;
	}
	writer = false;
	t3 = now();
	if (!o->quiet) {
		printf("dump: pid %d into %s: %s\n", (int)o->pid, o->dir,
		       parent ? "increment (pages compared by checksum with the parent's)"
			      : "full");
		printf("dump: %u regions, %" PRIu64 " present pages: %" PRIu64
		       " stored, %" PRIu64 " zero, %" PRIu64 " unchanged since the parent\n",
		       nreg, present, w.ndata, nzero, nparent);
		printf("dump: frozen %.3f ms (tracker %s, used to stop the threads: %.3f ms to open and stop)%s; checksums and write %.3f s\n",
		       (t1 - t0) * 1e3, softdirty_backend(sd), (t0 - ta) * 1e3,
		       o->leave_stopped ? "; left stopped (SIGSTOP)" : "",
		       t3 - t2);
	}
	rc = 0;
	goto out;
nomem:
	fprintf(stderr, "softdirty dump: out of memory\n");
out:
	if (frozen && softdirty_thaw(sd))
		fprintf(stderr, "softdirty dump: thaw failed\n");
	softdirty_close(sd);
	if (writer)
		img_writer_abort(&w);
	for (i = 0; i < nreg; i++) {
		if (pres)
			free(pres[i]);
		free(reg[i].runs);
		free((void *)reg[i].hash);
	}
	free(pres);
	free(npres);
	pmem_free_regions(reg, nreg);
	if (buf != MAP_FAILED)
		munmap(buf, buflen);
	pmem_close(&m);
	img_free(parent);
	free(exe);
	return rc;
}

int cmd_dump(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'D' },
		{ "parent", required_argument, NULL, 'p' },
		{ "leave-stopped", no_argument, NULL, 's' },
		{ "backend", required_argument, NULL, 'b' },
		{ "progress", no_argument, NULL, 'P' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct dump_opts o = { .progress = isatty(2) };
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "D:p:b:qh", opts, NULL)) != -1) {
		switch (c) {
		case 'D': o.dir = optarg; break;
		case 'p': o.parent = optarg; break;
		case 's': o.leave_stopped = true; break;
		case 'b': o.backend = optarg; break;
		case 'P': o.progress = true; break;
		case 'q': o.quiet = true; o.progress = false; break;
		case 'h': dump_usage(stdout); return 0;
		default: return dump_usage(stderr);
		}
	}
	if (optind != argc - 1 || !o.dir || !(o.pid = parse_pid(argv[optind])))
		return dump_usage(stderr);
	return do_dump(&o);
}

/* ---------- restore ---------- */

static int restore_usage(FILE *f)
{
	fprintf(f, "usage: softdirty restore DIR --pid PID [--backend NAME] [--quiet]\n");
	return 2;
}

/* Same mappings as when the image was taken? Prints the first difference. */
static bool in_ranges(const struct prange *p, size_t n, uint64_t a)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (p[mid].end <= a)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && p[lo].start <= a;
}

#define BATCH 256

/* Read n pages at a, write back those whose checksum differs. */
static int restore_batch(struct pmem *m, const struct img *im, uint64_t a,
			 uint64_t n, uint8_t *buf, uint64_t *written,
			 uint64_t *unchanged)
{
	uint64_t i;
	int e;

	if (!n)
		return 0;
	e = pmem_read(m, a, buf, n * IMG_PAGE);
	for (i = 0; i < n && !e; i++) {
		const uint8_t *d, *h;
		uint8_t hh[16];

		if (img_page(im, a + i * IMG_PAGE, &d, &h) == IMG_NONE)
			return -EIO;	/* the caller asked for present pages */
		img_page_hash(buf + i * IMG_PAGE, hh);
		if (!memcmp(hh, h, 16)) {
			(*unchanged)++;
			continue;
		}
		e = pmem_write(m, a + i * IMG_PAGE, d, IMG_PAGE);
		(*written)++;
	}
	return e;
}

static bool layout_matches(const struct img *im, const struct img_region *cur,
			   uint32_t ncur)
{
	uint32_t i = 0, j = 0;

	for (;;) {
		while (i < im->nreg && (im->reg[i].kind & IMG_KIND_SPECIAL))
			i++;
		while (j < ncur && (cur[j].kind & IMG_KIND_SPECIAL))
			j++;
		if (i == im->nreg || j == ncur)
			break;
		const struct img_region *a = &im->reg[i], *b = &cur[j];
		/* a stack may have grown down since */
		bool stack = !strcmp(a->name, "[stack]") && b->start <= a->start;

		if ((a->start != b->start && !stack) || a->end != b->end ||
		    a->prot != b->prot || a->offset != b->offset ||
		    strcmp(a->name, b->name)) {
			fprintf(stderr,
				"softdirty restore: the layout differs: image has %#" PRIx64 "-%#" PRIx64
				" %s, the process has %#" PRIx64 "-%#" PRIx64 " %s\n",
				a->start, a->end, a->name, b->start, b->end, b->name);
			return false;
		}
		i++;
		j++;
	}
	if (i < im->nreg || j < ncur) {
		const struct img_region *x = i < im->nreg ? &im->reg[i] : &cur[j];

		fprintf(stderr, "softdirty restore: the layout differs: only the %s has %#" PRIx64
			"-%#" PRIx64 " %s\n", i < im->nreg ? "image" : "process",
			x->start, x->end, x->name);
		return false;
	}
	return true;
}

static int do_restore(const char *dir, pid_t pid, const char *backend,
		      bool quiet)
{
	struct img *im = NULL;
	struct softdirty *sd = NULL;
	struct pmem m = { .mem_fd = -1, .pm_fd = -1 };
	struct img_region *cur = NULL;
	uint32_t ncur = 0, i;
	uint64_t fromfile = 0;
	int ffd;
	uint64_t start_time, unchanged = 0, written = 0, zeroed = 0, skipped = 0;
	uint8_t *page = NULL;
	char *exe = NULL, err[512];
	double t0, t1;
	bool frozen = false;
	int e, rc = 1;

	/* nothing is written from an image that does not verify, whole chain */
	e = img_open(dir, true, true, &im, err, sizeof(err));
	if (e) {
		fprintf(stderr, "softdirty restore: refusing: %s\n", err);
		return 1;
	}
	e = pmem_identity(pid, &start_time, &exe);
	if (e) {
		fprintf(stderr, "softdirty restore: process %d: %s\n", (int)pid,
			strerror(-e));
		goto out;
	}
	if (im->pid != (uint64_t)pid || im->start_time != start_time ||
	    strcmp(im->exe, exe)) {
		fprintf(stderr, "softdirty restore: refusing: %s is of pid %" PRIu64
			" started at %" PRIu64 " running %s, not of this process (pid %d started at %"
			PRIu64 " running %s)\n", dir, im->pid, im->start_time,
			im->exe, (int)pid, start_time, exe);
		goto out;
	}
	page = malloc(BATCH * IMG_PAGE);
	if (!page)
		goto out;
	e = pmem_open(&m, pid, true);
	if (e) {
		fprintf(stderr, "softdirty restore: /proc/%d/mem: %s\n", (int)pid,
			strerror(-e));
		goto out;
	}
	if (freeze(&sd, pid, backend))
		goto out;
	frozen = true;
	t0 = now();
	e = pmem_regions(pid, &cur, &ncur);
	if (e) {
		fprintf(stderr, "softdirty restore: /proc/%d/maps: %s\n", (int)pid,
			strerror(-e));
		goto out;
	}
	if (!layout_matches(im, cur, ncur)) {
		fprintf(stderr, "softdirty restore: refusing: nothing written\n");
		goto out;
	}
	for (i = 0; i < im->nreg; i++) {
		const struct img_region *r = &im->reg[i];
		bool anon = pmem_anon_name(r->name) && !(r->prot & IMG_PROT_SHARED);
		struct prange *pr = NULL;
		size_t np = 0, j;
		uint64_t k, a;

		if (!r->npages)
			continue;
		e = pmem_present(&m, r->start, r->end, &pr, &np);
		if (e)
			goto io;
		/* the image's pages: written back where they differ */
		for (k = 0; k < r->nruns && !e; k++) {
			uint64_t end = r->start + (r->runs[k].first +
						   r->runs[k].count) * IMG_PAGE;
			uint64_t bs = 0, bn = 0;

			for (a = r->start + r->runs[k].first * IMG_PAGE;
			     a <= end && !e; a += IMG_PAGE) {
				const uint8_t *d, *h;
				/* not populated, zero in the image: reads as zeros */
				bool skip = a < end && anon && !in_ranges(pr, np, a) &&
					    img_page(im, a, &d, &h) == IMG_ZERO;

				if (a < end && !skip && bn < BATCH) {
					if (!bn++)
						bs = a;
					continue;
				}
				e = restore_batch(&m, im, bs, bn, page,
						  &written, &unchanged);
				bn = 0;
				if (skip)
					unchanged++;
				else if (a < end) {
					bs = a;
					bn = 1;
				}
			}
		}
		/*
		 * present now, absent then: anonymous memory read as zeros
		 * then, a private file mapping read its file
		 */
		ffd = -1;
		if (!anon && !(r->prot & IMG_PROT_SHARED) && r->name[0] == '/')
			ffd = open(r->name, O_RDONLY | O_CLOEXEC);
		for (j = 0; j < np && !e; j++)
			for (a = pr[j].start; a < pr[j].end; a += IMG_PAGE) {
				const uint8_t *d, *h;
				uint8_t *then = page + IMG_PAGE;

				if (img_page(im, a, &d, &h) != IMG_NONE)
					continue;
				if (!anon && ffd < 0) {
					skipped++;
					continue;
				}
				memset(then, 0, IMG_PAGE);
				if (!anon && pread(ffd, then, IMG_PAGE,
						   (off_t)(r->offset + (a - r->start))) < 0) {
					skipped++;
					continue;
				}
				e = pmem_read(&m, a, page, IMG_PAGE);
				if (e)
					break;
				if (!memcmp(page, then, IMG_PAGE))
					continue;
				e = pmem_write(&m, a, then, IMG_PAGE);
				if (e)
					break;
				written++;
				zeroed += anon;
				fromfile += !anon;
			}
		if (ffd >= 0)
			close(ffd);
		free(pr);
		if (e)
			goto io;
	}
	t1 = now();
	if (!quiet) {
		printf("restore: %s into pid %d: %" PRIu64 " pages written back (%" PRIu64
		       " of them zeroed: absent in the image), %" PRIu64
		       " unchanged since (compared by checksum)\n",
		       dir, (int)pid, written, zeroed, unchanged);
		if (fromfile)
			printf("restore: %" PRIu64 " pages of private file mappings were not resident when dumped: read again from their files\n",
			       fromfile);
		if (skipped)
			printf("restore: %" PRIu64 " pages of shared or unreadable file mappings were not resident when dumped and are left as they are\n",
			       skipped);
		printf("restore: frozen %.3f ms\n", (t1 - t0) * 1e3);
	}
	rc = 0;
	goto out;
io:
	fprintf(stderr, "softdirty restore: %s\n", strerror(-e));
out:
	if (frozen && softdirty_thaw(sd))
		fprintf(stderr, "softdirty restore: thaw failed\n");
	softdirty_close(sd);
	pmem_free_regions(cur, ncur);
	pmem_close(&m);
	img_free(im);
	free(page);
	free(exe);
	return rc;
}

int cmd_restore(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "pid", required_argument, NULL, 'p' },
		{ "backend", required_argument, NULL, 'b' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const char *backend = NULL;
	pid_t pid = 0;
	bool quiet = false;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "p:b:qh", opts, NULL)) != -1) {
		switch (c) {
		case 'p': pid = parse_pid(optarg); if (!pid) return restore_usage(stderr); break;
		case 'b': backend = optarg; break;
		case 'q': quiet = true; break;
		case 'h': restore_usage(stdout); return 0;
		default: return restore_usage(stderr);
		}
	}
	if (optind != argc - 1 || !pid)
		return restore_usage(stderr);
	return do_restore(argv[optind], pid, backend, quiet);
}
