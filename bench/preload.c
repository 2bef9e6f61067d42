// SPDX-License-Identifier: MIT
/*
 * The shim's costs, as ratios against baselines taken in the same run:
 *  - reading /proc/self/pagemap through libsoftdirty-preload.so vs the
 *    kernel's own pagemap read of the same range (raw syscall, past the
 *    shim);
 *  - a clear ("4" to clear_refs through the shim) vs softdirty_reset() of
 *    the library, after the same writes to the same workload, in the same
 *    process (see run_clears), in PROCS processes one after the other.
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

/* In the shim: reads through the kernel interface, a clear per round. */
static int run_shim(size_t len)
{
	double shim[NSIZES][ROUNDS], kern[NSIZES][ROUNDS];
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
	return 0;
}

/*
 * Clears against resets in one process, so that both meet the same pages,
 * page tables and history.  On this VM a reset's cost depends on that
 * history (a raw PAGEMAP_SCAN write-protecting 1 page in 16 of 1 GiB takes
 * 7 ms until both halves of every 16 pages' page-table entries were
 * written since the last full write-protect, then 11 ms), and the resets
 * of two identical processes in turns differed by up to 1.37x: a clear in
 * one process against a reset in another measured the processes.
 *
 * Blocks of rounds, each with a tracker of its own and the same warm-up:
 * the library's reset three times, then the shim's clear (C).  The first
 * is not counted (the process's first tracker ran 1-3 % slower than the
 * next: its heap and registrations are new); A and B are the next two.
 * C/B is the clear's cost against the reset just before it; B/A, the same
 * step with the library alone, is the noise to read it against.
 */
#define WARM	16	/* every page of the 16 written and re-protected */
#define TIMED	10
#define PROCS	5

/*
 * Median time of TIMED resets of @sd, or with @sd NULL clears ("4" to
 * @cr), each after the same writes, after WARM untimed ones.
 */
static double block(struct softdirty *sd, int cr, char *p, size_t len,
		    int *round)
{
	double t[TIMED], s;
	int i;

	for (i = -WARM; i < TIMED; i++) {
		dirty_some(p, len, (*round)++);
		s = now();
		if (sd ? softdirty_reset(sd) != 0 : write(cr, "4", 1) != 1)
			exit(1);
		if (i >= 0)
			t[i] = now() - s;
	}
	return median(t, TIMED);
}

/* A block of the library's resets (uffd), with a handle of its own. */
static double lib_block(char *p, size_t len, int *round)
{
	struct softdirty_opts o = { .sz = sizeof(o), .backend = "uffd" };
	struct softdirty *sd;
	double m;
	int err;

	err = softdirty_open(&sd, 0, &o);
	if (!err)
		err = softdirty_reset(sd);
	if (err) {
		fprintf(stderr, "softdirty: %s\n", strerror(-err));
		exit(1);
	}
	m = block(sd, -1, p, len, round);
	softdirty_close(sd);
	return m;
}

/* Under the shim, which stays idle until the third block's first clear. */
static int run_clears(size_t len)
{
	char *p = workload(len);
	double a, b, c;
	int round = 0, cr;

	(void)lib_block(p, len, &round);
	a = lib_block(p, len, &round);
	b = lib_block(p, len, &round);
	cr = open("/proc/self/clear_refs", O_WRONLY);
	if (cr < 0) {
		perror("clear_refs");
		return 1;
	}
	c = block(NULL, cr, p, len, &round);
	printf("C %.9f %.9f %.9f\n", a, b, c);
	return 0;
}

/*
 * Run ourselves in @mode with the shim preloaded, its output to ours but
 * for a "C" line, parsed into @abc; 0 if it succeeded.
 */
static int run(const char *self, const char *mode, const char *mib,
	       const char *so, double *abc)
{
	char line[256];
	int out[2], status, got = 0;
	pid_t pid;
	FILE *f;

	if (pipe(out))
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (!pid) {
		dup2(out[1], 1);
		close(out[0]);
		setenv("LD_PRELOAD", so, 1);
		execl(self, self, mode, mib, (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	f = fdopen(out[0], "r");
	while (f && fgets(line, sizeof(line), f)) {
		if (abc && sscanf(line, "C %lf %lf %lf", &abc[0], &abc[1],
				  &abc[2]) == 3)
			got = 1;
		else
			fputs(line, stdout);
	}
	if (f)
		fclose(f);
	else
		close(out[0]);
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status) || (abc && !got))
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	char self[PATH_MAX], so[PATH_MAX];
	const char *mib = "1024", *env = getenv("SOFTDIRTY_PRELOAD");
	double abc[3], ba[PROCS], cb[PROCS], m[3][PROCS];
	ssize_t n;
	int i;

	if (argc > 2 && !strcmp(argv[1], "--shim"))
		return run_shim(strtoul(argv[2], NULL, 10) << 20);
	if (argc > 2 && !strcmp(argv[1], "--clears"))
		return run_clears(strtoul(argv[2], NULL, 10) << 20);
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
	if (run(self, "--shim", mib, so, NULL)) {
		fprintf(stderr, "bench-preload: the reads failed\n");
		return 1;
	}
	for (i = 0; i < PROCS; i++) {
		if (run(self, "--clears", mib, so, abc)) {
			fprintf(stderr, "bench-preload: the clears failed\n");
			return 1;
		}
		printf("clears: process %d: library reset %.3f ms, again "
		       "%.3f ms (%.2fx), shim clear %.3f ms (%.2fx)\n", i + 1,
		       abc[0] * 1e3, abc[1] * 1e3, abc[1] / abc[0],
		       abc[2] * 1e3, abc[2] / abc[1]);
		ba[i] = abc[1] / abc[0];
		cb[i] = abc[2] / abc[1];
		m[0][i] = abc[0];
		m[1][i] = abc[1];
		m[2][i] = abc[2];
	}
	printf("lib:  softdirty_reset %.3f ms, again %.3f ms\n",
	       median(m[0], PROCS) * 1e3, median(m[1], PROCS) * 1e3);
	printf("shim: clear via clear_refs %.3f ms\n",
	       median(m[2], PROCS) * 1e3);
	printf("library reset against itself = %.2f (the noise); ",
	       median(ba, PROCS));
	printf("clear ratio shim/library reset = %.2f "
	       "(<= 1 + noise required)\n", median(cb, PROCS));
	return 0;
}
