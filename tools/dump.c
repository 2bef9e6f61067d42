// SPDX-License-Identifier: MIT
/*
 * softdirty dump / softdirty restore (softdirty-dump(1), softdirty-restore(1)).
 *
 * Both stop every thread of the target (softdirty_freeze()) so that what is
 * read or written is one moment of the process.  An increment is decided by
 * contents: every image holds a checksum of every present page, and a page
 * is stored again only when its checksum differs from the parent's at the
 * same address in the same mapping (docs/image-format.md says why).
 *
 * A series (--every/--count) keeps one tracker open across its links: an
 * increment then copies, while frozen, only the pages the tracker reports
 * written since the previous link plus those the parent does not hold;
 * the other pages are the parent's, unread.
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
#include <sys/stat.h>
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

static int open_tracker(struct softdirty **sd, pid_t pid, const char *backend)
{
	struct softdirty_opts o = { .sz = sizeof(o), .backend = backend };
	int e = softdirty_open(sd, pid, &o);

	if (e)
		fprintf(stderr, "softdirty: cannot attach to %d with backend %s: %s\n",
			(int)pid, backend ? backend : "auto", strerror(-e));
	return e;
}

/* Open a tracker on pid and freeze it. */
static int freeze(struct softdirty **sd, pid_t pid, const char *backend)
{
	int e = open_tracker(sd, pid, backend);

	if (e)
		return e;
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

/* The checksum the parent region q holds for its present page at a. */
static void parent_hash(const struct img_region *q, uint64_t a, uint8_t *hp)
{
	uint64_t k = (a - q->start) / IMG_PAGE;
	const struct img_run *x = img_run_of(q, k);

	memcpy(hp, q->hash + 16 * (x->hbase + k - x->first), 16);
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
	/* series: the tracker kept open (not frozen), and whether to use it */
	struct softdirty *sd;
	bool tracked;
	struct dump_stats *stats;
};

static unsigned int backend_caps(const struct softdirty *sd)
{
	struct softdirty_probe_result res[SOFTDIRTY_BACKEND_COUNT];
	int n = softdirty_probe(res, SOFTDIRTY_BACKEND_COUNT), i;

	for (i = 0; n >= 0 && i < SOFTDIRTY_BACKEND_COUNT; i++)
		if (!strcmp(res[i].name, softdirty_backend(sd)))
			return res[i].caps;
	return 0;
}

/*
 * What a tracked increment relies on: every write to the target seen,
 * including the kernel's and those after the program's own mprotect, and
 * fresh pages at addresses that were mapped (mremap regrowth) reported.
 * A superset (not EXACT) only copies more.
 */
bool dump_can_track(const struct softdirty *sd, const char **why)
{
	unsigned int caps = backend_caps(sd);

	if (!(caps & SOFTDIRTY_CAP_REMOTE))
		*why = "it cannot track another process";
	else if (!(caps & SOFTDIRTY_CAP_KERNEL_WRITES))
		*why = "it does not see writes made by the kernel";
	else if (!(caps & SOFTDIRTY_CAP_REGROWN))
		*why = "it does not report pages of regions regrown by mremap";
	else if (!(caps & SOFTDIRTY_CAP_PROT_CHANGES))
		*why = "it does not see writes after the program's own mprotect";
	else
		return true;
	return false;
}

/*
 * Pages another process can change without a write by the target: shared
 * mappings, and file pages a private mapping has not copied yet.  Only a
 * backend that compares contents sees those changes; with the others they
 * are always copied (and compared by checksum).
 */
static bool others_write(const struct img_region *r, unsigned int caps)
{
	return !(caps & SOFTDIRTY_CAP_CONTENTS) &&
	       ((r->prot & IMG_PROT_SHARED) || r->name[0] == '/');
}

/* Every range written since the last reset, and reset (sd frozen). */
static long collect_all(struct softdirty *sd, struct softdirty_range **out)
{
	struct softdirty_range *v = NULL, *nv;
	size_t cap = 0, n = 0;
	uint64_t a = 0, end = 0;
	long r;

	do {
		if (n == cap) {
			cap = cap ? cap * 2 : 1024;
			nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				free(v);
				return -ENOMEM;
			}
			v = nv;
		}
		r = softdirty_collect(sd, a, UINT64_MAX, v + n, cap - n,
				      SOFTDIRTY_COLLECT_RESET, &end);
		if (r < 0 || (end < UINT64_MAX && end <= a)) {
			free(v);
			return r < 0 ? r : -EIO;
		}
		n += (size_t)r;
		a = end;
	} while (end < UINT64_MAX);
	*out = v;
	return (long)n;
}

