// SPDX-License-Identifier: MIT
/*
 * Reading only the VMAs of a range (PROCMAP_QUERY, or the text filtered):
 *   - a known layout reads back exactly (bounds, protection, sharing,
 *     offset, inode, name), holes read as nothing;
 *   - for every range over it, the ranged read equals the full text read
 *     restricted to the VMAs that intersect the range, with the ioctl and
 *     with the text fallback (parity), before and after munmap, mmap and
 *     an in-place mremap growth;
 *   - the library's collects over a range (which read only that range's
 *     VMAs) report regions created, grown or moved inside the range as
 *     new, and leave what lies outside alone: a region created outside is
 *     still new after a ranged reset, a region mapped at the reset and
 *     untouched since is not reported.
 * Uses the library's internal maps reader (src/internal.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "internal.h"
#include "uapi.h"

#define NPG	40		/* the test area, in pages */

static char *area;		/* NPG pages, its own layout */

static uint64_t pg(size_t i)
{
	return (uint64_t)(uintptr_t)area + i * PG;
}

static bool vma_eq(const struct sd_vma *a, const struct sd_vma *b)
{
	return a->start == b->start && a->end == b->end &&
	       a->offset == b->offset && a->inode == b->inode &&
	       a->prot == b->prot && a->shared == b->shared &&
	       !strcmp(a->path, b->path);
}

static void vma_diag(const char *what, const struct sd_vma *v)
{
	tap_diag("%s: %#" PRIx64 "-%#" PRIx64 " prot %u %s off %#" PRIx64
		 " ino %" PRIu64 " '%s'", what, v->start, v->end, v->prot,
		 v->shared ? "shared" : "private", v->offset, v->inode,
		 v->path);
}

/* The ranged read of [a, b) equals the full read restricted to it. */
/*
 * Both readers keep their buffers from call to call: a new buffer is a new
 * mapping, which could change the neighbours of the area between the reads.
 */
static struct sd_maps full;

static bool parity(int fd, struct sd_maps *r, uint64_t a, uint64_t b,
		   bool text_only)
{
	size_t i, k = 0;
	bool ok = true;
	int err;

	r->text_only = text_only;
	err = sd_maps_read_range(r, fd, a, b);
	if (!err)
		err = sd_maps_read(&full, fd);
	if (err) {
		tap_diag("read [%#" PRIx64 ", %#" PRIx64 "): %s", a, b,
			 strerror(-err));
		return false;
	}
	for (i = 0; ok && i < full.n; i++) {
		if (full.v[i].end <= a || full.v[i].start >= b)
			continue;
		if (k >= r->n || !vma_eq(&r->v[k], &full.v[i])) {
			tap_diag("range [%#" PRIx64 ", %#" PRIx64 ") entry %zu:",
				 a, b, k);
			vma_diag("text", &full.v[i]);
			if (k < r->n)
				vma_diag("ranged", &r->v[k]);
			ok = false;
		}
		k++;
	}
	if (ok && k != r->n) {
		tap_diag("range [%#" PRIx64 ", %#" PRIx64 "): %zu VMAs, text %zu",
			 a, b, r->n, k);
		ok = false;
	}
	return ok;
}

/* Every range of whole pages from 2 pages before the area to 2 after. */
static void all_ranges(int fd, bool text_only, const char *when)
{
	struct sd_maps r = { 0 };
	size_t i, j, bad = 0, n = 0;

	/* every buffer allocated before the first comparison */
	if (sd_maps_read(&r, fd) || sd_maps_read(&full, fd))
		tap_bail("read /proc/self/maps");
	for (i = 0; i < NPG + 4 && bad < 3; i++)
		for (j = i + 1; j <= NPG + 4 && bad < 3; j++, n++)
			bad += !parity(fd, &r, pg(i) - 2 * PG, pg(j) - 2 * PG,
				       text_only);
	tap_ok(!bad, "%s, %s: every range (%zu) equals the text restricted to it",
	       text_only ? "text fallback" : "ranged read", when, n);
	bad = !parity(fd, &r, 0, SD_ADDR_MAX, text_only) +
	      !parity(fd, &r, pg(7), pg(7) + 1, text_only);
	tap_ok(!bad, "%s, %s: the whole address space and a 1-byte range too",
	       text_only ? "text fallback" : "ranged read", when);
	sd_maps_free(&r);
}

