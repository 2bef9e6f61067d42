/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the test programs: TAP output, the list of backends to
 * run (from softdirty_probe()), collecting a tracker's whole answer into
 * page maps, comparing with the expected sets, /proc readers.
 *
 * Tests use only the public API (softdirty.h) plus plain syscalls.
 */
#ifndef SOFTDIRTY_TEST_COMMON_H
#define SOFTDIRTY_TEST_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "softdirty.h"

#define PG		((size_t)SOFTDIRTY_PAGE_SIZE)
#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))

#define TD_PRINTF(a, b)	__attribute__((format(printf, a, b)))

/* ---------- TAP ---------- */

/* Line-buffer stdout, remember the program name. */
void tap_init(const char *prog);
/* "ok N - desc" / "not ok N - desc"; returns cond. */
bool tap_ok(bool cond, const char *fmt, ...) TD_PRINTF(2, 3);
/* "ok N - desc # SKIP reason" */
void tap_skip(const char *reason, const char *fmt, ...) TD_PRINTF(2, 3);
/* "# ..." */
void tap_diag(const char *fmt, ...) TD_PRINTF(1, 2);
/* Print the plan ("1..N") and return the exit status (0, 1, or 77 when
 * every test was skipped). */
int tap_done(void);
/* Number of failures so far. */
int tap_failures(void);
/* Abort the program with a "Bail out!" line. */
void tap_bail(const char *fmt, ...) TD_PRINTF(1, 2) __attribute__((noreturn));

/* ---------- environment ---------- */

bool td_quick(void);			/* SOFTDIRTY_TEST_QUICK=1 */
/* SOFTDIRTY_TEST_SEED or time-based; printed by the caller */
uint64_t td_seed(void);
double td_now(void);			/* CLOCK_MONOTONIC seconds */

/* xorshift64* */
struct td_rng { uint64_t s; };
void td_rng_seed(struct td_rng *r, uint64_t seed);
uint64_t td_rng_next(struct td_rng *r);
/* uniform in [0, n) (n > 0) */
uint64_t td_rng_below(struct td_rng *r, uint64_t n);

/*
 * The program's own path into @exe, and the preload shim into @so:
 * SOFTDIRTY_PRELOAD, else ../libsoftdirty-preload.so next to the
 * program's directory.  Bails out when the shim cannot be read.
 */
void td_preload_so(char *exe, size_t exelen, char *so, size_t solen);
/*
 * A preload test runs itself again under the shim with @child_env set:
 * true in that run; otherwise it re-executes itself (no return), or skips
 * and returns false where the shim cannot apply (a static binary, ASan).
 */
bool td_under_preload(char **argv, const char *child_env);
/* This program's path (/proc/self/exe); bails out when unreadable. */
void td_self_exe(char *exe, size_t len);

/* ---------- child processes ---------- */

/* A forked child that talks over two pipes. */
struct td_child {
	pid_t pid;
	int to;		/* parent -> child */
	int from;	/* child -> parent */
};

/* Fork; the child runs fn(in, out), then _exit(0).  0 or -errno. */
int td_child_spawn(struct td_child *c, void (*fn)(int in, int out));
/* SIGKILL and reap it (its status into *status if not NULL), close pipes. */
void td_child_reap(struct td_child *c, int *status);
/* An echoing child answers one byte with the same byte within 3 s. */
bool td_child_responds(struct td_child *c);
/* TracerPid in /proc/PID/status, or -1. */
long td_tracer_pid(pid_t pid);
/* Read exactly n bytes from the child, each wait at most timeout_ms. */
bool td_child_recv(struct td_child *c, void *buf, size_t n, int timeout_ms);
/* Wait (up to 5 s) until the process sleeps in read(2). */
bool td_blocked_in_read(pid_t pid);
/*
 * Run fn(argc, argv) (a softdirty subcommand; it may exit) in a forked
 * child with stdout and stderr to the file out; argv is the NULL-ended
 * list (at most 15).  Its exit status, or -1.
 */
int td_run_vout(const char *out, int (*fn)(int, char **), va_list ap);

/* ---------- backends ---------- */

struct td_backend {
	const char *name;
	int status;
	unsigned int caps;
	char reason[200];
	bool selected;		/* in SOFTDIRTY_TEST_BACKENDS (or no list) */
};

