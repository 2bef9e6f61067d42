// SPDX-License-Identifier: MIT
/* Memory images: reader and writer (format: docs/image-format.md). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "image-fmt.h"

/* the fuzzer's build lets bad checksums through to reach the parser */
#ifndef IMG_FUZZING
#define IMG_FUZZING 0
#endif

static const uint8_t hdr_magic[8] = { 'S', 'D', 'I', 'M', 'G', '\r', '\n', 0x1a };
static const uint8_t end_magic[8] = { 'S', 'D', 'I', 'M', 'G', 'E', 'N', 'D' };

const uint8_t img_zero_page[IMG_PAGE];
static uint8_t zero_hash[16];
static bool zero_hash_done;

static int fail(char *err, size_t n, int e, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t n, int e, const char *fmt, ...)
{
	va_list ap;

	if (err && n) {
		va_start(ap, fmt);
		vsnprintf(err, n, fmt, ap);
		va_end(ap);
	}
	return -e;
}

void img_page_hash(const void *page, uint8_t out[16])
{
	XXH128_hash_t h = XXH3_128bits(page, IMG_PAGE);

	put64(out, h.low64);
	put64(out + 8, h.high64);
}

bool img_page_is_zero(const void *page)
{
	const uint64_t *p = page;
	size_t i;

	for (i = 0; i < IMG_PAGE / 8; i++)
		if (p[i])
			return false;
	return true;
}

static const uint8_t *zhash(void)
{
	if (!zero_hash_done) {
		img_page_hash(img_zero_page, zero_hash);
		zero_hash_done = true;
	}
	return zero_hash;
}

/* A bounded cursor over the metadata. */
struct cur {
	const uint8_t *p;
	size_t left;
};

static const uint8_t *take(struct cur *c, size_t n)
{
	const uint8_t *p = c->p;

	if (n > c->left)
		return NULL;
	c->p += n;
	c->left -= n;
	return p;
}

static size_t pad8(size_t n)
{
	return (8 - (n & 7)) & 7;
}

/* A string of n bytes without NUL, followed later by padding. */
static char *take_str(struct cur *c, uint32_t n)
{
	const uint8_t *p = take(c, n);
	char *s;

	if (!p || memchr(p, 0, n))
		return NULL;
	s = malloc((size_t)n + 1);
	if (!s)
		return NULL;
	memcpy(s, p, n);
	s[n] = 0;
	return s;
}

static bool take_pad(struct cur *c, size_t n)
{
	const uint8_t *p = take(c, pad8(n));
	size_t i;

	if (!p)
		return false;
	for (i = 0; i < pad8(n); i++)
		if (p[i])
			return false;
	return true;
}

static void free_one(struct img *im)
{
	uint32_t i;

	if (!im)
		return;
	for (i = 0; im->reg && i < im->nreg; i++) {
		free(im->reg[i].name);
		free(im->reg[i].runs);
	}
	free(im->reg);
	free(im->exe);
	free(im->parent_path);
	free(im->tracker);
	free(im->dir);
	if (im->mapped && im->buf)
		munmap((void *)im->buf, im->len);
	free(im);
}

void img_free(struct img *im)
{
	while (im) {
		struct img *p = im->parent;

		free_one(im);
		im = p;
	}
}

