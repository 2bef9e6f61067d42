// SPDX-License-Identifier: MIT
/*
 * The shim's costs, as ratios against baselines taken in the same run:
 *  - reading /proc/self/pagemap through libsoftdirty-preload.so vs the
 *    kernel's own pagemap read of the same range (raw syscall, past the
 *    shim);
 *  - a clear ("4" to clear_refs through the shim) vs softdirty_reset() of
 *    the library, on the same workload and the same mappings (the shim
 *    loaded but idle in the library's run).
 *
 * usage: bench-preload [MiB] (default 1024; SOFTDIRTY_PRELOAD: the .so,
 * else ../libsoftdirty-preload.so next to this program's directory)
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "softdirty.h"

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

/* In the shim: clears and reads through the kernel interface. */
static int run_shim(size_t len)
{
	double clr[ROUNDS], shim[ROUNDS], kern[ROUNDS], t;
	size_t n = len / PG;
	uint64_t *buf = malloc(n * 8);
	char *p = workload(len);
	int pm, cr, i;
	off_t off = (off_t)((uintptr_t)p / PG * 8);
	size_t k, set = 0;

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
		t = now();
		if (pread(pm, buf, n * 8, off) != (ssize_t)(n * 8))
			return 1;
		shim[i] = now() - t;
		for (k = 0, set = 0; k < n; k++)
			set += !!(buf[k] & SOFTDIRTY_PM_SOFT_DIRTY);
		t = now();
		if (syscall(SYS_pread64, (long)pm, buf, (long)(n * 8),
			    (long)off) != (long)(n * 8))
			return 1;
		kern[i] = now() - t;
		t = now();
		if (write(cr, "4", 1) != 1)
			return 1;
		clr[i] = now() - t;
	}
	printf("shim: pagemap read %zu MiB: %.3f ms via shim, %.3f ms kernel "
	       "(%zu of %zu pages soft-dirty)\n", len >> 20,
	       median(shim, ROUNDS) * 1e3, median(kern, ROUNDS) * 1e3, set, n);
	printf("shim: speed ratio shim/kernel = %.2f (>= 0.5 required)\n",
	       median(kern, ROUNDS) / median(shim, ROUNDS));
	printf("shim: clear via clear_refs %.3f ms\n", median(clr, ROUNDS) * 1e3);
	printf("CLEAR_SHIM_MS %.6f\n", median(clr, ROUNDS) * 1e3);
	return 0;
}

/* Without the shim: the library's own reset on the same workload. */
static int run_lib(size_t len)
{
	struct softdirty_opts o = { .sz = sizeof(o), .backend = "uffd" };
	struct softdirty_range vec[256];
	struct softdirty *sd;
	double rst[ROUNDS], t;
	size_t n = len / PG;
	uint64_t *buf = malloc(n * 8), we;
	char *p = workload(len);
	int i, err, pm = open("/proc/self/pagemap", O_RDONLY);

	err = softdirty_open(&sd, 0, &o);
	if (err) {
		fprintf(stderr, "softdirty_open: %s\n", strerror(-err));
		return 1;
	}
	if (!buf || pm < 0)
		return 1;
	for (i = 0; i < ROUNDS; i++) {
		dirty_some(p, len, i);
		/* what the shim does for a pagemap read, so caches match */
		if (syscall(SYS_pread64, (long)pm, buf, (long)(n * 8),
			    (long)((uintptr_t)p / PG * 8)) < 0)
			return 1;
		for (we = (uintptr_t)p; we < (uintptr_t)p + len;)
			if (softdirty_collect(sd, we, (uintptr_t)p + len, vec,
					      256, 0, &we) < 0)
				return 1;
		/* and the shim run's baseline read */
		if (syscall(SYS_pread64, (long)pm, buf, (long)(n * 8),
			    (long)((uintptr_t)p / PG * 8)) < 0)
			return 1;
		t = now();
		if (softdirty_reset(sd))
			return 1;
		rst[i] = now() - t;
	}
	printf("lib:  softdirty_reset %.3f ms\n", median(rst, ROUNDS) * 1e3);
	printf("RESET_LIB_MS %.6f\n", median(rst, ROUNDS) * 1e3);
	softdirty_close(sd);
	return 0;
}

/* Run ourselves in @mode, the shim preloaded or not; the value printed. */
static double child(const char *self, const char *mode, const char *mib,
		    const char *so, const char *key)
{
	char line[256];
	double v = -1;
	int fds[2], status;
	FILE *f;
	pid_t pid;

	if (pipe(fds))
		return -1;
	pid = fork();
	if (!pid) {
		dup2(fds[1], 1);
		close(fds[0]);
		if (so)
			setenv("LD_PRELOAD", so, 1);
		else
			unsetenv("LD_PRELOAD");
		execl(self, self, mode, mib, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	f = fdopen(fds[0], "r");
	while (f && fgets(line, sizeof(line), f)) {
		if (!strncmp(line, key, strlen(key)))
			v = atof(line + strlen(key));
		else
			fputs(line, stdout);
	}
	if (f)
		fclose(f);
	waitpid(pid, &status, 0);
	return WIFEXITED(status) && !WEXITSTATUS(status) ? v : -1;
}

int main(int argc, char **argv)
{
	char self[PATH_MAX], so[PATH_MAX];
	const char *mib = "1024", *env = getenv("SOFTDIRTY_PRELOAD");
	double clr, rst;
	ssize_t n;

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
	clr = child(self, "--shim", mib, so, "CLEAR_SHIM_MS ");
	/*
	 * The library in a process with the shim loaded but idle (it never
	 * cleared, so it tracks nothing): the same mappings to walk.
	 */
	rst = child(self, "--lib", mib, so, "RESET_LIB_MS ");
	if (clr < 0 || rst < 0) {
		fprintf(stderr, "bench-preload: a run failed\n");
		return 1;
	}
	printf("clear ratio shim/library reset = %.2f (<= 1 + noise required)\n",
	       clr / rst);
	return 0;
}
