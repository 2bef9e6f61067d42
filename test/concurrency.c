// SPDX-License-Identifier: MIT
/*
 * Writer threads racing softdirty_collect(..., SOFTDIRTY_COLLECT_RESET):
 * nothing may be lost.
 *
 * The collector sets a global epoch to 2k+1 just before collect k and to
 * 2k+2 just after (after publishing what collect k reported).  A writer
 * reads the epoch (e1) before a write and again (e2) after it; the write
 * must be reported by one of the collects lo = e1/2 .. hi = (e2+1)/2, i.e.
 * exactly collect k when no collect overlapped it (e1 == e2 == 2k), and
 * that collect or the next when one did.  Writers check their own writes
 * once collect hi is published (a ring of the last H reports).
 *
 * Double reports (a page reported in a collect whose window holds no write
 * to it) are counted and printed.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

#define NWRITERS	3
/* 64 MiB; 16 MiB with SOFTDIRTY_TEST_QUICK (emulated CPUs) */
static size_t REGION, NPAGES;
#define H		256		/* reports kept */
#define QLEN		(1u << 16)
#define MIN_WRITES	1000UL		/* for the race to count as run */

struct ob {
	uint32_t page, lo, hi;
};

struct writer {
	pthread_t th;
	int id;
	struct td_rng rng;
	struct ob *q;
	size_t qh, qt;			/* head (oldest), tail */
	_Atomic uint64_t head_lo;	/* lo of the oldest unchecked write */
	unsigned long writes, checked, misses, unverified;
	_Atomic unsigned long progress;	/* writes, for the collector */
};

static struct {
	char *region;
	_Atomic uint64_t epoch;
	_Atomic int stop;		/* writers: stop writing */
	_Atomic int writers_left;
	_Atomic uint64_t *seq;		/* per page */
	_Atomic uint8_t *reported;	/* H slots of NPAGES */
	_Atomic uint64_t slot_seq[H];	/* collect held by each slot */
	_Atomic uint8_t *explained;
	struct writer w[NWRITERS];
	unsigned long collects, doubles, reports, errors, eagain;
	_Atomic uint64_t forced_from;	/* collects from here never ran */
	bool drain_timeout;
	struct softdirty *sd;
} C;

static uint64_t completed(void)
{
	return atomic_load(&C.epoch) / 2;	/* collects published */
}

static void check_ob(struct writer *w, const struct ob *o)
{
	uint32_t j;
	bool found = false, lost_slot = false;

	if (o->hi >= atomic_load(&C.forced_from))
		return;		/* the test gave up waiting: no verdict */
	for (j = o->lo; j <= o->hi; j++) {
		size_t at = (size_t)(j % H) * NPAGES + o->page;

		/* the slot must hold collect j before and after the read */
		if (atomic_load(&C.slot_seq[j % H]) != j) {
			lost_slot = true;
			continue;
		}
		if (atomic_load_explicit(&C.reported[at], memory_order_relaxed))
			found = true;
		atomic_store_explicit(&C.explained[at], 1, memory_order_relaxed);
		atomic_thread_fence(memory_order_seq_cst);
		if (atomic_load(&C.slot_seq[j % H]) != j)
			lost_slot = true;
	}
	w->checked++;
	if (!found && lost_slot) {
		w->unverified++;	/* its reports were recycled already */
	} else if (!found) {
		w->misses++;
		if (w->misses <= 5)
			tap_diag("writer %d: MISSED write to page %u (%p) "
				 "between collects %u and %u", w->id, o->page,
				 (void *)(C.region + (size_t)o->page * PG),
				 o->lo, o->hi);
	}
}

/* check every queued write whose last collect is published */
static void drain(struct writer *w)
{
	uint64_t done = completed();

	while (w->qh != w->qt && w->q[w->qh % QLEN].hi < done) {
		check_ob(w, &w->q[w->qh % QLEN]);
		w->qh++;
	}
	atomic_store_explicit(&w->head_lo, w->qh != w->qt ?
			      w->q[w->qh % QLEN].lo : done,
			      memory_order_relaxed);
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;

	while (!atomic_load_explicit(&C.stop, memory_order_relaxed)) {
		uint32_t p = (uint32_t)td_rng_below(&w->rng, NPAGES);
		_Atomic uint64_t *slot = (_Atomic uint64_t *)
			(C.region + (size_t)p * PG) + w->id;
		uint64_t e1, e2, s;

		while (w->qt - w->qh >= QLEN - 1) {	/* queue full */
			drain(w);
			sched_yield();
		}
		e1 = atomic_load(&C.epoch);
		s = atomic_fetch_add(&C.seq[p], 1) + 1;
		atomic_store(slot, s);		/* the write (xchg: ordered) */
		e2 = atomic_load(&C.epoch);
		w->q[w->qt % QLEN] = (struct ob){ p, (uint32_t)(e1 / 2),
						  (uint32_t)((e2 + 1) / 2) };
		w->qt++;
		w->writes++;
		if ((w->writes & 15) == 0) {
			atomic_store_explicit(&w->progress, w->writes,
					      memory_order_relaxed);
			drain(w);
		}
	}
	while (w->qh != w->qt) {
		drain(w);
		sched_yield();
	}
	atomic_store(&w->head_lo, UINT64_MAX);
	atomic_fetch_sub(&C.writers_left, 1);
	return NULL;
}