/* The runs of one region and their checksums; counts ndata. */
static int parse_runs(struct img *im, struct img_region *r, struct cur *c,
		      uint64_t *ndata, char *err, size_t n)
{
	const uint8_t *p = take(c, 8);
	uint64_t k, next = 0, npg = 0;

	if (!p)
		return fail(err, n, EINVAL, "truncated");
	r->nruns = get64(p);
	/* each run takes 16 bytes: bounds absurd counts before allocating */
	if (r->nruns > c->left / 16)
		return fail(err, n, EINVAL, "%llu runs but the file is too short",
			    (unsigned long long)r->nruns);
	r->runs = calloc(r->nruns ? r->nruns : 1, sizeof(*r->runs));
	if (!r->runs)
		return fail(err, n, ENOMEM, "out of memory");
	for (k = 0; k < r->nruns; k++) {
		struct img_run *x = &r->runs[k];

		p = take(c, 16);
		if (!p)
			return fail(err, n, EINVAL, "truncated");
		x->first = get64(p);
		x->count = get32(p + 8);
		x->state = get32(p + 12);
		if (x->state < IMG_DATA || x->state > IMG_PARENT)
			return fail(err, n, EINVAL, "run %llu: bad state %u",
				    (unsigned long long)k, x->state);
		if (x->state == IMG_PARENT && im->mode == IMG_MODE_FULL)
			return fail(err, n, EINVAL,
				    "parent pages in an image without parent");
		if (!x->count || x->count > IMG_MAX_RUN || x->first < next ||
		    x->first > r->npages || x->count > r->npages - x->first)
			return fail(err, n, EINVAL,
				    "run %llu: pages %llu+%u overlap, are out of order or outside the region",
				    (unsigned long long)k,
				    (unsigned long long)x->first, x->count);
		next = x->first + x->count;
		x->hbase = npg;
		npg += x->count;
		x->dbase = x->state == IMG_DATA ? *ndata : UINT64_MAX;
		if (x->state == IMG_DATA)
			*ndata += x->count;
	}
	if (npg > c->left / 16)
		return fail(err, n, EINVAL, "checksum table truncated");
	r->hash = take(c, npg * 16);
	for (k = 0; k < r->nruns; k++) {
		const struct img_run *x = &r->runs[k];
		uint64_t j;

		if (x->state != IMG_ZERO)
			continue;
		for (j = 0; j < x->count; j++)
			if (memcmp(r->hash + 16 * (x->hbase + j), zhash(), 16))
				return fail(err, n, EINVAL,
					    "zero page with a wrong checksum");
	}
	return 0;
}

static int parse_regions(struct img *im, struct cur *c, char *err, size_t n)
{
	uint64_t prev_end = 0, ndata = 0;
	char why[256];
	uint32_t i;
	int e;

	im->reg = calloc(im->nreg ? im->nreg : 1, sizeof(*im->reg));
	if (!im->reg)
		return fail(err, n, ENOMEM, "out of memory");
	for (i = 0; i < im->nreg; i++) {
		struct img_region *r = &im->reg[i];
		const uint8_t *p = take(c, 40);
		uint32_t nl;

		if (!p)
			return fail(err, n, EINVAL, "region %u: truncated", i);
		r->start = get64(p);
		r->end = get64(p + 8);
		r->offset = get64(p + 16);
		r->prot = get32(p + 24);
		r->kind = get32(p + 28);
		nl = get32(p + 32);
		if (get32(p + 36))
			return fail(err, n, EINVAL, "region %u: reserved field set", i);
		if (r->start % IMG_PAGE || r->end % IMG_PAGE ||
		    r->start >= r->end || r->end > IMG_ADDR_LIMIT ||
		    r->offset % IMG_PAGE)
			return fail(err, n, EINVAL,
				    "region %u: bad range %#llx-%#llx", i,
				    (unsigned long long)r->start,
				    (unsigned long long)r->end);
		if (r->start < prev_end)
			return fail(err, n, EINVAL,
				    "region %u: overlaps or out of order (starts %#llx before %#llx)",
				    i, (unsigned long long)r->start,
				    (unsigned long long)prev_end);
		prev_end = r->end;
		if (r->prot & ~15u || r->kind & ~(uint32_t)IMG_KIND_SPECIAL)
			return fail(err, n, EINVAL, "region %u: unknown flags", i);
		if (nl > IMG_MAX_STR)
			return fail(err, n, EINVAL, "region %u: name too long", i);
		r->name = take_str(c, nl);
		if (!r->name || !take_pad(c, nl))
			return fail(err, n, EINVAL, "region %u: bad name", i);
		if (r->kind & IMG_KIND_SPECIAL)
			continue;
		r->npages = (r->end - r->start) / IMG_PAGE;
		e = parse_runs(im, r, c, &ndata, why, sizeof(why));
		if (e)
			return fail(err, n, -e, "region %u (%#llx): %s", i,
				    (unsigned long long)r->start, why);
	}
	if (ndata != im->ndata)
		return fail(err, n, EINVAL,
			    "%llu data pages in the tables, %llu in the header",
			    (unsigned long long)ndata,
			    (unsigned long long)im->ndata);
	return 0;
}

