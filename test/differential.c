// SPDX-License-Identifier: MIT
/*
 * The kernel's own soft-dirty bit as the oracle for every other backend.
 *
 * On a kernel with CONFIG_MEM_SOFT_DIRTY (the 6.1 and 6.12 qemu runs), one
 * seeded random workload runs — writes from several threads, mmap, munmap,
 * mremap (move, grow, shrink), mprotect, MADV_DONTNEED, THP — while the
 * test itself clears and reads the real bit 55 (clear_refs "4", pagemap),
 * and every other working backend tracks the same process at the same
 * time.  After each round, any page the kernel calls dirty that a
 * page-table backend (uffd, mprotect) did not report fails the test, with
 * the page, its region and the last operations on it; the hash backend,
 * which reports changed contents, is held to the pages whose contents
 * changed.  Pages reported beyond the oracle are counted per backend.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

#define MAX_REGIONS	48
#define ARENA_PAGES	8192		/* 32 MiB window for the regions */
#define THREADS		3
#define HUGE		(2UL << 20)

struct region {
	char *addr;
	size_t pages;
	bool ro;
	bool fresh;		/* created/moved since the last reset */
	bool flipped;		/* made writable by the program since */
	bool thp;		/* MADV_HUGEPAGE */
};

static struct region regions[MAX_REGIONS];
static char *arena;
/* the hash oracle: the arena's contents at the last reset, by address */
static unsigned char *arena_snap;
static bool snap_valid[ARENA_PAGES];
static struct td_rng rng;
static pthread_mutex_t regions_lock = PTHREAD_MUTEX_INITIALIZER;

/* recent operations, for the diagnosis of a miss */
#define LOG_N 64
static char oplog[LOG_N][96];
static unsigned long opno;

static void logop(const char *fmt, ...) TD_PRINTF(1, 2);
static void logop(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(oplog[opno % LOG_N], sizeof(oplog[0]), fmt, ap);
	va_end(ap);
	opno++;
}

static void dump_log(void)
{
	unsigned long i = opno > 20 ? opno - 20 : 0;

	for (; i < opno; i++)
		tap_diag("  op %lu: %s", i, oplog[i % LOG_N]);
}

/* A free stretch of the arena, page-aligned, or NULL. */
static char *find_hole(size_t pages, size_t align_pages)
{
	int tries;

	for (tries = 0; tries < 64; tries++) {
		size_t at = td_rng_below(&rng, ARENA_PAGES - pages);
		char *a;
		int i;

		at -= at % align_pages;
		a = arena + at * PG;
		for (i = 0; i < MAX_REGIONS; i++) {
			struct region *r = &regions[i];

			if (r->addr && a < r->addr + r->pages * PG &&
			    r->addr < a + pages * PG)
				break;
		}
		if (i == MAX_REGIONS)
			return a;
	}
	return NULL;
}

static struct region *free_slot(void)
{
	int i;

	for (i = 0; i < MAX_REGIONS; i++)
		if (!regions[i].addr)
			return &regions[i];
	return NULL;
}

static struct region *pick(void)
{
	int i, n = 0, k;

	for (i = 0; i < MAX_REGIONS; i++)
		n += regions[i].addr != NULL;
	if (!n)
		return NULL;
	k = (int)td_rng_below(&rng, n);
	for (i = 0; i < MAX_REGIONS; i++)
		if (regions[i].addr && !k--)
			return &regions[i];
	return NULL;
}

