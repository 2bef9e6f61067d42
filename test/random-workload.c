// SPDX-License-Identifier: MIT
/*
 * A seeded random workload over test-owned regions (an arena of address
 * space far from everything else), checked against a shadow record after
 * every collect:
 *   writes, reads, mmap (private or shared anonymous), munmap (whole or
 *   part), mremap (grow in place, shrink, move), mprotect RO/RW flips,
 *   MADV_DONTNEED, fork (the child writes its own copy and exits);
 *   a collect every ~100 operations, alternating "collect, then
 *   softdirty_reset()" and SOFTDIRTY_COLLECT_RESET, over the arena or the
 *   whole address space.
 * Must report: every page written since the reset and every page of a
 * region created, grown or moved since the reset (still mapped).  Zero
 * misses for every backend; false positives are counted and printed.
 *
 * SOFTDIRTY_TEST_SEED=n replays a run; SOFTDIRTY_TEST_OPS=n sets the count;
 * SOFTDIRTY_TEST_NOTRACK=1 runs the workload without a tracker (baseline);
 * SOFTDIRTY_TEST_TRACE=page prints every operation on that arena page,
 * SOFTDIRTY_TEST_VERBOSE=1 every operation.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

#define W	2048		/* arena pages */
#define MAXREC	24
#define MAXLEN	32

struct rec {
	size_t s, n;
	bool shared;
};

static struct {
	char *arena;
	uint8_t mapped[W], rw[W], shared[W];
	uint8_t written[W], isnew[W], zapped[W];
	uint8_t flipped[W];	/* made RW by mprotect since the reset */
	uint8_t at_reset[W];	/* mapped at the last reset */
	uint8_t unmapped[W];	/* unmapped since the last reset */
	uint8_t regrown[W];	/* mapped again by in-place mremap growth */
	uint8_t got[W];
	struct rec rec[MAXREC];
	size_t nrec;
	struct td_rng rng;
	char ops[1024][112];
	size_t ops_s[1024], ops_n[1024];
	unsigned long nops, nops_at_reset;
	/* results */
	unsigned long misses, misses_flipped, flips_unreported, contents_same, fps,
		regrown_unreported, fps_unmapped, sysfail, collects, forks;
	unsigned long writes, split_skips, write_faults;
	size_t trace;		/* SOFTDIRTY_TEST_TRACE: page to trace */
	bool verbose;		/* SOFTDIRTY_TEST_VERBOSE: every operation */
} S;

static void op_log(size_t s, size_t n, const char *fmt, ...)
	TD_PRINTF(3, 4);
static void op_log(size_t s, size_t n, const char *fmt, ...)
{
	va_list ap;
	char *b = S.ops[S.nops % 1024];

	va_start(ap, fmt);
	vsnprintf(b, sizeof(S.ops[0]), fmt, ap);
	va_end(ap);
	S.ops_s[S.nops % 1024] = s;
	S.ops_n[S.nops % 1024] = n;
	if (S.verbose || (S.trace != (size_t)-1 && s <= S.trace &&
			  S.trace < s + n))
		tap_diag("trace: op %lu (collect %lu): %s", S.nops, S.collects,
			 b);
	S.nops++;
}

/* the last 20 operations, and those since the reset touching [s, s + n) */
static void dump_ops(size_t s, size_t n)
{
	unsigned long i, from = S.nops > 20 ? S.nops - 20 : 0;
	unsigned long r = S.nops_at_reset;

	if (S.nops - r > 1000)
		r = S.nops - 1000;
	if (r > 0)
		r--;	/* and the last one before */
	tap_diag("operations since the reset on pages %zu +%zu:", s, n);
	for (i = r; i < from; i++)
		if (S.ops_s[i % 1024] < s + n &&
		    S.ops_s[i % 1024] + S.ops_n[i % 1024] > s)
			tap_diag("  op %lu: %s", i, S.ops[i % 1024]);
	tap_diag("last operations (arena %p):", (void *)S.arena);
	for (i = from; i < S.nops; i++)
		tap_diag("  op %lu: %s", i, S.ops[i % 1024]);
}