int img_parse(const uint8_t *buf, size_t len, struct img **out,
	      char *err, size_t n)
{
	struct img *im;
	uint64_t meta_off, meta_len, ndata;
	uint32_t el, pl, tl;
	const uint8_t *p;
	struct cur c;
	int e;

	*out = NULL;
	if (len < IMG_HDR_SIZE + 16)
		return fail(err, n, EINVAL, "too short to be an image (%zu bytes)", len);
	if (memcmp(buf, hdr_magic, 8))
		return fail(err, n, EINVAL, "not a softdirty image (bad magic)");
	if (get32(buf + 8) != IMG_VERSION)
		return fail(err, n, EINVAL, "format version %u, this reader knows %u",
			    get32(buf + 8), IMG_VERSION);
	if (get32(buf + 12) != IMG_HDR_SIZE)
		return fail(err, n, EINVAL, "bad header size %u", get32(buf + 12));
	if (XXH3_64bits(buf, 48) != get64(buf + 48) && !IMG_FUZZING)
		return fail(err, n, EINVAL, "header checksum mismatch");
	meta_off = get64(buf + 16);
	meta_len = get64(buf + 24);
	ndata = get64(buf + 32);
	if (ndata > (len - IMG_HDR_SIZE) / IMG_PAGE ||
	    meta_off != IMG_HDR_SIZE + ndata * IMG_PAGE ||
	    meta_len > len || meta_off > len - meta_len ||
	    meta_off + meta_len != len - 16)
		return fail(err, n, EINVAL,
			    "sizes do not add up (file %zu bytes, %llu data pages, metadata at %llu length %llu): truncated?",
			    len, (unsigned long long)ndata,
			    (unsigned long long)meta_off,
			    (unsigned long long)meta_len);
	if (memcmp(buf + len - 16, end_magic, 8) || get64(buf + len - 8) != len)
		return fail(err, n, EINVAL, "bad end marker: truncated or incomplete");
	if (XXH3_64bits(buf + meta_off, meta_len) != get64(buf + 40) &&
	    !IMG_FUZZING)
		return fail(err, n, EINVAL, "metadata checksum mismatch");

	im = calloc(1, sizeof(*im));
	if (!im)
		return fail(err, n, ENOMEM, "out of memory");
	im->buf = buf;
	im->len = len;
	im->ndata = ndata;
	c.p = buf + meta_off;
	c.left = meta_len;
	p = take(&c, 96);
	if (!p) {
		e = fail(err, n, EINVAL, "metadata truncated");
		goto bad;
	}
	memcpy(im->id, p, 16);
	memcpy(im->parent_id, p + 16, 16);
	im->pid = get64(p + 32);
	im->start_time = get64(p + 40);
	im->created_ns = get64(p + 48);
	im->frozen_ns = get64(p + 56);
	im->mode = get32(p + 68);
	im->nreg = get32(p + 72);
	el = get32(p + 76);
	pl = get32(p + 80);
	tl = get32(p + 84);
	if (get32(p + 64) != IMG_PAGE || get64(p + 88)) {
		e = fail(err, n, EINVAL, "unsupported page size or reserved field set");
		goto bad;
	}
	if (im->mode > IMG_MODE_TRACKED ||
	    (im->mode == IMG_MODE_FULL) != (pl == 0) ||
	    (pl == 0) != !memcmp(im->parent_id, img_zero_page, 16)) {
		e = fail(err, n, EINVAL, "inconsistent mode and parent");
		goto bad;
	}
	if (im->nreg > IMG_MAX_REGIONS || el > IMG_MAX_STR || pl > IMG_MAX_STR ||
	    tl > IMG_MAX_STR) {
		e = fail(err, n, EINVAL, "absurd counts in the metadata");
		goto bad;
	}
	im->exe = take_str(&c, el);
	im->parent_path = take_str(&c, pl);
	im->tracker = take_str(&c, tl);
	if (!im->exe || !im->parent_path || !im->tracker ||
	    !take_pad(&c, (size_t)el + pl + tl)) {
		e = fail(err, n, EINVAL, "bad strings in the metadata");
		goto bad;
	}
	e = parse_regions(im, &c, err, n);
	if (e)
		goto bad;
	if (c.left) {
		e = fail(err, n, EINVAL, "%zu stray bytes after the tables", c.left);
		goto bad;
	}
	*out = im;
	return 0;
bad:
	free_one(im);
	return e;
}

