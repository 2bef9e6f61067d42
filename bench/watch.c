// SPDX-License-Identifier: MIT
/*
 * What `softdirty watch` costs the process it watches: a child writes
 * random pages of a 1 GiB region as fast as it can for a fixed time and
 * reports its writes per second, untracked or tracked by another process
 * that does what watch does (collect with SOFTDIRTY_COLLECT_RESET over the
 * whole address space, every 100 ms or 1 s).  Every round runs the
 * untracked baseline and each tracked configuration once, one after the
 * other; ratios are per round, the table gives their median.  Also timed:
 * softdirty_open() on the populated child (attach, injection included)
 * and softdirty_close() (detach).
 *
 * Environment: SOFTDIRTY_BENCH_MB (default 1024), SOFTDIRTY_BENCH_SECS
 * (per run, default 3), SOFTDIRTY_BENCH_REPS (rounds, default 3).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "softdirty.h"

#define PG		4096UL
#define MAX_REPS	15
#define VEC_LEN		4096

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* this thread's CPU time (the writer is single-threaded) */
static double cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static unsigned long env_ul(const char *name, unsigned long def)
{
	const char *s = getenv(name);

	return s && *s ? strtoul(s, NULL, 10) : def;
}

struct result {
	double writes_per_s;
	double writes_per_cpu_s;	/* per second of the writer's CPU time */
	double secs;			/* the run's length */
	double attach, detach;	/* seconds */
	unsigned long collects;
	double collect_s;	/* total time in collect */
	int err;
};

/* The child: populate, wait for go, write random pages for @secs. */
static void writer(int in, int out, size_t npages, double secs)
{
	uint8_t *p = mmap(NULL, npages * PG, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t x = 0x9e3779b97f4a7c15ULL, n = 0;
	double t0, t, c0;
	char c;

	if (p == MAP_FAILED)
		_exit(3);
	madvise(p, npages * PG, MADV_NOHUGEPAGE);
	memset(p, 1, npages * PG);
	if (write(out, "r", 1) != 1 || read(in, &c, 1) != 1)
		_exit(3);
	t0 = now_s();
	c0 = cpu_s();
	do {
		for (int i = 0; i < 4096; i++) {
			x ^= x >> 12;
			x ^= x << 25;
			x ^= x >> 27;
			p[((x * 0x2545F4914F6CDD1DULL) >> 20) % npages * PG +
			  (x & 0xff8)]++;
		}
		n += 4096;
		t = now_s();
	} while (t - t0 < secs);
	double rate[3] = { n / (t - t0), n / (cpu_s() - c0), t - t0 };

	if (write(out, rate, sizeof(rate)) != sizeof(rate))
		_exit(3);
	_exit(0);
}

/* What watch does per interval: collect-and-reset everything, read maps. */
static int collect_all(struct softdirty *sd, struct softdirty_range *vec)
{
	uint64_t addr = 0, we = 0;
	char path[64], buf[65536];
	int fd;

	do {
		long n = softdirty_collect(sd, addr, UINT64_MAX, vec, VEC_LEN,
					   SOFTDIRTY_COLLECT_RESET, &we);

		if (n < 0)
			return (int)n;
		addr = we;
	} while (we != UINT64_MAX);
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)softdirty_pid(sd));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
	return 0;
}

/* One run; backend NULL: untracked. */
static void run(const char *backend, unsigned ms, size_t npages, double secs,
		struct result *res)
{
	static struct softdirty_range vec[VEC_LEN];
	struct softdirty_opts o = { .sz = sizeof(o), .backend = backend };
	struct softdirty *sd = NULL;
	int to[2], from[2];
	double t, next;
	pid_t pid;
	char c;