/*
 * Probe once; fill the table (indexed by SOFTDIRTY_BACKEND_*).  Returns the
 * number of entries.  Bails out when probe fails.
 */
size_t td_backends(struct td_backend **out);
/*
 * For every selected backend: when it works, call fn(be, ctx); otherwise
 * print one skip line "<backend>: <what> # SKIP <backend> not available:
 * <reason>".  Returns the number of backends that ran.
 */
int td_for_each_backend(const char *what,
			void (*fn)(const struct td_backend *be, void *ctx),
			void *ctx);
/*
 * sd_inject (src/inject.h) runs on this architecture (x86-64); else the
 * whole program's skip ("1..0 # SKIP"), and false: exit with 77.
 */
bool td_inject_supported(void);
/* Backend @which works here; else a skip naming why, and false. */
bool td_backend_works(int which);
/* softdirty_open(out, 0, {.backend = name}); bails out when it fails */
struct softdirty *td_open(const char *name);
bool td_exact(const struct td_backend *be);

/* ---------- collecting ---------- */

/*
 * Called for every reported range (already validated) by td_collect().
 */
typedef void (*td_range_fn)(void *ctx, uint64_t start, uint64_t end,
			    uint64_t flags);

/*
 * Collect [start, end) with a small vector (8 entries), looping on
 * walk_end, and check the answer's form: page aligned, non-empty, inside
 * the asked range, in address order, non-overlapping, known non-zero
 * flags, walk_end progressing.  Returns the number of ranges, or -errno
 * from the library, or -EPROTO for a malformed answer (diagnosed).
 */
long td_collect(struct softdirty *sd, uint64_t start, uint64_t end,
		unsigned int flags, td_range_fn fn, void *ctx);

/*
 * Collect the region [base, base + npages * PG) into @pf (one byte per
 * page: the OR of the flags of the ranges covering it, 0 = not reported).
 * Returns as td_collect().
 */
long td_collect_region(struct softdirty *sd, void *base, size_t npages,
		       unsigned int flags, uint8_t *pf);

/*
 * Compare a region's answer with what is expected.
 *   pf:        reported flags per page (td_collect_region)
 *   written:   pages written since the reset (NULL: none)
 *   isnew:     pages in regions created/grown/moved since the reset (NULL)
 *   may:       pages any backend may report (NULL: none)
 * Misses (written or new page not reported) always fail.  For an EXACT
 * backend: a written page must carry WRITTEN (unless new), and no other
 * page may be reported (unless in @may); otherwise extras are counted and
 * printed.  Prints one TAP line "<be>: <desc>"; returns pass.
 */
bool td_check_pages(const struct td_backend *be, const char *desc,
		    void *base, size_t npages, const uint8_t *pf,
		    const uint8_t *written, const uint8_t *isnew,
		    const uint8_t *may);

/* Number of extras found by the last td_check_pages() call. */
extern size_t td_last_extras;

/* ---------- /proc ---------- */

/* pread /proc/self/pagemap: number of entries read, or -errno */
long td_pagemap(uint64_t addr, uint64_t *buf, size_t n);
/* AnonHugePages (kB) of the smaps entries overlapping [start, end), -1 on error */
long td_anon_huge_kb(uint64_t start, uint64_t end);
/* Number of open fds in /proc/self/fd */
int td_count_fds(void);
/*
 * Write each page of [p, p + len) (same value back) so that a syscall may
 * write there even when a tracker protects it (the buffer is the test's
 * scratch memory, not what it checks).
 */
void td_touch(void *p, size_t len);

/*
 * Install (once, before opening trackers) a SIGSEGV/SIGBUS handler that
 * turns a fault inside td_try_write() into a failure return instead of a
 * crash; a tracker must chain faults that are not its own to it.
 */
void td_catch_faults(void);
/* *p += delta (non-zero); false when the write faulted */
bool td_try_write(volatile uint8_t *p, uint8_t delta);

/* mmap anonymous private RW, bail out on failure */
void *td_mmap(size_t len);
/* an address range of @len bytes that is free now (mmap + munmap) */
void *td_free_range(size_t len);

#endif
