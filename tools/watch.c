// SPDX-License-Identifier: MIT
/*
 * softdirty watch: collect-and-reset another process's tracker every
 * interval and report what it wrote, per mapping; a summary at the end
 * (write working set, median and peak rates) and optionally an SVG
 * heatmap of address against time.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "softdirty.h"
#include "commands.h"

#define PGSHIFT		12
#define VEC_LEN		4096
#define TOP_TEXT	3
/* heatmap bounds: columns (time) and rows (address) */
#define HM_COLS		200
#define HM_ROWS		200
/* cap on stored (column, address bucket) counts before buckets widen */
#ifndef HM_MAX_ENTRIES
#define HM_MAX_ENTRIES	(1u << 21)
#endif

static volatile sig_atomic_t stop_sig;

static void on_signal(int sig)
{
	stop_sig = sig;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p) {
		fprintf(stderr, "softdirty: watch: out of memory\n");
		exit(1);
	}
	return p;
}

static char *xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;

	return memcpy(xrealloc(NULL, n), s, n);
}

/* ---------- /proc/PID/maps ---------- */

struct mapping {
	uint64_t start, end;
	char *name;		/* path, [heap], [stack], ... or "anon" */
	uint64_t pages;		/* dirty pages this interval */
};

struct maps {
	struct mapping *v;
	size_t n, cap;
};

static void maps_clear(struct maps *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->v[i].name);
	m->n = 0;
}

/* 0, or -errno (the process is gone: -ESRCH / -ENOENT) */
static int maps_read(struct maps *m, pid_t pid)
{
	char path[64], *line = NULL;
	size_t lcap = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	/* a zombie's maps are empty: keep the last layout for the summary */
	if (getline(&line, &lcap, f) <= 0) {
		free(line);
		fclose(f);
		return -ESRCH;
	}
	maps_clear(m);
	do {
		unsigned long long s, e;
		int off = 0;
		char *name;

		if (sscanf(line, "%llx-%llx %*s %*s %*s %*s %n", &s, &e, &off) < 2 ||
		    !off)
			continue;
		name = line + off;
		name[strcspn(name, "\n")] = 0;
		if (m->n == m->cap) {
			m->cap = m->cap ? 2 * m->cap : 64;
			m->v = xrealloc(m->v, m->cap * sizeof(*m->v));
		}
		m->v[m->n++] = (struct mapping){
			.start = s, .end = e,
			.name = xstrdup(*name ? name : "anon"),
		};
	} while (getline(&line, &lcap, f) > 0);
	free(line);
	fclose(f);
	return 0;
}

/* ---------- the write working set: a sparse page bitmap ---------- */

/* 512 pages (2 MiB) per chunk, chunks in an open-addressing table */
struct chunk {
	uint64_t key;		/* page >> 9, plus one (0: empty slot) */
	uint64_t bits[8];
};

struct pageset {
	struct chunk *t;
	size_t cap, used;
	uint64_t pages;
};

static size_t slot_of(const struct pageset *s, uint64_t key)
{
	size_t i = (size_t)((key * 0x9e3779b97f4a7c15ULL) >> 20) & (s->cap - 1);

	while (s->t[i].key && s->t[i].key != key)
		i = (i + 1) & (s->cap - 1);
	return i;
}

static void pageset_grow(struct pageset *s)
{
	struct pageset n = { .cap = s->cap ? 2 * s->cap : 1024 };

	n.t = calloc(n.cap, sizeof(*n.t));
	if (!n.t) {
		fprintf(stderr, "softdirty: watch: out of memory\n");
		exit(1);
	}
	for (size_t i = 0; i < s->cap; i++)
		if (s->t[i].key)
			n.t[slot_of(&n, s->t[i].key)] = s->t[i];
	n.used = s->used;
	n.pages = s->pages;
	free(s->t);
	*s = n;
}

static void pageset_add(struct pageset *s, uint64_t pg, uint64_t end)
{
	while (pg < end) {
		uint64_t key = (pg >> 9) + 1, lim = ((pg >> 9) + 1) << 9;
		struct chunk *c;
		size_t i;

		if (lim > end)
			lim = end;
		if (2 * (s->used + 1) > s->cap)
			pageset_grow(s);
		i = slot_of(s, key);
		c = &s->t[i];
		if (!c->key) {
			c->key = key;
			s->used++;
		}
		for (; pg < lim; pg++) {
			uint64_t bit = 1ULL << (pg & 63);

			if (!(c->bits[(pg >> 6) & 7] & bit)) {
				c->bits[(pg >> 6) & 7] |= bit;
				s->pages++;
			}
		}
	}
}