static void collect_cb(void *ctx, uint64_t start, uint64_t end, uint64_t flags)
{
	uint64_t a = (uint64_t)(uintptr_t)C.region, e = a + REGION, p;
	_Atomic uint8_t *rep = ctx;

	(void)flags;
	if (start < a)
		start = a;
	if (end > e)
		end = e;
	for (p = start; p < end; p += PG) {
		atomic_store_explicit(&rep[(p - a) / PG], 1,
				      memory_order_relaxed);
		C.reports++;
	}
}

static void count_doubles(uint64_t k)
{
	size_t p;

	for (p = 0; p < NPAGES; p++)
		if (atomic_load_explicit(&C.reported[(k % H) * NPAGES + p],
					 memory_order_relaxed) &&
		    !atomic_load_explicit(&C.explained[(k % H) * NPAGES + p],
					  memory_order_relaxed))
			C.doubles++;
}

static bool collect_one(void)
{
	uint64_t k = C.collects;
	int i;
	long r;

	/*
	 * Pace: give writers that lag by half the kept reports up to 2 ms
	 * to check their writes (never blocking: a writer may need this very
	 * collect to finish its check).
	 */
	{
		double t = 0;

		for (;;) {
			uint64_t min = UINT64_MAX;

			for (i = 0; i < NWRITERS; i++) {
				uint64_t h = atomic_load_explicit(
					&C.w[i].head_lo, memory_order_relaxed);

				if (h < min)
					min = h;
			}
			if (min == UINT64_MAX || min + H / 2 > k)
				break;
			if (t == 0)
				t = td_now();
			else if (td_now() - t > 0.002)
				break;
			sched_yield();
		}
	}
	if (k >= H)
		count_doubles(k - H);
	atomic_store(&C.slot_seq[k % H], UINT64_MAX);	/* being recycled */
	memset((void *)(C.reported + (k % H) * NPAGES), 0, NPAGES);
	memset((void *)(C.explained + (k % H) * NPAGES), 0, NPAGES);
	atomic_store(&C.epoch, 2 * k + 1);
	/*
	 * -EAGAIN (softdirty_reset(3): the kernel backend could not pause
	 * the other threads in time) is a documented transient failure: the
	 * caller retries.  Ranges already reported by the failed attempt stay
	 * recorded; nothing may be lost either way.
	 */
	for (i = 0;; i++) {
		r = td_collect(C.sd, (uintptr_t)C.region,
			       (uintptr_t)C.region + REGION,
			       SOFTDIRTY_COLLECT_RESET, collect_cb,
			       (void *)(C.reported + (k % H) * NPAGES));
		if (r != -EAGAIN || i >= 5)
			break;
		C.eagain++;
	}
	if (r < 0)	/* no verdict on writes that needed this collect */
		atomic_store(&C.forced_from, k);
	atomic_store(&C.slot_seq[k % H], k);
	atomic_store(&C.epoch, 2 * k + 2);
	C.collects++;
	if (r < 0) {
		C.errors++;
		return false;
	}
	return true;
}

static bool enough(unsigned long min_collects)
{
	unsigned long writes = 0;
	int i;

	for (i = 0; i < NWRITERS; i++)
		writes += atomic_load_explicit(&C.w[i].progress,
					       memory_order_relaxed);
	return writes > MIN_WRITES && C.collects >= min_collects;
}

