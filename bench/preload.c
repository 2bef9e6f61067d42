// SPDX-License-Identifier: MIT
/*
 * The shim's costs, as ratios against baselines taken in the same run:
 *  - reading /proc/self/pagemap through libsoftdirty-preload.so vs the
 *    kernel's own pagemap read of the same range (raw syscall, past the
 *    shim);
 *  - a clear ("4" to clear_refs through the shim) vs softdirty_reset() of
 *    the library, after the same writes to the same workload (the shim
 *    loaded but idle in the library's run), the two processes in turns.
 *
 * usage: bench-preload [MiB] (default 1024; SOFTDIRTY_PRELOAD: the .so,
 * else ../libsoftdirty-preload.so next to this program's directory)
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "softdirty.h"
#include "uapi.h"

#define PG	4096UL
#define ROUNDS	20

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp);
	return v[n / 2];
}

/*
 * The shim's and the library's runs are two processes that take turns,
 * one round each (the parent passes a byte on their stdin), so that the
 * clears compared were timed moments apart, never while the other ran.
 */
static bool my_turn(void)
{
	char c;

	return read(0, &c, 1) == 1;
}

static void turn_done(double clear_s)
{
	printf("T %.9f\n", clear_s);
	fflush(stdout);
}

static char *workload(size_t len)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	return p;
}

/* 1 page in 16 written: a typical incremental round */
static void dirty_some(char *p, size_t len, int round)
{
	size_t off;

	for (off = (size_t)(round % 16) * PG; off < len; off += 16 * PG)
		p[off]++;
}

/* Read sizes, in pages (the whole region last); small ones are looped. */
static const size_t sizes[] = { 1, 8, 64, 128, 256, 16384 };
#define NSIZES	(sizeof(sizes) / sizeof(sizes[0]) + 1)

static size_t loops(size_t pages)
{
	return pages > 16384 ? 1 : pages > 256 ? 4 : 64;
}

/* Mean time of one pread of @pages entries at @off, @k times in a row. */
static double time_read(int pm, uint64_t *buf, size_t pages, off_t off,
			bool raw)
{
	size_t k = loops(pages), i;
	double t = now();

	for (i = 0; i < k; i++) {
		long r = raw ? syscall(SYS_pread64, (long)pm, buf,
				       (long)(pages * 8), (long)off)
			     : pread(pm, buf, pages * 8, off);

		if (r != (long)(pages * 8))
			exit(1);
	}
	return (now() - t) / (double)k;
}

/*
 * What each kernel call of the shim's 1-page read costs here, against the
 * kernel's own 1-page pagemap read: the shim makes that read plus an fstat
 * (is the fd still ours); where the kernel's uffd-wp bits cannot answer
 * alone (preload/README.md), also a PROCMAP_QUERY (the VMA of the page) and
 * two PAGEMAP_SCANs (unregistered parts, written pages).  Median of 20
 * means of 100 calls each.
 */
static void call_costs(int pm, char *p)
{
	struct page_region r;
	struct pm_scan_arg unreg = {
		.size = sizeof(unreg), .start = (uintptr_t)p,
		.end = (uintptr_t)p + PG, .vec = (uintptr_t)&r, .vec_len = 1,
		.category_inverted = PAGE_IS_WPALLOWED,
		.category_mask = PAGE_IS_WPALLOWED,
		.return_mask = PAGE_IS_WPALLOWED,
	};
	struct pm_scan_arg written = {
		.size = sizeof(written), .start = (uintptr_t)p,
		.end = (uintptr_t)p + PG, .vec = (uintptr_t)&r, .vec_len = 1,
		.category_mask = PAGE_IS_WRITTEN,
		.return_mask = PAGE_IS_WRITTEN,
	};
	struct procmap_query q = {
		.size = sizeof(q), .query_addr = (uintptr_t)p,
		.query_flags = PROCMAP_QUERY_COVERING_OR_NEXT_VMA,
	};
	int maps = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/maps",
				O_RDONLY);
	const char *what[] = { "getppid (an empty syscall)",
			       "pread of 1 pagemap entry (the kernel's read)",
			       "fstat of the pagemap fd",
			       "PROCMAP_QUERY of the page's VMA",
			       "PAGEMAP_SCAN, unregistered, 1 page",
			       "PAGEMAP_SCAN, written, 1 page" };
	uint64_t e;
	struct stat st;
	int c, i;

	for (c = 0; c < 6; c++) {
		double m[ROUNDS];
		int b;

		for (b = 0; b < ROUNDS; b++) {
			double t = now();

			for (i = 0; i < 100; i++) {
				switch (c) {
				case 0: syscall(SYS_getppid); break;
				case 1: syscall(SYS_pread64, (long)pm, &e, 8L,
						(long)((uintptr_t)p / PG * 8));
					break;
				case 2: (void)!fstat(pm, &st); break;
				case 3: (void)!ioctl(maps, PROCMAP_QUERY, &q);
					break;
				case 4: (void)!ioctl(pm, PAGEMAP_SCAN, &unreg);
					break;
				case 5: (void)!ioctl(pm, PAGEMAP_SCAN, &written);
					break;
				}
			}
			m[b] = (now() - t) / 100;
		}
		printf("shim: call cost: %-45s %6.2f us\n", what[c],
		       median(m, ROUNDS) * 1e6);
	}
	close(maps);
}

