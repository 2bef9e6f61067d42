// SPDX-License-Identifier: MIT
/*
 * The "mprotect" backend: the calling process only, any kernel.
 *
 * At reset every tracked writable region is mprotect()ed without PROT_WRITE;
 * the first write to a page faults, our SIGSEGV handler records the page in
 * a lock-free bitmap, gives the page its protection back and returns, and
 * the write is retried.
 *
 * State shared with the handler (it may run on any thread at any moment):
 *  - one flat bitmap, one bit per page of the 47-bit user address space: a
 *    4 GiB PROT_NONE MAP_NORESERVE reservation whose pages are made
 *    writable (128 MiB of address space per bitmap page) before a region
 *    under them is protected.  Bits are indexed by address, so nothing is
 *    ever freed or moved under a running handler;
 *  - the table of regions we protected (start, end, the user's prot),
 *    sorted, in two mmap()ed slots: collect fills the slot not in use and
 *    publishes it.  Handlers announce themselves in a per-slot counter and
 *    collect waits for a slot's counter to drain before it rewrites it
 *    (a tiny SRCU).  The handler never blocks inside that section and
 *    chains to the previous handler only after leaving it, so a chained
 *    handler that longjmp()s out cannot wedge collect.
 *
 * What we never protect, because the kernel or the signal machinery writes
 * there and a fault there kills the process instead of reaching us:
 *  - [stack] and any VMA holding the caller's stack pointer;
 *  - thread stacks: glibc/musl put a thread's stack (with struct pthread,
 *    rseq area, robust list and clear_child_tid at its top) in an anonymous
 *    rw mapping directly above a PROT_NONE guard mapping (any anonymous
 *    PROT_NONE mapping but our own bitmap reservation counts as one);
 *  - the pages around the thread pointer of the main thread (captured in a
 *    constructor) and of every thread that called open/collect (its TCB,
 *    rseq area), plus glibc's __rseq_offset/__rseq_size area;
 *  - the sigaltstack of every thread that called open/collect;
 *  - [vvar]/[vdso]/[vsyscall], shared mappings of anon_inode:, /dev/ (but
 *    /dev/zero and /dev/shm) and [aio] rings;
 *  - our own state (bitmap, table slots, state page);
 *  - anything above 2^47 (outside the bitmap).
 * Thread pointers and altstacks seen once stay excluded ("sticky"), since
 * another thread may still be using them.  Writable pages among these are
 * reported UNTRACKED on every collect.  Read-only regions are not
 * protected; if they turn writable they are reported WRITTEN until the
 * next reset protects them.
 *
 * A write fault outside our table may be a region of ours that mremap()
 * moved or grew (realloc() does that): it keeps our protection.  Such
 * faults on anonymous private read-only memory that was not read-only at
 * the reset are taken as ours (rescue_moved()).
 *
 * Limits, besides the kernel writes the probe names: mprotect() calls of
 * the program are invisible, so a page it makes writable, writes and makes
 * read-only again between two collects is missed, and a write fault on a
 * page it write-protected itself inside a tracked region (a GC's barrier)
 * is taken as ours; another thread's alternate signal stack in tracked
 * memory, or a thread stack without a guard mapping, kills the process at
 * the next signal it takes there.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "uapi.h"

/* the bitmap covers [0, MP_LIMIT) */
#define MP_LIMIT	(1ULL << 47)
#define MP_BM_BYTES	(MP_LIMIT / PAGE_SZ / 8)
/* address space covered by one bitmap page */
#define MP_BM_SPAN	(PAGE_SZ * 8 * PAGE_SZ)
#define MP_NSTICKY	64
/* unprotect block sizes (log2 pages); MP_WHOLE: the whole region */
#define MP_WHOLE	64

struct mp_region {
	uint64_t start, end;
	uint32_t prot;		/* the user's protection */
	/*
	 * Not ours: anonymous memory that was read-only at the reset, so a
	 * write fault there is the program's, not a region of ours moved by
	 * mremap (see rescue_moved()).
	 */
	uint16_t ro;
	uint16_t failed;	/* collect only: protecting it failed */
};

struct mp_table {
	size_t n, cap;
	size_t map_len;
	struct mp_region r[];
};

struct mp_state {
	size_t len;				/* of this mapping */
	struct softdirty_range sticky[MP_NSTICKY];
	size_t nsticky;
	struct sd_rset excl;			/* this collect's list */
	struct sd_ksigaction kprev;		/* restored exactly at close */
	long max_map_count;
	unsigned long resets;			/* completed */
	/* which bitmap pages are writable: one bit each */
	uint64_t bm_on[(MP_BM_BYTES / PAGE_SZ) / 64];
};

/*
 * Everything the handler writes lives in this page of our own .bss, which
 * we never protect: it outlives any tracker, so a handler still running
 * while close() tears down never touches freed memory.
 */
struct mp_shared {
	_Atomic(uint64_t *) bm;
	_Atomic(struct mp_table *) slot[2];
	atomic_int cur;
	atomic_long readers[2];
	atomic_int enabled;
	atomic_int min_shift;
	atomic_long unprot;	/* unprotects since the last reset */
	atomic_long vmas;	/* VMAs at the last reset */
	atomic_long budget;	/* VMAs we allow ourselves to add */
	struct sigaction prev;	/* chained to */
	atomic_int prev_reset;	/* SA_RESETHAND fired: restore SIG_DFL */
};

static union {
	struct mp_shared s;
	char page[PAGE_SZ];
} g_page __attribute__((aligned(PAGE_SZ)));

#define G (&g_page.s)

static uintptr_t g_main_tp, g_main_errno;

static uintptr_t thread_pointer(void)
{
#if defined(__has_builtin)
#if __has_builtin(__builtin_thread_pointer)
	return (uintptr_t)__builtin_thread_pointer();
#define MP_HAVE_TP
#endif
#endif
#ifndef MP_HAVE_TP
	return (uintptr_t)pthread_self();
#endif
}

/* glibc 2.35+: the rseq area is at thread pointer + __rseq_offset */
extern const ptrdiff_t __rseq_offset __attribute__((weak));
extern const unsigned int __rseq_size __attribute__((weak));

__attribute__((constructor)) static void mp_capture_main_tp(void)
{
	g_main_tp = thread_pointer();
	g_main_errno = (uintptr_t)&errno;
}

/* ---------- the bitmap ---------- */

static _Atomic uint64_t *bm_word(uint64_t *bm, uint64_t page)
{
	return (_Atomic uint64_t *)&bm[page / 64];
}

