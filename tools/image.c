// SPDX-License-Identifier: MIT
/* softdirty image inspect|verify|flatten|diff (softdirty-image(1)). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "commands.h"
#include "image-fmt.h"

static int usage(FILE *f)
{
	fprintf(f,
		"usage: softdirty image inspect DIR\n"
		"       softdirty image verify DIR\n"
		"       softdirty image flatten DIR -o OUT\n"
		"       softdirty image diff A B\n");
	return 2;
}

static void hex(const uint8_t *p, size_t n)
{
	while (n--)
		printf("%02x", *p++);
}

static void prot_str(uint32_t p, char s[5])
{
	s[0] = p & IMG_PROT_READ ? 'r' : '-';
	s[1] = p & IMG_PROT_WRITE ? 'w' : '-';
	s[2] = p & IMG_PROT_EXEC ? 'x' : '-';
	s[3] = p & IMG_PROT_SHARED ? 's' : 'p';
	s[4] = 0;
}

static void counts(const struct img_region *r, uint64_t c[4])
{
	uint64_t k;

	c[0] = c[1] = c[2] = c[3] = 0;
	for (k = 0; k < r->nruns; k++)
		c[r->runs[k].state] += r->runs[k].count;
	c[IMG_NONE] = r->npages - c[IMG_DATA] - c[IMG_ZERO] - c[IMG_PARENT];
}

static int inspect(const char *dir)
{
	struct img *im, *p;
	char err[512];
	uint64_t tot[4] = { 0 };
	uint32_t i;
	int depth = 0;

	if (img_open(dir, true, false, &im, err, sizeof(err))) {
		fprintf(stderr, "softdirty image: %s\n", err);
		return 1;
	}
	printf("image:    %s (format %u)\nid:       ", dir, IMG_VERSION);
	hex(im->id, 16);
	printf("\nprocess:  pid %" PRIu64 ", start time %" PRIu64 " ticks, %s\n",
	       im->pid, im->start_time, im->exe);
	{
		time_t t = (time_t)(im->created_ns / 1000000000ULL);
		char tb[64];
		struct tm tm;

		strftime(tb, sizeof(tb), "%Y-%m-%d %H:%M:%S UTC",
			 gmtime_r(&t, &tm));
		printf("taken:    %s, frozen %.3f ms, tracker %s\n", tb,
		       im->frozen_ns / 1e6, im->tracker[0] ? im->tracker : "-");
	}
	printf("mode:     %s\n", im->mode == IMG_MODE_FULL ? "full" :
	       im->mode == IMG_MODE_TRACKED ?
	       "increment (pages a tracker reported written since the parent)" :
	       "increment (contents compared with the parent's checksums)");
	printf("chain:\n");
	for (p = im; p; p = p->parent, depth++) {
		printf("  %d %s  id ", depth, p->dir);
		hex(p->id, 8);
		printf("  %s, %" PRIu64 " pages stored (%.1f MiB)\n",
		       p->mode == IMG_MODE_FULL ? "full" : "increment",
		       p->ndata, p->ndata * (double)IMG_PAGE / (1 << 20));
	}
	printf("regions:  %u\n", im->nreg);
	printf("  %-33s %-4s %8s %8s %8s %8s %8s  %s\n", "RANGE", "PROT", "PAGES",
	       "ABSENT", "STORED", "ZERO", "PARENT", "MAPPING");
	for (i = 0; i < im->nreg; i++) {
		const struct img_region *r = &im->reg[i];
		uint64_t c[4];
		char ps[5];

		prot_str(r->prot, ps);
		if (r->kind & IMG_KIND_SPECIAL) {
			printf("  %016" PRIx64 "-%016" PRIx64 " %s %8s %8s %8s %8s %8s  %s (not dumped)\n",
			       r->start, r->end, ps, "-", "-", "-", "-", "-", r->name);
			continue;
		}
		counts(r, c);
		tot[0] += c[0]; tot[1] += c[1]; tot[2] += c[2]; tot[3] += c[3];
		printf("  %016" PRIx64 "-%016" PRIx64 " %s %8" PRIu64 " %8" PRIu64
		       " %8" PRIu64 " %8" PRIu64 " %8" PRIu64 "  %s\n",
		       r->start, r->end, ps, r->npages, c[IMG_NONE], c[IMG_DATA],
		       c[IMG_ZERO], c[IMG_PARENT], r->name);
	}
	printf("pages:    %" PRIu64 " present (%" PRIu64 " stored here, %" PRIu64
	       " zero, %" PRIu64 " from the parent), %" PRIu64 " absent\n",
	       tot[1] + tot[2] + tot[3], tot[1], tot[2], tot[3], tot[0]);
	printf("size:     %zu bytes\n", im->len);
	img_free(im);
	return 0;
}

static int verify(const char *dir)
{
	struct img *im, *p;
	char err[512];
	uint64_t pages = 0;
	int n = 0;

	if (img_open(dir, true, true, &im, err, sizeof(err))) {
		fprintf(stderr, "softdirty image verify: FAILED: %s\n", err);
		return 1;
	}
	for (p = im; p; p = p->parent, n++)
		pages += p->ndata;
	printf("verify: %s OK: %d image%s in the chain, %" PRIu64
	       " stored pages checked, links and identities consistent\n",
	       dir, n, n == 1 ? "" : "s", pages);
	img_free(im);
	return 0;
}

static int flatten(const char *dir, const char *out)
{
	struct img *im;
	struct img_writer w;
	struct img_region *reg = NULL;
	char err[512];
	uint32_t i;
	int rc = 1;

	if (img_open(dir, true, true, &im, err, sizeof(err))) {
		fprintf(stderr, "softdirty image flatten: %s\n", err);
		return 1;
	}
	if (img_writer_open(&w, out, err, sizeof(err))) {
		fprintf(stderr, "softdirty image flatten: %s\n", err);
		img_writer_abort(&w);
		img_free(im);
		return 1;
	}
	reg = calloc(im->nreg + 1, sizeof(*reg));
	if (!reg)
		goto fail;
	for (i = 0; i < im->nreg; i++) {
		const struct img_region *r = &im->reg[i];
		uint64_t k, j, npg = 0, cap = r->nruns + 1;
		struct img_run *runs;
		uint8_t *h;

		reg[i] = *r;
		reg[i].runs = NULL;
		reg[i].hash = NULL;
		if (!r->npages)
			continue;
		/* the same runs, parent pages resolved: same checksums */
		runs = malloc((r->nruns + 1) * sizeof(*runs));
		for (k = 0; k < r->nruns; k++)
			npg += r->runs[k].count;
		h = malloc(npg * 16 + 16);
		reg[i].runs = runs;
		reg[i].hash = h;
		if (!runs || !h)
			goto fail;
		memcpy(h, r->hash, npg * 16);
		reg[i].nruns = 0;
		for (k = 0; k < r->nruns; k++)
			for (j = 0; j < r->runs[k].count; j++) {
				uint64_t idx = r->runs[k].first + j;
				const uint8_t *d, *hh;
				int s = img_page(im, r->start + idx * IMG_PAGE, &d, &hh);
				struct img_run *x = reg[i].nruns ?
					&runs[reg[i].nruns - 1] : NULL;

				if (s == IMG_NONE)
					goto fail;	/* img_open checked the links */
				if (s == IMG_DATA && img_writer_page(&w, d))
					goto fail;
				if (x && x->state == (uint32_t)s &&
				    x->first + x->count == idx) {
					x->count++;
					continue;
				}
				if (reg[i].nruns == cap) {
					struct img_run *nr = realloc(runs,
						2 * cap * sizeof(*nr));

					if (!nr)
						goto fail;
					reg[i].runs = runs = nr;
					cap *= 2;
				}
				x = &runs[reg[i].nruns++];
				memset(x, 0, sizeof(*x));
				x->first = idx;
				x->count = 1;
				x->state = (uint32_t)s;
			}
	}
	w.meta = *im;
	w.meta.mode = IMG_MODE_FULL;
	memset(w.meta.parent_id, 0, 16);
	w.meta.parent_path = "";
	w.meta.reg = reg;
	w.meta.ndata = w.ndata;
	if (getrandom(w.meta.id, 16, 0) != 16)
		goto fail;
	if (img_writer_commit(&w, err, sizeof(err))) {
		fprintf(stderr, "softdirty image flatten: %s\n", err);
		goto fail2;
	}
	printf("flatten: %s -> %s: %" PRIu64 " pages stored\n", dir, out, w.ndata);
	rc = 0;
	goto done;