static uint64_t rnd(uint64_t n)
{
	return td_rng_below(&S.rng, n);
}

static char *pg(size_t i)
{
	return S.arena + i * PG;
}

static void sysfail(const char *what, int err)
{
	S.sysfail++;
	if (S.sysfail <= 10)
		tap_diag("op %lu: %s failed: %s", S.nops, what, strerror(err));
}

/* [s - 1, s + n] unmapped (s + n may equal W) */
static bool free_with_gap(size_t s, size_t n)
{
	size_t i, a = s ? s - 1 : 0, b = s + n + 1 > W ? W : s + n + 1;

	if (s + n > W)
		return false;
	for (i = a; i < b; i++)
		if (S.mapped[i])
			return false;
	return true;
}

static bool find_free(size_t n, size_t *out)
{
	int t;

	for (t = 0; t < 30; t++) {
		size_t s = 1 + rnd(W - n - 1);

		if (free_with_gap(s, n)) {
			*out = s;
			return true;
		}
	}
	return false;
}

static bool uniform(const struct rec *r)
{
	size_t i;

	for (i = r->s + 1; i < r->s + r->n; i++)
		if (S.rw[i] != S.rw[r->s])
			return false;
	return true;
}

/*
 * mremap needs the old range inside one VMA (before Linux 6.17 also for
 * moves).  VMAs do not always merge back after mprotect flips (and a
 * tracker may split them), so look before leaping; count the skips.
 */
static bool single_vma(size_t s, size_t n)
{
	uint64_t a = (uint64_t)(uintptr_t)pg(s), e = a + n * PG;
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	bool ok = false;

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long vs, ve;

		if (sscanf(line, "%llx-%llx", &vs, &ve) == 2 && vs <= a &&
		    a < ve) {
			ok = e <= ve;
			break;
		}
	}
	fclose(f);
	if (!ok)
		S.split_skips++;
	return ok;
}

static void unmap_pages(size_t s, size_t n)
{
	memset(S.unmapped + s, 1, n);
	memset(S.regrown + s, 0, n);
	memset(S.mapped + s, 0, n);
	memset(S.written + s, 0, n);
	memset(S.isnew + s, 0, n);
	memset(S.zapped + s, 0, n);
}

static void rec_del(size_t k)
{
	S.rec[k] = S.rec[--S.nrec];
}