int img_check_data(const struct img *im, char *err, size_t n)
{
	uint8_t h[16];
	uint32_t i;
	uint64_t k, j;

	for (i = 0; i < im->nreg; i++) {
		const struct img_region *r = &im->reg[i];

		for (k = 0; k < r->nruns; k++) {
			const struct img_run *x = &r->runs[k];

			if (x->state != IMG_DATA)
				continue;
			for (j = 0; j < x->count; j++) {
				img_page_hash(im->buf + IMG_HDR_SIZE +
					      (x->dbase + j) * IMG_PAGE, h);
				if (memcmp(h, r->hash + 16 * (x->hbase + j), 16))
					return fail(err, n, EBADMSG,
						    "%s: page %#llx: checksum mismatch (corrupt data)",
						    im->dir ? im->dir : "image",
						    (unsigned long long)(r->start +
						    (x->first + j) * IMG_PAGE));
			}
		}
	}
	return 0;
}

const struct img_region *img_find(const struct img *im, uint64_t addr)
{
	uint32_t lo = 0, hi = im->nreg;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (im->reg[mid].end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < im->nreg && im->reg[lo].start <= addr)
		return &im->reg[lo];
	return NULL;
}

const struct img_run *img_run_of(const struct img_region *r, uint64_t idx)
{
	uint64_t lo = 0, hi = r->nruns;

	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;

		if (r->runs[mid].first + r->runs[mid].count <= idx)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < r->nruns && r->runs[lo].first <= idx)
		return &r->runs[lo];
	return NULL;
}

int img_page(const struct img *im, uint64_t addr, const uint8_t **data,
	     const uint8_t **hash)
{
	while (im) {
		const struct img_region *r = img_find(im, addr);
		const struct img_run *x;
		uint64_t k;

		if (!r || !r->npages)
			return IMG_NONE;
		k = (addr - r->start) / IMG_PAGE;
		x = img_run_of(r, k);
		if (!x)
			return IMG_NONE;
		k -= x->first;
		*hash = r->hash + 16 * (x->hbase + k);
		switch (x->state) {
		case IMG_ZERO:
			*data = img_zero_page;
			return IMG_ZERO;
		case IMG_DATA:
			*data = im->buf + IMG_HDR_SIZE + (x->dbase + k) * IMG_PAGE;
			return IMG_DATA;
		}
		im = im->parent;
	}
	return IMG_NONE;
}

static int open_one(const char *dir, struct img **out, char *err, size_t n)
{
	char path[4096];
	struct stat st;
	void *m;
	int fd, e;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, IMG_FILE) >=
	    sizeof(path))
		return fail(err, n, ENAMETOOLONG, "%s: path too long", dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(err, n, errno, "%s: %s", path, strerror(errno));
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size <= 0) {
		close(fd);
		return fail(err, n, EINVAL, "%s: not a regular non-empty file", path);
	}
	m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (m == MAP_FAILED)
		return fail(err, n, errno, "%s: mmap: %s", path, strerror(errno));
	e = img_parse(m, (size_t)st.st_size, out, err, n);
	if (e) {
		char msg[1024];

		snprintf(msg, sizeof(msg), "%.400s: %.600s", path, err);
		snprintf(err, n, "%s", msg);
		munmap(m, (size_t)st.st_size);
		return e;
	}
	(*out)->mapped = true;
	(*out)->dir = strdup(dir);
	if (!(*out)->dir) {
		img_free(*out);
		*out = NULL;
		return fail(err, n, ENOMEM, "out of memory");
	}
	return 0;
}

