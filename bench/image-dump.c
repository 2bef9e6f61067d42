// SPDX-License-Identifier: MIT
/*
 * softdirty dump / restore on a process with a large heap, per backend
 * that can stop another process, against raw process_vm_readv of the same
 * memory measured in the same run (bench/README.md).
 *
 * The target maps SOFTDIRTY_BENCH_MB (default 1024) MiB, fills every page
 * (a quarter random bytes, the rest repetitive text: nothing is all zeros)
 * and then waits in read(2) for commands: write N distinct random pages.
 * Images go to /dev/shm (tmpfs).  Each row is the median of
 * SOFTDIRTY_BENCH_REPS (default 3) runs, minimum in parentheses.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "softdirty.h"

#define PGSZ 4096UL
#define MAXREP 15

static size_t npages;
static char dir[64];

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* ---------- the target ---------- */

static void target(int in, int out)
{
	static const char text[] = "softdirty incremental dump benchmark line ";
	uint64_t s = 88172645463325252ULL, next = 0;
	uint8_t *mem = mmap(NULL, npages * PGSZ, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint32_t n;
	size_t i, j;

	if (mem == MAP_FAILED)
		_exit(2);
	for (i = 0; i < npages; i++) {
		uint8_t *p = mem + i * PGSZ;

		if (i % 4 == 0)
			for (j = 0; j < PGSZ; j += 8) {
				uint64_t v = rng(&s);

				memcpy(p + j, &v, 8);
			}
		else
			for (j = 0; j < PGSZ; j++)
				p[j] = (uint8_t)text[(i + j) % (sizeof(text) - 1)];
	}
	if (write(out, &mem, sizeof(mem)) != sizeof(mem))
		_exit(2);
	while (read(in, &n, sizeof(n)) == sizeof(n)) {
		uint32_t done;

		/*
		 * n distinct pages spread over the heap (an odd stride
		 * through a power-of-two page count visits each page once),
		 * each changed; no allocation, so nothing else is written
		 * but the stack
		 */
		for (done = 0; done < n; done++) {
			size_t pg = (next++ * 40503) % npages;

			*(uint64_t *)(void *)(mem + pg * PGSZ) ^= rng(&s) | 1;
		}
		if (write(out, &done, sizeof(done)) != sizeof(done))
			_exit(2);
	}
	_exit(0);
}

/* ---------- helpers ---------- */

/* A forked target, its heap filled: pid, pipes, heap address. */
struct tproc {
	pid_t pid;
	char pid_s[16];
	int to, from;
	uint8_t *mem;
};

/* Fork a target and wait until it has filled its heap: 0, or -1. */
static int tproc_start(struct tproc *t)
{
	int to[2], from[2];

	if (pipe(to) || pipe(from))
		return -1;
	t->pid = fork();
	if (!t->pid) {
		close(to[1]);
		close(from[0]);
		target(to[0], from[1]);
	}
	close(to[0]);
	close(from[1]);
	t->to = to[1];
	t->from = from[0];
	snprintf(t->pid_s, sizeof(t->pid_s), "%d", (int)t->pid);
	if (read(t->from, &t->mem, sizeof(t->mem)) != sizeof(t->mem))
		return -1;
	return 0;
}

/* Close its pipes (it exits at EOF) and reap it. */
static void tproc_stop(struct tproc *t)
{
	close(t->to);
	close(t->from);
	waitpid(t->pid, NULL, 0);
}

/* CPU seconds (user + system) of the last run() child */
static double last_cpu;

static double tv(struct timeval t)
{
	return (double)t.tv_sec + (double)t.tv_usec / 1e6;
}

static int run(int (*fn)(int, char **), char *outbuf, size_t outlen, ...)
{
	struct rusage ru;
	char *argv[16], path[128];
	va_list ap;
	int argc = 0, st, fd;
	ssize_t r;
	pid_t p;

	va_start(ap, outlen);
	while (argc < 15 && (argv[argc] = va_arg(ap, char *)))
		argc++;
	va_end(ap);
	argv[argc] = NULL;
	snprintf(path, sizeof(path), "%s/out", dir);
	fflush(stdout);
	p = fork();
	if (!p) {
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
			_exit(99);
		st = fn(argc, argv);
		fflush(stdout);
		_exit(st);
	}
	if (p < 0 || wait4(p, &st, 0, &ru) != p || !WIFEXITED(st))
		return -1;
	last_cpu = tv(ru.ru_utime) + tv(ru.ru_stime);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	r = fd < 0 ? -1 : read(fd, outbuf, outlen - 1);
	if (fd >= 0)
		close(fd);
	outbuf[r > 0 ? r : 0] = 0;
	return WEXITSTATUS(st);
}

static double field(const char *out, const char *key)
{
	const char *p = strstr(out, key);
	double v;

	if (!p)
		return -1;
	/* the number just before the key */
	while (p > out && p[-1] == ' ')
		p--;
	while (p > out && ((p[-1] >= '0' && p[-1] <= '9') || p[-1] == '.'))
		p--;
	return sscanf(p, "%lf", &v) == 1 ? v : -1;
}

static double frozen_ms(const char *out)
{
	const char *p = strstr(out, "frozen ");
	double v;

	return p && sscanf(p + 7, "%lf", &v) == 1 ? v : -1;
}

static int cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

struct stat_ {
	double v[MAXREP];
	int n;
};

static void add(struct stat_ *s, double v)
{
	if (s->n < MAXREP)
		s->v[s->n++] = v;
}

static double med(struct stat_ *s)
{
	qsort(s->v, (size_t)s->n, sizeof(double), cmpd);
	return s->n ? s->v[s->n / 2] : -1;
}

static double mn(struct stat_ *s)
{
	qsort(s->v, (size_t)s->n, sizeof(double), cmpd);
	return s->n ? s->v[0] : -1;
}

static void rmimg(const char *d)
{
	char p[256];

	snprintf(p, sizeof(p), "%s/memory.sdimg", d);
	unlink(p);
	rmdir(d);
}

static long fsize(const char *d)
{
	char p[256];
	struct stat st;

	snprintf(p, sizeof(p), "%s/memory.sdimg", d);
	return stat(p, &st) ? -1 : (long)st.st_size;
}

static uint32_t do_writes(int to, int from, uint32_t n)
{
	uint32_t got = 0;

	if (write(to, &n, sizeof(n)) != sizeof(n) ||
	    read(from, &got, sizeof(got)) != sizeof(got))
		return 0;
	return got;
}

/* raw process_vm_readv of the region into a faulted-in buffer */
static double raw_read(pid_t pid, uint8_t *remote, uint8_t *buf)
{
	size_t chunk = 4096 * PGSZ, off;
	struct rusage a, b;
	double t = now();

	getrusage(RUSAGE_SELF, &a);
	for (off = 0; off < npages * PGSZ; off += chunk) {
		size_t len = npages * PGSZ - off < chunk ? npages * PGSZ - off : chunk;
		struct iovec l = { buf + off, len }, r = { remote + off, len };

		if (process_vm_readv(pid, &l, 1, &r, 1, 0) != (ssize_t)len)
			return -1;
	}
	t = now() - t;
	getrusage(RUSAGE_SELF, &b);
	last_cpu = tv(b.ru_utime) + tv(b.ru_stime) - tv(a.ru_utime) - tv(a.ru_stime);
	return t;
}

/*
 * Series mode (dump --every/--count: one tracker kept open): frozen time of
 * a 1 % increment, against a contents increment of the same target and
 * writes measured in the same loop.
 */
static void series(const struct softdirty_probe_result *pr, uint32_t nw,
		   int reps)
{
	int b, r;

	printf("\nSeries mode (`dump --every MS --count N`: one tracker open across the links; `dump_link()` called in-process) against contents mode (`dump --parent`, a new process and tracker per dump), 1 %% of the heap written before each increment:\n\n");
	printf("| backend | mode used | tracked increment: frozen | copied pages (reported) | stored (written) | contents increment: frozen | frozen contents / tracked |\n");
	printf("|---|---|---|---|---|---|---|\n");
	for (b = 0; b < SOFTDIRTY_BACKEND_COUNT; b++) {
		struct softdirty_opts so = { .sz = sizeof(so), .backend = pr[b].name };
		struct stat_ tfr = { 0 }, cfr = { 0 };
		struct dump_stats st = { 0 };
		struct softdirty *sd = NULL;
		char out[4096], d[3][128];
		const char *why = "";
		struct tproc t;
		bool tracked;

		if (pr[b].status || !(pr[b].caps & SOFTDIRTY_CAP_REMOTE))
			continue;
		if (tproc_start(&t) || softdirty_open(&sd, t.pid, &so))
			exit(1);
		tracked = dump_can_track(sd, &why);
		for (r = 0; r < 3; r++)
			snprintf(d[r], sizeof(d[r]), "%s/s%d", dir, r);
		if (dump_link(sd, tracked, d[0], NULL, true, &st))
			exit(1);
		for (r = 0; r < reps; r++) {
			if (do_writes(t.to, t.from, nw) != nw ||
			    dump_link(sd, tracked, d[1], d[0], true, &st))
				exit(1);
			add(&tfr, st.frozen_ns / 1e6);
			rmimg(d[1]);
		}
		/* the contents increment needs the tracker closed (one per backend) */
		softdirty_close(sd);
		for (r = 0; r < reps; r++) {
			if (do_writes(t.to, t.from, nw) != nw ||
			    run(cmd_dump, out, sizeof(out), "dump", t.pid_s, "-D", d[2],
				"--parent", d[0], "--backend", pr[b].name, NULL))
				exit(1);
			add(&cfr, frozen_ms(out));
			rmimg(d[2]);
		}
		rmimg(d[0]);
		printf("| %s | %s%s | %.1f ms (%.1f) | %" PRIu64 " (%" PRIu64 ") | %" PRIu64 " (%u) | %.0f ms (%.0f) | %.1f× |\n",
		       pr[b].name, tracked ? "tracked" : "contents: ", tracked ? "" : why,
		       med(&tfr), mn(&tfr), st.copied, st.reported, st.stored, nw,
		       med(&cfr), mn(&cfr), med(&cfr) / med(&tfr));
		fflush(stdout);
		tproc_stop(&t);
	}
}

int main(void)
{
	const char *mb_s = getenv("SOFTDIRTY_BENCH_MB"), *rep_s = getenv("SOFTDIRTY_BENCH_REPS");
	size_t mb = mb_s ? strtoul(mb_s, NULL, 10) : 1024;
	int reps = rep_s ? atoi(rep_s) : 3, b, r;
	struct softdirty_probe_result pr[SOFTDIRTY_BACKEND_COUNT];
	struct utsname u;
	double gb;
	uint8_t *buf;
	uint32_t nw;

	if (reps < 1 || reps > MAXREP)
		reps = 3;
	npages = mb * 256;
	nw = (uint32_t)(npages / 100);
	gb = (double)(npages * PGSZ) / 1e9;
	snprintf(dir, sizeof(dir), "/dev/shm/sd-bench-XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp /dev/shm");
		return 1;
	}
	if (softdirty_probe(pr, SOFTDIRTY_BACKEND_COUNT) < 0)
		return 1;
	buf = mmap(NULL, npages * PGSZ, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	/* the targets are forks: they must not inherit it */
	if (buf == MAP_FAILED || madvise(buf, npages * PGSZ, MADV_DONTFORK))
		return 1;
	uname(&u);
	printf("### `image-dump`: softdirty dump / restore\n\n");
	printf("%s %s %s, %ld CPUs; target heap %zu MiB = %zu pages (a quarter random, the rest text, none zero), plus its binary and libc; images on tmpfs (/dev/shm); %d repetitions, median (min).\n\n",
	       u.sysname, u.release, u.machine, sysconf(_SC_NPROCESSORS_ONLN),
	       mb, npages, reps);
	printf("Throughput: heap bytes ÷ wall time of the whole command (open the tracker, stop, copy, checksums, write, fsync); CPU: user + system seconds of the command.\n\n");
	printf("| backend (stops the target) | raw process_vm_readv | full dump | full dump frozen | full / raw | 1 %% written: incremental dump | frozen | stored pages (written) | restore after 1 %% written | pages written back | image size full / incr |\n");
	printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
	for (b = 0; b < SOFTDIRTY_BACKEND_COUNT; b++) {
		struct stat_ raw = { 0 }, full = { 0 }, ffr = { 0 }, inc = { 0 },
			     ifr = { 0 }, rst = { 0 }, rawc = { 0 }, fullc = { 0 },
			     incc = { 0 }, rstc = { 0 };
		long stored = -1, written = -1, fsz = -1, isz = -1;
		char out[4096], d0[128], d1[128];
		struct tproc t;

		if (pr[b].status || !(pr[b].caps & SOFTDIRTY_CAP_REMOTE)) {
			printf("| %s | not measured: %s | | | | | | | | | |\n", pr[b].name,
			       pr[b].status ? pr[b].reason : "cannot track another process");
			continue;
		}
		if (tproc_start(&t))
			return 1;
		snprintf(d0, sizeof(d0), "%s/full", dir);
		snprintf(d1, sizeof(d1), "%s/incr", dir);
		for (r = 0; r < reps; r++) {
			double t0;
			uint32_t w;

			add(&raw, raw_read(t.pid, t.mem, buf));
			add(&rawc, last_cpu);
			t0 = now();
			if (run(cmd_dump, out, sizeof(out), "dump", t.pid_s, "-D", d0,
				"--backend", pr[b].name, NULL)) {
				fprintf(stderr, "dump failed: %s\n", out);
				return 1;
			}
			add(&full, now() - t0);
			add(&fullc, last_cpu);
			add(&ffr, frozen_ms(out));
			fsz = fsize(d0);
			w = do_writes(t.to, t.from, nw);
			t0 = now();
			if (run(cmd_dump, out, sizeof(out), "dump", t.pid_s, "-D", d1,
				"--parent", d0, "--backend", pr[b].name, NULL)) {
				fprintf(stderr, "dump failed: %s\n", out);
				return 1;
			}
			add(&inc, now() - t0);
			add(&incc, last_cpu);
			add(&ifr, frozen_ms(out));
			stored = (long)field(out, "stored");
			isz = fsize(d1);
			if (w != nw)
				stored = -1;
			t0 = now();
			if (run(cmd_restore, out, sizeof(out), "restore", d0, "--pid",
				t.pid_s, "--backend", pr[b].name, NULL)) {
				fprintf(stderr, "restore failed: %s\n", out);
				return 1;
			}
			add(&rst, now() - t0);
			add(&rstc, last_cpu);
			written = (long)field(out, "pages written back");
			rmimg(d1);
			rmimg(d0);
		}
		printf("| %s | %.2f GB/s (%.2f); CPU %.2f s | %.2f GB/s (%.2f); CPU %.2f s | %.0f ms (%.0f) | %.2f× (CPU %.1f×) | %.2f GB/s (%.2f); CPU %.2f s | %.0f ms (%.0f) | %ld (%u) | %.2f GB/s (%.2f); CPU %.2f s | %ld | %.0f / %.1f MiB |\n",
		       pr[b].name, gb / med(&raw), gb / mn(&raw), med(&rawc),
		       gb / med(&full), gb / mn(&full), med(&fullc), med(&ffr),
		       mn(&ffr), med(&raw) / med(&full), med(&fullc) / med(&rawc),
		       gb / med(&inc), gb / mn(&inc), med(&incc), med(&ifr),
		       mn(&ifr), stored, nw, gb / med(&rst), gb / mn(&rst),
		       med(&rstc), written, fsz / 1048576.0, isz / 1048576.0);
		fflush(stdout);
		tproc_stop(&t);
	}
	series(pr, nw, reps);
	/* compression: what zstd (level 1 and 3) would make of a full image */
	{
		char out[4096], d0[128], cmd[512];
		struct tproc t;

		if (tproc_start(&t))
			return 1;
		snprintf(d0, sizeof(d0), "%s/full", dir);
		if (!run(cmd_dump, out, sizeof(out), "dump", t.pid_s, "-D", d0, NULL) &&
		    !system("command -v zstd >/dev/null 2>&1")) {
			int lvl;

			printf("\nzstd on the full image (%.0f MiB; `zstd -T1 -LEVEL`, one run):\n\n",
			       fsize(d0) / 1048576.0);
			printf("| level | compressed | ratio | compression speed |\n|---|---|---|---|\n");
			for (lvl = 1; lvl <= 3; lvl += 2) {
				double t0 = now(), dt;
				char zf[160];

				snprintf(zf, sizeof(zf), "%s/full.zst", dir);
				snprintf(cmd, sizeof(cmd), "zstd -q -f -T1 -%d %s/memory.sdimg -o %s",
					 lvl, d0, zf);
				if (system(cmd))
					break;
				dt = now() - t0;
				{
					struct stat st;

					if (stat(zf, &st))
						break;
					printf("| %d | %.0f MiB | %.2f | %.2f GB/s |\n", lvl,
					       st.st_size / 1048576.0,
					       (double)fsize(d0) / (double)st.st_size,
					       fsize(d0) / 1e9 / dt);
					unlink(zf);
				}
			}
		}
		rmimg(d0);
		tproc_stop(&t);
	}
	{
		char p[128];

		snprintf(p, sizeof(p), "%s/out", dir);
		unlink(p);
		rmdir(dir);
	}
	return 0;
}