/* pages of [pg, end) in the set (walks chunks, not pages) */
static uint64_t pageset_count(const struct pageset *s, uint64_t pg,
			      uint64_t end)
{
	uint64_t n = 0;

	if (!s->cap)
		return 0;
	if (end - pg > (uint64_t)s->used * 512) {
		/* a huge range with few chunks: walk the table instead */
		for (size_t i = 0; i < s->cap; i++) {
			uint64_t base = (s->t[i].key - 1) << 9;

			if (!s->t[i].key || base + 512 <= pg || base >= end)
				continue;
			for (unsigned b = 0; b < 512; b++)
				if (base + b >= pg && base + b < end &&
				    (s->t[i].bits[b >> 6] >> (b & 63) & 1))
					n++;
		}
		return n;
	}
	while (pg < end) {
		uint64_t key = (pg >> 9) + 1, lim = ((pg >> 9) + 1) << 9;
		const struct chunk *c = &s->t[slot_of(s, key)];

		if (lim > end)
			lim = end;
		if (c->key)
			for (; pg < lim; pg++)
				n += c->bits[(pg >> 6) & 7] >> (pg & 63) & 1;
		pg = lim;
	}
	return n;
}

/* ---------- heatmap data: bounded columns x address buckets ---------- */

struct hm_entry {
	uint64_t key;		/* page >> shift */
	uint64_t pages;
};

struct hm_col {
	struct hm_entry *v;
	size_t n, cap;
};

struct region {
	uint64_t start, end;
	char *label;
};

struct heatmap {
	struct hm_col col[HM_COLS];
	struct hm_col scratch;	/* the interval being collected */
	unsigned int ncols;
	unsigned int per_col;	/* intervals per column (a power of 2) */
	unsigned int in_col;	/* intervals in the last column so far */
	unsigned int shift;	/* pages per bucket: 1 << shift */
	struct region *reg;	/* union of every mapping seen, sorted */
	size_t nreg, capreg;
};

/* Append to a column built in key order (equal keys add up). */
static void col_append(struct hm_col *c, uint64_t key, uint64_t pages)
{
	if (c->n && c->v[c->n - 1].key == key) {
		c->v[c->n - 1].pages += pages;
		return;
	}
	if (c->n == c->cap) {
		c->cap = c->cap ? 2 * c->cap : 64;
		c->v = xrealloc(c->v, c->cap * sizeof(*c->v));
	}
	c->v[c->n++] = (struct hm_entry){ key, pages };
}

/* a += b, both in key order, in one pass; b is emptied. */
static void col_merge(struct hm_col *a, struct hm_col *b)
{
	struct hm_col m = { 0 };
	size_t i = 0, j = 0;

	while (i < a->n || j < b->n) {
		if (j == b->n || (i < a->n && a->v[i].key <= b->v[j].key))
			col_append(&m, a->v[i].key, a->v[i].pages), i++;
		else
			col_append(&m, b->v[j].key, b->v[j].pages), j++;
	}
	free(a->v);
	free(b->v);
	*a = m;
	memset(b, 0, sizeof(*b));
}

/* Merge a column's entries into buckets one bit wider. */
static void col_widen(struct hm_col *c)
{
	size_t j = 0;

	for (size_t i = 0; i < c->n; i++) {
		uint64_t k = c->v[i].key >> 1;

		if (j && c->v[j - 1].key == k) {
			c->v[j - 1].pages += c->v[i].pages;
		} else {
			c->v[j++] = (struct hm_entry){ k, c->v[i].pages };
		}
	}
	c->n = j;
}

static void hm_next_interval(struct heatmap *h)
{
	if (h->ncols && h->in_col < h->per_col)
		return;
	if (h->ncols == HM_COLS) {
		/* full: pairs of columns become one */
		for (unsigned i = 0; i < HM_COLS / 2; i++) {
			struct hm_col a = h->col[2 * i], b = h->col[2 * i + 1];

			memset(&h->col[2 * i], 0, 2 * sizeof(a));
			col_merge(&a, &b);
			h->col[i] = a;
		}
		h->ncols = HM_COLS / 2;
		h->per_col *= 2;
		h->in_col = h->per_col;	/* the last merged column is full */
	}
	h->ncols++;
	h->in_col = 0;
}

/* Buckets twice as wide, everywhere. */
static void hm_widen(struct heatmap *h)
{
	col_widen(&h->scratch);
	for (unsigned i = 0; i < h->ncols; i++)
		col_widen(&h->col[i]);
	h->shift++;
}

static size_t hm_entries(const struct heatmap *h)
{
	size_t n = 0;

	for (unsigned i = 0; i < h->ncols; i++)
		n += h->col[i].n;
	return n;
}

/* This interval's ranges, in address order, into the scratch column. */
static void hm_add(struct heatmap *h, uint64_t pg, uint64_t end)
{
	while (pg < end) {
		uint64_t lim = ((pg >> h->shift) + 1) << h->shift;

		if (lim > end)
			lim = end;
		col_append(&h->scratch, pg >> h->shift, lim - pg);
		pg = lim;
		if (h->scratch.n > HM_MAX_ENTRIES && h->shift < 36)
			hm_widen(h);	/* one interval that large: now */
	}
}

/* The interval is complete: fold it into its column. */
static void hm_end_interval(struct heatmap *h)
{
	col_merge(&h->col[h->ncols - 1], &h->scratch);
	h->in_col++;
	/* 2^36 pages: one bucket holds a 48-bit address space */
	while (hm_entries(h) > HM_MAX_ENTRIES && h->shift < 36)
		hm_widen(h);
}