/* mask of the bits of [a, b) (page numbers) in the word holding page @w */
static uint64_t word_mask(uint64_t w, uint64_t a, uint64_t b)
{
	uint64_t lo = MAX(a, w), hi = MIN(b, w + 64);
	uint64_t m = hi - lo == 64 ? ~0ULL : ((1ULL << (hi - lo)) - 1);

	return m << (lo - w);
}

/* async-signal-safe */
static void bm_set(uint64_t *bm, uint64_t start, uint64_t end)
{
	uint64_t a = start / PAGE_SZ, b = end / PAGE_SZ, w;

	for (w = a & ~63ULL; w < b; w += 64)
		atomic_fetch_or(bm_word(bm, w), word_mask(w, a, b));
}

/* ---------- the handler ---------- */

static int next_shift(int s)
{
	return s == 0 ? 4 : s == 4 ? 9 : s == 9 ? 14 : MP_WHOLE;
}

static void raise_shift(int s)
{
	int cur = atomic_load(&G->min_shift);

	while (cur < s && !atomic_compare_exchange_weak(&G->min_shift, &cur, s))
		;
}

/*
 * Make the block around @page writable again.  Each unprotect of a block
 * inside a read-only VMA adds up to two VMAs; past our budget (a quarter of
 * vm.max_map_count, then more) we switch to coarser aligned blocks, which
 * merge.  ENOMEM (the VMA limit is reached anyway) widens the block too;
 * EINVAL does for hugetlb regions, whose blocks are huge pages.
 *
 * The bit is set before AND after the mprotect: before, so that a write by
 * another thread that slips in right after the mprotect is already
 * visible to a collect that starts after it; after, because a reset that
 * cleared the bit in between may have missed that the page is writable.
 */
struct mp_vma {
	uint64_t start, end;
	unsigned int prot;
	/*
	 * anonymous memory: private unnamed, or shared (/dev/zero, SysV shm,
	 * memfd), the kinds mremap() moves in practice
	 */
	bool anon;
};

static bool vma_query(uint64_t addr, struct mp_vma *v);

static bool unprotect(uint64_t *bm, const struct mp_region *r, uint64_t page)
{
	int shift = atomic_load(&G->min_shift);
	uint64_t lo = r->start, hi = r->end;
	bool clipped = false;

	for (;;) {
		uint64_t bs = lo, be = hi;
		long n, b;

		if (shift != MP_WHOLE) {
			uint64_t sz = PAGE_SZ << shift;

			bs = MAX(lo, page & ~(sz - 1));
			be = MIN(hi, (page & ~(sz - 1)) + sz);
		}
		bm_set(bm, bs, be);
		if (!mprotect((void *)bs, be - bs, (int)r->prot)) {
			bm_set(bm, bs, be);
			n = atomic_fetch_add(&G->unprot, 1) + 1;
			b = atomic_load(&G->budget);
			n = atomic_load(&G->vmas) + 2 * n;
			if (n > b + b * 3 / 2)
				raise_shift(MP_WHOLE);
			else if (n > b + b)
				raise_shift(14);
			else if (n > b + b / 2)
				raise_shift(9);
			else if (n > b)
				raise_shift(4);
			return true;
		}
		if (errno == ENOMEM && !clipped) {
			struct mp_vma v;

			/*
			 * Or the block spans a hole the program unmapped
			 * since the reset: keep to the VMA of the fault.
			 */
			clipped = true;
			if (vma_query(page, &v) &&
			    (v.start > lo || v.end < hi)) {
				lo = MAX(lo, v.start);
				hi = MIN(hi, v.end);
				continue;
			}
		}
		if ((errno != ENOMEM && errno != EINVAL) || shift == MP_WHOLE)
			return false;
		if (errno == ENOMEM)
			raise_shift(next_shift(shift));
		shift = next_shift(shift);
	}
}

