// SPDX-License-Identifier: MIT
/*
 * mprotect backend: three writer threads write random pages of a 64 MiB
 * region while the main thread collects and resets it in a loop for 2 s.
 *
 * The collector bumps an epoch to odd before each collect and to even
 * after it.  A writer reads the epoch before (e1) and after (e2) each
 * write.  Collect k runs at epoch 2k-1.  A write with e1 == e2 even
 * happened between collects and must be in the very next one; any other
 * write must be in one of the collects that could have followed it.
 * Zero misses allowed.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

#define REGION		(64UL << 20)
#define NPAGES		(REGION / PG)
#define NWRITERS	3
#define LOG_MAX		(4UL << 20)	/* writes logged per writer */
#define MAX_COLLECTS	20000
#define VEC_LEN		4096

struct wlog {
	uint32_t page, e1, e2;
};

struct writer {
	pthread_t th;
	int id;
	uint64_t seed;
	struct wlog *log;
	size_t n;
};

static char *region;
static atomic_uint epoch;
static atomic_int stop;
/* reported[k]: bitmap of the pages collect k reported */
static uint64_t *reported;

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct td_rng r;

	td_rng_seed(&r, w->seed);
	while (!atomic_load(&stop) && w->n < LOG_MAX) {
		uint32_t page = (uint32_t)td_rng_below(&r, NPAGES);
		unsigned int e1, e2;

		e1 = atomic_load(&epoch);
		/* a per-writer sequence counter in the page */
		atomic_fetch_add((_Atomic uint64_t *)(region + page * PG +
						      (size_t)w->id * 64), 1);
		e2 = atomic_load(&epoch);
		w->log[w->n++] = (struct wlog){ page, e1, e2 };
	}
	return NULL;
}

static bool was_reported(unsigned int k, uint32_t page)
{
	return reported[(size_t)k * (NPAGES / 64) + page / 64] &
	       (1ULL << (page % 64));
}

int main(int argc, char **argv)
{
	struct writer w[NWRITERS];
	struct softdirty_range *vec;
	struct softdirty *sd;
	size_t total = 0, strict = 0, miss = 0, smiss = 0, pages_rep = 0;
	unsigned int k = 0, i;
	uint64_t seed = td_seed();
	double t0, secs = td_quick() ? 0.5 : 2.0;
	int err;

	tap_init(argv[0]);
	(void)argc;
	if (!td_backend_works(SOFTDIRTY_BACKEND_MPROTECT))
		return tap_done();
	tap_diag("seed %" PRIu64, seed);

	region = mmap(NULL, REGION, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	reported = mmap(NULL, (size_t)MAX_COLLECTS * NPAGES / 8,
			PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	vec = calloc(VEC_LEN, sizeof(*vec));
	if (region == MAP_FAILED || reported == MAP_FAILED || !vec)
		tap_bail("out of memory");
	memset(region, 0, REGION);
	td_touch(vec, VEC_LEN * sizeof(*vec));

	sd = td_open("mprotect");
	for (i = 0; i < NWRITERS; i++) {
		w[i].id = (int)i;
		w[i].seed = seed + i + 1;
		w[i].n = 0;
		w[i].log = malloc(LOG_MAX * sizeof(struct wlog));
		if (!w[i].log)
			tap_bail("out of memory");
		if (pthread_create(&w[i].th, NULL, writer_main, &w[i]))
			tap_bail("pthread_create");
	}

	t0 = td_now();
	err = 0;
	/* at least 5 collects even when emulation makes each one slow */
	while ((td_now() - t0 < secs || k < 5) && td_now() - t0 < 60 &&
	       k + 1 < MAX_COLLECTS) {
		uint64_t cur = (uintptr_t)region, end = cur + REGION, we;
		uint64_t *bits;

		k++;
		bits = reported + (size_t)k * (NPAGES / 64);
		atomic_store(&epoch, 2 * k - 1);
		while (cur < end) {
			long r = softdirty_collect(sd, cur, end, vec, VEC_LEN,
						   SOFTDIRTY_COLLECT_RESET, &we);
			long j;

			if (r < 0) {
				err = (int)r;
				break;
			}
			for (j = 0; j < r; j++) {
				uint64_t p;

				for (p = vec[j].start; p < vec[j].end; p += PG) {
					uint64_t pg = (p - (uintptr_t)region) / PG;

					bits[pg / 64] |= 1ULL << (pg % 64);
					pages_rep++;
				}
			}
			cur = we;
		}
		atomic_store(&epoch, 2 * k);
		if (err)
			break;
		usleep(3000);
	}
	atomic_store(&stop, 1);
	for (i = 0; i < NWRITERS; i++)
		pthread_join(w[i].th, NULL);
	/* one more collect, for writes that raced the last one */
	{
		uint64_t cur = (uintptr_t)region, end = cur + REGION, we;
		uint64_t *bits;

		k++;
		bits = reported + (size_t)k * (NPAGES / 64);
		atomic_store(&epoch, 2 * k - 1);
		while (!err && cur < end) {
			long r = softdirty_collect(sd, cur, end, vec, VEC_LEN,
						   SOFTDIRTY_COLLECT_RESET, &we);
			long j;

			if (r < 0) {
				err = (int)r;
				break;
			}
			for (j = 0; j < r; j++) {
				uint64_t p;

				for (p = vec[j].start; p < vec[j].end; p += PG) {
					uint64_t pg = (p - (uintptr_t)region) / PG;

					bits[pg / 64] |= 1ULL << (pg % 64);
				}
			}
			cur = we;
		}
		atomic_store(&epoch, 2 * k);
	}
	tap_ok(!err, "%u collects with reset (%s)", k, err ? strerror(-err) : "ok");

	for (i = 0; i < NWRITERS; i++) {
		size_t n;

		for (n = 0; n < w[i].n; n++) {
			const struct wlog *l = &w[i].log[n];
			unsigned int k1 = l->e1 / 2 + 1;
			unsigned int kmax = l->e2 % 2 ? (l->e2 + 1) / 2 + 1
						      : l->e2 / 2 + 1;
			unsigned int j;
			bool found = false;

			total++;
			if (l->e1 == l->e2 && l->e1 % 2 == 0) {
				strict++;
				if (!was_reported(k1, l->page)) {
					if (smiss++ < 5)
						tap_diag("writer %u write %zu page %u "
							 "epoch %u not in collect %u",
							 i, n, l->page, l->e1, k1);
				}
				continue;
			}
			for (j = k1; j <= kmax && j <= k; j++)
				found |= was_reported(j, l->page);
			if (!found && miss++ < 5)
				tap_diag("writer %u write %zu page %u epochs %u..%u "
					 "not in collects %u..%u", i, n, l->page,
					 l->e1, l->e2, k1, kmax);
		}
	}
	tap_diag("%zu writes (%zu between collects), %zu pages reported in "
		 "%u collects", total, strict, pages_rep, k);
	tap_ok(total > 0 && k >= 5, "writers and collector both made progress");
	tap_ok(!smiss, "every write between two collects is in the next one "
	       "(%zu missed)", smiss);
	tap_ok(!miss, "every write during a collect is in that one or the next "
	       "(%zu missed)", miss);

	softdirty_close(sd);
	for (i = 0; i < NWRITERS; i++)
		free(w[i].log);
	free(vec);
	munmap(reported, (size_t)MAX_COLLECTS * NPAGES / 8);
	munmap(region, REGION);
	return tap_done();
}