static const char *base_name(const char *name)
{
	const char *s = strrchr(name, '/');

	return name[0] == '/' && s ? s + 1 : name;
}

/* A region is named after its first named mapping; " +" when it has more. */
static void relabel(struct region *r, const char *name)
{
	size_t n = strlen(r->label);

	if (!strcmp(name, "anon") || !strcmp(name, r->label) ||
	    (n > 2 && !strcmp(r->label + n - 2, " +")))
		return;
	if (!strcmp(r->label, "anon")) {
		free(r->label);
		r->label = xstrdup(name);
		return;
	}
	r->label = xrealloc(r->label, n + 3);
	memcpy(r->label + n, " +", 3);
}

/* Add the current mappings to the union of regions. */
static void hm_regions(struct heatmap *h, const struct maps *m)
{
	for (size_t i = 0; i < m->n; i++) {
		uint64_t s = m->v[i].start, e = m->v[i].end;
		size_t lo = 0, hi = h->nreg, j;

		/* first region ending at or after s (adjacent ones join) */
		while (lo < hi) {
			size_t mid = (lo + hi) / 2;

			if (h->reg[mid].end < s)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo < h->nreg && h->reg[lo].start <= e) {
			struct region *r = &h->reg[lo];

			if (s < r->start)
				r->start = s;
			if (e > r->end)
				r->end = e;
			/* swallow the regions it now reaches */
			for (j = lo + 1; j < h->nreg && h->reg[j].start <= r->end; j++) {
				if (h->reg[j].end > r->end)
					r->end = h->reg[j].end;
				free(h->reg[j].label);
			}
			memmove(r + 1, h->reg + j, (h->nreg - j) * sizeof(*r));
			h->nreg -= j - lo - 1;
			relabel(r, base_name(m->v[i].name));
			continue;
		}
		if (h->nreg == h->capreg) {
			h->capreg = h->capreg ? 2 * h->capreg : 64;
			h->reg = xrealloc(h->reg, h->capreg * sizeof(*h->reg));
		}
		memmove(h->reg + lo + 1, h->reg + lo, (h->nreg - lo) * sizeof(*h->reg));
		h->reg[lo] = (struct region){ s, e, xstrdup(base_name(m->v[i].name)) };
		h->nreg++;
	}
}

/* Fewer regions than rows: join the closest neighbours. */
static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void hm_limit_regions(struct heatmap *h, size_t max)
{
	uint64_t *gap, cut;
	size_t j = 0, left;

	if (h->nreg <= max)
		return;
	gap = xrealloc(NULL, (h->nreg - 1) * sizeof(*gap));
	for (size_t i = 1; i < h->nreg; i++)
		gap[i - 1] = h->reg[i].start - h->reg[i - 1].end;
	qsort(gap, h->nreg - 1, sizeof(*gap), cmp_u64);
	cut = gap[h->nreg - max - 1];
	free(gap);
	/* join gaps below the cut, then equal ones while still too many */
	left = h->nreg;
	for (int pass = 0; pass < 2; pass++) {
		j = 0;
		for (size_t i = 1; i < h->nreg; i++) {
			uint64_t g = h->reg[i].start - h->reg[j].end;

			if ((g < cut || (pass && g == cut)) && left > max) {
				h->reg[j].end = h->reg[i].end;
				free(h->reg[i].label);
				left--;
			} else {
				h->reg[++j] = h->reg[i];
			}
		}
		h->nreg = j + 1;
	}
}

/* log2(1 + v), piecewise linear between powers of two (colours only) */
static double log2p1(uint64_t v)
{
	int e;

	v++;
	e = 63 - __builtin_clzll(v);
	return e + (double)(v - (1ULL << e)) / (double)(1ULL << e);
}

static void colour(double x, char out[8])
{
	/* pale yellow to dark red */
	static const double a[3] = { 255, 255, 204 }, b[3] = { 128, 0, 38 };
	int c[3];

	for (int i = 0; i < 3; i++)
		c[i] = (int)(a[i] + (b[i] - a[i]) * x + 0.5);
	snprintf(out, 8, "#%02x%02x%02x", c[0], c[1], c[2]);
}

static void xml_text(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '<')
			fputs("&lt;", f);
		else if (*s == '>')
			fputs("&gt;", f);
		else if (*s == '&')
			fputs("&amp;", f);
		else if (*s == '"')
			fputs("&quot;", f);
		else if ((unsigned char)*s >= 0x20)
			fputc(*s, f);
	}
}

/* First page of row k (of n) of a region of @pages pages from @start. */
static uint64_t row_start(uint64_t start, uint64_t pages, size_t k, size_t n)
{
	return start + (uint64_t)((double)pages * k / n);
}

/*
 * Spread @v pages written somewhere in pages [s, e) over the rows that
 * map them, in proportion (a bucket wider than a row, or over several
 * regions, is taken as written evenly; single pages land whole).
 */