/* In the shim: clears and reads through the kernel interface. */
static int run_shim(size_t len)
{
	double shim[NSIZES][ROUNDS], kern[NSIZES][ROUNDS], t;
	size_t n = len / PG, sz[NSIZES], ns = 0;
	uint64_t *buf = malloc(n * 8);
	char *p = workload(len);
	int pm, cr, i;
	off_t off = (off_t)((uintptr_t)p / PG * 8);
	size_t j, k, set = 0;

	for (j = 0; j < NSIZES - 1; j++)
		if (sizes[j] < n)
			sz[ns++] = sizes[j];
	sz[ns++] = n;
	pm = open("/proc/self/pagemap", O_RDONLY);
	cr = open("/proc/self/clear_refs", O_WRONLY);
	if (!buf || pm < 0 || cr < 0) {
		perror("open");
		return 1;
	}
	if (write(cr, "4", 1) != 1)	/* the tracker starts here */
		return 1;
	for (i = 0; i < ROUNDS; i++) {
		dirty_some(p, len, i);
		/* the program's own buffer, written before it reads */
		memset(buf, 0, n * 8);
		/*
		 * The same reads in the same state: shim and kernel alternate,
		 * each first in every other round (the first read after the
		 * writes above finds colder caches).
		 */
		for (j = 0; j < ns; j++) {
			if (i % 2)
				kern[j][i] = time_read(pm, buf, sz[j], off, true);
			shim[j][i] = time_read(pm, buf, sz[j], off, false);
			if (sz[j] == n)
				for (k = 0, set = 0; k < n; k++)
					set += !!(buf[k] & SOFTDIRTY_PM_SOFT_DIRTY);
			if (!(i % 2))
				kern[j][i] = time_read(pm, buf, sz[j], off, true);
		}
		if (write(cr, "4", 1) != 1)
			return 1;
	}
	printf("shim: %zu of %zu pages soft-dirty in the whole read\n", set, n);
	for (j = 0; j < ns; j++) {
		double a = median(shim[j], ROUNDS), b = median(kern[j], ROUNDS);

		printf("shim: pagemap read %6zu pages (%8.3f MiB): %9.2f us via "
		       "shim, %9.2f us kernel, ratio shim/kernel speed %.2f\n",
		       sz[j], (double)sz[j] * PG / 1048576.0, a * 1e6, b * 1e6,
		       b / a);
	}
	printf("shim: speed ratio shim/kernel = %.2f for the whole region "
	       "(>= 0.5 required)\n",
	       median(kern[ns - 1], ROUNDS) / median(shim[ns - 1], ROUNDS));
	call_costs(pm, p);
	/* the clears, in turns with the library's resets */
	printf("R\n");
	fflush(stdout);
	for (i = 0; i < ROUNDS; i++) {
		if (!my_turn())
			return 1;
		dirty_some(p, len, i);
		t = now();
		if (write(cr, "4", 1) != 1)
			return 1;
		turn_done(now() - t);
	}
	return 0;
}

/*
 * The library's own reset on the same workload, in a process with the shim
 * loaded but idle (it never cleared, so it tracks nothing): the same
 * mappings to walk.
 */
static int run_lib(size_t len)
{
	struct softdirty_opts o = { .sz = sizeof(o), .backend = "uffd" };
	struct softdirty *sd;
	char *p = workload(len);
	double t;
	int i, err;

	err = softdirty_open(&sd, 0, &o);
	if (!err)
		err = softdirty_reset(sd);
	if (err) {
		fprintf(stderr, "softdirty: %s\n", strerror(-err));
		return 1;
	}
	for (i = 0; i < ROUNDS; i++) {
		if (!my_turn())
			return 1;
		dirty_some(p, len, i);
		t = now();
		if (softdirty_reset(sd))
			return 1;
		turn_done(now() - t);
	}
	softdirty_close(sd);
	return 0;
}