static int dump_usage(FILE *f)
{
	fprintf(f, "usage: softdirty dump PID -D DIR [--parent DIR] [--leave-stopped]\n"
		   "                      [--backend NAME] [--progress] [--quiet]\n"
		   "       softdirty dump PID -D DIR --every MS --count N [--backend NAME]\n"
		   "                      [--progress] [--quiet]\n");
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
	struct softdirty_range *rng = NULL;
	uint8_t *cp = NULL;
	long nrng = 0, ri = 0;
	unsigned int caps;
	uint32_t nreg = 0, i;
	uint64_t start_time, present = 0, nzero = 0, nparent = 0, off, idx;
	uint64_t nreported = 0, ncopied = 0, nalways = 0, need = 0;
	char *exe = NULL, err[512];
	uint8_t *buf = MAP_FAILED;
	const uint8_t *pend = NULL;
	size_t buflen = 0, j, pn = 0;
	double ta, t0, t1, t2, t3;
	struct progress pr = { .on = o->progress, .what = "dump" };
	bool frozen = false, writer = false, own = !o->sd, track = false;
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
	/* a tracked increment sizes its buffer by what it copies */
	if (!o->tracked || !parent) {
		buflen = (count_present(&m) * 9 / 8 + 256) * IMG_PAGE;
		buf = copy_buffer(buflen);
		if (buf == MAP_FAILED)
			goto nomem;
	}
	ta = now();
	if (own && freeze(&sd, o->pid, o->backend))
		goto out;
	if (!own) {
		e = softdirty_freeze(o->sd);
		if (e) {
			fprintf(stderr, "softdirty: cannot stop %d: %s\n",
				(int)o->pid, strerror(-e));
			goto out;
		}
		sd = o->sd;
	}
	frozen = true;
	track = o->tracked && parent;
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
	/*
	 * Tracked: the reset point of the next link; an increment copies the
	 * reported pages and those the parent does not hold in this mapping.
	 */
	if (o->tracked) {
		nrng = collect_all(sd, &rng);
		if (nrng < 0) {
			fprintf(stderr, "softdirty dump: collect: %s\n",
				strerror((int)-nrng));
			goto out;
		}
	}
	cp = malloc(present + 1);
	if (!cp)
		goto nomem;
	idx = 0;
	caps = track ? backend_caps(sd) : 0;
	for (i = 0; i < nreg; i++) {
		const struct img_region *q = track && !others_write(&reg[i], caps) ?
			same_mapping(parent, &reg[i]) : NULL;
		uint64_t a;

		for (j = 0; j < npres[i]; j++)
			for (a = pres[i][j].start; a < pres[i][j].end; a += IMG_PAGE) {
				bool in = false;

				while (ri < nrng && rng[ri].end <= a)
					ri++;
				if (ri < nrng && rng[ri].start <= a) {
					in = true;
					nreported++;
				}
				cp[idx] = !track || in || !q || a >= q->end ||
					  !img_run_of(q, (a - q->start) / IMG_PAGE);
				nalways += track && cp[idx] && !in &&
					   others_write(&reg[i], caps);
				need += cp[idx++] ? IMG_PAGE : 0;
			}
	}
	/* copy the chosen pages while stopped; checksums come after */
	pr.total = need;
	need = need ? need : IMG_PAGE;
	if (need > buflen) {
		uint8_t *nb = buf == MAP_FAILED ? copy_buffer(need) :
			      mremap(buf, buflen, need, MREMAP_MAYMOVE);

		if (nb == MAP_FAILED)
			goto nomem;
		buf = nb;
		buflen = need;
	}
	off = 0;
	idx = 0;
	for (i = 0; i < nreg; i++)
		for (j = 0; j < npres[i]; j++) {
			uint64_t a = pres[i][j].start, len;

			while (a < pres[i][j].end) {
				if (!cp[idx]) {
					a += IMG_PAGE;
					idx++;
					continue;
				}
				for (len = 0; a + len < pres[i][j].end && cp[idx];
				     len += IMG_PAGE)
					idx++;
				e = pmem_read(&m, a, buf + off, len);
				if (e) {
					fprintf(stderr, "softdirty dump: reading %#" PRIx64 "-%#" PRIx64 ": %s\n",
						a, a + len, strerror(-e));
					goto out;
				}
				off += len;
				ncopied += len / IMG_PAGE;
				progress(&pr, len);
				a += len;
			}
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
	idx = 0;
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
				bool copied = cp[idx++];
				uint32_t st;

				if (copied) {
					off += IMG_PAGE;
					img_page_hash(page, hp);
				} else {
					parent_hash(q, a, hp);
				}
				/* not copied: unwritten since the parent */
				if (!copied || (q && a < q->end &&
				    img_page(parent, a, &pd, &ph) != IMG_NONE &&
				    !memcmp(ph, hp, 16))) {
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
		w.meta.mode = track ? IMG_MODE_TRACKED : IMG_MODE_CONTENTS;
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
		       track ? "increment (pages the tracker reported written, and those the parent does not hold)" :
		       parent ? "increment (pages compared by checksum with the parent's)"
			      : "full");
		if (track)
			printf("dump: tracker %s reported %" PRIu64 " present pages written since the parent; %" PRIu64
			       " pages copied (%" PRIu64 " of shared or file mappings, which other processes can change)\n",
			       softdirty_backend(sd), nreported, ncopied, nalways);
		printf("dump: %u regions, %" PRIu64 " present pages: %" PRIu64
		       " stored, %" PRIu64 " zero, %" PRIu64 " unchanged since the parent\n",
		       nreg, present, w.ndata, nzero, nparent);
		printf("dump: frozen %.3f ms (tracker %s, %s: %.3f ms to %s)%s; checksums and write %.3f s\n",
		       (t1 - t0) * 1e3, softdirty_backend(sd),
		       o->tracked ? "kept open across the series" : "used to stop the threads",
		       (t0 - ta) * 1e3, own ? "open and stop" : "stop",
		       o->leave_stopped ? "; left stopped (SIGSTOP)" : "",
		       t3 - t2);
	}
	if (o->stats) {
		o->stats->present = present;
		o->stats->reported = nreported;
		o->stats->copied = ncopied;
		o->stats->always = nalways;
		o->stats->stored = w.ndata;
		o->stats->mode = w.meta.mode;
		o->stats->frozen_ns = w.meta.frozen_ns;
	}
	rc = 0;
	goto out;
nomem:
	fprintf(stderr, "softdirty dump: out of memory\n");
out:
	if (frozen && softdirty_thaw(sd))
		fprintf(stderr, "softdirty dump: thaw failed\n");
	if (own)
		softdirty_close(sd);
	free(rng);
	free(cp);
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

int dump_link(struct softdirty *sd, bool tracked, const char *dir,
	      const char *parent, bool quiet, struct dump_stats *st)
{
	struct dump_opts o = {
		.pid = softdirty_pid(sd), .dir = dir, .parent = parent,
		.quiet = quiet, .sd = sd, .tracked = tracked, .stats = st,
	};

	return do_dump(&o);
}

/* Whether pid still runs exe0 and started at start_time (no exit, no exec). */
static bool same_process(pid_t pid, uint64_t start_time, const char *exe0)
{
	uint64_t t;
	char *exe = NULL;
	int e = pmem_identity(pid, &t, &exe);
	bool same = !e && t == start_time && !strcmp(exe, exe0);

	free(exe);
	return same;
}

/* DIR/0 (full), DIR/1 (parent DIR/0), ... every ms milliseconds. */
static int dump_series(struct dump_opts *o, long every, long count)
{
	char cur[4096], prev[4096], *exe = NULL;
	const char *base = o->dir;
	struct timespec next;
	const char *why = NULL;
	uint64_t start_time;
	struct softdirty *sd;
	long k;
	int rc = 0, e = pmem_identity(o->pid, &start_time, &exe);

	if (e) {
		fprintf(stderr, "softdirty dump: process %d: %s\n", (int)o->pid,
			strerror(-e));
		free(exe);
		return 1;
	}
	if (mkdir(o->dir, 0777) && errno != EEXIST) {
		fprintf(stderr, "softdirty dump: %s: %s\n", o->dir, strerror(errno));
		free(exe);
		return 1;
	}
	if (open_tracker(&sd, o->pid, o->backend)) {
		free(exe);
		return 1;
	}
	o->sd = sd;
	o->tracked = dump_can_track(sd, &why);
	if (!o->quiet)
		printf("dump: series of %ld, every %ld ms, tracker %s: %s%s\n",
		       count, every, softdirty_backend(sd),
		       o->tracked ? "increments copy the pages it reports written" :
		       "increments compared by contents, because ",
		       o->tracked ? "" : why);
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (k = 0; k < count && !rc; k++) {
		if (k) {
			next.tv_sec += every / 1000;
			next.tv_nsec += every % 1000 * 1000000L;
			if (next.tv_nsec >= 1000000000L) {
				next.tv_sec++;
				next.tv_nsec -= 1000000000L;
			}
			while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME,
					       &next, NULL) == EINTR)
				;
		}
		if (!same_process(o->pid, start_time, exe)) {
			if (!o->quiet)
				printf("dump: process %d exited or ran execve: %ld images written\n",
				       (int)o->pid, k);
			break;
		}
		snprintf(cur, sizeof(cur), "%s/%ld", base, k);
		o->dir = cur;
		o->parent = k ? prev : NULL;
		rc = do_dump(o);
		if (rc && !same_process(o->pid, start_time, exe)) {
			fprintf(stderr, "softdirty dump: process %d exited or ran execve during link %ld; %ld images written\n",
				(int)o->pid, k, k);
			rc = 0;
			break;
		}
		memcpy(prev, cur, sizeof(prev));
	}
	softdirty_close(sd);
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
		{ "every", required_argument, NULL, 'e' },
		{ "count", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct dump_opts o = { .progress = isatty(2) };
	long every = -1, count = 0;
	char *end;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "D:p:b:qh", opts, NULL)) != -1) {
		switch (c) {
		case 'e':
			every = strtol(optarg, &end, 10);
			if (*end || !*optarg || every < 0 || every > 86400000L)
				return dump_usage(stderr);
			break;
		case 'n':
			count = strtol(optarg, &end, 10);
			if (*end || count < 1 || count > IMG_MAX_CHAIN)
				return dump_usage(stderr);
			break;
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
	if ((every >= 0) != (count > 0) || (count && (o.parent || o.leave_stopped)))
		return dump_usage(stderr);
	if (count)
		return dump_series(&o, every, count);
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
