/* SPDX-License-Identifier: MIT */
/*
 * softdirty: which pages did a process write since a moment you chose?
 *
 * The kernel's soft-dirty mechanism (echo 4 > /proc/PID/clear_refs, then
 * bit 55 of /proc/PID/pagemap) as a library that works on every kernel,
 * including the many built without CONFIG_MEM_SOFT_DIRTY.
 *
 * Every function that can fail returns 0 (or a count) on success and a
 * negative errno value on failure; nothing prints, nothing exits.
 * See softdirty(3) and the per-function man pages.
 */
#ifndef SOFTDIRTY_H
#define SOFTDIRTY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SOFTDIRTY_VERSION_MAJOR 0
#define SOFTDIRTY_VERSION_MINOR 1

#ifndef SOFTDIRTY_API
#define SOFTDIRTY_API __attribute__((visibility("default")))
#endif
#define SOFTDIRTY_MUST_CHECK __attribute__((warn_unused_result))

/* The granularity of every answer: the base page. */
#define SOFTDIRTY_PAGE_SIZE 4096ULL

/* Opaque tracker: one process, one backend. */
struct softdirty;

/*
 * Options for softdirty_open().  Set sz to sizeof(struct softdirty_opts) so
 * that fields added later are recognised as absent by older callers; zero
 * every field you do not set.
 */
struct softdirty_opts {
	size_t sz;
	/* "auto" (or NULL), "kernel", "uffd", "mprotect", "hash" */
	const char *backend;
};

/* Why a range is reported (softdirty_range.flags). */
enum {
	/* the backend saw a write to these pages */
	SOFTDIRTY_RANGE_WRITTEN   = 1 << 0,
	/*
	 * the region was created, grown or moved since the reset (the kernel's
	 * VM_SOFTDIRTY rule): its contents are new even if never written
	 */
	SOFTDIRTY_RANGE_NEW       = 1 << 1,
	/*
	 * the backend cannot watch these pages (see softdirty_probe()); they
	 * are reported so that no write is ever missed
	 */
	SOFTDIRTY_RANGE_UNTRACKED = 1 << 2,
};

/* A run of dirty pages: page aligned, end exclusive. */
struct softdirty_range {
	uint64_t start;
	uint64_t end;
	uint64_t flags;
};

/* softdirty_collect() flags */
enum {
	/*
	 * Read and reset atomically: a write that lands after a page was read
	 * is reported by the next collect, never lost.
	 */
	SOFTDIRTY_COLLECT_RESET = 1 << 0,
};

/*
 * Start tracking process @pid (0: the calling process) with the backend
 * named in @opts (NULL opts: "auto").  On success *out holds a tracker whose
 * reference point is "now": the first collect reports what was written
 * since open.
 *
 * Another process: its address space is followed at every collect (new,
 * grown and moved regions are reported as SOFTDIRTY_RANGE_NEW and tracked
 * from then on).  When it calls execve(), tracking restarts by itself on
 * the new address space, which the next collect reports as new.  Its fork
 * children are not tracked (open a tracker for them).  "auto" picks among
 * the backends with SOFTDIRTY_CAP_REMOTE.
 *
 * -EINVAL bad arguments or options, -ENOENT unknown backend name,
 * -ENOTSUP (== -EOPNOTSUPP) the backend cannot work here
 * (softdirty_probe() says why; "auto": none can) or it cannot track another
 * process (no SOFTDIRTY_CAP_REMOTE), -ESRCH no such process, -EPERM not
 * allowed to read or ptrace @pid, -EBUSY this process already
 * tracks @pid with that backend (one tracker per backend and process),
 * -ENOMEM, or what the backend's kernel interface returned.
 */
SOFTDIRTY_API SOFTDIRTY_MUST_CHECK
int softdirty_open(struct softdirty **out, pid_t pid,
		   const struct softdirty_opts *opts);

/*
 * The equivalent of "echo 4 > /proc/PID/clear_refs": forget every write so
 * far; from now on pages are reported only when written again (or when
 * their region is new).
 */
SOFTDIRTY_API SOFTDIRTY_MUST_CHECK
int softdirty_reset(struct softdirty *sd);

/*
 * Store in @vec (at most @vec_len entries, address order, coalesced) the
 * dirty pages in [@start, @end).  start = 0, end = UINT64_MAX is the whole
 * address space; both are rounded out to pages.
 *
 * Returns the number of ranges stored, or -errno.  *@walk_end (if not NULL)
 * receives the address up to which the walk went: @end when everything was
 * reported, less when @vec filled up (call again from there).  With
 * SOFTDIRTY_COLLECT_RESET only [@start, *@walk_end) is reset.
 */
SOFTDIRTY_API SOFTDIRTY_MUST_CHECK
long softdirty_collect(struct softdirty *sd, uint64_t start, uint64_t end,
		       struct softdirty_range *vec, size_t vec_len,
		       unsigned int flags, uint64_t *walk_end);

/*
 * Read @n entries of the process's pagemap starting at the page holding
 * @addr, in the kernel's /proc/PID/pagemap format (see the kernel's
 * Documentation/admin-guide/mm/pagemap.rst), with bit 55 (soft-dirty)
 * computed by this tracker: set exactly for the pages softdirty_collect()
 * would report.  Bit 63 (present) and bit 62 (swapped) are the kernel's, so
 * pages dropped by MADV_DONTNEED are told apart from clean present pages.
 * Returns the number of entries stored (fewer at the end of the address
 * space) or -errno.
 */