/* Every PARENT page of @c must be present in @p with the same checksum. */
static int check_link(const struct img *c, const struct img *p, char *err,
		      size_t n)
{
	uint32_t i;
	uint64_t k, j;

	if (memcmp(c->parent_id, p->id, 16))
		return fail(err, n, EINVAL,
			    "%s: its parent %s is not the image it was taken against (image id differs)",
			    c->dir, p->dir);
	if (c->pid != p->pid || c->start_time != p->start_time ||
	    strcmp(c->exe, p->exe))
		return fail(err, n, EINVAL,
			    "%s: parent %s is of another process (pid %llu start %llu %s, here pid %llu start %llu %s)",
			    c->dir, p->dir, (unsigned long long)p->pid,
			    (unsigned long long)p->start_time, p->exe,
			    (unsigned long long)c->pid,
			    (unsigned long long)c->start_time, c->exe);
	for (i = 0; i < c->nreg; i++) {
		const struct img_region *r = &c->reg[i];

		for (k = 0; k < r->nruns; k++) {
			const struct img_run *x = &r->runs[k];

			if (x->state != IMG_PARENT)
				continue;
			for (j = 0; j < x->count; j++) {
				const uint8_t *d, *h;
				uint64_t a = r->start + (x->first + j) * IMG_PAGE;

				if (img_page(p, a, &d, &h) == IMG_NONE ||
				    memcmp(h, r->hash + 16 * (x->hbase + j), 16))
					return fail(err, n, EINVAL,
						    "%s: page %#llx refers to its parent, which does not hold it with that checksum",
						    c->dir, (unsigned long long)a);
			}
		}
	}
	return 0;
}

int img_open(const char *dir, bool chain, bool verify, struct img **out,
	     char *err, size_t n)
{
	struct img *top = NULL, *cur;
	int e, depth = 0;

	*out = NULL;
	e = open_one(dir, &top, err, n);
	if (e)
		return e;
	if (verify && (e = img_check_data(top, err, n)))
		goto bad;
	for (cur = top; chain && cur->mode != IMG_MODE_FULL; cur = cur->parent) {
		char pdir[4096];
		struct img *p, *q;

		if (++depth > IMG_MAX_CHAIN) {
			e = fail(err, n, ELOOP, "%s: parent chain longer than %d",
				 dir, IMG_MAX_CHAIN);
			goto bad;
		}
		if (cur->parent_path[0] == '/') {
			snprintf(pdir, sizeof(pdir), "%s", cur->parent_path);
		} else {
			char *d = strdup(cur->dir), *dn;

			if (!d) {
				e = fail(err, n, ENOMEM, "out of memory");
				goto bad;
			}
			dn = dirname(d);
			snprintf(pdir, sizeof(pdir), "%s/%s", dn, cur->parent_path);
			free(d);
		}
		e = open_one(pdir, &p, err, n);
		if (e) {
			char msg[1024];

			snprintf(msg, sizeof(msg), "parent of %.400s: %.600s",
				 cur->dir, err);
			snprintf(err, n, "%s", msg);
			goto bad;
		}
		/* a parent id seen before in this chain: a loop */
		for (q = top; q; q = q->parent)
			if (!memcmp(q->id, p->id, 16)) {
				e = fail(err, n, ELOOP,
					 "%s: the parent chain loops back to %s",
					 dir, q->dir);
				img_free(p);
				goto bad;
			}
		cur->parent = p;
		if (verify && (e = img_check_data(p, err, n)))
			goto bad;
	}
	/* with the whole chain loaded, parent pages resolve to the bottom */
	for (cur = top; chain && cur->parent; cur = cur->parent) {
		e = check_link(cur, cur->parent, err, n);
		if (e)
			goto bad;
	}
	*out = top;
	return 0;
bad:
	img_free(top);
	return e;
}