static void op_mmap(void)
{
	size_t n = 1 + rnd(MAXLEN), s;
	bool shared = rnd(4) == 0;
	void *p;

	if (S.nrec >= MAXREC || !find_free(n, &s))
		return;
	op_log(s, n, "mmap page %zu +%zu %s", s, n, shared ? "shared" : "private");
	p = mmap(pg(s), n * PG, PROT_READ | PROT_WRITE,
		 (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS |
		 MAP_FIXED_NOREPLACE, -1, 0);
	if (p == MAP_FAILED || p != pg(s)) {
		sysfail("mmap", p == MAP_FAILED ? errno : EEXIST);
		if (p != MAP_FAILED)
			munmap(p, n * PG);
		return;
	}
	memset(S.mapped + s, 1, n);
	memset(S.rw + s, 1, n);
	memset(S.shared + s, shared, n);
	memset(S.isnew + s, 1, n);
	S.rec[S.nrec++] = (struct rec){ s, n, shared };
}

static void op_munmap(size_t k)
{
	struct rec r = S.rec[k];
	size_t a, b;

	if (rnd(2) || S.nrec >= MAXREC) {	/* a split needs a record */
		a = 0;
		b = r.n;
	} else {
		a = rnd(r.n);
		b = a + 1 + rnd(r.n - a);
	}
	op_log(r.s, r.n, "munmap page %zu +%zu (record %zu +%zu)", r.s + a, b - a, r.s,
	       r.n);
	if (munmap(pg(r.s + a), (b - a) * PG)) {
		sysfail("munmap", errno);
		return;
	}
	unmap_pages(r.s + a, b - a);
	rec_del(k);
	if (a > 0)
		S.rec[S.nrec++] = (struct rec){ r.s, a, r.shared };
	if (b < r.n)
		S.rec[S.nrec++] = (struct rec){ r.s + b, r.n - b, r.shared };
}

static void op_grow(size_t k)
{
	struct rec *r = &S.rec[k];
	size_t g = 1 + rnd(8), e = r->s + r->n;
	void *p;

	size_t j;

	if (r->shared || !uniform(r) || e + g + 1 > W)
		return;
	for (j = e; j < e + g + 1; j++)	/* the grown part and a gap */
		if (S.mapped[j])
			return;
	if (!single_vma(r->s, r->n))
		return;
	op_log(r->s, r->n + g, "mremap grow page %zu +%zu by %zu", r->s, r->n, g);
	p = mremap(pg(r->s), r->n * PG, (r->n + g) * PG, 0);
	if (p == MAP_FAILED) {
		sysfail("mremap grow", errno);
		return;
	}
	for (j = e; j < e + g; j++)
		S.regrown[j] = S.at_reset[j] && S.unmapped[j];
	memset(S.mapped + e, 1, g);
	memset(S.rw + e, S.rw[r->s], g);
	memset(S.shared + e, 0, g);
	memset(S.isnew + e, 1, g);
	r->n += g;
}

static void op_shrink(size_t k)
{
	struct rec *r = &S.rec[k];
	size_t nn;
	void *p;

	if (r->n < 2 || !uniform(r) || !single_vma(r->s, r->n))
		return;
	nn = 1 + rnd(r->n - 1);
	op_log(r->s, r->n, "mremap shrink page %zu +%zu to %zu", r->s, r->n, nn);
	p = mremap(pg(r->s), r->n * PG, nn * PG, 0);
	if (p == MAP_FAILED) {
		sysfail("mremap shrink", errno);
		return;
	}
	unmap_pages(r->s + nn, r->n - nn);
	r->n = nn;
}

static void op_move(size_t k)
{
	struct rec *r = &S.rec[k];
	size_t d;
	void *p;

	if (!uniform(r) || !find_free(r->n, &d) || !single_vma(r->s, r->n))
		return;
	op_log(r->s, r->n, "mremap move page %zu +%zu to %zu", r->s, r->n, d);
	op_log(d, r->n, "  (move target of the above)");
	p = mremap(pg(r->s), r->n * PG, r->n * PG,
		   MREMAP_MAYMOVE | MREMAP_FIXED, pg(d));
	if (p == MAP_FAILED) {
		sysfail("mremap move", errno);
		return;
	}
	for (size_t j = d; j < d + r->n; j++)	/* moved onto known space */
		S.regrown[j] = S.at_reset[j] && S.unmapped[j];
	memset(S.mapped + d, 1, r->n);
	memcpy(S.rw + d, S.rw + r->s, r->n);
	memcpy(S.flipped + d, S.flipped + r->s, r->n);
	memset(S.shared + d, r->shared, r->n);
	memset(S.isnew + d, 1, r->n);
	memset(S.written + d, 0, r->n);
	memset(S.zapped + d, 0, r->n);
	unmap_pages(r->s, r->n);
	r->s = d;
}

static void op_mprotect(size_t k)
{
	struct rec *r = &S.rec[k];
	size_t a = rnd(r->n), b = a + 1 + rnd(r->n - a);
	int rw = (int)rnd(2);

	op_log(r->s + a, b - a, "mprotect page %zu +%zu %s", r->s + a, b - a, rw ? "RW" : "RO");
	if (mprotect(pg(r->s + a), (b - a) * PG,
		     rw ? PROT_READ | PROT_WRITE : PROT_READ)) {
		sysfail("mprotect", errno);
		return;
	}
	memset(S.rw + r->s + a, rw, b - a);
	if (rw)
		memset(S.flipped + r->s + a, 1, b - a);
}

static void op_dontneed(size_t k)
{
	struct rec *r = &S.rec[k];
	size_t a = rnd(r->n), b = a + 1 + rnd(r->n - a);

	op_log(r->s + a, b - a, "MADV_DONTNEED page %zu +%zu", r->s + a, b - a);
	if (madvise(pg(r->s + a), (b - a) * PG, MADV_DONTNEED)) {
		sysfail("madvise", errno);
		return;
	}
	/*
	 * The page leaves the page table: the kernel's soft-dirty bit goes
	 * with it (even for shared memory, whose data stays in the object),
	 * and the contract only asks that such pages show as not present.
	 * So: no longer must-report, but any backend may report them.
	 */
	memset(S.written + r->s + a, 0, b - a);
	memset(S.zapped + r->s + a, 1, b - a);
}

static void do_write(size_t i)
{
	volatile uint8_t *c = (volatile uint8_t *)pg(i) + rnd(PG);

	if (!td_try_write(c, (uint8_t)(1 + rnd(200)))) {
		if (S.write_faults++ < 5) {
			tap_diag("op %lu: write to RW page %zu faulted", S.nops,
				 i);
			dump_ops(i, 1);
		}
		return;
	}
	S.written[i] = 1;
	S.writes++;
}

static void op_write(size_t k)
{
	struct rec *r = &S.rec[k];
	size_t i = r->s + rnd(r->n);

	if (!S.rw[i])
		return;
	op_log(i, 1, "write page %zu", i);
	do_write(i);
}

static void op_read(size_t k)
{
	struct rec *r = &S.rec[k];
	size_t i = r->s + rnd(r->n);
	volatile uint8_t *c = (volatile uint8_t *)pg(i) + rnd(PG);

	op_log(i, 1, "read page %zu", i);
	(void)*c;
}

static void op_fork(void)
{
	size_t cand[8], nc = 0, t;
	pid_t pid;
	int st;

	for (t = 0; t < 40 && nc < 8 && S.nrec; t++) {
		struct rec *r = &S.rec[rnd(S.nrec)];
		size_t i = r->s + rnd(r->n);

		if (!r->shared && S.rw[i])
			cand[nc++] = i;
	}
	op_log(0, 0, "fork, child writes %zu private pages", nc);
	S.forks++;
	pid = fork();
	if (pid < 0) {
		sysfail("fork", errno);
		return;
	}
	if (pid == 0) {
		for (t = 0; t < nc; t++)
			((volatile uint8_t *)pg(cand[t]))[t] ^= 0x5a;
		_exit(0);
	}
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st))
		sysfail("fork child", ECHILD);
	/* the parent writes right after the fork (COW break) */
	for (t = 0; t < nc; t++)
		if (rnd(2)) {
			op_log(cand[t], 1, "write page %zu after fork", cand[t]);
			do_write(cand[t]);
		}
}