	memset(res, 0, sizeof(*res));
	if (pipe(to) || pipe(from)) {
		res->err = -errno;
		return;
	}
	pid = fork();
	if (pid < 0) {
		res->err = -errno;
		return;
	}
	if (!pid) {
		close(to[1]);
		close(from[0]);
		writer(to[0], from[1], npages, secs);
	}
	close(to[0]);
	close(from[1]);
	if (read(from[0], &c, 1) != 1) {
		res->err = -EPIPE;
		goto out;
	}
	if (backend) {
		t = now_s();
		res->err = softdirty_open(&sd, pid, &o);
		res->attach = now_s() - t;
		if (res->err)
			goto out;
	}
	if (write(to[1], "g", 1) != 1) {
		res->err = -EPIPE;
		goto out;
	}
	next = now_s() + ms / 1e3;
	for (;;) {
		struct pollfd pfd = { .fd = from[0], .events = POLLIN };
		double left = next - now_s();

		if (poll(&pfd, 1, !sd ? -1 : left > 0 ? (int)(left * 1e3) : 0) > 0)
			break;
		if (!sd)
			continue;
		t = now_s();
		res->err = collect_all(sd, vec);
		res->collect_s += now_s() - t;
		res->collects++;
		if (res->err == -ESRCH || res->err == -ENOENT) {
			/* it finished between poll and collect */
			res->err = 0;
			break;
		}
		if (res->err)
			goto out;
		next += ms / 1e3;
		if (next < now_s())
			next = now_s();
	}
	double got[3];

	if (read(from[0], got, sizeof(got)) != sizeof(got)) {
		res->err = -EPIPE;
	} else {
		res->writes_per_s = got[0];
		res->writes_per_cpu_s = got[1];
		res->secs = got[2];
	}
	if (sd) {
		t = now_s();
		softdirty_close(sd);
		res->detach = now_s() - t;
		sd = NULL;
	}
out:
	if (sd)
		softdirty_close(sd);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	close(to[1]);
	close(from[0]);
}

/*
 * Attach and detach on a small idle process (blocked in read(2)): the
 * fixed cost, injection included.  Median of @reps into *at, *dt.
 */
static int attach_small(const char *backend, int reps, double *at, double *dt);

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, n, sizeof(*v), cmp_d);
	return n & 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int attach_small(const char *backend, int reps, double *at, double *dt)
{
	struct softdirty_opts o = { .sz = sizeof(o), .backend = backend };
	double a[MAX_REPS], d[MAX_REPS];
	int p[2], err = 0;
	pid_t pid;
	char c;

	if (pipe(p))
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (!pid) {
		close(p[1]);
		if (read(p[0], &c, 1) < 0)
			_exit(3);
		_exit(0);
	}
	close(p[0]);
	for (int k = 0; k < reps && !err; k++) {
		struct softdirty *sd;
		double t = now_s();

		err = softdirty_open(&sd, pid, &o);
		a[k] = now_s() - t;
		if (err)
			break;
		t = now_s();
		softdirty_close(sd);
		d[k] = now_s() - t;
	}
	close(p[1]);
	waitpid(pid, NULL, 0);
	if (err)
		return err;
	*at = median(a, reps);
	*dt = median(d, reps);
	return 0;
}

static void ratios(const char *label, double *q, int m)
{
	double med = median(q, m);

	printf("%s %.3g× (%.3g–%.3g)", label, med, q[0], q[m - 1]);
}