static void hm_spread(const struct heatmap *h, const size_t *row0,
		      const size_t *nr, double *cell, size_t stride,
		      uint64_t s, uint64_t e, double v)
{
	size_t lo = 0, hi = h->nreg;
	uint64_t mapped = 0;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (h->reg[mid].end >> PGSHIFT <= s)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (int pass = 0; pass < 2; pass++) {
		for (size_t r = lo; r < h->nreg && h->reg[r].start >> PGSHIFT < e; r++) {
			uint64_t rs = h->reg[r].start >> PGSHIFT;
			uint64_t rp = (h->reg[r].end >> PGSHIFT) - rs;
			uint64_t a = s > rs ? s : rs;
			uint64_t b = e < rs + rp ? e : rs + rp;
			size_t k;

			if (!pass) {
				mapped += b - a;
				continue;
			}
			/* the row holding page a, then on while rows start before b */
			k = (size_t)((double)(a - rs) * nr[r] / rp);
			while (k > 0 && row_start(rs, rp, k, nr[r]) > a)
				k--;
			while (k + 1 < nr[r] && row_start(rs, rp, k + 1, nr[r]) <= a)
				k++;
			for (; k < nr[r] && row_start(rs, rp, k, nr[r]) < b; k++) {
				uint64_t x = row_start(rs, rp, k, nr[r]);
				uint64_t y = row_start(rs, rp, k + 1, nr[r]);

				if (x < a)
					x = a;
				if (y > b)
					y = b;
				if (y > x)
					cell[(row0[r] + k) * stride] +=
						v * (double)(y - x) / (double)mapped;
			}
		}
		if (!mapped)
			return;	/* unmapped before we looked */
	}
}

/*
 * Rows: every region at least one, the rest by size.  A bucket counts in
 * the region and row holding its first mapped page.
 */
static int hm_write(struct heatmap *h, const char *path, pid_t pid,
		    double secs, double step_s)
{
	enum { LEFT = 230, TOP = 30, CW_MAX = 40, RH = 3 };
	size_t nrows = 0, *row0, *nr, r;
	uint64_t total = 0;
	double *cell, cmax = 0;
	unsigned int cw = h->ncols ? 1000 / h->ncols : 1;
	char *tmp;
	FILE *f;
	int err = 0;

	if (cw > CW_MAX)
		cw = CW_MAX;
	if (!cw)
		cw = 1;
	hm_limit_regions(h, HM_ROWS);
	row0 = xrealloc(NULL, (h->nreg + 1) * sizeof(*row0));
	nr = xrealloc(NULL, (h->nreg + 1) * sizeof(*nr));
	for (r = 0; r < h->nreg; r++)
		total += (h->reg[r].end - h->reg[r].start) >> PGSHIFT;
	for (r = 0; r < h->nreg; r++) {
		uint64_t pages = (h->reg[r].end - h->reg[r].start) >> PGSHIFT;

		nr[r] = 1 + (size_t)((double)(HM_ROWS - h->nreg) * pages /
				     (total ? total : 1));
		if (nr[r] > pages)
			nr[r] = pages;	/* a row holds whole pages */
		row0[r] = nrows;
		nrows += nr[r];
	}
	cell = calloc(nrows * (h->ncols ? h->ncols : 1) + 1, sizeof(*cell));
	if (!cell) {
		free(row0);
		free(nr);
		return -ENOMEM;
	}
	for (unsigned c = 0; c < h->ncols; c++)
		for (size_t i = 0; i < h->col[c].n; i++)
			hm_spread(h, row0, nr, cell + c, h->ncols,
				  h->col[c].v[i].key << h->shift,
				  (h->col[c].v[i].key + 1) << h->shift,
				  (double)h->col[c].v[i].pages);
	for (size_t k = 0; k < nrows * h->ncols; k++)
		if (cell[k] > cmax)
			cmax = cell[k];

	if (asprintf(&tmp, "%s.tmp.%d", path, (int)getpid()) < 0) {
		free(cell);
		free(row0);
		free(nr);
		return -ENOMEM;
	}
	f = fopen(tmp, "we");
	if (!f) {
		err = -errno;
		goto out;
	}
	unsigned int w = LEFT + h->ncols * cw + 20, hgt = TOP + nrows * RH + 40;

	fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%u\" "
		"height=\"%u\" viewBox=\"0 0 %u %u\" font-family=\"monospace\" "
		"font-size=\"10\">\n", w, hgt, w, hgt);
	fprintf(f, "<title>softdirty watch %d: pages written, address (regions, "
		"gaps removed) against time</title>\n", (int)pid);
	fprintf(f, "<rect width=\"%u\" height=\"%u\" fill=\"white\"/>\n", w, hgt);
	fprintf(f, "<text x=\"4\" y=\"14\" font-size=\"12\">pid %d: pages "
		"written per %.3g s (0: per step) and %llu KiB, max %.4g"
		"</text>\n",
		(int)pid, step_s * h->per_col,
		(unsigned long long)(4ULL << h->shift), cmax);
	for (r = 0; r < h->nreg; r++) {
		const struct region *g = &h->reg[r];
		unsigned int y = TOP + row0[r] * RH;

		fprintf(f, "<g class=\"region\" data-start=\"0x%" PRIx64
			"\" data-end=\"0x%" PRIx64 "\"><title>", g->start, g->end);
		xml_text(f, g->label);
		fprintf(f, " %" PRIx64 "-%" PRIx64 "</title>\n", g->start, g->end);
		fprintf(f, "<line x1=\"0\" x2=\"%u\" y1=\"%u\" y2=\"%u\" "
			"stroke=\"#ddd\" stroke-width=\"0.5\"/>\n",
			w - 20, y, y);
		if (nr[r] * RH >= 8) {
			fprintf(f, "<text x=\"2\" y=\"%u\">", y + 8);
			xml_text(f, g->label);
			fprintf(f, "</text>\n");
		}
		for (size_t row = row0[r]; row < row0[r] + nr[r]; row++) {
			for (unsigned c = 0; c < h->ncols; c++) {
				double v = cell[row * h->ncols + c];
				char col[8];

				if (!v)
					continue;
				colour(log2p1((uint64_t)(v + 0.5)) /
				       log2p1((uint64_t)(cmax + 0.5)), col);
				fprintf(f, "<rect x=\"%u\" y=\"%zu\" width=\"%u\" "
					"height=\"%u\" fill=\"%s\"><title>%.4g"
					"</title></rect>\n", LEFT + c * cw,
					TOP + row * RH, cw, RH, col, v);
			}
		}
		fprintf(f, "</g>\n");
	}
	fprintf(f, "<text x=\"%u\" y=\"%zu\">0 s</text>\n", LEFT,
		TOP + nrows * RH + 14);
	fprintf(f, "<text x=\"%u\" y=\"%zu\" text-anchor=\"end\">%.1f s</text>\n",
		LEFT + h->ncols * cw, TOP + nrows * RH + 14, secs);
	fprintf(f, "</svg>\n");
	if (fflush(f) || ferror(f) || fsync(fileno(f)))
		err = -errno ? -errno : -EIO;
	if (fclose(f) && !err)
		err = -errno;
	if (!err && rename(tmp, path))
		err = -errno;
	if (err)
		unlink(tmp);