/* ---------- writer ---------- */

int img_writer_open(struct img_writer *w, const char *dir, char *err,
		    size_t n)
{
	static const uint8_t zero[IMG_HDR_SIZE];
	size_t l = strlen(dir);
	struct stat st;

	memset(w, 0, sizeof(*w));
	w->fd = -1;
	while (l > 1 && dir[l - 1] == '/')
		l--;
	w->dir = strndup(dir, l);
	w->tmpdir = malloc(l + 16);
	if (!w->dir || !w->tmpdir)
		return fail(err, n, ENOMEM, "out of memory");
	if (!lstat(w->dir, &st))
		return fail(err, n, EEXIST, "%s exists already (images are never overwritten)",
			    w->dir);
	snprintf(w->tmpdir, l + 16, "%s.tmp-XXXXXX", w->dir);
	if (!mkdtemp(w->tmpdir)) {
		free(w->tmpdir);
		w->tmpdir = NULL;
		return fail(err, n, errno, "%s: %s", w->dir, strerror(errno));
	}
	{
		char path[4200];

		snprintf(path, sizeof(path), "%s/%s", w->tmpdir, IMG_FILE);
		w->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	}
	if (w->fd < 0 || write(w->fd, zero, sizeof(zero)) != sizeof(zero))
		return fail(err, n, errno, "%s: %s", w->tmpdir, strerror(errno));
	return 0;
}

static int write_all(int fd, const void *p, size_t len)
{
	while (len) {
		ssize_t r = write(fd, p, len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? -errno : -EIO;
		p = (const char *)p + r;
		len -= (size_t)r;
	}
	return 0;
}

int img_writer_pages(struct img_writer *w, const void *pages, size_t n)
{
	int e = write_all(w->fd, pages, n * IMG_PAGE);

	if (!e)
		w->ndata += n;
	return e;
}

int img_writer_page(struct img_writer *w, const void *page)
{
	return img_writer_pages(w, page, 1);
}

struct mbuf {
	uint8_t *p;
	size_t len, cap;
};

static uint8_t *grow(struct mbuf *b, size_t n)
{
	uint8_t *r;

	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		uint8_t *np;

		while (cap < b->len + n)
			cap *= 2;
		np = realloc(b->p, cap);
		if (!np)
			return NULL;
		b->p = np;
		b->cap = cap;
	}
	r = b->p + b->len;
	memset(r, 0, n);
	b->len += n;
	return r;
}

static bool put_bytes(struct mbuf *b, const void *p, size_t n)
{
	uint8_t *d = grow(b, n);

	if (!d)
		return false;
	if (n)
		memcpy(d, p, n);
	return true;
}

static bool put_pad(struct mbuf *b, size_t n)
{
	return grow(b, pad8(n)) != NULL;
}