SOFTDIRTY_API SOFTDIRTY_MUST_CHECK
long softdirty_pagemap(struct softdirty *sd, uint64_t addr, uint64_t *buf,
		       size_t n);

/* Bit 55 of a pagemap entry. */
#define SOFTDIRTY_PM_SOFT_DIRTY (1ULL << 55)
#define SOFTDIRTY_PM_PRESENT    (1ULL << 63)
#define SOFTDIRTY_PM_SWAPPED    (1ULL << 62)

/*
 * Stop every thread of the tracked process under ptrace until
 * softdirty_thaw(): collects, resets and the caller's own reads of its
 * memory (process_vm_readv) then all see one moment, as a dump needs.  The
 * threads resume exactly as they were (interrupted system calls restart,
 * signals that arrived meanwhile are delivered).  Another process only
 * (-EINVAL for the caller's own); -EPERM when ptrace is not allowed,
 * -EBUSY when already frozen or traced by someone else, -EOPNOTSUPP on
 * architectures without ptrace injection (x86-64 only in this version).
 * ptrace ties the stop to the calling thread: call softdirty_thaw(), and
 * the other calls while frozen, from the thread that froze.  If the caller
 * dies, the kernel lets the threads run on.
 */
SOFTDIRTY_API SOFTDIRTY_MUST_CHECK
int softdirty_freeze(struct softdirty *sd);

/* Let the threads stopped by softdirty_freeze() run on; -EINVAL if none. */
SOFTDIRTY_API SOFTDIRTY_MUST_CHECK
int softdirty_thaw(struct softdirty *sd);

/* The name of the backend in use ("kernel", "uffd", ...). */
SOFTDIRTY_API const char *softdirty_backend(const struct softdirty *sd);

/* The tracked process (never 0: the caller's pid for pid 0). */
SOFTDIRTY_API pid_t softdirty_pid(const struct softdirty *sd);

/*
 * Stop tracking and leave the process as it was before open: no
 * userfaultfd, no protection, no signal handler of ours (one exception:
 * when the kernel backend could not pause a thread that blocks
 * SIGRTMAX-2, its no-op handler stays so that the pending signal cannot
 * kill the process).  NULL is allowed.  Must not run concurrently with
 * other calls on @sd; all other calls on one tracker are serialized.
 */
SOFTDIRTY_API void softdirty_close(struct softdirty *sd);

/* What a backend can see (softdirty_probe_result.caps). */
enum {
	/* it tracks the calling process */
	SOFTDIRTY_CAP_SELF          = 1 << 0,
	/* it tracks another process by pid */
	SOFTDIRTY_CAP_REMOTE        = 1 << 1,
	/*
	 * it sees writes done by the kernel on the process's behalf (read(2)
	 * into the page, process_vm_writev, /proc/PID/mem)
	 */
	SOFTDIRTY_CAP_KERNEL_WRITES = 1 << 2,
	/* it reports exactly the written pages (otherwise: a superset) */
	SOFTDIRTY_CAP_EXACT         = 1 << 3,
	/* it reports changed contents, not writes (same bytes: not seen) */
	SOFTDIRTY_CAP_CONTENTS      = 1 << 4,
	/*
	 * it reports the untouched pages of a region that mremap grew back
	 * in place, or moved onto, addresses mapped at the reset (fresh
	 * pages at known addresses); the kernel's own soft-dirty does not:
	 * its VM_SOFTDIRTY rule covers new mappings and brk growth, and a
	 * move marks only the pages it carries
	 */
	SOFTDIRTY_CAP_REGROWN       = 1 << 5,
	/*
	 * it sees writes made while the program itself had made a page
	 * writable with mprotect() (the mprotect backend does not)
	 */
	SOFTDIRTY_CAP_PROT_CHANGES  = 1 << 6,
	/* a write to a transparent huge page reports all 512 of its pages,
	 * as the kernel's PMD bit does */
	SOFTDIRTY_CAP_HUGE_PAGES    = 1 << 7,
};

enum {
	SOFTDIRTY_BACKEND_KERNEL,
	SOFTDIRTY_BACKEND_UFFD,
	SOFTDIRTY_BACKEND_MPROTECT,
	SOFTDIRTY_BACKEND_HASH,
	SOFTDIRTY_BACKEND_COUNT,
};

struct softdirty_probe_result {
	const char *name;	/* "kernel", "uffd", "mprotect", "hash" */
	int status;		/* 0: works here; else -errno why not */
	unsigned int caps;	/* SOFTDIRTY_CAP_* when it works */
	char reason[200];	/* why not, or what it cannot see */
};

/*
 * Test every backend for real on this kernel (once; the answer is cached)
 * and fill @res (indexed by SOFTDIRTY_BACKEND_*, at most @n entries).
 * Returns the number of backends that work, or -errno.
 */
SOFTDIRTY_API SOFTDIRTY_MUST_CHECK
int softdirty_probe(struct softdirty_probe_result *res, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* SOFTDIRTY_H */