out:
	free(tmp);
	free(cell);
	free(row0);
	free(nr);
	return err;
}

static void hm_free(struct heatmap *h)
{
	for (unsigned i = 0; i < HM_COLS; i++)
		free(h->col[i].v);
	free(h->scratch.v);
	for (size_t r = 0; r < h->nreg; r++)
		free(h->reg[r].label);
	free(h->reg);
}

/* ---------- output ---------- */

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", *s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static const struct mapping **by_pages;
static size_t nby;

static int cmp_pages(const void *a, const void *b)
{
	const struct mapping *x = *(const struct mapping *const *)a;
	const struct mapping *y = *(const struct mapping *const *)b;

	if (x->pages != y->pages)
		return x->pages > y->pages ? -1 : 1;
	return x->start < y->start ? -1 : x->start > y->start;
}

/* The mappings with dirty pages, most first (into by_pages). */
static void rank(const struct maps *m, const struct mapping *unmapped)
{
	by_pages = xrealloc(by_pages, (m->n + 1) * sizeof(*by_pages));
	nby = 0;
	for (size_t i = 0; i < m->n; i++)
		if (m->v[i].pages)
			by_pages[nby++] = &m->v[i];
	if (unmapped->pages)
		by_pages[nby++] = unmapped;
	qsort(by_pages, nby, sizeof(*by_pages), cmp_pages);
}

static double mbps(uint64_t pages, double secs)
{
	return secs > 0 ? pages * 4096.0 / 1e6 / secs : 0;
}

/* ---------- the loop ---------- */

struct watch {
	struct softdirty *sd;
	pid_t pid;
	bool json;
	struct maps maps;
	struct mapping unmapped;
	struct pageset wss;
	struct heatmap *hm;
	double *rates;
	size_t nrates, caprates;
	uint64_t total;
	double t0;
	struct softdirty_range vec[VEC_LEN];
};

/* Attribute [s, e) to the mappings (sorted) from index *i on. */
static void attribute(struct watch *w, size_t *i, uint64_t s, uint64_t e)
{
	struct maps *m = &w->maps;

	while (s < e) {
		while (*i < m->n && m->v[*i].end <= s)
			(*i)++;
		if (*i == m->n || m->v[*i].start >= e) {
			w->unmapped.pages += (e - s) >> PGSHIFT;
			return;
		}
		if (m->v[*i].start > s) {
			w->unmapped.pages += (m->v[*i].start - s) >> PGSHIFT;
			s = m->v[*i].start;
		}
		uint64_t lim = e < m->v[*i].end ? e : m->v[*i].end;

		m->v[*i].pages += (lim - s) >> PGSHIFT;
		s = lim;
	}
}

