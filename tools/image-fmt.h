/* SPDX-License-Identifier: MIT */
/*
 * Memory images (docs/image-format.md): the reader and writer shared by
 * "softdirty dump", "softdirty image" and "softdirty restore".
 *
 * The reader trusts nothing: img_parse() checks every size, count, offset
 * and range of a buffer before anything else looks at it, and is what the
 * fuzzer drives.  Errors are returned as -errno with a message in the
 * caller's buffer; nothing here prints or exits.
 */
#ifndef SOFTDIRTY_IMAGE_FMT_H
#define SOFTDIRTY_IMAGE_FMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IMG_PAGE	4096u
#define IMG_VERSION	1u
#define IMG_FILE	"memory.sdimg"
#define IMG_HDR_SIZE	4096u
#define IMG_MAX_CHAIN	1024
#define IMG_MAX_REGIONS	(1u << 20)
#define IMG_MAX_STR	4096u
#define IMG_MAX_RUN	(1u << 30)
/* user-space addresses end below 2^57 (5-level paging) */
#define IMG_ADDR_LIMIT	(1ULL << 57)

/* Little-endian fields, as the format stores them (also for the tests). */
static inline uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static inline uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static inline void put64(uint8_t *p, uint64_t v)
{
	int i;

	for (i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void put32(uint8_t *p, uint32_t v)
{
	int i;

	for (i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* page states (one byte per page of a region) */
enum {
	IMG_NONE = 0,	/* not present when dumped: never stored */
	IMG_DATA = 1,	/* contents stored in this image */
	IMG_ZERO = 2,	/* present, all zero bytes: not stored */
	IMG_PARENT = 3,	/* same address, same contents as in the parent */
};

/* region prot bits */
enum {
	IMG_PROT_READ = 1, IMG_PROT_WRITE = 2, IMG_PROT_EXEC = 4,
	IMG_PROT_SHARED = 8,
};
/* region kind bits */
enum {
	/* kernel-provided ([vdso], [vvar], [vsyscall]): recorded, no pages */
	IMG_KIND_SPECIAL = 1,
};

/* image modes */
enum {
	IMG_MODE_FULL = 0,
	/* pages compared by checksum with the parent's (docs) */
	IMG_MODE_CONTENTS = 1,
	/* pages reported written by a tracker kept open since the parent */
	IMG_MODE_TRACKED = 2,
};

/*
 * A run of consecutive pages of one state (never IMG_NONE: pages in no
 * run are absent).  dbase: data page index of the first page (IMG_DATA),
 * hbase: index of its checksum in the region's table.
 */
struct img_run {
	uint64_t first;		/* page index in the region */
	uint32_t count;
	uint32_t state;
	uint64_t dbase, hbase;
};

struct img_region {
	uint64_t start, end, offset;
	uint32_t prot, kind;
	char *name;
	uint64_t npages;	/* 0 for special regions */
	uint64_t nruns;
	struct img_run *runs;	/* address order */
	const uint8_t *hash;	/* 16 bytes per page in the runs */
};

struct img {
	char *dir;			/* NULL for a parsed buffer */
	const uint8_t *buf;
	size_t len;
	bool mapped;
	uint8_t id[16], parent_id[16];
	uint64_t pid, start_time, created_ns, frozen_ns;
	uint32_t mode;
	char *exe, *parent_path, *tracker;
	uint32_t nreg;
	struct img_region *reg;
	uint64_t ndata;
	struct img *parent;
};

/* XXH3-128 of one page, little-endian (low 64 bits first) */
void img_page_hash(const void *page, uint8_t out[16]);
bool img_page_is_zero(const void *page);
extern const uint8_t img_zero_page[IMG_PAGE];

/* Parse and check the structure of one image held in buf (not copied). */
int img_parse(const uint8_t *buf, size_t len, struct img **out,
	      char *err, size_t errlen);
/* Check every stored page against its checksum. */
int img_check_data(const struct img *im, char *err, size_t errlen);
/*
 * Open DIR's image and, with @chain, every parent (identities, ids, no
 * loops, every PARENT page backed).  @verify: check all data checksums too.
 */
int img_open(const char *dir, bool chain, bool verify, struct img **out,
	     char *err, size_t errlen);
void img_free(struct img *im);

/* The region holding addr, or NULL. */
const struct img_region *img_find(const struct img *im, uint64_t addr);
/* The run holding page index idx of r, or NULL (absent). */
const struct img_run *img_run_of(const struct img_region *r, uint64_t idx);
/*
 * Contents of the page at addr, resolved through the chain: returns the
 * state (IMG_NONE: absent; otherwise *data and *hash are set).
 */
int img_page(const struct img *im, uint64_t addr, const uint8_t **data,
	     const uint8_t **hash);

/* ---------- writer ---------- */

struct img_writer {
	int fd;
	char *dir, *tmpdir;
	uint64_t ndata;
	struct img meta;		/* regions, identity: filled by caller */
};

/* Create DIR.tmp-XXXXXX; DIR must not exist.  */
int img_writer_open(struct img_writer *w, const char *dir, char *err,
		    size_t errlen);
/* Append one DATA page: 0 or -errno. */
int img_writer_page(struct img_writer *w, const void *page);
/* Append n DATA pages held one after the other in memory. */
int img_writer_pages(struct img_writer *w, const void *pages, size_t n);
/*
 * Write the metadata from w->meta (regions with state/hash arrays), fsync,
 * rename to DIR.  w->meta.ndata must equal the number of pages appended.
 */
int img_writer_commit(struct img_writer *w, char *err, size_t errlen);
/* Remove the temporary directory (after a failure). */
void img_writer_abort(struct img_writer *w);

#endif