static void run(const struct td_backend *be, void *ctx)
{
	uint64_t seed = *(uint64_t *)ctx;
	double dur = td_quick() ? 1.0 : 2.0, t0, t1;
	unsigned long writes = 0, checked = 0, misses = 0, unverified = 0;
	uint64_t k;
	int i;

	memset(&C, 0, sizeof(C));
	atomic_store(&C.forced_from, UINT64_MAX);
	for (i = 0; i < H; i++)
		atomic_store(&C.slot_seq[i], UINT64_MAX);
	REGION = (td_quick() ? 16UL : 64UL) << 20;
	NPAGES = REGION / PG;
	C.region = mmap(NULL, REGION, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (C.region == MAP_FAILED)
		tap_bail("mmap: %s", strerror(errno));
	memset(C.region, 1, REGION);
	C.seq = calloc(NPAGES, sizeof(*C.seq));
	C.reported = calloc(H, NPAGES);
	C.explained = calloc(H, NPAGES);
	if (!C.seq || !C.reported || !C.explained)
		tap_bail("out of memory");
	C.sd = td_open(be->name);
	/* start from a clean state: collect 0 is the first after this */
	if (softdirty_reset(C.sd) < 0)
		tap_bail("reset failed");
	atomic_store(&C.writers_left, NWRITERS);
	for (i = 0; i < NWRITERS; i++) {
		struct writer *w = &C.w[i];

		w->id = i;
		td_rng_seed(&w->rng, seed + (uint64_t)i * 7919);
		w->q = malloc(QLEN * sizeof(*w->q));
		if (!w->q)
			tap_bail("out of memory");
		if (pthread_create(&w->th, NULL, writer_main, w))
			tap_bail("pthread_create");
	}
	/*
	 * Race for dur seconds, longer (up to a minute) until enough writes
	 * and collects ran: a slow backend under emulation must not fail the
	 * "the race ran" check on scheduling luck.
	 */
	t0 = td_now();
	while (td_now() - t0 < 60 &&
	       (td_now() - t0 < dur || !enough(td_quick() ? 3u : 10u)))
		if (!collect_one())
			break;
	atomic_store(&C.stop, 1);
	t1 = td_now();
	while (atomic_load(&C.writers_left) > 0) {
		if (td_now() - t1 > 15) {
			C.drain_timeout = true;
			break;
		}
		if (!collect_one())
			break;
	}
	/* error: writers may wait for collects that never come */
	if (atomic_load(&C.forced_from) > C.collects)
		atomic_store(&C.forced_from, C.collects);
	while (atomic_load(&C.writers_left) > 0) {
		atomic_store(&C.epoch, atomic_load(&C.epoch) + 2);
		sched_yield();
	}
	for (i = 0; i < NWRITERS; i++) {
		pthread_join(C.w[i].th, NULL);
		writes += C.w[i].writes;
		checked += C.w[i].checked;
		misses += C.w[i].misses;
		unverified += C.w[i].unverified;
		free(C.w[i].q);
	}
	for (k = C.collects > H ? C.collects - H : 0; k < C.collects; k++)
		count_doubles(k);
	softdirty_close(C.sd);
	tap_diag("%s: %lu writes by %d threads, %lu checked, %lu collects+reset "
		 "in %.2f s, %lu page reports, %lu double reports (reported "
		 "with no write in the window)", be->name, writes, NWRITERS,
		 checked, C.collects, td_now() - t0, C.reports, C.doubles);
	if (unverified)
		tap_diag("%s: %lu writes not verifiable (their window outlived "
			 "the %d kept reports)", be->name, unverified, H);
	if (C.eagain)
		tap_diag("%s: %lu collects failed with EAGAIN and were retried",
			 be->name, C.eagain);
	tap_ok(!C.errors, "%s: every collect succeeded (at most 5 retries on "
	       "EAGAIN)", be->name);
	if (C.drain_timeout)
		tap_diag("%s: gave up waiting 15 s for collects after the stop: "
			 "%lu writes not checked (slow backend)", be->name,
			 writes - checked);
	tap_ok(writes > MIN_WRITES && C.collects >= (td_quick() ? 3u : 10u) &&
	       (checked == writes || C.errors || C.drain_timeout),
	       "%s: the race ran (%lu writes, %lu collects, all checked)",
	       be->name, writes, C.collects);
	tap_ok(!misses && !C.errors, "%s: writers racing COLLECT_RESET: zero "
	       "missed writes (%lu missed)", be->name, misses);
	munmap(C.region, REGION);
	free(C.seq);
	free(C.reported);
	free(C.explained);
}

int main(int argc, char **argv)
{
	uint64_t seed;

	(void)argc;
	tap_init(argv[0]);
	seed = td_seed();
	tap_diag("seed %#" PRIx64, seed);
	td_for_each_backend("concurrent writers vs collect+reset", run, &seed);
	return tap_done();
}