/* One interval: collect-and-reset everything, report.  0 or -errno. */
static int interval(struct watch *w, double t_prev, double *t_out)
{
	uint64_t addr = 0, we = 0, pages = 0, fresh = 0;
	size_t mi = 0;
	double t, dt;
	int err;

	do {
		long n = softdirty_collect(w->sd, addr, UINT64_MAX, w->vec,
					   VEC_LEN, SOFTDIRTY_COLLECT_RESET, &we);

		if (n < 0)
			return (int)n;
		if (addr == 0) {
			/* the layout the ranges are attributed to */
			err = maps_read(&w->maps, w->pid);
			if (err)
				return err;
			w->unmapped.pages = 0;
			if (w->hm) {
				/* what a failed interval left behind */
				w->hm->scratch.n = 0;
				hm_next_interval(w->hm);
				hm_regions(w->hm, &w->maps);
			}
		}
		for (long k = 0; k < n; k++) {
			uint64_t s = w->vec[k].start, e = w->vec[k].end;

			pages += (e - s) >> PGSHIFT;
			if (w->vec[k].flags & SOFTDIRTY_RANGE_NEW)
				fresh += (e - s) >> PGSHIFT;
			attribute(w, &mi, s, e);
			pageset_add(&w->wss, s >> PGSHIFT, e >> PGSHIFT);
			if (w->hm)
				hm_add(w->hm, s >> PGSHIFT, e >> PGSHIFT);
		}
		addr = we;
	} while (we != UINT64_MAX);
	if (w->hm)
		hm_end_interval(w->hm);

	t = now_s();
	dt = t - t_prev;
	*t_out = t;
	w->total += pages;
	if (w->nrates == w->caprates) {
		w->caprates = w->caprates ? 2 * w->caprates : 256;
		w->rates = xrealloc(w->rates, w->caprates * sizeof(*w->rates));
	}
	w->rates[w->nrates++] = mbps(pages, dt);
	rank(&w->maps, &w->unmapped);

	if (w->json) {
		printf("{\"t\": %.3f, \"interval\": %.3f, \"dirty_pages\": %" PRIu64
		       ", \"dirty_bytes\": %" PRIu64 ", \"new_pages\": %" PRIu64
		       ", \"mb_per_s\": %.3f, \"mappings\": [",
		       t - w->t0, dt, pages, pages << PGSHIFT, fresh,
		       mbps(pages, dt));
		for (size_t k = 0; k < nby; k++) {
			printf("%s{\"name\": ", k ? ", " : "");
			json_str(stdout, by_pages[k]->name);
			printf(", \"start\": %" PRIu64 ", \"end\": %" PRIu64
			       ", \"dirty_pages\": %" PRIu64 "}",
			       by_pages[k]->start, by_pages[k]->end,
			       by_pages[k]->pages);
		}
		printf("]}\n");
	} else {
		printf("%8.2fs %9" PRIu64 " pages %10.1f MiB %9.1f MB/s\n",
		       t - w->t0, pages, pages * 4096.0 / (1 << 20),
		       mbps(pages, dt));
		for (size_t k = 0; k < nby && k < TOP_TEXT; k++)
			printf("          %9" PRIu64 "  %" PRIx64 "-%" PRIx64 " %s\n",
			       by_pages[k]->pages, by_pages[k]->start,
			       by_pages[k]->end, by_pages[k]->name);
	}
	fflush(stdout);
	for (size_t k = 0; k < w->maps.n; k++)
		w->maps.v[k].pages = 0;
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void summary(struct watch *w, double secs, const char *end_reason,
		    int status)
{
	double med = 0, peak = 0;

	if (w->nrates) {
		qsort(w->rates, w->nrates, sizeof(*w->rates), cmp_double);
		med = w->nrates & 1 ? w->rates[w->nrates / 2] :
		      (w->rates[w->nrates / 2 - 1] + w->rates[w->nrates / 2]) / 2;
		peak = w->rates[w->nrates - 1];
	}
	/* the per-mapping working set, over the last layout seen */
	for (size_t k = 0; k < w->maps.n; k++)
		w->maps.v[k].pages = pageset_count(&w->wss,
						   w->maps.v[k].start >> PGSHIFT,
						   w->maps.v[k].end >> PGSHIFT);
	w->unmapped.pages = 0;
	rank(&w->maps, &w->unmapped);
	if (w->json) {
		printf("{\"summary\": true, \"t\": %.3f, \"intervals\": %zu, "
		       "\"end\": \"%s\", \"total_pages\": %" PRIu64
		       ", \"total_bytes\": %" PRIu64 ", \"wss_pages\": %" PRIu64
		       ", \"wss_bytes\": %" PRIu64 ", \"median_mb_per_s\": %.3f"
		       ", \"peak_mb_per_s\": %.3f",
		       secs, w->nrates, end_reason, w->total, w->total << PGSHIFT,
		       w->wss.pages, w->wss.pages << PGSHIFT, med, peak);
		if (status >= 0)
			printf(", \"exit_status\": %d", status);
		printf(", \"mappings\": [");
		for (size_t k = 0; k < nby; k++) {
			printf("%s{\"name\": ", k ? ", " : "");
			json_str(stdout, by_pages[k]->name);
			printf(", \"start\": %" PRIu64 ", \"end\": %" PRIu64
			       ", \"wss_pages\": %" PRIu64 "}", by_pages[k]->start,
			       by_pages[k]->end, by_pages[k]->pages);
		}
		printf("]}\n");
	} else {
		printf("--- pid %d, %s after %.2f s, %zu intervals\n", (int)w->pid,
		       end_reason, secs, w->nrates);
		printf("written:      %" PRIu64 " pages (%.1f MiB)\n", w->total,
		       w->total * 4096.0 / (1 << 20));
		printf("working set:  %" PRIu64 " distinct pages (%.1f MiB)\n",
		       w->wss.pages, w->wss.pages * 4096.0 / (1 << 20));
		printf("rate:         median %.1f MB/s, peak %.1f MB/s\n", med, peak);
		for (size_t k = 0; k < nby && k < 5; k++)
			printf("          %9" PRIu64 "  %" PRIx64 "-%" PRIx64 " %s\n",
			       by_pages[k]->pages, by_pages[k]->start,
			       by_pages[k]->end, by_pages[k]->name);
	}
	fflush(stdout);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: softdirty watch [--interval MS] [--backend NAME] [--json]\n"
		"                       [--heatmap FILE.svg] [--step-fd FD]\n"
		"                       (PID | -- COMMAND [ARGS...])\n");
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
	char *e;

	errno = 0;
	if (!*s || *s == '-' || *s == '+')
		return -EINVAL;
	*out = strtoul(s, &e, 10);
	if (errno || *e || *out > max)
		return -EINVAL;
	return 0;
}