fail:
	fprintf(stderr, "softdirty image flatten: %s: %s\n", out, strerror(errno ? errno : EIO));
fail2:
	img_writer_abort(&w);
done:
	for (i = 0; reg && i < im->nreg; i++) {
		free(reg[i].runs);
		free((void *)reg[i].hash);
	}
	free(reg);
	img_free(im);
	return rc;
}

static bool same_region(const struct img_region *a, const struct img_region *b)
{
	return a->start == b->start && a->end == b->end && a->prot == b->prot &&
	       a->offset == b->offset && a->kind == b->kind &&
	       !strcmp(a->name, b->name);
}

static uint64_t diff_page(const struct img *a, const struct img *b,
			  uint64_t ad, const char *name, uint64_t *shown)
{
	const uint8_t *d1 = NULL, *d2 = NULL, *h;
	int s1 = img_page(a, ad, &d1, &h);
	int s2 = img_page(b, ad, &d2, &h);

	if ((s1 == IMG_NONE) == (s2 == IMG_NONE) &&
	    (s1 == IMG_NONE || !memcmp(d1, d2, IMG_PAGE)))
		return 0;
	if ((*shown)++ < 50)
		printf("page %016" PRIx64 " %s: %s\n", ad, name,
		       s1 == IMG_NONE ? "absent in the first" :
		       s2 == IMG_NONE ? "absent in the second" :
		       "contents differ");
	return 1;
}

