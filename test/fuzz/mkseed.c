// SPDX-License-Identifier: MIT
/*
 * Writes small valid images as the fuzzer's seeds (and the bad-input
 * test's starting points): mkseed DIR makes DIR/full (three regions:
 * stored, zero and absent pages, a special one) and DIR/incr (an increment
 * of it: parent, stored and zero pages).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image-fmt.h"

/* One region from a page-state string: D data, Z zero, P parent, - absent. */
static int region(struct img_writer *w, struct img_region *r, uint64_t start,
		  const char *pages, const char *name, uint32_t kind,
		  uint8_t fill)
{
	static uint8_t page[IMG_PAGE];
	uint64_t n = strlen(pages), k;
	uint8_t *h = calloc(n + 1, 16), *hp = h;

	memset(r, 0, sizeof(*r));
	r->start = start;
	r->end = start + n * IMG_PAGE;
	r->prot = IMG_PROT_READ | IMG_PROT_WRITE;
	r->kind = kind;
	r->name = (char *)name;
	r->hash = h;
	if (kind)
		return 0;
	r->npages = n;
	r->runs = calloc(n + 1, sizeof(*r->runs));
	if (!h || !r->runs)
		return -1;
	for (k = 0; k < n; k++) {
		uint32_t st = pages[k] == 'D' ? IMG_DATA : pages[k] == 'Z' ?
			IMG_ZERO : pages[k] == 'P' ? IMG_PARENT : IMG_NONE;
		struct img_run *x = r->nruns ? &r->runs[r->nruns - 1] : NULL;

		if (st == IMG_NONE)
			continue;
		memset(page, 0, sizeof(page));
		/* a parent page holds what the full image holds there */
		page[k] = st == IMG_PARENT ? 1 : fill;
		img_page_hash(st == IMG_ZERO ? img_zero_page : page, hp);
		hp += 16;
		if (st == IMG_DATA && img_writer_page(w, page))
			return -1;
		if (x && x->state == st && x->first + x->count == k) {
			x->count++;
			continue;
		}
		x = &r->runs[r->nruns++];
		x->first = k;
		x->count = 1;
		x->state = st;
	}
	return 0;
}

static int write_img(const char *dir, int incr)
{
	struct img_region reg[3];
	struct img_writer w;
	char err[512] = "out of memory";
	int i, bad;

	if (img_writer_open(&w, dir, err, sizeof(err)))
		goto fail;
	bad = region(&w, &reg[0], 0x10000, incr ? "PDD-" : "DZ-DD", "", 0,
		     incr ? 2 : 1);
	bad |= region(&w, &reg[1], 0x20000, incr ? "Z-" : "D-", "/lib/x.so", 0,
		      1);
	bad |= region(&w, &reg[2], 0x30000, "-", "[vdso]", IMG_KIND_SPECIAL, 0);
	if (bad)
		goto fail;
	w.meta.pid = 42;
	w.meta.start_time = 1234;
	w.meta.exe = "/bin/x";
	w.meta.tracker = "uffd";
	w.meta.parent_path = incr ? "full" : "";
	w.meta.mode = incr ? IMG_MODE_CONTENTS : IMG_MODE_FULL;
	memset(w.meta.id, incr ? 2 : 1, 16);
	if (incr)
		memset(w.meta.parent_id, 1, 16);
	w.meta.nreg = 3;
	w.meta.reg = reg;
	w.meta.ndata = w.ndata;
	if (img_writer_commit(&w, err, sizeof(err)))
		goto fail;
	for (i = 0; i < 3; i++) {
		free(reg[i].runs);
		free((void *)reg[i].hash);
	}
	return 0;
fail:
	fprintf(stderr, "mkseed: %s: %s\n", dir, err);
	img_writer_abort(&w);
	return 1;
}

int main(int argc, char **argv)
{
	char a[4096], b[4096];

	if (argc != 2) {
		fprintf(stderr, "usage: mkseed DIR\n");
		return 2;
	}
	snprintf(a, sizeof(a), "%s/full", argv[1]);
	snprintf(b, sizeof(b), "%s/incr", argv[1]);
	return write_img(a, 0) || write_img(b, 1);
}