static int build_meta(const struct img *m, uint64_t ndata, struct mbuf *b)
{
	size_t el = strlen(m->exe), pl = strlen(m->parent_path),
	       tl = strlen(m->tracker);
	uint8_t *p = grow(b, 96);
	uint64_t k, npg;
	uint32_t i;

	if (!p)
		return -ENOMEM;
	memcpy(p, m->id, 16);
	memcpy(p + 16, m->parent_id, 16);
	put64(p + 32, m->pid);
	put64(p + 40, m->start_time);
	put64(p + 48, m->created_ns);
	put64(p + 56, m->frozen_ns);
	put32(p + 64, IMG_PAGE);
	put32(p + 68, m->mode);
	put32(p + 72, m->nreg);
	put32(p + 76, (uint32_t)el);
	put32(p + 80, (uint32_t)pl);
	put32(p + 84, (uint32_t)tl);
	if (!put_bytes(b, m->exe, el) || !put_bytes(b, m->parent_path, pl) ||
	    !put_bytes(b, m->tracker, tl) || !put_pad(b, el + pl + tl))
		return -ENOMEM;
	for (i = 0; i < m->nreg; i++) {
		const struct img_region *r = &m->reg[i];
		size_t nl = strlen(r->name);

		p = grow(b, 40);
		if (!p)
			return -ENOMEM;
		put64(p, r->start);
		put64(p + 8, r->end);
		put64(p + 16, r->offset);
		put32(p + 24, r->prot);
		put32(p + 28, r->kind);
		put32(p + 32, (uint32_t)nl);
		if (!put_bytes(b, r->name, nl) || !put_pad(b, nl))
			return -ENOMEM;
		if (r->kind & IMG_KIND_SPECIAL)
			continue;
		p = grow(b, 8 + 16 * r->nruns);
		if (!p)
			return -ENOMEM;
		put64(p, r->nruns);
		for (k = 0, npg = 0; k < r->nruns; k++) {
			put64(p + 8 + 16 * k, r->runs[k].first);
			put32(p + 16 + 16 * k, r->runs[k].count);
			put32(p + 20 + 16 * k, r->runs[k].state);
			npg += r->runs[k].count;
		}
		if (!put_bytes(b, r->hash, npg * 16))
			return -ENOMEM;
	}
	(void)ndata;
	return 0;
}

static int fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC), e = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd))
		e = -errno;
	close(fd);
	return e;
}

int img_writer_commit(struct img_writer *w, char *err, size_t n)
{
	uint8_t hdr[64] = { 0 }, end[16];
	struct mbuf b = { 0 };
	uint64_t meta_off = IMG_HDR_SIZE + w->ndata * IMG_PAGE;
	char *d;
	int e;

	if (w->meta.ndata != w->ndata)
		return fail(err, n, EINVAL, "internal: page count mismatch");
	e = build_meta(&w->meta, w->ndata, &b);
	if (e)
		return fail(err, n, -e, "out of memory");
	memcpy(end, end_magic, 8);
	put64(end + 8, meta_off + b.len + 16);
	memcpy(hdr, hdr_magic, 8);
	put32(hdr + 8, IMG_VERSION);
	put32(hdr + 12, IMG_HDR_SIZE);
	put64(hdr + 16, meta_off);
	put64(hdr + 24, b.len);
	put64(hdr + 32, w->ndata);
	put64(hdr + 40, XXH3_64bits(b.p, b.len));
	put64(hdr + 48, XXH3_64bits(hdr, 48));
	e = write_all(w->fd, b.p, b.len);
	free(b.p);
	if (!e)
		e = write_all(w->fd, end, sizeof(end));
	if (!e && pwrite(w->fd, hdr, sizeof(hdr), 0) != sizeof(hdr))
		e = -errno;
	if (!e && fsync(w->fd))
		e = -errno;
	if (!e && close(w->fd))
		e = -errno;
	w->fd = -1;
	if (!e)
		e = fsync_dir(w->tmpdir);
	if (e)
		return fail(err, n, -e, "%s: writing: %s", w->tmpdir, strerror(-e));
	if (rename(w->tmpdir, w->dir))
		return fail(err, n, errno, "rename %s to %s: %s", w->tmpdir,
			    w->dir, strerror(errno));
	free(w->tmpdir);
	w->tmpdir = NULL;
	d = strdup(w->dir);
	if (d) {
		e = fsync_dir(dirname(d));
		free(d);
	}
	free(w->dir);
	w->dir = NULL;
	return e ? fail(err, n, -e, "fsync of the parent directory: %s",
			strerror(-e)) : 0;
}

void img_writer_abort(struct img_writer *w)
{
	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
	if (w->tmpdir) {
		char path[4200];

		snprintf(path, sizeof(path), "%s/%s", w->tmpdir, IMG_FILE);
		unlink(path);
		rmdir(w->tmpdir);
	}
	free(w->tmpdir);
	free(w->dir);
	w->tmpdir = w->dir = NULL;
}
