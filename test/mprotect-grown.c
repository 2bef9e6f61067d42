// SPDX-License-Identifier: MIT
/*
 * A region grown in place by mremap() after the reset: the new part joins
 * the VMA of the old one, with its (tracker's) protection.  A first write
 * to the new part must not re-enable writes to the old part behind the
 * tracker's back, or a later write there, hidden by the program making the
 * region read-only before the collect, is lost.  (The mprotect backend's
 * miss in the random workload: grow, write the new part, write the old
 * part, mprotect RO, collect.)  Variants with MADV_DONTNEED in between and
 * with the region left writable; then a second period on the same region.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "common.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

#define OLD	4	/* pages at the reset */
#define NEW	8	/* after the growth */

enum { PLAIN, DONTNEED, STAY_RW, NVAR };

static const char *const names[NVAR] = {
	"grow, write new, write old, mprotect RO",
	"grow, MADV_DONTNEED, write new, write old, mprotect RO",
	"grow, write new, write old (stays RW)",
};

static void run_one(const struct td_backend *be, int var)
{
	uint8_t pf[NEW], w[NEW], isnew[NEW], may[NEW];
	struct softdirty *sd;
	char *p, *q;
	size_t i;
	bool ok;

	/*
	 * Room to grow into that nothing else takes meanwhile and that was
	 * not mapped at the reset (that would be regrowth, which not every
	 * backend reports): an address far from everything, else the bottom
	 * of a large free range (the kernel hands out the top first).
	 */
	p = (char *)0x320000000000ULL;
	if (mmap(p, OLD * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE |
		 MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != p) {
		p = td_free_range(1ULL << 30);
		if (mmap(p, OLD * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE |
			 MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != p)
			tap_bail("mmap: %s", strerror(errno));
	}
	memset(p, 1, OLD * PG);
	sd = td_open(be->name);
	if (softdirty_reset(sd))
		tap_bail("%s: reset", be->name);

	q = mremap(p, OLD * PG, NEW * PG, 0);
	if (q != p)
		tap_bail("mremap grow in place: %s", strerror(errno));
	if (var == DONTNEED && madvise(p, NEW * PG, MADV_DONTNEED))
		tap_bail("madvise: %s", strerror(errno));
	memset(w, 0, sizeof(w));
	memset(isnew, 0, sizeof(isnew));
	memset(isnew + OLD, 1, NEW - OLD);
	/* zapped pages: not present, any backend may report them */
	memset(may, var == DONTNEED, sizeof(may));
	ok = td_try_write((volatile uint8_t *)p + 6 * PG, 1);
	ok &= td_try_write((volatile uint8_t *)p + 1 * PG + 9, 1);
	w[6] = w[1] = 1;
	tap_ok(ok, "%s: %s: the writes work", be->name, names[var]);
	if (var != STAY_RW && mprotect(p, NEW * PG, PROT_READ))
		tap_bail("mprotect: %s", strerror(errno));
	if (td_collect_region(sd, p, NEW, SOFTDIRTY_COLLECT_RESET, pf) < 0)
		tap_bail("%s: collect", be->name);
	td_check_pages(be, names[var], p, NEW, pf, w, isnew, may);
	if (!strcmp(be->name, "mprotect")) {
		size_t extra = 0;

		/* the old part stayed protected: nothing beyond the write */
		for (i = 0; i < NEW; i++)
			extra += pf[i] && !w[i] && !isnew[i];
		/* zapped pages too: they are only reported when written */
		tap_ok(!extra, "%s: %s: pages 0, 2, 3 not reported (%zu are)",
		       be->name, names[var], extra);
	}

	/* the next period: the grown region is tracked as one */
	if (mprotect(p, NEW * PG, PROT_READ | PROT_WRITE))
		tap_bail("mprotect: %s", strerror(errno));
	if (softdirty_reset(sd))
		tap_bail("%s: reset", be->name);
	memset(w, 0, sizeof(w));
	memset(isnew, 0, sizeof(isnew));
	ok = td_try_write((volatile uint8_t *)p + 5 * PG, 1);
	ok &= td_try_write((volatile uint8_t *)p + 2 * PG, 1);
	w[5] = w[2] = 1;
	if (var != STAY_RW && mprotect(p, NEW * PG, PROT_READ))
		tap_bail("mprotect: %s", strerror(errno));
	if (td_collect_region(sd, p, NEW, 0, pf) < 0)
		tap_bail("%s: collect", be->name);
	td_check_pages(be, "the next period: writes to the old and the new part",
		       p, NEW, pf, w, isnew, NULL);
	tap_ok(ok, "%s: %s: the next period's writes work", be->name,
	       names[var]);
	softdirty_close(sd);
	munmap(p, NEW * PG);
}

static void run(const struct td_backend *be, void *ctx)
{
	int var;

	(void)ctx;
	for (var = 0; var < NVAR; var++)
		run_one(be, var);
}

int main(int argc, char **argv)
{
	(void)argc;
	tap_init(argv[0]);
	td_catch_faults();
	td_for_each_backend("in-place mremap growth", run, NULL);
	return tap_done();
}