/* index of the first region ending after @a, or t->n */
static size_t first_after(const struct mp_table *t, uint64_t a)
{
	size_t lo = 0, hi = t->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (t->r[mid].end <= a)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* the region holding @a, ours or read-only */
static const struct mp_region *lookup_any(const struct mp_table *t, uint64_t a)
{
	size_t i = first_after(t, a);

	return i < t->n && t->r[i].start <= a ? &t->r[i] : NULL;
}

/* the region of ours holding @a */
static const struct mp_region *lookup(const struct mp_table *t, uint64_t a)
{
	const struct mp_region *r = lookup_any(t, a);

	return r && !r->ro ? r : NULL;
}

static bool starts(const char *s, const char *p)
{
	return !strncmp(s, p, strlen(p));
}

static bool anon_kind(const char *name, bool shared, bool inode)
{
	if (!shared)
		return !inode && !*name;
	return starts(name, "/dev/zero") || starts(name, "/SYSV") ||
	       starts(name, "/memfd:");
}

/*
 * Find the VMA holding @addr, async-signal-safely: PROCMAP_QUERY (Linux
 * 6.11+), else a streaming parse of /proc/self/maps with a small stack
 * buffer (the handler may run on a small alternate stack).
 */
static bool vma_query(uint64_t addr, struct mp_vma *v)
{
	struct procmap_query q;
	char buf[512], name[64];
	int fd, field = 0, pi = 0, ni = 0;
	uint64_t start = 0, end = 0;
	char perms[4] = "";
	bool inode = false, found = false, done = false;
	ssize_t n, k;

	fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	memset(&q, 0, sizeof(q));
	q.size = sizeof(q);
	q.query_addr = addr;
	q.vma_name_addr = (uintptr_t)name;
	q.vma_name_size = sizeof(name);
	if (!ioctl(fd, PROCMAP_QUERY, &q)) {
		close(fd);
		v->start = q.vma_start;
		v->end = q.vma_end;
		v->prot = q.vma_flags & (PROT_READ | PROT_WRITE | PROT_EXEC);
		if (!q.vma_name_size)
			name[0] = '\0';
		name[sizeof(name) - 1] = '\0';
		v->anon = anon_kind(name, q.vma_flags &
					  PROCMAP_QUERY_VMA_SHARED, q.inode);
		return q.vma_start <= addr && addr < q.vma_end;
	}
	/* no VMA, or a name too long for @name: not anonymous memory */
	if (errno == ENOENT || errno == ENAMETOOLONG) {
		close(fd);
		return false;
	}
	while (!done && (n = read(fd, buf, sizeof(buf))) > 0) {
		for (k = 0; k < n && !done; k++) {
			char c = buf[k];
			int h = c >= '0' && c <= '9' ? c - '0' :
				c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;

			if (c == '\n') {
				if (start > addr)
					done = true;
				else if (addr < end)
					found = done = true;
				else
					field = pi = ni = 0, start = end = 0,
					inode = false;
				continue;
			}
			if (field == 0 && h >= 0)
				start = start * 16 + (uint64_t)h;
			else if (field == 1 && h >= 0)
				end = end * 16 + (uint64_t)h;
			else if (field == 2 && c != ' ' && pi < 4)
				perms[pi++] = c;
			else if (field == 5 && c >= '1' && c <= '9')
				inode = true;
			else if (field == 6 && c != ' ')
				field = 7;
			if (field == 7 && ni < (int)sizeof(name) - 1)
				name[ni++] = c;
			if ((field == 0 && c == '-') ||
			    (field >= 1 && field <= 5 && c == ' '))
				field++;
		}
	}
	close(fd);
	if (!found)
		return false;
	v->start = start;
	v->end = end;
	v->prot = (perms[0] == 'r' ? PROT_READ : 0) |
		  (perms[1] == 'w' ? PROT_WRITE : 0) |
		  (perms[2] == 'x' ? PROT_EXEC : 0);
	name[ni] = '\0';
	v->anon = anon_kind(name, perms[3] == 's', inode);
	return true;
}

/*
 * A write fault outside our table: a region of ours that mremap() moved or
 * grew keeps our protection at its new address.  Take it as ours when it
 * looks like one: anonymous, private, unnamed (realloc() moves those),
 * readable but not writable, and not read-only anonymous memory we saw at
 * the reset (those are in the table as ro).  Its pages are new at that
 * address, or writable afterwards, so collect reports them either way.
 */
static bool rescue_moved(const struct mp_table *t, uint64_t page)
{
	size_t i = first_after(t, page);
	uint64_t lo, hi;
	struct mp_vma v;

	if (!vma_query(page, &v) || !v.anon ||
	    !(v.prot & PROT_READ) || (v.prot & PROT_WRITE))
		return false;
	/*
	 * Only the gap between table regions: in-place mremap growth merges
	 * the new part into the VMA of a region we protected, whose pages
	 * must keep faulting, or their next write is lost.
	 */
	lo = i > 0 ? MAX(v.start, t->r[i - 1].end) : v.start;
	hi = i < t->n ? MIN(v.end, t->r[i].start) : v.end;
	return !mprotect((void *)lo, hi - lo, (int)(v.prot | PROT_WRITE));
}

/* A write fault on a page we protected?  Then resolve it. */
static bool handle_ours(uint64_t addr)
{
	uint64_t page = PAGE_DOWN(addr);
	const struct mp_region *r;
	struct mp_table *t;
	bool ours = false;
	int i;

	if (page >= MP_LIMIT)
		return false;
	for (;;) {
		i = atomic_load(&G->cur);
		atomic_fetch_add(&G->readers[i], 1);
		if (atomic_load(&G->cur) == i)
			break;
		atomic_fetch_sub(&G->readers[i], 1);
	}
	t = atomic_load(&G->slot[i]);
	if (atomic_load(&G->enabled) && t) {
		r = lookup_any(t, page);
		if (r && !r->ro)
			ours = unprotect(atomic_load(&G->bm), r, page);
		else if (!r)
			ours = rescue_moved(t, page);
	}
	atomic_fetch_sub(&G->readers[i], 1);
	return ours;
}

static void reset_default(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	sigaction(SIGSEGV, &sa, NULL);
}

/* Deliver what is not ours as the kernel would have without us. */
static void chain(int sig, siginfo_t *si, void *uc)
{
	struct sigaction prev = G->prev;
	ucontext_t *ctx = uc;
	sigset_t mask;

	if (prev.sa_handler == SIG_DFL || prev.sa_handler == SIG_IGN) {
		if (si->si_code > 0) {
			/* a fault: it happens again on return, and kills */
			reset_default();
			return;
		}
		if (prev.sa_handler == SIG_IGN)
			return;
		/* sent by someone: send it again, to the default action */
		reset_default();
		syscall(SYS_rt_tgsigqueueinfo, getpid(), sd_gettid(), sig, si);
		return;
	}
	/*
	 * The mask the kernel would have set, but SIGSEGV stays deliverable:
	 * the chained handler may write to pages we protected, and a blocked
	 * synchronous SIGSEGV would kill the process there.
	 */
	mask = ctx->uc_sigmask;
	sigorset(&mask, &mask, &prev.sa_mask);
	sigdelset(&mask, SIGSEGV);
	if (prev.sa_flags & SA_RESETHAND) {
		memset(&G->prev, 0, sizeof(G->prev));
		G->prev.sa_handler = SIG_DFL;
		atomic_store(&G->prev_reset, 1);
	}
	sigprocmask(SIG_SETMASK, &mask, NULL);
	if (prev.sa_flags & SA_SIGINFO)
		prev.sa_sigaction(sig, si, uc);
	else
		prev.sa_handler(sig);
}

/*
 * Was the fault a write?  Our protection keeps read and exec, so a read
 * fault in a region of ours is the program's (a PROT_NONE of its own).
 * Where the architecture does not tell us cheaply, assume a write.
 */
static bool write_fault(const void *uc)
{
#if defined(__x86_64__)
	const ucontext_t *ctx = uc;

	return ctx->uc_mcontext.gregs[REG_ERR] & 2;	/* X86_PF_WRITE */
#else
	(void)uc;
	return true;
#endif
}

static void mp_handler(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;

	if (!(si->si_code == SEGV_ACCERR && write_fault(uc) &&
	      handle_ours((uintptr_t)si->si_addr)))
		chain(sig, si, uc);
	errno = saved;
}

/* ---------- helpers for collect ---------- */

static void *map_rw(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/*
 * sd_refresh_maps() read(2)s into a malloc()ed buffer, which fails with
 * EFAULT when that buffer lies in a page we protected: touch it and retry
 * (it may be reallocated during the read).
 */
static void touch(void *p, size_t len)
{
	volatile char *c = p;
	size_t i;

	for (i = 0; p && i < len; i += PAGE_SZ)
		c[i] = c[i];
	if (p && len)
		c[len - 1] = c[len - 1];
}

/*
 * Re-read maps.  /proc/PID/maps is read in chunks while our handlers split
 * and merge VMAs on other threads, so an entry may overlap the previous
 * one: clip those, the answer must stay in address order.
 */
static MUST_CHECK int refresh(struct softdirty *sd)
{
	struct sd_maps *m = &sd->maps;
	uint64_t prev_end = 0;
	size_t i, j;
	int err = 0, tries;

	for (tries = 0; tries < 16; tries++) {
		touch(m->buf, m->buf_cap);
		err = sd_refresh_maps(sd);
		if (err != -EFAULT)
			break;
	}
	if (err)
		return err;
	for (i = 0, j = 0; i < m->n; i++) {
		struct sd_vma v = m->v[i];

		v.start = MAX(v.start, prev_end);
		if (v.start >= v.end)
			continue;
		prev_end = v.end;
		m->v[j++] = v;
	}
	m->n = j;
	return 0;
}

/*
 * @anchor (0: none): clip the range to the VMA holding this address, so a
 * guess at the extent of a TCB does not reach into a neighbouring mapping.
 */
static void sticky_add_at(struct mp_state *st, uint64_t start, uint64_t end,
			  uint64_t anchor)
{
	size_t i;

	start = PAGE_DOWN(start);
	end = PAGE_UP(end);
	for (i = 0; i < st->nsticky; i++)
		if (st->sticky[i].start == start && st->sticky[i].end == end)
			return;
	if (st->nsticky < MP_NSTICKY) {
		st->sticky[st->nsticky++] =
			(struct softdirty_range){ start, end, anchor };
		return;
	}
	st->sticky[MP_NSTICKY - 1].flags = 0;
	/* full: widen the last one rather than forget a range */
	st->sticky[MP_NSTICKY - 1].start = MIN(st->sticky[MP_NSTICKY - 1].start, start);
	st->sticky[MP_NSTICKY - 1].end = MAX(st->sticky[MP_NSTICKY - 1].end, end);
}

static void sticky_add(struct mp_state *st, uint64_t start, uint64_t end)
{
	sticky_add_at(st, start, end, 0);
}

/* the thread pointer's TCB (either TLS variant) and rseq area */
static void sticky_add_tp(struct mp_state *st, uintptr_t tp)
{
	if (!tp)
		return;
#if defined(__x86_64__)
	/* TLS variant II: struct pthread (~2.3 KiB) starts at tp */
	sticky_add_at(st, tp, tp + PAGE_SZ, tp);
#elif defined(__aarch64__)
	/* TLS variant I: struct pthread ends at tp */
	sticky_add_at(st, tp - PAGE_SZ, tp + 64, tp);
#else
	sticky_add_at(st, tp - 2 * PAGE_SZ, tp + 2 * PAGE_SZ, tp);
#endif
	if (&__rseq_offset && &__rseq_size && __rseq_size)
		sticky_add(st, tp + (uintptr_t)__rseq_offset,
			   tp + (uintptr_t)__rseq_offset + __rseq_size);
}

static void sticky_add_self(struct mp_state *st)
{
	stack_t ss;

	sticky_add_tp(st, thread_pointer());
	/* the handler saves and restores errno, wherever static TLS put it */
	sticky_add(st, (uintptr_t)&errno, (uintptr_t)&errno + sizeof(errno));
	sticky_add_tp(st, (uintptr_t)pthread_self());
	if (!sigaltstack(NULL, &ss) && !(ss.ss_flags & SS_DISABLE) && ss.ss_size)
		sticky_add(st, (uintptr_t)ss.ss_sp, (uintptr_t)ss.ss_sp + ss.ss_size);
}

/*
 * This collect's exclusion list: the sticky ranges (a TCB guess clipped to
 * its VMA), our own state, the library's kernel-written buffers.
 */
static MUST_CHECK int build_excl(struct mp_state *st, const struct sd_maps *m)
{
	uint64_t bm = (uintptr_t)atomic_load(&G->bm);
	size_t i, j;
	int err, k;

	err = sd_kmem_ranges(&st->excl);
	for (i = 0; !err && i < st->nsticky; i++) {
		struct softdirty_range e = st->sticky[i];

		for (j = 0; e.flags && j < m->n; j++) {
			if (m->v[j].start <= e.flags && e.flags < m->v[j].end) {
				e.start = MAX(e.start, m->v[j].start);
				e.end = MIN(e.end, m->v[j].end);
				break;
			}
		}
		err = sd_rset_add(&st->excl, e.start, e.end);
	}
	if (!err)
		err = sd_rset_add(&st->excl, (uintptr_t)st,
				  (uintptr_t)st + st->len);
	if (!err)
		err = sd_rset_add(&st->excl, bm, bm + MP_BM_BYTES);
	for (k = 0; !err && k < 2; k++) {
		struct mp_table *t = atomic_load(&G->slot[k]);

		if (t)
			err = sd_rset_add(&st->excl, (uintptr_t)t,
					  (uintptr_t)t + t->map_len);
	}
	if (!err)
		err = sd_rset_add(&st->excl, MP_LIMIT, UINT64_MAX);
	return err;
}

/* Is the whole VMA @i one we must never protect? */
static bool vma_excluded(const struct sd_maps *m, size_t i)
{
	const struct sd_vma *v = &m->v[i];
	const char *p = v->path;

	if (sd_vma_special(v) || starts(p, "[stack"))
		return true;
	if (v->shared && (starts(p, "anon_inode:") || strstr(p, "[aio]") ||
			  (starts(p, "/dev/") && !starts(p, "/dev/zero") &&
			   !starts(p, "/dev/shm/"))))
		return true;
	/*
	 * A thread stack: anonymous rw right above an anonymous guard.  Not
	 * when the "guard" is a piece of our bitmap reservation: a real
	 * guard next to it would make a VMA reaching beyond it.
	 */
	if (!v->shared && !*p && i > 0) {
		const struct sd_vma *g = &m->v[i - 1];
		uint64_t bm = (uintptr_t)atomic_load(&G->bm);

		if (g->end == v->start && !g->prot && !*g->path &&
		    !g->shared &&
		    !(bm && g->start >= bm && g->end <= bm + MP_BM_BYTES))
			return true;
	}
	return false;
}

/* first exclusion range ending after @a */
static size_t excl_find(const struct mp_state *st, uint64_t a)
{
	return sd_rset_find(&st->excl, a);
}

/* ---------- collect ---------- */

struct mp_ctx {
	struct mp_state *st;
	struct sd_out *o;
	const struct mp_table *t;
	uint64_t *bm;
	const struct sd_vma *v;
	bool vma_excl;
};

static MUST_CHECK int emit_bits(struct mp_ctx *c, uint64_t a, uint64_t b)
{
	uint64_t pa = a / PAGE_SZ, pb = b / PAGE_SZ, w;
	int err;

	for (w = pa & ~63ULL; w < pb; w += 64) {
		uint64_t bits = atomic_load(bm_word(c->bm, w)) &
				word_mask(w, pa, pb);

		while (bits) {
			int lo = __builtin_ctzll(bits);
			uint64_t run = bits >> lo;
			int len = ~run ? __builtin_ctzll(~run) : 64 - lo;

			err = sd_out_add(c->o, (w + (uint64_t)lo) * PAGE_SZ,
					 (w + (uint64_t)lo + (uint64_t)len) * PAGE_SZ,
					 SOFTDIRTY_RANGE_WRITTEN);
			if (err)
				return err;
			bits &= len + lo >= 64 ? 0 : ~0ULL << (lo + len);
		}
	}
	return 0;
}

/* A piece of a VMA that was mapped at the last reset of its addresses. */
static int emit_known(void *ctx, uint64_t a, uint64_t b)
{
	struct mp_ctx *c = ctx;
	bool w = c->v->prot & PROT_WRITE;
	uint64_t cur = a;
	int err = 0;

	if (c->vma_excl)
		return w ? sd_out_add(c->o, a, b, SOFTDIRTY_RANGE_UNTRACKED) : 0;
	while (!err && cur < b) {
		size_t xi = excl_find(c->st, cur);
		uint64_t nx = xi < c->st->excl.n ? c->st->excl.v[xi].start : b;
		const struct mp_region *r;
		uint64_t e;

		if (nx <= cur) {
			e = MIN(b, c->st->excl.v[xi].end);
			if (w)
				err = sd_out_add(c->o, cur, e,
						 SOFTDIRTY_RANGE_UNTRACKED);
			cur = e;
			continue;
		}
		r = lookup(c->t, cur);
		if (r) {
			e = MIN(MIN(b, nx), r->end);
			/* writable: seen written, or writes re-enabled */
			if (w)
				err = sd_out_add(c->o, cur, e,
						 SOFTDIRTY_RANGE_WRITTEN);
			else
				err = emit_bits(c, cur, e);
			cur = e;
			continue;
		}
		/* not protected by us: writable means we could not watch */
		{
			size_t k = first_after(c->t, cur);

			e = MIN(b, nx);
			if (k < c->t->n)
				e = MIN(e, c->t->r[k].start > cur ?
					   c->t->r[k].start : c->t->r[k].end);
		}
		if (w)
			err = sd_out_add(c->o, cur, e, SOFTDIRTY_RANGE_WRITTEN);
		cur = e;
	}
	return err;
}

/* Wait for the handlers in slot @i to leave. */
static void drain(int i)
{
	while (atomic_load(&G->readers[i]))
		sched_yield();
}

static MUST_CHECK int slot_reserve(int i, size_t n)
{
	struct mp_table *t = atomic_load(&G->slot[i]), *nt;
	size_t len;

	if (t && t->cap >= n)
		return 0;
	n = MAX(n * 2, 256);
	len = PAGE_UP(sizeof(*t) + n * sizeof(t->r[0]));
	nt = map_rw(len);
	if (!nt)
		return -ENOMEM;
	nt->cap = (len - sizeof(*t)) / sizeof(t->r[0]);
	nt->map_len = len;
	atomic_store(&G->slot[i], nt);
	if (t)
		munmap(t, t->map_len);
	return 0;
}

static MUST_CHECK int table_add(struct mp_table *t, uint64_t s, uint64_t e,
				unsigned int prot, bool ro)
{
	struct mp_region *l = t->n ? &t->r[t->n - 1] : NULL;

	if (s >= e)
		return 0;
	/* one region per run, however our unprotects had split its VMAs */
	if (l && l->end == s && l->prot == prot && l->ro == ro) {
		l->end = e;
		return 0;
	}
	if (t->n == t->cap)
		return -ENOMEM;
	t->r[t->n++] = (struct mp_region){ s, e, prot, ro, 0 };
	return 0;
}

/* Make the bitmap pages under [a, b) writable. */
static MUST_CHECK int bm_enable(struct mp_state *st, uint64_t a, uint64_t b)
{
	uint64_t *bm = atomic_load(&G->bm);
	uint64_t p;

	for (p = a / MP_BM_SPAN; p < (b + MP_BM_SPAN - 1) / MP_BM_SPAN; p++) {
		if (st->bm_on[p / 64] & (1ULL << (p % 64)))
			continue;
		if (mprotect((char *)bm + p * PAGE_SZ, PAGE_SZ,
			     PROT_READ | PROT_WRITE))
			return -errno;
		st->bm_on[p / 64] |= 1ULL << (p % 64);
	}
	return 0;
}

/* the kinds of memory rescue_moved() takes as ours */
static bool anon_like(const struct sd_vma *v)
{
	return anon_kind(v->path, v->shared, v->inode != 0);
}

enum { PIECE_OURS, PIECE_RO, PIECE_NONE };
typedef int (*piece_cb)(void *ctx, uint64_t s, uint64_t e, int kind,
			unsigned int prot);

/*
 * Split [a, b) of the read-only VMA @v by the old table @t: pieces still
 * under our protection (PIECE_OURS, with the user's prot), the program's
 * own read-only anonymous memory (PIECE_RO), the rest (PIECE_NONE).
 *
 * A read-only anonymous piece no old region covers appeared since the
 * reset: it may be a region of ours that mremap() moved or grew, which
 * kept our protection, so it is taken as ours, as rescue_moved() does for
 * its faults (a new read-only mapping of the program's own is taken as
 * ours too: a write there then succeeds instead of faulting).  Never
 * file-backed pieces: our protection of a library's .data makes its VMA
 * merge with the RELRO page below it.  The old table records the
 * program's read-only anonymous memory of the last reset, so only new
 * mappings are taken.
 */
static int classify_ro(const struct sd_vma *v, uint64_t a, uint64_t b,
		       const struct mp_table *t, bool first, piece_cb cb,
		       void *ctx)
{
	bool anon_ro = anon_like(v) && (v->prot & PROT_READ);
	/* at the first reset nothing is ours yet */
	bool adopt = anon_ro && !first;
	unsigned int wprot = v->prot | PROT_WRITE;
	size_t j = first_after(t, a);
	uint64_t cur = a;
	int err = 0;

	while (!err && cur < b) {
		const struct mp_region *r = j < t->n ? &t->r[j] : NULL;
		uint64_t e;

		if (r && r->start <= cur) {
			e = MIN(b, r->end);
			if (r->ro)
				err = cb(ctx, cur, e, anon_ro ? PIECE_RO :
						      PIECE_NONE, v->prot);
			else if (v->prot == (r->prot & ~(uint32_t)PROT_WRITE))
				err = cb(ctx, cur, e, PIECE_OURS, r->prot);
			else	/* the user changed it */
				err = cb(ctx, cur, e, PIECE_NONE, v->prot);
			j++;
		} else {
			e = r ? MIN(b, r->start) : b;
			err = cb(ctx, cur, e, adopt ? PIECE_OURS :
					      anon_ro ? PIECE_RO : PIECE_NONE,
				 adopt ? wprot : v->prot);
		}
		cur = e;
	}
	return err;
}

struct build_ctx {
	struct mp_table *nt;
	bool excluded;
};

static int build_piece(void *ctx, uint64_t s, uint64_t e, int kind,
		       unsigned int prot)
{
	struct build_ctx *c = ctx;

	if (c->excluded) {
		/* ours, but must not be protected any more: give it back */
		if (kind == PIECE_OURS)
			mprotect((void *)s, e - s, (int)prot);
		return 0;
	}
	if (kind == PIECE_NONE)
		return 0;
	return table_add(c->nt, s, e, prot, kind == PIECE_RO);
}

/*
 * The regions to protect in [rs, re): writable VMAs minus exclusions, and
 * read-only pieces still showing our protection.  Also records the
 * program's own read-only anonymous memory (ro entries).  Old regions
 * outside [rs, re) are kept.  Pieces of ours that became excluded get
 * their protection back.
 */
static MUST_CHECK int build_table(struct softdirty *sd, struct mp_table *nt,
				  const struct mp_table *ot, uint64_t rs,
				  uint64_t re)
{
	struct mp_state *st = sd->priv;
	struct build_ctx c = { .nt = nt };
	size_t i, k;
	int err = 0;

	nt->n = 0;
	for (k = 0; !err && k < ot->n && ot->r[k].start < rs; k++)
		err = table_add(nt, ot->r[k].start, MIN(ot->r[k].end, rs),
				ot->r[k].prot, ot->r[k].ro);
	for (i = 0; !err && i < sd->maps.n; i++) {
		const struct sd_vma *v = &sd->maps.v[i];
		uint64_t a = MAX(v->start, rs), b = MIN(v->end, re), cur;
		bool excl;

		if (a >= b)
			continue;
		excl = vma_excluded(&sd->maps, i);
		for (cur = a; !err && cur < b;) {
			size_t xi = excl_find(st, cur);
			uint64_t e = b;

			c.excluded = excl;
			if (!excl && xi < st->excl.n) {
				if (st->excl.v[xi].start <= cur) {
					c.excluded = true;
					e = MIN(b, st->excl.v[xi].end);
				} else {
					e = MIN(b, st->excl.v[xi].start);
				}
			}
			if (v->prot & PROT_WRITE)
				err = c.excluded ? 0 :
				      table_add(nt, cur, e, v->prot, false);
			else
				err = classify_ro(v, cur, e, ot, !st->resets,
						  build_piece, &c);
			cur = e;
		}
	}
	for (k = 0; !err && k < ot->n; k++)
		if (ot->r[k].end > re)
			err = table_add(nt, MAX(ot->r[k].start, re),
					ot->r[k].end, ot->r[k].prot,
					ot->r[k].ro);
	return err;
}

/* Was page @a reported by this collect (o->vec[*cur..])? */
static bool reported(const struct sd_out *o, size_t *cur, uint64_t a)
{
	while (*cur < o->n && o->vec[*cur].end <= a)
		(*cur)++;
	return *cur < o->n && o->vec[*cur].start <= a;
}

/*
 * Reset [rs, re).  The order makes it atomic against concurrent writers:
 *  (1) protect every region;  (2) exchange the bits to 0;  (3) protect
 *  again the pages whose bits were set.
 * A handler does: set bit; unprotect; set bit.  Interleavings for a page P:
 *  - handler entirely before (1): P is protected by (1), its bit is seen
 *    by (2) (and was visible to the emit pass, which ran before (1), if
 *    the write completed before this collect started).
 *  - handler's unprotect between (1) and (2): the first set happened before
 *    the unprotect, so (2) sees it and (3) protects P again; the second set
 *    marks P for the next collect (a false positive at worst).
 *  - handler's first set after (2): P ends writable with its bit set in
 *    the new period: reported next time.
 *  - (2) between the first set and the unprotect: (2) takes the bit, (3)
 *    runs before or after the unprotect; either way the second set leaves
 *    the bit for the next period, so a writable P always has its bit.
 * Invariant after the reset: every page of a region is protected or has
 * its bit set; a write completed before the collect started had its bit
 * set before the emit pass read it.
 * Bits that (2) takes but the emit pass did not report (writes landing
 * during this collect) are set again: reported next time, never lost.
 */
static MUST_CHECK int reset_range(struct softdirty *sd, struct sd_out *o,
				  size_t n0, uint64_t rs, uint64_t re)
{
	struct mp_state *st = sd->priv;
	uint64_t *bm = atomic_load(&G->bm);
	int ci = atomic_load(&G->cur), ni = !ci;
	struct mp_table *ot = atomic_load(&G->slot[ci]), *nt;
	size_t i, k0 = 0, k1, rep = n0;
	long b, vmas;
	int err;

	drain(ni);
	err = slot_reserve(ni, ot->n + sd->maps.n + st->excl.n + MP_NSTICKY + 16);
	if (err)
		return err;
	/* the new slot's mapping must be excluded too */
	err = build_excl(st, &sd->maps);
	if (err)
		return err;
	nt = atomic_load(&G->slot[ni]);
	err = build_table(sd, nt, ot, rs, re);
	if (err)
		return err;
	for (i = 0; !err && i < nt->n; i++)
		if (!nt->r[i].ro)
			err = bm_enable(st, nt->r[i].start, nt->r[i].end);
	if (err)
		return err;
	atomic_store(&G->cur, ni);

	/*
	 * A fresh VMA budget; start coarse when the process is already big.
	 * Protecting a region whole merges the VMAs our unprotects split it
	 * into, so count one VMA per region instead of its pieces.
	 */
	b = atomic_load(&G->budget);
	vmas = (long)sd->maps.n + (long)nt->n;
	for (i = 0; i < sd->maps.n; i++)
		if (lookup(nt, sd->maps.v[i].start))
			vmas--;
	atomic_store(&G->vmas, vmas);
	atomic_store(&G->unprot, 0);
	atomic_store(&G->min_shift, vmas > b + b ? 9 : vmas > b ? 4 : 0);

	while (k0 < nt->n && nt->r[k0].end <= rs)
		k0++;
	for (k1 = k0; k1 < nt->n && nt->r[k1].start < re; k1++)
		;
	/*
	 * (1).  Regions are clipped to [rs, re): table_add() may have merged
	 * one with a region outside, which this reset must not touch.
	 */
	for (i = k0; i < k1; i++) {
		struct mp_region *r = &nt->r[i];
		uint64_t s = MAX(r->start, rs), e = MIN(r->end, re);

		if (r->ro)
			continue;
		r->failed = mprotect((void *)s, e - s,
				     (int)(r->prot & ~(uint32_t)PROT_WRITE)) != 0;
	}
	/* (2) and (3) */
	for (i = k0; i < k1; i++) {
		struct mp_region *r = &nt->r[i];
		uint64_t s = MAX(r->start, rs), e = MIN(r->end, re);
		uint64_t pa = s / PAGE_SZ, pb = e / PAGE_SZ, w;
		uint64_t run_s = 0, run_e = 0;

		if (r->ro)
			continue;
		for (w = pa & ~63ULL; w < pb; w += 64) {
			uint64_t m = word_mask(w, pa, pb);
			uint64_t old = atomic_fetch_and(bm_word(bm, w), ~m) & m;
			uint64_t back = 0;
			int bit;

			while (old) {
				uint64_t p;

				bit = __builtin_ctzll(old);
				old &= old - 1;
				p = (w + (uint64_t)bit) * PAGE_SZ;
				if (!o->discard && !reported(o, &rep, p))
					back |= 1ULL << bit;
				if (p == run_e) {
					run_e += PAGE_SZ;
					continue;
				}
				if (run_s < run_e &&
				    mprotect((void *)run_s, run_e - run_s,
					     (int)(r->prot & ~(uint32_t)PROT_WRITE)))
					bm_set(bm, run_s, run_e);
				run_s = p;
				run_e = p + PAGE_SZ;
			}
			if (back)
				atomic_fetch_or(bm_word(bm, w), back);
		}
		if (run_s < run_e &&
		    mprotect((void *)run_s, run_e - run_s,
			     (int)(r->prot & ~(uint32_t)PROT_WRITE)))
			bm_set(bm, run_s, run_e);
		/* not protected: report all of it next time */
		if (r->failed)
			bm_set(bm, s, e);
	}
	sd_known_update(sd, rs, re);
	st->resets++;
	return 0;
}

static int mp_collect(struct softdirty *sd, uint64_t start, uint64_t end,
		      struct sd_out *o, bool reset)
{
	struct mp_state *st = sd->priv;
	struct mp_ctx c = { .st = st, .o = o, .bm = atomic_load(&G->bm) };
	size_t i, n0 = o->n;
	uintptr_t sp = (uintptr_t)&c;
	uint64_t re;
	int err;

	end = MIN(end, SD_ADDR_MAX);
	err = refresh(sd);
	if (err)
		return err;
	sticky_add_self(st);
	/* our stack, wherever it is (a coroutine's, in ordinary memory) */
	for (i = 0; i < sd->maps.n; i++)
		if (sd->maps.v[i].start <= sp && sp < sd->maps.v[i].end)
			sticky_add(st, sd->maps.v[i].start, sd->maps.v[i].end);
	err = build_excl(st, &sd->maps);
	if (err)
		return err;
	c.t = atomic_load(&G->slot[atomic_load(&G->cur)]);
	for (i = 0; !o->discard && i < sd->maps.n; i++) {
		const struct sd_vma *v = &sd->maps.v[i];
		uint64_t a = MAX(v->start, start), b = MIN(v->end, end);

		if (a >= b)
			continue;
		c.v = v;
		c.vma_excl = vma_excluded(&sd->maps, i);
		err = sd_emit_new_split(o, &sd->known, a, b, emit_known,
					NULL, &c);
		if (err)
			break;
	}
	if (err && err != -ENOSPC)
		return err;
	if (!reset)
		return err;
	re = o->full ? o->walk_end : end;
	if (re > start) {
		int rerr = reset_range(sd, o, n0, start, re);

		if (rerr)
			return rerr;
	}
	return err;
}

/* ---------- open / close ---------- */

static long read_max_map_count(void)
{
	char buf[32] = "";
	long v = 65530;
	int fd = open("/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC);

	if (fd >= 0) {
		if (read(fd, buf, sizeof(buf) - 1) > 0)
			v = strtol(buf, NULL, 10);
		close(fd);
	}
	return v > 1000 ? v : 1000;
}

static void mp_free_state(struct mp_state *st)
{
	uint64_t *bm = atomic_load(&G->bm);
	int i;

	for (i = 0; i < 2; i++) {
		struct mp_table *t = atomic_load(&G->slot[i]);

		if (t)
			munmap(t, t->map_len);
		atomic_store(&G->slot[i], NULL);
	}
	if (bm)
		munmap(bm, MP_BM_BYTES);
	atomic_store(&G->bm, NULL);
	if (st) {
		sd_rset_free(&st->excl);
		munmap(st, st->len);
	}
}

/*
 * Resolve now every libc function the handler may call: a lazy PLT binding
 * inside the handler writes the GOT and ld.so's data, pages we may have
 * protected, with SIGSEGV blocked: the process would die.
 */
static void prebind(struct mp_state *st)
{
	volatile size_t n = sizeof(struct sigaction);
	struct sigaction sa;
	struct mp_vma v;
	sigset_t set;
	char c;

	sigemptyset(&set);
	sigfillset(&set);
	sigorset(&set, &set, &set);
	sigdelset(&set, SIGSEGV);
	sigaddset(&set, SIGSEGV);
	sigprocmask(SIG_BLOCK, NULL, &set);
	sigaction(SIGSEGV, NULL, &sa);
	memset(&sa, 0, n);
	(void)!mprotect(st, st->len, PROT_READ | PROT_WRITE);
	(void)vma_query((uintptr_t)st, &v);
	(void)!read(-1, &c, 0);
	(void)anon_kind("", true, false);
	(void)getpid();
	(void)sd_gettid();
	errno = 0;
}

static int mp_open(struct softdirty *sd)
{
	struct mp_state *st = NULL;
	struct sigaction sa;
	void *bm;
	int err;

	if (!sd->self)
		return -EOPNOTSUPP;
	st = map_rw(PAGE_UP(sizeof(*st)));
	if (!st)
		return -ENOMEM;
	st->len = PAGE_UP(sizeof(*st));
	st->max_map_count = read_max_map_count();
	bm = mmap(NULL, MP_BM_BYTES, PROT_NONE,
		  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (bm == MAP_FAILED) {
		err = -errno;
		goto fail;
	}
	atomic_store(&G->bm, bm);
	err = slot_reserve(0, 256);
	if (!err)
		err = slot_reserve(1, 256);
	if (err)
		goto fail;
	atomic_store(&G->cur, 0);
	atomic_store(&G->budget, st->max_map_count / 4);
	prebind(st);
	sticky_add_tp(st, g_main_tp);
	sticky_add(st, g_main_errno, g_main_errno + sizeof(int));
	sticky_add(st, (uintptr_t)&g_page, (uintptr_t)&g_page + sizeof(g_page));
	sd->priv = st;

	if (sigaction(SIGSEGV, NULL, &G->prev)) {
		err = -errno;
		goto fail;
	}
	err = sd_ksigaction_get(SIGSEGV, &st->kprev);
	if (err)
		goto fail;
	atomic_store(&G->prev_reset, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = mp_handler;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
	/* nothing may interrupt us inside the reader section */
	sigfillset(&sa.sa_mask);
	atomic_store(&G->enabled, 1);
	if (sigaction(SIGSEGV, &sa, NULL)) {
		err = -errno;
		atomic_store(&G->enabled, 0);
		goto fail;
	}
	return 0;
fail:
	mp_free_state(st);
	sd->priv = NULL;
	return err;
}

static int restore_piece(void *ctx, uint64_t s, uint64_t e, int kind,
			 unsigned int prot)
{
	(void)ctx;
	if (kind == PIECE_OURS)
		mprotect((void *)s, e - s, (int)prot);
	return 0;
}

/* Give back the user's protection where ours is still in place. */
static void unprotect_all(struct softdirty *sd)
{
	struct mp_table *t = atomic_load(&G->slot[atomic_load(&G->cur)]);
	size_t i, k;

	if (!t)
		return;
	if (refresh(sd)) {
		/* no maps: the table is all we know */
		for (k = 0; k < t->n; k++)
			if (!t->r[k].ro)
				mprotect((void *)t->r[k].start,
					 t->r[k].end - t->r[k].start,
					 (int)t->r[k].prot);
		return;
	}
	for (i = 0; i < sd->maps.n; i++) {
		const struct sd_vma *v = &sd->maps.v[i];

		if (!(v->prot & PROT_WRITE) && v->start < MP_LIMIT)
			(void)classify_ro(v, v->start, MIN(v->end, MP_LIMIT), t,
					  false, restore_piece, NULL);
	}
}

static void mp_close(struct softdirty *sd)
{
	struct mp_state *st = sd->priv;
	struct sigaction cur;

	if (!st)
		return;
	unprotect_all(sd);
	/* leave a handler someone installed over ours alone */
	if (!sigaction(SIGSEGV, NULL, &cur) &&
	    (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == mp_handler) {
		/* the kernel's raw form: glibc would add SA_RESTORER */
		if (atomic_load(&G->prev_reset))
			memset(&st->kprev, 0, sizeof(st->kprev));
		(void)!sd_ksigaction_set(SIGSEGV, &st->kprev);
	}
	atomic_store(&G->enabled, 0);
	drain(0);
	drain(1);
	mp_free_state(st);
	sd->priv = NULL;
}

/* ---------- probe ---------- */

static char *volatile probe_page;
static volatile sig_atomic_t probe_hits;

static void probe_handler(int sig, siginfo_t *si, void *uc)
{
	char *a = si->si_addr;

	(void)sig;
	(void)uc;
	if (si->si_code != SEGV_ACCERR || a < probe_page ||
	    a >= probe_page + PAGE_SZ)
		_exit(3);
	probe_hits++;
	if (mprotect(probe_page, PAGE_SZ, PROT_READ | PROT_WRITE))
		_exit(4);
}

/* In a child: protect one of two pages, write both, count the faults. */
static int probe_child(void)
{
	struct sigaction sa;
	volatile char *p;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = probe_handler;
	sa.sa_flags = SA_SIGINFO;
	if (sigaction(SIGSEGV, &sa, NULL))
		return 5;
	p = mmap(NULL, 2 * PAGE_SZ, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if ((void *)p == MAP_FAILED)
		return 6;
	p[0] = 1;
	p[PAGE_SZ] = 1;
	probe_page = (char *)p;
	if (mprotect((void *)p, PAGE_SZ, PROT_READ))
		return 7;
	p[0] = 2;
	p[PAGE_SZ] = 2;
	p[0] = 3;
	return probe_hits == 1 && p[0] == 3 && p[PAGE_SZ] == 2 ? 0 : 8;
}

static void mp_probe(struct softdirty_probe_result *r)
{
	int status;
	pid_t pid;

	pid = fork();
	if (pid < 0) {
		r->status = -errno;
		strcpy(r->reason, "fork failed: cannot test mprotect+SIGSEGV");
		return;
	}
	if (!pid)
		_exit(probe_child());
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR) {
			r->status = -errno;
			strcpy(r->reason, "waitpid failed");
			return;
		}
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		r->status = -ENOTSUP;
		strcpy(r->reason, "a write to a PROT_READ page did not reach a SIGSEGV handler that could resolve it");
		return;
	}
	r->status = 0;
	r->caps = SOFTDIRTY_CAP_SELF;
	/* what it cannot see (see the top of this file) */
	strcpy(r->reason, "own process only; read(2)/process_vm_writev into "
	       "clean pages get EFAULT; unseen: /proc/PID/mem writes, writes "
	       "between the program's own mprotect RW and RO; stacks/TLS "
	       "untracked");
}

const struct sd_backend sd_backend_mprotect = {
	.name = "mprotect",
	.id = SOFTDIRTY_BACKEND_MPROTECT,
	.caps = SOFTDIRTY_CAP_SELF,
	.probe = mp_probe,
	.open = mp_open,
	.close = mp_close,
	.collect = mp_collect,
};