/* Pages of one mapping present in either image, compared byte for byte. */
static uint64_t diff_pages(const struct img *a, const struct img *b,
			   const struct img_region *ra,
			   const struct img_region *rb, uint64_t *shown)
{
	uint64_t n = 0, k, j;

	for (k = 0; k < ra->nruns; k++)
		for (j = 0; j < ra->runs[k].count; j++)
			n += diff_page(a, b, ra->start +
				       (ra->runs[k].first + j) * IMG_PAGE,
				       ra->name, shown);
	/* present only in the second */
	for (k = 0; k < rb->nruns; k++)
		for (j = 0; j < rb->runs[k].count; j++) {
			uint64_t ad = rb->start + (rb->runs[k].first + j) * IMG_PAGE;

			if (!img_run_of(ra, (ad - ra->start) / IMG_PAGE))
				n += diff_page(a, b, ad, ra->name, shown);
		}
	return n;
}

static int diff(const char *da, const char *db)
{
	struct img *a, *b;
	char err[512];
	uint64_t ndiff = 0, shown = 0;
	uint32_t i, j;

	if (img_open(da, true, true, &a, err, sizeof(err))) {
		fprintf(stderr, "softdirty image diff: %s\n", err);
		return 2;
	}
	if (img_open(db, true, true, &b, err, sizeof(err))) {
		fprintf(stderr, "softdirty image diff: %s\n", err);
		img_free(a);
		return 2;
	}
	/* mappings only in one of them */
	for (i = 0, j = 0; i < a->nreg || j < b->nreg;) {
		if (j == b->nreg || (i < a->nreg && a->reg[i].start < b->reg[j].start)) {
			printf("only in %s: %016" PRIx64 "-%016" PRIx64 " %s\n", da,
			       a->reg[i].start, a->reg[i].end, a->reg[i].name);
			ndiff++;
			i++;
		} else if (i == a->nreg || b->reg[j].start < a->reg[i].start) {
			printf("only in %s: %016" PRIx64 "-%016" PRIx64 " %s\n", db,
			       b->reg[j].start, b->reg[j].end, b->reg[j].name);
			ndiff++;
			j++;
		} else if (!same_region(&a->reg[i], &b->reg[j])) {
			printf("mapping differs at %016" PRIx64 ": %s +%#" PRIx64
			       " vs %s +%#" PRIx64 "\n", a->reg[i].start,
			       a->reg[i].name, a->reg[i].end - a->reg[i].start,
			       b->reg[j].name, b->reg[j].end - b->reg[j].start);
			ndiff++;
			i++;
			j++;
		} else {
			ndiff += diff_pages(a, b, &a->reg[i], &b->reg[j], &shown);
			i++;
			j++;
		}
	}
	if (shown > 50)
		printf("... %" PRIu64 " more\n", shown - 50);
	printf("diff: %s\n", ndiff ? "the images differ" : "identical memory");
	img_free(a);
	img_free(b);
	return ndiff ? 1 : 0;
}

int cmd_image(int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : "";

	if (!strcmp(sub, "inspect") && argc == 3)
		return inspect(argv[2]);
	if (!strcmp(sub, "verify") && argc == 3)
		return verify(argv[2]);
	if (!strcmp(sub, "diff") && argc == 4)
		return diff(argv[2], argv[3]);
	if (!strcmp(sub, "flatten")) {
		const char *out = NULL, *dir = NULL;
		int i;

		for (i = 2; i < argc; i++) {
			if (!strcmp(argv[i], "-o") && i + 1 < argc)
				out = argv[++i];
			else if (!dir && argv[i][0] != '-')
				dir = argv[i];
			else
				return usage(stderr);
		}
		if (!out || !dir)
			return usage(stderr);
		return flatten(dir, out);
	}
	if (!strcmp(sub, "help") || !strcmp(sub, "--help") || !strcmp(sub, "-h")) {
		usage(stdout);
		return 0;
	}
	return usage(stderr);
}
