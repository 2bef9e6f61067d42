// SPDX-License-Identifier: MIT
/*
 * mprotect backend: writing every other page of 1 GiB would need 262144
 * VMAs if each written page were unprotected alone, far above
 * vm.max_map_count.  The backend must switch to coarser blocks: every
 * written page reported, no wedge, the VMA count stays below the limit.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

#define VEC_LEN (1 << 18)

static long read_long(const char *path)
{
	char buf[64] = "";
	FILE *f = fopen(path, "r");
	long v = -1;

	if (f) {
		if (fgets(buf, sizeof(buf), f))
			v = strtol(buf, NULL, 10);
		fclose(f);
	}
	return v;
}

static long count_vmas(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	long n = 0;
	int c;

	if (!f)
		return -1;
	while ((c = getc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

/* collect [base, base + npages) into pf with one big vector */
static long collect(struct softdirty *sd, char *base, size_t npages,
		    unsigned int flags, struct softdirty_range *vec,
		    uint8_t *pf)
{
	uint64_t b = (uintptr_t)base, e = b + npages * PG, cur = b, we;
	long total = 0;

	memset(pf, 0, npages);
	while (cur < e) {
		long r = softdirty_collect(sd, cur, e, vec, VEC_LEN, flags, &we);
		long i;

		if (r < 0)
			return r;
		for (i = 0; i < r; i++) {
			uint64_t p;

			for (p = vec[i].start; p < vec[i].end; p += PG)
				pf[(p - b) / PG] |= (uint8_t)vec[i].flags;
		}
		total += r;
		if (we <= cur)
			return -EPROTO;
		cur = we;
	}
	return total;
}

/* one round: write pages i with i % 2 == parity, then check */
static void round_(struct softdirty *sd, char *base, size_t npages, int parity,
		   long max_map, struct softdirty_range *vec, uint8_t *pf)
{
	size_t i, miss = 0, extra = 0, pwritten = 0;
	double t0, t1;
	long vmas, r;

	t0 = td_now();
	for (i = (size_t)parity; i < npages; i += 2)
		base[i * PG] = (char)(i + 1);
	t1 = td_now();
	vmas = count_vmas();
	tap_diag("round %d: %zu writes in %.3f s (%.2f us each), %ld VMAs",
		 parity, npages / 2, t1 - t0, (t1 - t0) * 1e6 / (npages / 2.0),
		 vmas);
	tap_ok(vmas > 0 && vmas < max_map, "round %d: VMA count %ld < %ld",
	       parity, vmas, max_map);

	r = collect(sd, base, npages, SOFTDIRTY_COLLECT_RESET, vec, pf);
	tap_ok(r >= 0, "round %d: collect and reset (%ld ranges)", parity, r);
	for (i = 0; i < npages; i++) {
		bool w = (i % 2) == (size_t)parity;

		if (w && !pf[i]) {
			if (miss++ < 5)
				tap_diag("MISSED page %zu", i);
		} else if (!w && pf[i]) {
			extra++;
		}
		if (w && base[i * PG] == (char)(i + 1))
			pwritten++;
	}
	tap_ok(!miss, "round %d: every written page reported (%zu missed)",
	       parity, miss);
	tap_ok(pwritten == npages / 2, "round %d: every write landed", parity);
	tap_diag("round %d: %zu false positives of %zu unwritten pages (%.1f%%)",
		 parity, extra, npages / 2, 100.0 * (double)extra / (npages / 2.0));
}

int main(int argc, char **argv)
{
	size_t npages = (size_t)(1 << 30) / PG, i;
	struct softdirty_range *vec;
	struct softdirty *sd;
	long max_map, vmas, vmas_before;
	uint8_t *pf;
	char *base;
	double t0, t1, t2;

	tap_init(argv[0]);
	(void)argc;
	if (!td_backend_works(SOFTDIRTY_BACKEND_MPROTECT))
		return tap_done();
	if (td_quick())
		npages /= 8;
	max_map = read_long("/proc/sys/vm/max_map_count");
	if (max_map <= 0)
		max_map = 65530;

	base = mmap(NULL, npages * PG, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	vec = malloc(VEC_LEN * sizeof(*vec));
	pf = malloc(npages);
	if (base == MAP_FAILED || !vec || !pf)
		tap_bail("out of memory");
	/* no THP: we want the plain 4 KiB case the VMA limit is about */
	madvise(base, npages * PG, MADV_NOHUGEPAGE);
	/* a baseline: plain first-touch faults on the first 8192 pages */
	t0 = td_now();
	for (i = 0; i < 8192; i++)
		base[i * PG] = 1;
	t1 = td_now();
	memset(base, 0, npages * PG);
	/* the tracker's own buffers must be writable for its syscalls */
	td_touch(vec, VEC_LEN * sizeof(*vec));
	td_touch(pf, npages);

	vmas_before = count_vmas();
	sd = td_open("mprotect");
	/* cost of the first 4096 tracked faults (single pages, not coarsened) */
	t2 = td_now();
	for (i = 0; i < 4096; i++)
		base[(npages - 1 - 2 * i) * PG] = 1;
	tap_diag("plain first-touch fault %.2f us, mprotect fault %.2f us (x%.2f)",
		 (t1 - t0) * 1e6 / 8192, (td_now() - t2) * 1e6 / 4096,
		 ((td_now() - t2) / 4096) / ((t1 - t0) / 8192));
	if (collect(sd, base, npages, SOFTDIRTY_COLLECT_RESET, vec, pf) < 0)
		tap_bail("collect");

	round_(sd, base, npages, 0, max_map, vec, pf);
	round_(sd, base, npages, 1, max_map, vec, pf);

	softdirty_close(sd);
	vmas = count_vmas();
	/*
	 * The region merged back: not the 16 000 VMAs of the run, about
	 * as many as before open (ASan maps memory meanwhile).
	 */
	tap_ok(vmas > 0 && vmas < vmas_before + 100,
	       "after close: %ld VMAs (%ld before open)", vmas, vmas_before);
	for (i = 1; i < npages; i += 2)
		base[i * PG] = 0;	/* plain writes, no handler */
	tap_ok(true, "writes after close");
	munmap(base, npages * PG);
	free(vec);
	free(pf);
	return tap_done();
}