int main(void)
{
	static const char *const names[] = { "kernel", "uffd", "hash" };
	static const unsigned intervals[] = { 100, 1000 };
	struct softdirty_probe_result pr[SOFTDIRTY_BACKEND_COUNT];
	size_t mb = env_ul("SOFTDIRTY_BENCH_MB", 1024);
	double secs = (double)env_ul("SOFTDIRTY_BENCH_SECS", 3);
	int reps = (int)env_ul("SOFTDIRTY_BENCH_REPS", 3);
	size_t npages = mb * (1 << 20) / PG;
	/* per backend, interval, round: the tracked run and its baseline */
	struct result r[3][2][MAX_REPS], base[3][2][MAX_REPS];
	bool works[3];
	struct utsname u;
	int n;

	if (reps < 1)
		reps = 1;
	if (reps > MAX_REPS)
		reps = MAX_REPS;
	n = softdirty_probe(pr, SOFTDIRTY_BACKEND_COUNT);
	if (n < 0) {
		fprintf(stderr, "watch: probe: %s\n", strerror(-n));
		return 1;
	}
	for (int b = 0; b < 3; b++) {
		works[b] = false;
		for (int i = 0; i < SOFTDIRTY_BACKEND_COUNT; i++)
			if (!strcmp(pr[i].name, names[b]))
				works[b] = !pr[i].status &&
					   (pr[i].caps & SOFTDIRTY_CAP_REMOTE);
	}
	/* every tracked run right after an untracked one */
	for (int k = 0; k < reps; k++)
		for (int b = 0; b < 3; b++)
			for (int i = 0; i < 2; i++) {
				if (!works[b])
					continue;
				run(NULL, 0, npages, secs, &base[b][i][k]);
				run(names[b], intervals[i], npages, secs,
				    &r[b][i][k]);
			}

	uname(&u);
	printf("## `watch`: the watched process's slowdown\n\n");
	printf("%s %s %s, %ld CPUs; writer: random 8-byte stores to a %zu MiB "
	       "region (populated, MADV_NOHUGEPAGE), %.0f s per run, %d "
	       "rounds, each tracked run right after an untracked one.  "
	       "Ratios: tracked ÷ untracked of the same pair, median "
	       "(min–max); *wall* counts writes per elapsed second, *cpu* per "
	       "second of the writer's own CPU time (user + system: page "
	       "faults included, time taken by other processes excluded).\n\n",
	       u.sysname, u.release, u.machine, sysconf(_SC_NPROCESSORS_ONLN),
	       mb, secs, reps);
	printf("| backend | interval | writes/s (wall, untracked → tracked) | "
	       "ratio | collects/s | mean collect | attach | detach |\n");
	printf("|---|---|---|---|---|---|---|---|\n");
	for (int b = 0; b < 3; b++) {
		if (!works[b]) {
			for (int i = 0; i < SOFTDIRTY_BACKEND_COUNT; i++)
				if (!strcmp(pr[i].name, names[b]))
					printf("| %s | – | not measured: %s | | | "
					       "| | |\n", names[b],
					       pr[i].status ? pr[i].reason :
					       "no remote tracking");
			continue;
		}
		for (int i = 0; i < 2; i++) {
			double w[MAX_REPS], bw[MAX_REPS], q[MAX_REPS], qc[MAX_REPS],
			       cps[MAX_REPS], mc[MAX_REPS], at[MAX_REPS],
			       dt[MAX_REPS];
			int m = 0;

			for (int k = 0; k < reps; k++) {
				struct result *x = &r[b][i][k], *y = &base[b][i][k];

				if (x->err || y->err || !y->writes_per_s ||
				    !y->writes_per_cpu_s)
					continue;
				w[m] = x->writes_per_s;
				bw[m] = y->writes_per_s;
				q[m] = x->writes_per_s / y->writes_per_s;
				qc[m] = x->writes_per_cpu_s / y->writes_per_cpu_s;
				cps[m] = x->collects / x->secs;
				mc[m] = x->collects ? x->collect_s / x->collects : 0;
				at[m] = x->attach;
				dt[m] = x->detach;
				m++;
			}
			if (!m) {
				printf("| %s | %u ms | failed: %s | | | | | |\n",
				       names[b], intervals[i],
				       strerror(-(r[b][i][0].err ? r[b][i][0].err :
						  base[b][i][0].err)));
				continue;
			}
			printf("| %s | %u ms | %.3g → %.3g | ", names[b],
			       intervals[i], median(bw, m), median(w, m));
			ratios("wall", q, m);
			ratios(", cpu", qc, m);
			printf(" | %.1f | %.1f ms | %.1f ms | %.2f ms |\n",
			       median(cps, m), median(mc, m) * 1e3,
			       median(at, m) * 1e3, median(dt, m) * 1e3);
		}
	}

	printf("\nAttach and detach on a small idle process (blocked in "
	       "read(2), a few MiB mapped), median of %d:\n\n", reps);
	printf("| backend | attach (softdirty_open) | detach (softdirty_close) |\n");
	printf("|---|---|---|\n");
	for (int b = 0; b < 3; b++) {
		double a = 0, d = 0;
		int err;

		if (!works[b])
			continue;
		err = attach_small(names[b], reps, &a, &d);
		if (err)
			printf("| %s | failed: %s | |\n", names[b], strerror(-err));
		else
			printf("| %s | %.2f ms | %.3f ms |\n", names[b], a * 1e3,
			       d * 1e3);
	}
	return 0;
}