static void op_mmap(void)
{
	struct region *r = free_slot();
	bool thp = td_rng_below(&rng, 8) == 0;
	size_t pages = thp ? 1024 : 1 + td_rng_below(&rng, 64);
	char *a;

	if (!r)
		return;
	a = find_hole(pages, thp ? HUGE / PG : 1);
	if (!a)
		return;
	if (mmap(a, pages * PG, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
		tap_bail("mmap: %s", strerror(errno));
	if (thp) {
		madvise(a, pages * PG, MADV_HUGEPAGE);
		memset(a, 1, pages * PG);
	}
	*r = (struct region){ .addr = a, .pages = pages, .fresh = true,
			      .thp = thp };
	logop("mmap %p +%zu%s", (void *)a, pages, thp ? " THP" : "");
}

static void op_munmap(struct region *r)
{
	/* back to the arena's inaccessible reservation */
	if (mmap(r->addr, r->pages * PG, PROT_NONE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1,
		 0) == MAP_FAILED)
		tap_bail("munmap: %s", strerror(errno));
	logop("munmap %p +%zu", (void *)r->addr, r->pages);
	memset(r, 0, sizeof(*r));
}

static void op_mremap(struct region *r)
{
	size_t np;
	char *to;

	switch (td_rng_below(&rng, 3)) {
	case 0:	/* move */
		to = find_hole(r->pages, 1);
		if (!to)
			return;
		if (mremap(r->addr, r->pages * PG, r->pages * PG,
			   MREMAP_MAYMOVE | MREMAP_FIXED, to) == MAP_FAILED)
			tap_bail("mremap move: %s", strerror(errno));
		mmap(r->addr, r->pages * PG, PROT_NONE, MAP_PRIVATE |
		     MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
		logop("mremap move %p +%zu to %p", (void *)r->addr, r->pages,
		      (void *)to);
		r->addr = to;
		r->fresh = true;
		break;
	case 1:	/* shrink */
		if (r->pages < 2)
			return;
		np = 1 + td_rng_below(&rng, r->pages - 1);
		if (mremap(r->addr, r->pages * PG, np * PG, 0) == MAP_FAILED)
			tap_bail("mremap shrink: %s", strerror(errno));
		mmap(r->addr + np * PG, (r->pages - np) * PG, PROT_NONE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
		     -1, 0);
		logop("mremap shrink %p +%zu to %zu", (void *)r->addr,
		      r->pages, np);
		r->pages = np;
		break;
	default: /* grow in place into free arena space, if any */
		np = r->pages + 1 + td_rng_below(&rng, 8);
		if (r->addr + np * PG > arena + ARENA_PAGES * PG)
			return;
		for (int i = 0; i < MAX_REGIONS; i++) {
			struct region *o = &regions[i];

			if (o != r && o->addr && o->addr >= r->addr &&
			    o->addr < r->addr + np * PG)
				return;
		}
		/* the reservation is in the way of an in-place growth */
		munmap(r->addr + r->pages * PG, (np - r->pages) * PG);
		if (mremap(r->addr, r->pages * PG, np * PG, 0) == MAP_FAILED) {
			mmap(r->addr + r->pages * PG, (np - r->pages) * PG,
			     PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED |
			     MAP_NORESERVE, -1, 0);
			return;
		}
		logop("mremap grow %p +%zu to %zu", (void *)r->addr, r->pages,
		      np);
		r->pages = np;
		break;
	}
}

static void op_mprotect(struct region *r)
{
	r->ro = !r->ro;
	r->flipped |= !r->ro;
	if (mprotect(r->addr, r->pages * PG,
		     r->ro ? PROT_READ : PROT_READ | PROT_WRITE))
		tap_bail("mprotect: %s", strerror(errno));
	logop("mprotect %p +%zu %s", (void *)r->addr, r->pages,
	      r->ro ? "RO" : "RW");
}

static void op_dontneed(struct region *r)
{
	size_t at = td_rng_below(&rng, r->pages);
	size_t n = 1 + td_rng_below(&rng, r->pages - at);

	madvise(r->addr + at * PG, n * PG, MADV_DONTNEED);
	logop("MADV_DONTNEED %p +%zu", (void *)(r->addr + at * PG), n);
}

/* ---------- the writer threads ---------- */

static atomic_int phase;		/* bumped to start a write phase */
static atomic_int done_writers;
static atomic_ulong counter;
static unsigned long writes_per_phase = 200;

static void *writer(void *arg)
{
	struct td_rng r;
	int seen = 0;

	td_rng_seed(&r, (uintptr_t)arg);
	for (;;) {
		int ph;
		unsigned long i;

		while ((ph = atomic_load(&phase)) == seen)
			usleep(100);
		if (ph < 0)
			return NULL;
		seen = ph;
		pthread_mutex_lock(&regions_lock);
		for (i = 0; i < writes_per_phase; i++) {
			struct region *x = &regions[td_rng_below(&r, MAX_REGIONS)];
			size_t p;

			if (!x->addr || x->ro)
				continue;
			p = td_rng_below(&r, x->pages);
			/* a new value every time: the hash oracle needs it */
			*(volatile unsigned long *)(x->addr + p * PG +
				td_rng_below(&r, PG / 8) * 8) =
				atomic_fetch_add(&counter, 1) + 1;
		}
		pthread_mutex_unlock(&regions_lock);
		atomic_fetch_add(&done_writers, 1);
	}
}

/* ---------- the oracle and the comparison ---------- */

static int pagemap_fd, clear_fd;

static void kernel_clear(void)
{
	if (pwrite(clear_fd, "4", 1, 0) != 1)
		tap_bail("clear_refs: %s", strerror(errno));
}

static bool kernel_dirty(const char *a)
{
	uint64_t e;

	if (pread(pagemap_fd, &e, 8, (off_t)((uintptr_t)a / PG * 8)) != 8)
		tap_bail("pagemap: %s", strerror(errno));
	return e & SOFTDIRTY_PM_SOFT_DIRTY;
}

struct tracker {
	const struct td_backend *be;
	struct softdirty *sd;
	unsigned long extra, misses, checked, documented;
	unsigned char *rep;		/* reported pages of the arena */
};

static void collect(struct tracker *t)
{
	struct softdirty_range vec[64];
	uint64_t cur = (uintptr_t)arena, end = cur + ARENA_PAGES * PG;

	memset(t->rep, 0, ARENA_PAGES);
	while (cur < end) {
		long n = softdirty_collect(t->sd, cur, end, vec, 64,
					   SOFTDIRTY_COLLECT_RESET, &cur);

		if (n < 0)
			tap_bail("%s: collect: %s", t->be->name,
				 strerror((int)-n));
		for (long i = 0; i < n; i++)
			for (uint64_t a = vec[i].start; a < vec[i].end; a += PG)
				t->rep[(a - (uintptr_t)arena) / PG] = 1;
	}
}

static bool changed(const struct region *r, size_t p)
{
	static const char zero[4096];
	const char *a = r->addr + p * PG;
	size_t idx = (size_t)(a - arena) / PG;

	/*
	 * Against what this address held at the reset, whichever region
	 * that was: a region mapped where another one was (same size and
	 * flags, the same bytes) holds no visible change.  Where nothing
	 * readable was, the arena's never-touched reservation: zeros.
	 */
	if (snap_valid[idx])
		return memcmp(arena_snap + idx * PG, a, PG);
	return memcmp(zero, a, PG);
}

static void snapshot(void)
{
	int i;

	memset(snap_valid, 0, sizeof(snap_valid));
	for (i = 0; i < MAX_REGIONS; i++) {
		struct region *r = &regions[i];
		size_t idx = (size_t)(r->addr - arena) / PG;

		r->fresh = false;
		r->flipped = false;
		if (!r->addr)
			continue;
		/* PROT_READ at least: every region is readable */
		memcpy(arena_snap + idx * PG, r->addr, r->pages * PG);
		memset(snap_valid + idx, 1, r->pages);
	}
}

static void compare(struct tracker *t, int round)
{
	unsigned int caps = t->be->caps;
	bool contents = caps & SOFTDIRTY_CAP_CONTENTS;
	int i;

	for (i = 0; i < MAX_REGIONS; i++) {
		struct region *r = &regions[i];
		size_t p;

		if (!r->addr)
			continue;
		for (p = 0; p < r->pages; p++) {
			char *a = r->addr + p * PG;
			size_t idx = (size_t)(a - arena) / PG;
			bool must = contents ? changed(r, p) : kernel_dirty(a);

			/*
			 * What a backend documents it cannot see, by its caps:
			 * writes while the program had the page writable,
			 * then read-only again, or a read-only region put
			 * in place of the arena's reservation (mapped at the
			 * reset: every address of the arena is) by mmap or
			 * mremap, as random-workload counts them; the
			 * kernel's PMD-wide bit.
			 */
			if (must && !(caps & SOFTDIRTY_CAP_PROT_CHANGES) &&
			    (r->flipped || r->fresh) && r->ro) {
				t->documented++;
				must = false;
			}
			if (must && !(caps & SOFTDIRTY_CAP_HUGE_PAGES) &&
			    r->thp && !changed(r, p)) {
				t->documented++;
				must = false;
			}

			t->checked += must;
			if (must && !t->rep[idx] && t->misses++ < 5) {
				tap_diag("%s: round %d: MISSED page %p (%sregion %p +%zu, page %zu)%s",
					 t->be->name, round, (void *)a,
					 r->thp ? "THP " : "",
					 (void *)r->addr, r->pages, p,
					 contents ? " (contents changed)" : " (kernel: soft-dirty)");
				dump_log();
			}
			t->rep[idx] = 0;
		}
	}
	for (i = 0; i < ARENA_PAGES; i++)
		t->extra += t->rep[i];
}

int main(void)
{
	struct softdirty_probe_result pr[SOFTDIRTY_BACKEND_COUNT];
	struct tracker tr[SOFTDIRTY_BACKEND_COUNT];
	struct td_backend *bes;
	pthread_t th[THREADS];
	int ntr = 0, i, round, rounds;
	uint64_t seed = td_seed();
	size_t nb;

	tap_init("differential");
	if (softdirty_probe(pr, SOFTDIRTY_BACKEND_COUNT) < 0)
		tap_bail("probe failed");
	if (pr[SOFTDIRTY_BACKEND_KERNEL].status) {
		printf("1..0 # SKIP kernel soft-dirty not available (%s): no oracle\n",
		       pr[SOFTDIRTY_BACKEND_KERNEL].reason);
		return 77;
	}
	td_rng_seed(&rng, seed);
	tap_diag("seed 0x%llx (replay: SOFTDIRTY_TEST_SEED=0x%llx)",
		 (unsigned long long)seed, (unsigned long long)seed);
	pagemap_fd = open("/proc/self/pagemap", O_RDONLY);
	clear_fd = open("/proc/self/clear_refs", O_WRONLY);
	if (pagemap_fd < 0 || clear_fd < 0)
		tap_bail("open /proc/self: %s", strerror(errno));
	/* an inaccessible reservation keeps other mappings out of the arena */
	arena = mmap(NULL, ARENA_PAGES * PG + HUGE, PROT_NONE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (arena == MAP_FAILED)
		tap_bail("mmap arena: %s", strerror(errno));
	arena = (char *)(((uintptr_t)arena + HUGE - 1) & ~(HUGE - 1));
	arena_snap = malloc(ARENA_PAGES * PG);
	if (!arena_snap)
		tap_bail("out of memory");

	nb = td_backends(&bes);
	for (i = 0; i < (int)nb; i++) {
		/* the test drives clear_refs itself: the kernel is the oracle */
		if (i == SOFTDIRTY_BACKEND_KERNEL || !bes[i].selected)
			continue;
		if (bes[i].status) {
			tap_skip(bes[i].reason, "%s: agrees with the kernel's bit 55",
				 bes[i].name);
			continue;
		}
		tr[ntr] = (struct tracker){ .be = &bes[i] };
		tr[ntr].sd = td_open(bes[i].name);
		tr[ntr].rep = calloc(ARENA_PAGES, 1);
		ntr++;
	}
	for (i = 0; i < 8; i++)
		op_mmap();
	for (i = 0; i < THREADS; i++)
		pthread_create(&th[i], NULL, writer, (void *)(uintptr_t)(seed + i + 1));

	rounds = td_quick() ? 60 : 250;
	/* the common reference point */
	kernel_clear();
	for (i = 0; i < ntr; i++)
		collect(&tr[i]);
	snapshot();
	for (round = 1; round <= rounds; round++) {
		int ops = 1 + (int)td_rng_below(&rng, 6), k;

		/* structural changes, single-threaded */
		for (k = 0; k < ops; k++) {
			struct region *r = pick();
			unsigned int what = (unsigned int)td_rng_below(&rng, 6);

			if (!r || what == 0) {
				op_mmap();
				continue;
			}
			switch (what) {
			case 1:
				if (td_rng_below(&rng, 3) == 0)
					op_munmap(r);
				break;
			case 2:
				op_mremap(r);
				break;
			case 3:
				op_mprotect(r);
				break;
			case 4:
				op_dontneed(r);
				break;
			default:
				break;
			}
		}
		/* writes from every thread, then quiet again */
		atomic_store(&done_writers, 0);
		atomic_fetch_add(&phase, 1);
		while (atomic_load(&done_writers) < THREADS)
			usleep(100);
		logop("round %d: writes", round);
		/* the same moment for everyone: nothing runs now */
		for (i = 0; i < ntr; i++)
			collect(&tr[i]);
		for (i = 0; i < ntr; i++)
			compare(&tr[i], round);
		kernel_clear();
		snapshot();
	}
	atomic_store(&phase, -1);
	for (i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);

	for (i = 0; i < ntr; i++) {
		struct tracker *t = &tr[i];

		tap_diag("%s: %lu pages checked over %d rounds, %lu reported beyond the oracle, %lu not required (documented limits in caps)",
			 t->be->name, t->checked, rounds, t->extra,
			 t->documented);
		tap_ok(t->misses == 0 && t->checked > 0,
		       "%s: every page the %s calls dirty is reported (%lu missed)",
		       t->be->name,
		       (t->be->caps & SOFTDIRTY_CAP_CONTENTS) ?
		       "contents comparison" : "kernel's bit 55", t->misses);
		softdirty_close(t->sd);
	}
	free(arena_snap);
	return tap_done();
}
