// SPDX-License-Identifier: MIT
/*
 * The "hash" backend at scale:
 *   - collect-and-reset with a 2-entry vector, looping on walk_end over
 *     1000 scattered changed pages: the union is exactly the changed set,
 *     and a following collect reports nothing (each partial call resets
 *     only what it walked);
 *   - a 64 GiB PROT_NONE/NORESERVE reservation, made RW with 10 pages
 *     touched: exactly those 10 reported, and the tracker allocates
 *     nothing per virtual page (RSS grows by less than a few MiB).  The
 *     times are printed, never asserted.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

enum { REGION = 8192, CHANGED = 1000, TOUCHED = 10 };

#define RESERVE (64ULL << 30)

static long rss_kb(void)
{
	long size = 0, res = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (!f)
		return -1;
	if (fscanf(f, "%ld %ld", &size, &res) != 2)
		res = -1;
	fclose(f);
	return res < 0 ? -1 : res * (sysconf(_SC_PAGESIZE) / 1024);
}

static void test_tiny_vec(struct softdirty *sd, uint64_t seed)
{
	uint8_t *want = calloc(REGION, 1), *got = calloc(REGION, 1);
	char *p = td_mmap(REGION * PG);
	uint64_t base = (uint64_t)(uintptr_t)p, end = base + REGION * PG;
	uint64_t cur = base, we;
	struct softdirty_range vec[2];
	struct td_rng rng;
	size_t i, n = 0, bad = 0, calls = 0;
	bool form = true;
	int r;

	if (!want || !got)
		tap_bail("calloc");
	memset(p, 0x5a, REGION * PG);
	r = softdirty_reset(sd);
	if (r)
		tap_bail("softdirty_reset: %s", strerror(-r));
	td_rng_seed(&rng, seed);
	while (n < CHANGED) {
		size_t k = td_rng_below(&rng, REGION);

		if (want[k])
			continue;
		want[k] = 1;
		p[k * PG + td_rng_below(&rng, PG)] ^= 0x80;
		n++;
	}
	while (cur < end) {
		long k = softdirty_collect(sd, cur, end, vec, 2,
					   SOFTDIRTY_COLLECT_RESET, &we);

		calls++;
		if (k < 0)
			tap_bail("softdirty_collect: %s", strerror((int)-k));
		if (we <= cur && k == 0) {
			form = false;
			break;
		}
		for (i = 0; i < (size_t)k; i++) {
			uint64_t a;

			if (vec[i].start < cur || vec[i].end > we ||
			    vec[i].flags != SOFTDIRTY_RANGE_WRITTEN)
				form = false;
			for (a = vec[i].start; a < vec[i].end; a += PG)
				if (a >= base && a < end)
					got[(a - base) / PG]++;
		}
		cur = we;
	}
	for (i = 0; i < REGION; i++)
		if (got[i] != want[i] && bad++ < 8)
			tap_diag("page %zu: reported %u times, changed %u", i,
				 got[i], want[i]);
	tap_ok(form, "2-entry vector: ranges WRITTEN, inside [cur, walk_end)");
	tap_ok(!bad, "2-entry vector, %zu calls: union is exactly the %d changed pages, each once",
	       calls, CHANGED);
	{
		long k = softdirty_collect(sd, base, end, vec, 2, 0, &we);

		tap_ok(k == 0 && we == end,
		       "following collect reports nothing (got %ld)", k);
	}
	munmap(p, REGION * PG);
	free(want);
	free(got);
}

static void test_reservation(struct softdirty *sd)
{
	char *p = mmap(NULL, RESERVE, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	uint64_t base = (uint64_t)(uintptr_t)p, end = base + RESERVE;
	uint64_t step = RESERVE / TOUCHED / PG * PG, cur, we;
	struct softdirty_range vec[16];
	size_t i, nrep = 0, bad = 0;
	long before, after;
	double t0, t1, t2, t3;
	int r;

	if (p == MAP_FAILED) {
		tap_skip("cannot reserve 64 GiB", "64 GiB reservation");
		return;
	}
	before = rss_kb();
	t0 = td_now();
	r = softdirty_reset(sd);
	t1 = td_now();
	if (r)
		tap_bail("softdirty_reset: %s", strerror(-r));
	if (mprotect(p, RESERVE, PROT_READ | PROT_WRITE))
		tap_bail("mprotect: %s", strerror(errno));
	for (i = 0; i < TOUCHED; i++)
		p[i * step + 4 * PG] = (char)(i + 1);
	t2 = td_now();
	for (cur = base; cur < end; cur = we) {
		long k = softdirty_collect(sd, cur, end, vec, 16, 0, &we);

		if (k < 0)
			tap_bail("softdirty_collect: %s", strerror((int)-k));
		for (i = 0; i < (size_t)k; i++) {
			uint64_t want = base + nrep * step + 4 * PG;

			if (vec[i].start != want || vec[i].end != want + PG ||
			    vec[i].flags != SOFTDIRTY_RANGE_WRITTEN)
				bad++;
			nrep++;
		}
	}
	t3 = td_now();
	tap_ok(nrep == TOUCHED && !bad,
	       "64 GiB reservation: exactly the %d touched pages (got %zu, %zu wrong)",
	       TOUCHED, nrep, bad);
	r = softdirty_reset(sd);
	if (r)
		tap_bail("softdirty_reset: %s", strerror(-r));
	after = rss_kb();
	tap_diag("64 GiB reservation: reset %.2f ms, collect %.2f ms, reset after %.2f ms",
		 (t1 - t0) * 1e3, (t3 - t2) * 1e3, (td_now() - t3) * 1e3);
	tap_ok(before >= 0 && after >= 0 && after - before < 4096,
	       "64 GiB reservation: RSS %ld kB -> %ld kB (< 4 MiB growth)",
	       before, after);
	munmap(p, RESERVE);
}

int main(int argc, char **argv)
{
	uint64_t seed = td_seed();
	struct softdirty *sd;

	(void)argc;
	tap_init(argv[0]);
	tap_diag("seed %" PRIu64 " (SOFTDIRTY_TEST_SEED)", seed);
	sd = td_open("hash");
	test_tiny_vec(sd, seed);
	test_reservation(sd);
	softdirty_close(sd);
	return tap_done();
}
