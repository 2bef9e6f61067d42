// SPDX-License-Identifier: MIT
/*
 * A transparent huge page split without a write: x86 sets the soft-dirty
 * bit of every PTE of a dirty PMD when splitting it (pte_mkdirty implies
 * soft-dirty), so after a reset the kernel reports a whole THP block once
 * MADV_DONTNEED or an mremap shrink has cut into it.  A backend claiming
 * SOFTDIRTY_CAP_HUGE_PAGES must report at least those pages (the
 * differential test, whose oracle is bit 55, found uffd missing them).
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

static void run(const struct td_backend *be, void *ctx)
{
	static uint64_t pm[PAGES];
	static uint8_t pf[PAGES];
	struct softdirty *sd;
	char *raw, *m;
	size_t i, dirty = 0, missed = 0;
	long kb;

	(void)ctx;
	/* a split changes no contents: nothing for those to report */
	if (!(be->caps & SOFTDIRTY_CAP_HUGE_PAGES) ||
	    (be->caps & SOFTDIRTY_CAP_CONTENTS)) {
		tap_skip("backend does not follow the kernel's PMD bit",
			 "%s: a THP split reports what the kernel does",
			 be->name);
		return;
	}
	raw = mmap(NULL, PAGES * PG + HUGE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		tap_bail("mmap: %s", strerror(errno));
	m = (char *)(((uintptr_t)raw + HUGE - 1) & ~(HUGE - 1));
	madvise(m, PAGES * PG, MADV_HUGEPAGE);
	memset(m, 1, PAGES * PG);
	kb = td_anon_huge_kb((uintptr_t)m, (uintptr_t)m + PAGES * PG);
	if (kb < (long)(PAGES * PG / 1024)) {
		tap_skip("no transparent huge pages (THP disabled or none free)",
			 "%s: a THP split reports what the kernel does", be->name);
		munmap(raw, PAGES * PG + HUGE);
		return;
	}
	sd = td_open(be->name);
	if (td_collect_region(sd, m, PAGES, SOFTDIRTY_COLLECT_RESET, pf) < 0)
		tap_bail("%s: collect failed", be->name);
	kernel_clear();

	/* splits the first block, and the shrink the second: no write */
	madvise(m + 5 * PG, PG, MADV_DONTNEED);
	if (mremap(m, PAGES * PG, SHRUNK * PG, 0) == MAP_FAILED)
		tap_bail("mremap: %s", strerror(errno));

	/* the oracle first: the kernel backend's reset clears it */
	if (td_pagemap((uintptr_t)m, pm, SHRUNK) != SHRUNK)
		tap_bail("pagemap read failed");
	if (td_collect_region(sd, m, SHRUNK, SOFTDIRTY_COLLECT_RESET, pf) < 0)
		tap_bail("%s: collect failed", be->name);
	for (i = 0; i < SHRUNK; i++) {
		if (!(pm[i] & SOFTDIRTY_PM_SOFT_DIRTY))
			continue;
		dirty++;
		if (!pf[i] && missed++ < 5)
			tap_diag("%s: page %zu soft-dirty, not reported",
				 be->name, i);
	}
	tap_diag("%s: %zu of %d pages soft-dirty after the splits",
		 be->name, dirty, SHRUNK);
	if (!dirty) {
		/* 6.1: its split left no PTE soft-dirty, nothing to follow */
		tap_skip("this kernel's THP split marks no page soft-dirty",
			 "%s: a THP split reports what the kernel does",
			 be->name);
		goto out;
	}
	tap_ok(!missed,
	       "%s: a THP split reports what the kernel does (%zu missed)",
	       be->name, missed);
out:
	softdirty_close(sd);
	munmap(m, SHRUNK * PG);
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
	td_for_each_backend("a THP split reports what the kernel does", run,
			    NULL);
	return tap_done();
}
