// SPDX-License-Identifier: MIT
/*
 * A huge sparse reservation (GC heaps, ASan's shadow): tracking must cost
 * page tables for what is populated, not for the virtual size, and still
 * see writes both where pages were and where none were.  (Arming a whole
 * 8 GiB reservation with uffd-wp markers took 16 MiB of page tables.)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common.h"

#define RES (4ULL << 30)
#define HUGE (2ULL << 20)

static long vm_pte_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmPTE:", 6))
			kb = strtol(line + 6, NULL, 10);
	fclose(f);
	return kb;
}

/*
 * The reservation, with a free range of its size right below it and a
 * small one right above: mmap() takes the highest free range that fits,
 * so the tracker's small mappings go above and a reservation of its own
 * of that size (the mprotect backend's bitmap) lands right below ours,
 * where a thread stack's guard would be.
 */
static char *place(void)
{
	size_t small = 64 * PG, len = 2 * RES + small + HUGE;
	char *r = mmap(NULL, len, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	/* aligned as the kernel aligns large anonymous mappings (THP) */
	char *a = (char *)(((uintptr_t)r + HUGE - 1) & ~(HUGE - 1));

	if (r == MAP_FAILED ||
	    mmap(a + RES, RES, PROT_READ | PROT_WRITE, MAP_PRIVATE |
		 MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) != a + RES)
		return MAP_FAILED;
	munmap(r, (size_t)(a - r) + RES);
	munmap(a + 2 * RES, (size_t)(r + len - (a + 2 * RES)));
	return a + RES;
}

/* the VMA right below @a: anonymous PROT_NONE? */
static bool none_below(const char *a)
{
	unsigned long long s, e, prev_e = 0;
	char line[512], perms[8], prev[8] = "", name[256];
	bool res = false;
	FILE *f = fopen("/proc/self/maps", "r");

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		name[0] = '\0';
		if (sscanf(line, "%llx-%llx %7s %*s %*s %*s %255s", &s, &e,
			   perms, name) < 3)
			continue;
		if (s == (uintptr_t)a) {
			res = prev_e == s && !strcmp(prev, "---p");
			break;
		}
		prev_e = e;
		snprintf(prev, sizeof(prev), "%s", name[0] ? "named" : perms);
	}
	fclose(f);
	return res;
}

static void run(const struct td_backend *be, void *ctx)
{
	size_t n = RES / PG, i;
	uint8_t *pf, *w;
	long before, after;
	struct softdirty *sd;
	char *m;

	(void)ctx;
	pf = calloc(n, 1);
	w = calloc(n, 1);
	m = place();
	if (m == MAP_FAILED || !pf || !w)
		tap_bail("mmap %llu GiB: out of memory", RES >> 30);
	madvise(m, RES, MADV_NOHUGEPAGE);
	m[5 * PG] = 1;
	m[RES / 2] = 1;
	before = vm_pte_kb();
	sd = td_open(be->name);
	after = vm_pte_kb();
	tap_diag("%s: an anonymous PROT_NONE mapping right below: %s",
		 be->name, none_below(m) ? "yes" : "no");
	tap_diag("%s: VmPTE %ld kB before open, %ld kB after", be->name,
		 before, after);
	tap_ok(after - before < 1024,
	       "%s: open does not allocate page tables for the reservation (%ld kB)",
	       be->name, after - before);

	m[5 * PG + 7] = 2;		/* where a page was */
	m[RES / 4] = 3;			/* where none was */
	w[5] = w[RES / 4 / PG] = 1;
	if (td_collect_region(sd, m, n, SOFTDIRTY_COLLECT_RESET, pf) < 0) {
		tap_ok(false, "%s: collect failed", be->name);
	} else {
		size_t extra = 0;

		for (i = 0; i < n; i++)
			extra += pf[i] && !w[i];
		tap_diag("%s: %zu pages reported beyond the 2 written", be->name,
			 extra);
		tap_ok(pf[5] && pf[RES / 4 / PG],
		       "%s: writes seen in a populated and an empty part",
		       be->name);
		/*
		 * An exact backend: a first write into an unarmed block may
		 * report that block, no more.  Others report a superset.
		 */
		if (be->caps & SOFTDIRTY_CAP_EXACT)
			tap_ok(extra <= 512,
			       "%s: at most one 2 MiB block extra (%zu)",
			       be->name, extra);
		/*
		 * Its bitmap reservation (PROT_NONE) lands right below the
		 * region: not a thread stack's guard, the region is tracked.
		 */
		if (!strcmp(be->name, "mprotect"))
			tap_ok(!extra, "%s: nothing else reported (%zu)",
			       be->name, extra);
	}
	tap_ok(vm_pte_kb() - before < 1024,
	       "%s: collect-and-reset does not either (%ld kB)", be->name,
	       vm_pte_kb() - before);
	softdirty_close(sd);
	munmap(m, RES);
	free(pf);
	free(w);
}

int main(void)
{
	tap_init("sparse-reservation");
	td_for_each_backend("sparse reservation", run, NULL);
	return tap_done();
}