static void collect_cb(void *ctx, uint64_t start, uint64_t end, uint64_t flags)
{
	uint64_t a = (uint64_t)(uintptr_t)S.arena, e = a + W * PG, p;

	(void)ctx;
	if (start < a)
		start = a;
	if (end > e)
		end = e;
	for (p = start; p < end; p += PG)
		S.got[(p - a) / PG] |= (uint8_t)flags;
}

static bool check(const struct td_backend *be, struct softdirty *sd)
{
	unsigned long k = S.collects++;
	bool whole = (k / 2) % 2 == 0, resetflag = k % 2;
	uint64_t a = (uint64_t)(uintptr_t)S.arena;
	size_t i, miss = 0;
	long r;

	memset(S.got, 0, W);
	if (!sd) {	/* baseline run without a tracker */
		memset(S.written, 0, W);
		memset(S.isnew, 0, W);
		memset(S.zapped, 0, W);
		return true;
	}
	r = td_collect(sd, whole ? 0 : a, whole ? UINT64_MAX : a + W * PG,
		       resetflag ? SOFTDIRTY_COLLECT_RESET : 0, collect_cb,
		       NULL);
	if (r < 0) {
		tap_diag("%s: collect %lu failed: %s", be->name, k,
			 strerror((int)-r));
		return false;
	}
	if (!resetflag) {
		int e = softdirty_reset(sd);

		if (e < 0) {
			tap_diag("%s: reset failed: %s", be->name, strerror(-e));
			return false;
		}
	}
	for (i = 0; i < W; i++) {
		bool must = S.mapped[i] && (S.written[i] || S.isnew[i]);

		if (must && !S.got[i] && !S.written[i] &&
		    (be->caps & SOFTDIRTY_CAP_CONTENTS)) {
			/*
			 * A contents backend cannot tell a new region from
			 * the old one when the bytes are the same (zeros
			 * replacing zeros): counted, not a miss.
			 */
			S.contents_same++;
		} else if (must && !S.got[i] && !S.written[i] && S.regrown[i] &&
			   !(be->caps & SOFTDIRTY_CAP_REGROWN)) {
			/* documented: caps lacks SOFTDIRTY_CAP_REGROWN */
			S.regrown_unreported++;
		} else if (must && !S.got[i] && !S.rw[i] &&
			   (S.flipped[i] || (S.isnew[i] && S.at_reset[i])) &&
			   !(be->caps & SOFTDIRTY_CAP_PROT_CHANGES)) {
			/*
			 * documented: caps lacks SOFTDIRTY_CAP_PROT_CHANGES:
			 * a write while the program had made the page
			 * writable and then read-only again, or a read-only
			 * mapping put in place of one mapped at the reset,
			 * is not seen
			 */
			S.flips_unreported++;
		} else if (must && !S.got[i]) {
			S.misses_flipped += S.flipped[i];
			if (miss++ < 5)
				tap_diag("%s: MISSED page %zu (%p)%s%s%s%s "
					 "collect %lu (%s, %s)", be->name, i,
					 (void *)pg(i),
					 S.written[i] ? " written" : "",
					 S.isnew[i] ? " new" : "",
					 S.shared[i] ? " shared" : " private",
					 S.rw[i] ? " rw" : " ro", k,
					 whole ? "whole address space" : "arena",
					 resetflag ? "COLLECT_RESET" :
					 "collect then reset");
			if (miss == 1) {
				size_t j, rs = i, rn = 1;

				for (j = 0; j < S.nrec; j++)
					if (i >= S.rec[j].s &&
					    i < S.rec[j].s + S.rec[j].n) {
						rs = S.rec[j].s;
						rn = S.rec[j].n;
						tap_diag("  in region page %zu "
							 "+%zu", rs, rn);
					}
				dump_ops(rs, rn);
			}
		} else if (!must && S.got[i] && !S.zapped[i]) {
			S.fps++;
			if (!S.mapped[i])
				S.fps_unmapped++;
		}
	}
	S.misses += miss;
	S.nops_at_reset = S.nops;
	memset(S.flipped, 0, W);
	memcpy(S.at_reset, S.mapped, W);
	memset(S.unmapped, 0, W);
	memset(S.regrown, 0, W);
	memset(S.written, 0, W);
	memset(S.isnew, 0, W);
	memset(S.zapped, 0, W);
	return true;
}

