// SPDX-License-Identifier: MIT
/*
 * softdirty_pagemap():
 *   - for present pages, bits 63 and 0-54 equal a plain pread of
 *     /proc/self/pagemap (the PFN may read as zero without privileges: it
 *     is compared as read); bit 63 agrees for every page;
 *   - bit 55 is set exactly for the pages softdirty_collect() reports;
 *   - near the end of the address space it returns fewer entries (as many
 *     as the kernel's pagemap has), n = 0 returns 0.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

enum { N = 64 };

#define LOW_BITS	((1ULL << 55) - 1)
#define CMP_MASK	(SOFTDIRTY_PM_PRESENT | LOW_BITS)

static void compare(const struct td_backend *be, struct softdirty *sd,
		    char *p, size_t n, const char *what)
{
	uint64_t *ent = calloc(n, 8), *raw = calloc(n, 8);
	uint8_t *pf = calloc(n, 1);
	long r1, r2, rc;
	size_t i, bad_low = 0, bad_present = 0, bad55 = 0, present = 0;

	if (!ent || !raw || !pf)
		tap_bail("out of memory");
	td_touch(ent, n * 8);
	r1 = softdirty_pagemap(sd, (uint64_t)(uintptr_t)p, ent, n);
	r2 = td_pagemap((uint64_t)(uintptr_t)p, raw, n);
	rc = td_collect_region(sd, p, n, 0, pf);
	if (r1 != (long)n || r2 != (long)n || rc < 0) {
		tap_ok(false, "%s: %s: pagemap %ld, raw %ld, collect %ld",
		       be->name, what, r1, r2, rc);
		goto out;
	}
	for (i = 0; i < n; i++) {
		bool sd55 = ent[i] & SOFTDIRTY_PM_SOFT_DIRTY;

		if ((ent[i] ^ raw[i]) & SOFTDIRTY_PM_PRESENT) {
			if (bad_present++ < 5)
				tap_diag("page %zu: present %d, kernel says %d",
					 i, !!(ent[i] & SOFTDIRTY_PM_PRESENT),
					 !!(raw[i] & SOFTDIRTY_PM_PRESENT));
		} else if ((raw[i] & SOFTDIRTY_PM_PRESENT) &&
			   ((ent[i] ^ raw[i]) & CMP_MASK)) {
			if (bad_low++ < 5)
				tap_diag("page %zu: entry %#" PRIx64 ", kernel %#"
					 PRIx64, i, ent[i], raw[i]);
		}
		present += !!(raw[i] & SOFTDIRTY_PM_PRESENT);
		if (sd55 != !!pf[i]) {
			if (bad55++ < 5)
				tap_diag("page %zu: bit 55 %d, collect %s", i,
					 sd55, pf[i] ? "reports it" :
					 "does not report it");
		}
	}
	tap_diag("%s: %s: %zu of %zu pages present", be->name, what, present, n);
	tap_ok(!bad_present && !bad_low, "%s: %s: bits 63 and 0-54 match "
	       "/proc/self/pagemap", be->name, what);
	tap_ok(!bad55, "%s: %s: bit 55 == reported by collect", be->name, what);
out:
	free(ent);
	free(raw);
	free(pf);
}

static void run(const struct td_backend *be, void *ctx)
{
	struct softdirty *sd;
	char *p = td_mmap(N * PG), *q;
	uint64_t buf[1024];
	uint64_t top = 0;
	long r, rraw;
	size_t i;

	(void)ctx;
	/* present written, present read-only-touched, never touched, zapped */
	for (i = 0; i < N; i += 2)
		p[i * PG] = (char)i;
	for (i = 1; i < N; i += 8)
		(void)*(volatile char *)(p + i * PG);
	sd = td_open(be->name);
	compare(be, sd, p, N, "right after open");
	if (softdirty_reset(sd) < 0)
		tap_bail("reset failed");
	madvise(p + 10 * PG, 4 * PG, MADV_DONTNEED);
	for (i = 0; i < N; i += 5)
		p[i * PG + 1] = (char)(i + 1);
	q = td_mmap(8 * PG);	/* new after the reset */
	q[3 * PG] = 1;
	compare(be, sd, p, N, "after reset, writes, MADV_DONTNEED");
	compare(be, sd, q, 8, "mapping created after the reset");
	r = softdirty_collect(sd, (uintptr_t)p, (uintptr_t)p + N * PG, NULL, 0,
			      SOFTDIRTY_COLLECT_RESET, NULL);
	(void)r;
	if (softdirty_reset(sd) < 0)
		tap_bail("reset failed");
	compare(be, sd, p, N, "after a second reset (clean)");

	/*
	 * The end of the address space: where the kernel's pagemap ends
	 * (47-bit: 0x7ffffffff000; 56-bit with 5-level paging).  Find it
	 * with a plain pread, then ask the library the same.
	 */
	td_touch(buf, sizeof(buf));
	{
		static const uint64_t tops[] = { 0x7ffffffff000ULL,
						 0xfffffffffff000ULL };

		for (i = 0; i < ARRAY_SIZE(tops); i++) {
			top = tops[i] - 16 * PG;
			rraw = td_pagemap(top, buf, 1024);
			if (rraw >= 0 && rraw < 1024)
				break;
		}
	}
	if (i == 2) {
		tap_skip("the kernel's pagemap did not end at a known address",
			 "%s: near the end of the address space", be->name);
	} else {
		r = softdirty_pagemap(sd, top, buf, 1024);
		tap_ok(r >= 0 && r < 1024 && r == rraw, "%s: near the end of "
		       "the address space (%#" PRIx64 "): %ld entries of 1024 "
		       "(kernel pagemap: %ld)", be->name, top, r, rraw);
		r = softdirty_pagemap(sd, top + 16 * PG + 64 * PG, buf, 16);
		rraw = td_pagemap(top + 16 * PG + 64 * PG, buf, 16);
		tap_ok(r == 0 && rraw <= 0, "%s: beyond the end of the address "
		       "space: %ld entries (kernel pagemap: %ld)", be->name, r,
		       rraw);
	}
	r = softdirty_pagemap(sd, (uintptr_t)p, buf, 0);
	tap_ok(r == 0, "%s: n = 0 returns 0 (%ld)", be->name, r);
	r = softdirty_pagemap(sd, (uintptr_t)p, NULL, 0);
	tap_ok(r == 0, "%s: n = 0, buf NULL returns 0 (%ld)", be->name, r);
	/* an unaligned address means the page holding it */
	{
		uint64_t a = 0, b = 0;

		p[5 * PG] ^= 1;
		r = softdirty_pagemap(sd, (uintptr_t)p + 5 * PG + 123, &a, 1);
		rraw = softdirty_pagemap(sd, (uintptr_t)p + 5 * PG, &b, 1);
		tap_ok(r == 1 && rraw == 1 && a == b &&
		       (a & SOFTDIRTY_PM_SOFT_DIRTY), "%s: unaligned address: "
		       "the page holding it (%#" PRIx64 ")", be->name, a);
	}
	softdirty_close(sd);
	munmap(p, N * PG);
	munmap(q, 8 * PG);
}

int main(int argc, char **argv)
{
	(void)argc;
	tap_init(argv[0]);
	td_for_each_backend("softdirty_pagemap", run, NULL);
	return tap_done();
}
