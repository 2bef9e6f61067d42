// SPDX-License-Identifier: MIT
/*
 * A transparent huge page split without a write: x86 sets the soft-dirty
 * bit of every PTE of a dirty PMD when splitting it (pte_mkdirty implies
 * soft-dirty), so after a reset the kernel reports a whole THP block once
 * MADV_DONTNEED or an mremap shrink has cut into it.  A backend claiming
 * SOFTDIRTY_CAP_HUGE_PAGES must report at least those pages (the
 * differential test, whose oracle is bit 55, found uffd missing them).
 * The first write after a reset splits the PMD under uffd-wp, and there
 * too the whole block must be reported, however the walk is cut: the
 * differential test's collects, stopping where their vector filled, once
 * reported only the part of the block before the cut.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

#define HUGE	(2UL << 20)
#define PAGES	1024		/* two THP blocks */
#define SHRUNK	700		/* the shrink cuts into the second block */

static void kernel_clear(void)
{
	int fd = open("/proc/self/clear_refs", O_WRONLY);

	if (fd < 0 || write(fd, "4", 1) != 1)
		tap_bail("clear_refs: %s", strerror(errno));
	close(fd);
}

/* Two THP blocks, tracked and reset, or NULL (skipped: no THP). */
static char *setup(const struct td_backend *be, const char *what,
		   char **raw, struct softdirty **sd)
{
	uint8_t *pf = malloc(PAGES);
	char *m;
	long kb;

	if (!pf)
		tap_bail("out of memory");
	*raw = mmap(NULL, PAGES * PG + HUGE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (*raw == MAP_FAILED)
		tap_bail("mmap: %s", strerror(errno));
	m = (char *)(((uintptr_t)*raw + HUGE - 1) & ~(HUGE - 1));
	madvise(m, PAGES * PG, MADV_HUGEPAGE);
	memset(m, 1, PAGES * PG);
	kb = td_anon_huge_kb((uintptr_t)m, (uintptr_t)m + PAGES * PG);
	if (kb < (long)(PAGES * PG / 1024)) {
		tap_skip("no transparent huge pages (THP disabled or none free)",
			 "%s: %s", be->name, what);
		munmap(*raw, PAGES * PG + HUGE);
		free(pf);
		return NULL;
	}
	*sd = td_open(be->name);
	if (td_collect_region(*sd, m, PAGES, SOFTDIRTY_COLLECT_RESET, pf) < 0)
		tap_bail("%s: collect failed", be->name);
	kernel_clear();
	free(pf);
	return m;
}

/* Pages the kernel calls soft-dirty and @pf does not report. */
static size_t missed(const struct td_backend *be, const uint64_t *pm,
		     const uint8_t *pf, size_t n, size_t *dirty)
{
	size_t i, miss = 0;

	*dirty = 0;
	for (i = 0; i < n; i++) {
		if (!(pm[i] & SOFTDIRTY_PM_SOFT_DIRTY))
			continue;
		(*dirty)++;
		if (!pf[i] && miss++ < 5)
			tap_diag("%s: page %zu soft-dirty, not reported",
				 be->name, i);
	}
	return miss;
}

static bool follows_pmd(const struct td_backend *be, const char *what)
{
	/* a split changes no contents: nothing for those to report */
	if (!(be->caps & SOFTDIRTY_CAP_HUGE_PAGES) ||
	    (be->caps & SOFTDIRTY_CAP_CONTENTS)) {
		tap_skip("backend does not follow the kernel's PMD bit",
			 "%s: %s", be->name, what);
		return false;
	}
	return true;
}

static void split_nowrite(const struct td_backend *be, void *ctx)
{
	static const char what[] = "a THP split reports what the kernel does";
	static uint64_t pm[PAGES];
	static uint8_t pf[PAGES];
	struct softdirty *sd;
	size_t dirty, miss;
	char *raw, *m;

	(void)ctx;
	if (!follows_pmd(be, what) || !(m = setup(be, what, &raw, &sd)))
		return;

	/* splits the first block, and the shrink the second: no write */
	madvise(m + 5 * PG, PG, MADV_DONTNEED);
	if (mremap(m, PAGES * PG, SHRUNK * PG, 0) == MAP_FAILED)
		tap_bail("mremap: %s", strerror(errno));

	/* the oracle first: the kernel backend's reset clears it */
	if (td_pagemap((uintptr_t)m, pm, SHRUNK) != SHRUNK)
		tap_bail("pagemap read failed");
	if (td_collect_region(sd, m, SHRUNK, SOFTDIRTY_COLLECT_RESET, pf) < 0)
		tap_bail("%s: collect failed", be->name);
	miss = missed(be, pm, pf, SHRUNK, &dirty);
	tap_diag("%s: %zu of %d pages soft-dirty after the splits",
		 be->name, dirty, SHRUNK);
	if (!dirty)
		/* 6.1: its split left no PTE soft-dirty, nothing to follow */
		tap_skip("this kernel's THP split marks no page soft-dirty",
			 "%s: %s", be->name, what);
	else
		tap_ok(!miss, "%s: %s (%zu missed)", be->name, what, miss);
	softdirty_close(sd);
	munmap(m, SHRUNK * PG);
	munmap(raw, PAGES * PG + HUGE);
}

/*
 * One written page in each block, then collects whose ranges end inside
 * the blocks: every piece of a split block is reported whole, once.
 */
static void split_pieces(const struct td_backend *be, void *ctx)
{
	static const char what[] =
		"a block split by a write is reported whole when walked in pieces";
	static const size_t cut[] = { 0, 5, 300, 301, 600, PAGES };
	static uint64_t pm[PAGES];
	static uint8_t pf[PAGES], part[PAGES];
	struct softdirty *sd;
	size_t i, j, dirty, miss, again = 0;
	char *raw, *m;

	(void)ctx;
	if (!follows_pmd(be, what) || !(m = setup(be, what, &raw, &sd)))
		return;
	m[300 * PG] = 2;
	m[700 * PG] = 2;
	if (td_pagemap((uintptr_t)m, pm, PAGES) != PAGES)
		tap_bail("pagemap read failed");
	memset(pf, 0, sizeof(pf));
	for (i = 0; i + 1 < ARRAY_SIZE(cut); i++) {
		if (td_collect_region(sd, m + cut[i] * PG, cut[i + 1] - cut[i],
				      SOFTDIRTY_COLLECT_RESET, part) < 0)
			tap_bail("%s: collect failed", be->name);
		for (j = cut[i]; j < cut[i + 1]; j++)
			pf[j] = part[j - cut[i]];
	}
	miss = missed(be, pm, pf, PAGES, &dirty);
	tap_diag("%s: %zu of %d pages soft-dirty after 2 writes", be->name,
		 dirty, PAGES);
	tap_ok(!miss, "%s: %s (%zu missed)", be->name, what, miss);

	/* once: every page was reset by one of the pieces */
	if (td_collect_region(sd, m, PAGES, SOFTDIRTY_COLLECT_RESET, pf) < 0)
		tap_bail("%s: collect failed", be->name);
	for (i = 0; i < PAGES; i++)
		again += pf[i] != 0;
	tap_ok(!again, "%s: nothing reported again after that (%zu pages)",
	       be->name, again);
	softdirty_close(sd);
	munmap(raw, PAGES * PG + HUGE);
}

int main(void)
{
	struct softdirty_probe_result pr[SOFTDIRTY_BACKEND_COUNT];

	tap_init("thp-split");
	if (softdirty_probe(pr, SOFTDIRTY_BACKEND_COUNT) < 0)
		tap_bail("probe failed");
	if (pr[SOFTDIRTY_BACKEND_KERNEL].status) {
		printf("1..0 # SKIP kernel soft-dirty not available (%s): no oracle\n",
		       pr[SOFTDIRTY_BACKEND_KERNEL].reason);
		return 77;
	}
	td_for_each_backend("a THP split reports what the kernel does",
			    split_nowrite, NULL);
	td_for_each_backend("a block split by a write is reported whole in pieces",
			    split_pieces, NULL);
	return tap_done();
}