struct run {
	pid_t pid;
	int to;		/* its stdin: the turns */
	FILE *from;	/* its stdout */
	double t[ROUNDS];
};

/* Start ourselves in @mode with the shim preloaded; 0 or -1. */
static int run_start(struct run *r, const char *self, const char *mode,
		     const char *mib, const char *so)
{
	int in[2], out[2];

	if (pipe(in))
		return -1;
	if (pipe(out)) {
		close(in[0]);
		close(in[1]);
		return -1;
	}
	r->pid = fork();
	if (r->pid < 0)
		return -1;
	if (!r->pid) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[1]);
		close(out[0]);
		setenv("LD_PRELOAD", so, 1);
		execl(self, self, mode, mib, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	r->to = in[1];
	r->from = fdopen(out[0], "r");
	return r->from ? 0 : -1;
}

/* Its output up to "R": the reads are done, the clears can start. */
static int run_ready(struct run *r)
{
	char line[256];

	while (fgets(line, sizeof(line), r->from)) {
		if (!strcmp(line, "R\n"))
			return 0;
		fputs(line, stdout);
	}
	return -1;
}

/* One round of @r: its clear time in r->t[i]; 0 or -1. */
static int run_round(struct run *r, int i)
{
	char line[256];

	if (write(r->to, "g", 1) != 1)
		return -1;
	while (fgets(line, sizeof(line), r->from)) {
		if (!strncmp(line, "T ", 2)) {
			r->t[i] = atof(line + 2);
			return 0;
		}
		fputs(line, stdout);
	}
	return -1;
}

/* Its remaining output, then its status; 0 if it succeeded. */
static int run_finish(struct run *r)
{
	char line[256];
	int status;

	close(r->to);
	while (r->from && fgets(line, sizeof(line), r->from))
		fputs(line, stdout);
	if (r->from)
		fclose(r->from);
	if (waitpid(r->pid, &status, 0) != r->pid)
		return -1;
	return WIFEXITED(status) && !WEXITSTATUS(status) ? 0 : -1;
}

int main(int argc, char **argv)
{
	char self[PATH_MAX], so[PATH_MAX];
	const char *mib = "1024", *env = getenv("SOFTDIRTY_PRELOAD");
	struct run shim = { .pid = -1 }, lib = { .pid = -1 };
	double clr, rst, pair[ROUNDS];
	bool bad = false;
	ssize_t n;
	int i;

	if (argc > 2 && !strcmp(argv[1], "--shim"))
		return run_shim(strtoul(argv[2], NULL, 10) << 20);
	if (argc > 2 && !strcmp(argv[1], "--lib"))
		return run_lib(strtoul(argv[2], NULL, 10) << 20);
	if (argc > 1)
		mib = argv[1];
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return 1;
	self[n] = 0;
	if (env && *env) {
		snprintf(so, sizeof(so), "%.4000s", env);
	} else {
		char *slash = strrchr(self, '/');

		*slash = 0;
		snprintf(so, sizeof(so), "%.3000s/../libsoftdirty-preload.so",
			 self);
		*slash = '/';
	}
	/*
	 * The reads first (the shim alone); then the clears and the
	 * library's resets after the same writes, in turns, each first in
	 * every other round.
	 */
	if (run_start(&shim, self, "--shim", mib, so) || run_ready(&shim) ||
	    run_start(&lib, self, "--lib", mib, so))
		bad = true;
	for (i = 0; !bad && i < ROUNDS; i++) {
		struct run *first = i % 2 ? &lib : &shim;
		struct run *second = i % 2 ? &shim : &lib;

		bad = run_round(first, i) || run_round(second, i);
	}
	bad |= run_finish(&shim) != 0;
	bad |= run_finish(&lib) != 0;
	if (bad) {
		fprintf(stderr, "bench-preload: a run failed\n");
		return 1;
	}
	for (i = 0; i < ROUNDS; i++)
		pair[i] = shim.t[i] / lib.t[i];
	clr = median(shim.t, ROUNDS);
	rst = median(lib.t, ROUNDS);
	printf("shim: clear via clear_refs %.3f ms\n", clr * 1e3);
	printf("lib:  softdirty_reset %.3f ms\n", rst * 1e3);
	printf("clear ratio shim/library reset = %.2f (<= 1 + noise required); "
	       "median of the %d rounds' own ratios %.2f\n",
	       clr / rst, ROUNDS, median(pair, ROUNDS));
	return 0;
}