static bool expect(int fd, uint64_t a, uint64_t b, const struct sd_vma *want,
		   size_t n, const char *desc)
{
	struct sd_maps r = { 0 };
	bool ok;
	size_t i;
	int err = sd_maps_read_range(&r, fd, a, b);

	ok = !err && r.n == n;
	for (i = 0; ok && i < n; i++)
		ok = vma_eq(&r.v[i], &want[i]);
	if (!ok) {
		tap_diag("err %d, %zu VMAs, want %zu", err, r.n, n);
		for (i = 0; !err && i < r.n; i++)
			vma_diag("got", &r.v[i]);
		for (i = 0; i < n; i++)
			vma_diag("want", &want[i]);
	}
	sd_maps_free(&r);
	return tap_ok(ok, "%s", desc);
}

static void *map_at(size_t page, size_t npg, int prot, int flags, int fd,
		    off_t off)
{
	void *p = mmap(area + page * PG, npg * PG, prot, flags | MAP_FIXED, fd,
		       off);

	if (p == MAP_FAILED)
		tap_bail("mmap: %s", strerror(errno));
	return p;
}

static void reader(void)
{
	const int rw = PROT_READ | PROT_WRITE;
	const int priv = MAP_PRIVATE | MAP_ANONYMOUS;
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	int mfd = memfd_create("maps-range", MFD_CLOEXEC);
	struct procmap_query q = { .size = sizeof(q) };
	char memfd_path[64];
	struct stat st;

	if (fd < 0 || mfd < 0 || ftruncate(mfd, 8 * PG) || fstat(mfd, &st))
		tap_bail("setup: %s", strerror(errno));
	q.query_addr = (uintptr_t)area;
	q.query_flags = PROCMAP_QUERY_COVERING_OR_NEXT_VMA;
	if (ioctl(fd, PROCMAP_QUERY, &q) && errno == ENOTTY)
		tap_diag("no PROCMAP_QUERY (Linux before 6.11): the ranged "
			 "read is the text fallback");
	/*
	 * pages 0-3 anon rw, 4-5 hole, 6-9 memfd r (file pages 2-5),
	 * 10-13 shared rw, 14-15 none, 16-19 r-x, 20- hole
	 */
	map_at(0, 4, rw, priv, -1, 0);
	map_at(6, 4, PROT_READ, MAP_PRIVATE, mfd, 2 * PG);
	map_at(10, 4, rw, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	map_at(14, 2, PROT_NONE, priv, -1, 0);
	map_at(16, 4, PROT_READ | PROT_EXEC, priv, -1, 0);
	if (munmap(area + 4 * PG, 2 * PG) || munmap(area + 20 * PG, 20 * PG))
		tap_bail("munmap: %s", strerror(errno));
	snprintf(memfd_path, sizeof(memfd_path), "/memfd:maps-range (deleted)");
	{
		const struct sd_vma v0 = { pg(0), pg(4), 0, 0, PROT_READ | PROT_WRITE,
					   false, "" };
		const struct sd_vma v6 = { pg(6), pg(10), 2 * PG, st.st_ino,
					   PROT_READ, false, memfd_path };
		expect(fd, pg(1), pg(2), &v0, 1, "1 page inside a VMA: that VMA, whole");
		expect(fd, pg(4), pg(6), NULL, 0, "a hole: nothing");
		expect(fd, pg(5), pg(7), &v6, 1,
		       "hole and file VMA: the file VMA, offset, inode and name");
		expect(fd, pg(3), pg(7), (const struct sd_vma[]){ v0, v6 }, 2,
		       "across a hole: both VMAs, in order");
	}
	all_ranges(fd, false, "first layout");
	all_ranges(fd, true, "first layout");
	/* replace 0-3 by 2-5, grow 16-19 in place to 16-21 */
	if (munmap(area, 4 * PG))
		tap_bail("munmap: %s", strerror(errno));
	map_at(2, 4, PROT_READ | PROT_WRITE, priv, -1, 0);
	if (mremap(area + 16 * PG, 4 * PG, 6 * PG, 0) == MAP_FAILED)
		tap_bail("mremap: %s", strerror(errno));
	{
		const struct sd_vma want[] = {
			{ pg(2), pg(6), 0, 0, PROT_READ | PROT_WRITE, false, "" },
			{ pg(6), pg(10), 2 * PG, st.st_ino, PROT_READ, false,
			  memfd_path },
		};
		const struct sd_vma grown = { pg(16), pg(22), 0, 0,
					      PROT_READ | PROT_EXEC, false, "" };

		expect(fd, pg(0), pg(7), want, 2,
		       "after munmap + mmap: the new VMA and its neighbour");
		expect(fd, pg(21), pg(22), &grown, 1,
		       "after mremap growth: the grown VMA, whole");
	}
	all_ranges(fd, false, "after munmap, mmap, mremap");
	all_ranges(fd, true, "after munmap, mmap, mremap");
	sd_maps_free(&full);
	close(mfd);
	close(fd);
}

/* ---------- the library over a range ---------- */

static void lib(const struct td_backend *be, void *ctx)
{
	const int rw = PROT_READ | PROT_WRITE;
	const int priv = MAP_PRIVATE | MAP_ANONYMOUS;
	uint8_t pf[8], isnew[8], none[8] = { 0 };
	struct softdirty *sd;
	char *c, *d;
	long r;

	(void)ctx;
	/*
	 * C: mapped and written before the reset; untouched after it.  Guard
	 * pages around C and D: a registered VMA moved next to another one
	 * merges with it, and mremap then unregisters both (the kernel), so C
	 * would rightly read as new.
	 */
	c = td_mmap(6 * PG);
	if (mprotect(c, PG, PROT_NONE) || mprotect(c + 5 * PG, PG, PROT_NONE))
		tap_bail("mprotect: %s", strerror(errno));
	c += PG;
	memset(c, 1, 4 * PG);
	sd = td_open(be->name);
	/*
	 * Reserved after the reset (new), so that what the tracker allocates
	 * cannot land there: A at pages 0-3, B at 8-11, room to grow at 12-15.
	 */
	d = mmap(NULL, 10 * PG, PROT_NONE, priv, -1, 0);
	area = mmap(NULL, NPG * PG, PROT_NONE, priv, -1, 0);
	if (d == MAP_FAILED || area == MAP_FAILED)
		tap_bail("mmap: %s", strerror(errno));
	d += PG;
	map_at(0, 4, rw, priv, -1, 0);
	map_at(8, 4, rw, priv, -1, 0);
	memset(isnew, 1, sizeof(isnew));

	r = td_collect_region(sd, area + 8 * PG, 4, SOFTDIRTY_COLLECT_RESET, pf);
	td_check_pages(be, "ranged reset over B, created since: all new",
		       area + 8 * PG, 4, r < 0 ? none : pf, NULL, isnew, NULL);
	r = td_collect_region(sd, area, 4, 0, pf);
	td_check_pages(be, "A, created outside that range: still all new",
		       area, 4, r < 0 ? none : pf, NULL, isnew, NULL);
	r = td_collect_region(sd, c, 4, 0, pf);
	td_check_pages(be, "C, mapped at the reset, outside: nothing",
		       c, 4, r < 0 ? isnew : pf, NULL, NULL, NULL);
	r = td_collect_region(sd, area + 8 * PG, 4, 0, pf);
	td_check_pages(be, "B after its ranged reset: nothing",
		       area + 8 * PG, 4, r < 0 ? isnew : pf, NULL, NULL, NULL);

	/* B grows in place to 8 pages: 4-7 are new */
	if (munmap(area + 12 * PG, 4 * PG) || mremap(area + 8 * PG, 4 * PG, 8 * PG, 0) == MAP_FAILED)
		tap_bail("mremap: %s", strerror(errno));
	memset(isnew, 0, 4);
	r = td_collect_region(sd, area + 8 * PG, 8, SOFTDIRTY_COLLECT_RESET, pf);
	td_check_pages(be, "B grown in place, ranged collect: the growth is new",
		       area + 8 * PG, 8, r < 0 ? none : pf, NULL, isnew, NULL);
	/* B moves to D */
	if (mremap(area + 8 * PG, 8 * PG, 8 * PG, MREMAP_MAYMOVE | MREMAP_FIXED,
		   d) == MAP_FAILED)
		tap_bail("mremap: %s", strerror(errno));
	memset(isnew, 1, sizeof(isnew));
	r = td_collect_region(sd, d, 8, SOFTDIRTY_COLLECT_RESET, pf);
	td_check_pages(be, "B moved, ranged collect at its new place: all new",
		       d, 8, r < 0 ? none : pf, NULL, isnew, NULL);
	r = td_collect_region(sd, area, 4, 0, pf);
	td_check_pages(be, "A, after the ranged resets elsewhere: still all new",
		       area, 4, r < 0 ? none : pf, NULL, isnew, NULL);
	r = td_collect_region(sd, c, 4, 0, pf);
	td_check_pages(be, "C, after the ranged resets elsewhere: nothing",
		       c, 4, r < 0 ? isnew : pf, NULL, NULL, NULL);
	softdirty_close(sd);
	munmap(area, NPG * PG);
	munmap(d - PG, 10 * PG);
	munmap(c - PG, 6 * PG);
}

int main(void)
{
	tap_init("maps-range");
	area = td_free_range(NPG * PG);
	map_at(0, NPG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	reader();
	td_for_each_backend("collect over a range", lib, NULL);
	return tap_done();
}