static void run(const struct td_backend *be, void *ctx)
{
	uint64_t seed = *(uint64_t *)ctx;
	const char *env = getenv("SOFTDIRTY_TEST_OPS");
	unsigned long nops = env ? strtoul(env, NULL, 0) :
			     td_quick() ? 20000 : 100000;
	unsigned long i, next = 100;
	struct softdirty *sd;
	bool ok = true;
	double t0 = td_now();
	size_t k;

	memset(&S, 0, sizeof(S));
	S.trace = getenv("SOFTDIRTY_TEST_TRACE") ?
		  strtoul(getenv("SOFTDIRTY_TEST_TRACE"), NULL, 0) : (size_t)-1;
	S.verbose = getenv("SOFTDIRTY_TEST_VERBOSE") != NULL;
	td_rng_seed(&S.rng, seed);
	S.arena = (char *)0x300000000000ULL;
	/* claim the arena to check it is free, then release it */
	{
		void *p = mmap(S.arena, W * PG, PROT_NONE, MAP_PRIVATE |
			       MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

		if (p != S.arena) {
			if (p != MAP_FAILED)
				munmap(p, W * PG);
			S.arena = td_free_range(W * PG);
		} else {
			munmap(p, W * PG);
		}
	}
	sd = strcmp(be->name, "none") ? td_open(be->name) : NULL;
	for (i = 0; i < nops; i++) {
		unsigned int w = (unsigned int)rnd(100);

		if (i == next) {
			ok &= check(be, sd);
			next = i + 50 + rnd(100);
		}
		if (S.nrec < 3 || w < 5) {
			op_mmap();
			continue;
		}
		k = rnd(S.nrec);
		if (w < 50)
			op_write(k);
		else if (w < 62)
			op_read(k);
		else if (w < 66)
			op_munmap(k);
		else if (w < 70)
			op_grow(k);
		else if (w < 73)
			op_shrink(k);
		else if (w < 76)
			op_move(k);
		else if (w < 86)
			op_mprotect(k);
		else if (w < 89)
			op_dontneed(k);
		else if (w < 90 && rnd(4) == 0)
			op_fork();
		else
			op_write(k);
	}
	ok &= check(be, sd);
	softdirty_close(sd);
	for (k = 0; k < S.nrec; k++)
		munmap(pg(S.rec[k].s), S.rec[k].n * PG);

	tap_diag("%s: %lu ops (%lu writes, %lu forks), %lu collects in %.2f s; "
		 "false positives: %lu page-reports (%lu of unmapped pages); "
		 "%lu mremaps skipped (region in several VMAs)",
		 be->name, nops, S.writes, S.forks, S.collects, td_now() - t0,
		 S.fps, S.fps_unmapped, S.split_skips);
	if (S.regrown_unreported)
		tap_diag("%s: %lu pages regrown in place by mremap not reported "
			 "(probe: no SOFTDIRTY_CAP_REGROWN)", be->name,
			 S.regrown_unreported);
	if (S.flips_unreported)
		tap_diag("%s: %lu pages written between the program's own "
			 "mprotect RW and RO, or replaced in place by a "
			 "read-only mapping, not reported (probe: no "
			 "SOFTDIRTY_CAP_PROT_CHANGES)", be->name,
			 S.flips_unreported);
	if (S.contents_same)
		tap_diag("%s: %lu pages of new regions (never written) not "
			 "reported: same bytes as before, allowed for a "
			 "contents backend", be->name, S.contents_same);
	if (S.misses)
		tap_diag("%s: %lu of the %lu misses on pages the program made "
			 "writable with mprotect() since the reset", be->name,
			 S.misses_flipped, S.misses);
	tap_ok(ok && !S.misses, "%s: random workload (seed %#" PRIx64
	       "): zero missed writes (%lu missed)", be->name, seed, S.misses);
	tap_ok(!S.write_faults, "%s: random workload: no write to a writable "
	       "page faulted (%lu did)", be->name, S.write_faults);
	tap_ok(!S.sysfail, "%s: random workload: every mmap/munmap/mremap/"
	       "mprotect/madvise/fork worked as without a tracker (%lu failed)",
	       be->name, S.sysfail);
}

int main(int argc, char **argv)
{
	uint64_t seed;

	(void)argc;
	tap_init(argv[0]);
	td_catch_faults();
	seed = td_seed();
	tap_diag("seed %#" PRIx64 " (replay: SOFTDIRTY_TEST_SEED=%#" PRIx64 ")",
		 seed, seed);
	if (getenv("SOFTDIRTY_TEST_NOTRACK")) {
		/* baseline: the same workload without a tracker */
		static const struct td_backend none = { .name = "none" };

		run(&none, &seed);
		return tap_done();
	}
	td_for_each_backend("random workload", run, &seed);
	return tap_done();
}