/* Fork COMMAND held at a pipe until we are tracking it. */
static pid_t spawn_held(char **argv, int *go, int *err_fd)
{
	int hold[2], ep[2];
	pid_t pid;

	if (pipe2(hold, O_CLOEXEC) || pipe2(ep, O_CLOEXEC))
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (!pid) {
		sigset_t mask;
		char c;
		int e;

		close(hold[1]);
		close(ep[0]);
		if (read(hold[0], &c, 1) != 1)
			_exit(127);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		sigemptyset(&mask);
		sigprocmask(SIG_SETMASK, &mask, NULL);
		execvp(argv[0], argv);
		e = errno;
		if (write(ep[1], &e, sizeof(e)) < 0)
			_exit(127);
		_exit(e == ENOENT ? 127 : 126);
	}
	close(hold[0]);
	close(ep[1]);
	*go = hold[1];
	*err_fd = ep[0];
	return pid;
}

int cmd_watch(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "interval", required_argument, NULL, 'i' },
		{ "backend", required_argument, NULL, 'b' },
		{ "json", no_argument, NULL, 'j' },
		{ "heatmap", required_argument, NULL, 'H' },
		{ "step-fd", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct softdirty_opts o = { .sz = sizeof(o) };
	const char *heatmap = NULL, *end_reason = "stopped";
	unsigned long ms = 1000, v;
	int c, err, step_fd = -1, pidfd = -1, go = -1, err_fd = -1;
	int status = -1, ret = 0;
	bool child = false, dashdash, json = false;
	struct watch *w;
	double t, t_next;
	sigset_t block, old;
	struct sigaction sa = { .sa_handler = on_signal };

	optind = 1;
	while ((c = getopt_long(argc, argv, "+i:b:jH:s:h", opts, NULL)) != -1) {
		switch (c) {
		case 'i':
			if (parse_uint(optarg, 3600000, &ms) || !ms) {
				fprintf(stderr, "softdirty: watch: bad interval '%s' "
					"(milliseconds, 1 to 3600000)\n", optarg);
				return 2;
			}
			break;
		case 'b':
			o.backend = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'H':
			heatmap = optarg;
			break;
		case 's':
			if (parse_uint(optarg, 1 << 20, &v)) {
				fprintf(stderr, "softdirty: watch: bad fd '%s'\n",
					optarg);
				return 2;
			}
			step_fd = (int)v;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	dashdash = optind > 1 && !strcmp(argv[optind - 1], "--");
	if (optind >= argc || (!dashdash && optind + 1 != argc)) {
		usage(stderr);
		return 2;
	}

	w = calloc(1, sizeof(*w));
	if (!w) {
		fprintf(stderr, "softdirty: watch: out of memory\n");
		return 1;
	}
	w->json = json;
	w->unmapped.name = "[unmapped]";
	if (heatmap) {
		w->hm = calloc(1, sizeof(*w->hm));
		if (!w->hm) {
			fprintf(stderr, "softdirty: watch: out of memory\n");
			free(w);
			return 1;
		}
		w->hm->per_col = 1;
	}

	/* signals wait for the poll below, so none is missed between checks */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigprocmask(SIG_BLOCK, &block, &old);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	if (dashdash) {
		pid_t p = spawn_held(argv + optind, &go, &err_fd);

		if (p < 0) {
			fprintf(stderr, "softdirty: watch: fork: %s\n",
				strerror((int)-p));
			ret = 1;
			goto out;
		}
		w->pid = p;
		child = true;
	} else {
		if (parse_uint(argv[optind], INT32_MAX, &v) || !v) {
			fprintf(stderr, "softdirty: watch: bad pid '%s'\n",
				argv[optind]);
			ret = 2;
			goto out;
		}
		w->pid = (pid_t)v;
	}

	err = softdirty_open(&w->sd, w->pid, &o);
	if (err) {
		const char *why = strerror(-err);

		if (err == -ESRCH)
			why = "no such process";
		else if (err == -EPERM)
			why = "permission denied: not allowed to ptrace it "
			      "(same user, or CAP_SYS_PTRACE)";
		else if (err == -ENOENT)
			why = "unknown backend (see softdirty probe)";
		else if (err == -EOPNOTSUPP)
			why = "the backend cannot track another process here "
			      "(see softdirty probe)";
		fprintf(stderr, "softdirty: watch: cannot track pid %d with "
			"backend %s: %s\n", (int)w->pid,
			o.backend ? o.backend : "auto", why);
		ret = 1;
		goto out;
	}
	pidfd = (int)syscall(SYS_pidfd_open, w->pid, 0);
	if (pidfd < 0) {
		fprintf(stderr, "softdirty: watch: pidfd_open(%d): %s\n",
			(int)w->pid, strerror(errno));
		ret = 1;
		goto out;
	}
	w->t0 = now_s();
	if (child) {
		int e;

		if (write(go, "g", 1) != 1) {
			fprintf(stderr, "softdirty: watch: cannot start the "
				"command: %s\n", strerror(errno));
			ret = 1;
			goto out;
		}
		close(go);
		go = -1;
		if (read(err_fd, &e, sizeof(e)) == sizeof(e)) {
			fprintf(stderr, "softdirty: watch: cannot run '%s': %s\n",
				argv[optind], strerror(e));
			softdirty_close(w->sd);
			w->sd = NULL;
			waitpid(w->pid, NULL, 0);
			child = false;
			ret = e == ENOENT ? 127 : 126;
			goto out;
		}
		close(err_fd);
		err_fd = -1;
	}
	if (!w->json)
		fprintf(stderr, "softdirty: watching pid %d with backend %s, "
			"%s\n", (int)w->pid, softdirty_backend(w->sd),
			step_fd >= 0 ? "a collect per byte on the step fd" :
			"Ctrl-C ends");

	t = w->t0;
	t_next = t + ms / 1e3;
	for (;;) {
		struct pollfd pfd[2] = {
			{ .fd = pidfd, .events = POLLIN },
			{ .fd = step_fd, .events = POLLIN },
		};
		double now = now_s();
		struct timespec ts, *tsp = NULL;
		bool due = false, gone = false;
		int n;

		if (step_fd < 0) {
			double left = t_next > now ? t_next - now : 0;

			ts.tv_sec = (time_t)left;
			ts.tv_nsec = (long)((left - ts.tv_sec) * 1e9);
			tsp = &ts;
		}
		n = ppoll(pfd, step_fd >= 0 ? 2 : 1, tsp, &old);
		if (n < 0 && errno != EINTR) {
			fprintf(stderr, "softdirty: watch: poll: %s\n",
				strerror(errno));
			ret = 1;
			break;
		}
		if (stop_sig) {
			end_reason = stop_sig == SIGINT ? "interrupted" :
				     "terminated";
			break;
		}
		if (n > 0 && pfd[0].revents)
			gone = true;
		if (n > 0 && step_fd >= 0 && pfd[1].revents) {
			char buf[64];
			ssize_t r = read(step_fd, buf, sizeof(buf));

			if (r <= 0) {
				end_reason = "step fd closed";
				break;
			}
			due = true;
		}
		if (step_fd < 0 && now_s() >= t_next) {
			due = true;
			t_next += ms / 1e3;
			if (t_next < now_s())
				t_next = now_s() + ms / 1e3;
		}
		if (gone) {
			end_reason = "target exited";
			/* what it wrote last, when its memory can still be read */
			(void)interval(w, t, &t);
			break;
		}
		if (due) {
			err = interval(w, t, &t);
			if (err == -ESRCH || err == -ENOENT) {
				end_reason = "target exited";
				break;
			}
			if (err) {
				fprintf(stderr, "softdirty: watch: collect: %s\n",
					strerror(-err));
				ret = 1;
				break;
			}
		}
	}
	softdirty_close(w->sd);
	w->sd = NULL;
	if (child) {
		int st;

		if (stop_sig)
			kill(w->pid, stop_sig);
		if (waitpid(w->pid, &st, 0) == w->pid) {
			status = WIFEXITED(st) ? WEXITSTATUS(st) :
				 128 + WTERMSIG(st);
			if (!ret)
				ret = status;
		}
	}
	summary(w, now_s() - w->t0, end_reason, status);
	if (w->hm) {
		err = hm_write(w->hm, heatmap, w->pid, now_s() - w->t0,
			       step_fd >= 0 ? 0 : ms / 1e3);
		if (err) {
			fprintf(stderr, "softdirty: watch: %s: %s\n", heatmap,
				strerror(-err));
			ret = ret ? ret : 1;
		}
	}
out:
	if (w->sd)
		softdirty_close(w->sd);
	if (child)
		waitpid(w->pid, NULL, 0);
	if (pidfd >= 0)
		close(pidfd);
	if (go >= 0)
		close(go);
	if (err_fd >= 0)
		close(err_fd);
	maps_clear(&w->maps);
	free(w->maps.v);
	free(w->wss.t);
	free(w->rates);
	free(by_pages);
	if (w->hm) {
		hm_free(w->hm);
		free(w->hm);
	}
	free(w);
	return ret;
}
