// SPDX-License-Identifier: MIT
/* Test helpers: see common.h. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

/* ---------- TAP ---------- */

static int tap_n, tap_fail, tap_skipped;
static const char *tap_prog = "test";

void tap_init(const char *prog)
{
	const char *s = strrchr(prog, '/');

	tap_prog = s ? s + 1 : prog;
	setvbuf(stdout, NULL, _IOLBF, 0);
	setvbuf(stderr, NULL, _IONBF, 0);
}

bool tap_ok(bool cond, const char *fmt, ...)
{
	va_list ap;

	tap_n++;
	if (!cond)
		tap_fail++;
	printf("%sok %d - ", cond ? "" : "not ", tap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	return cond;
}

void tap_skip(const char *reason, const char *fmt, ...)
{
	va_list ap;

	tap_n++;
	tap_skipped++;
	printf("ok %d - ", tap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf(" # SKIP %s\n", reason);
	fflush(stdout);
}

void tap_diag(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

int tap_done(void)
{
	printf("1..%d\n", tap_n);
	if (tap_fail)
		tap_diag("%s: %d of %d failed", tap_prog, tap_fail, tap_n);
	fflush(stdout);
	if (tap_fail)
		return 1;
	if (tap_n == 0 || tap_skipped == tap_n)
		return 77;
	return 0;
}

int tap_failures(void)
{
	return tap_fail;
}

void tap_bail(const char *fmt, ...)
{
	va_list ap;

	printf("Bail out! %s: ", tap_prog);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	exit(1);
}

/* ---------- environment ---------- */

bool td_quick(void)
{
	const char *s = getenv("SOFTDIRTY_TEST_QUICK");

	return s && *s && strcmp(s, "0");
}

double td_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void td_self_exe(char *exe, size_t len)
{
	ssize_t n = readlink("/proc/self/exe", exe, len - 1);

	if (n <= 0)
		tap_bail("readlink /proc/self/exe: %s", strerror(errno));
	exe[n] = 0;
}

void td_preload_so(char *exe, size_t exelen, char *so, size_t solen)
{
	const char *env = getenv("SOFTDIRTY_PRELOAD");

	td_self_exe(exe, exelen);
	if (env && *env) {
		snprintf(so, solen, "%.3000s", env);
	} else {
		char dir[PATH_MAX];

		snprintf(dir, sizeof(dir), "%s", exe);
		*strrchr(dir, '/') = 0;
		snprintf(so, solen, "%.3000s/../libsoftdirty-preload.so", dir);
	}
	if (access(so, R_OK))
		tap_bail("%s: %s (set SOFTDIRTY_PRELOAD)", so, strerror(errno));
}

extern char _DYNAMIC[] __attribute__((weak));

#if defined(__SANITIZE_ADDRESS__)
#define TD_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TD_ASAN 1
#endif
#endif

bool td_under_preload(char **argv, const char *child_env)
{
	char so[PATH_MAX], exe[PATH_MAX];

	if (getenv(child_env))
		return true;
	if (!_DYNAMIC) {
		tap_skip("static binary: LD_PRELOAD cannot apply", "preload");
		return false;
	}
#ifdef TD_ASAN
	/*
	 * The uffd backend write-protects ASan's multi-TiB shadow reservation
	 * too (WP_UNPOPULATED builds page tables for all of it: OOM).  Until
	 * it protects populated ranges only, the shim is tested uninstrumented.
	 */
	tap_skip("ASan build: uffd write-protect of the sparse shadow "
		 "reservation exhausts memory", "preload under ASan");
	return false;
#endif
	td_preload_so(exe, sizeof(exe), so, sizeof(so));
	setenv("LD_PRELOAD", so, 1);
	setenv(child_env, "1", 1);
	execv(exe, argv);
	tap_bail("execv %s: %s", exe, strerror(errno));
}

uint64_t td_seed(void)
{
	const char *s = getenv("SOFTDIRTY_TEST_SEED");
	struct timespec ts;

	if (s && *s)
		return strtoull(s, NULL, 0);
	clock_gettime(CLOCK_REALTIME, &ts);
	return ((uint64_t)ts.tv_sec * 1000000007ULL) ^ (uint64_t)ts.tv_nsec ^
	       ((uint64_t)getpid() << 32);
}

void td_rng_seed(struct td_rng *r, uint64_t seed)
{
	r->s = seed ? seed : 0x9e3779b97f4a7c15ULL;
}

uint64_t td_rng_next(struct td_rng *r)
{
	uint64_t x = r->s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	r->s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

uint64_t td_rng_below(struct td_rng *r, uint64_t n)
{
	return td_rng_next(r) % n;
}

/* ---------- backends ---------- */

static struct td_backend td_be[SOFTDIRTY_BACKEND_COUNT];
static size_t td_be_n;

static bool in_list(const char *list, const char *name)
{
	size_t len = strlen(name);
	const char *p = list;

	while (*p) {
		const char *c = strchr(p, ',');
		size_t l = c ? (size_t)(c - p) : strlen(p);

		if (l == len && !strncmp(p, name, len))
			return true;
		if (!c)
			break;
		p = c + 1;
	}
	return false;
}

size_t td_backends(struct td_backend **out)
{
	if (!td_be_n) {
		struct softdirty_probe_result res[SOFTDIRTY_BACKEND_COUNT];
		const char *list = getenv("SOFTDIRTY_TEST_BACKENDS");
		int r;
		size_t i;

		memset(res, 0, sizeof(res));
		r = softdirty_probe(res, SOFTDIRTY_BACKEND_COUNT);
		if (r < 0)
			tap_bail("softdirty_probe: %s", strerror(-r));
		for (i = 0; i < SOFTDIRTY_BACKEND_COUNT; i++) {
			struct td_backend *b = &td_be[i];

			b->name = res[i].name ? res[i].name : "?";
			b->status = res[i].status;
			b->caps = res[i].caps;
			memcpy(b->reason, res[i].reason, sizeof(b->reason) - 1);
			b->reason[sizeof(b->reason) - 1] = '\0';
			b->selected = !list || !*list || in_list(list, b->name);
		}
		td_be_n = SOFTDIRTY_BACKEND_COUNT;
	}
	if (out)
		*out = td_be;
	return td_be_n;
}

int td_for_each_backend(const char *what,
			void (*fn)(const struct td_backend *be, void *ctx),
			void *ctx)
{
	struct td_backend *b;
	size_t i, n = td_backends(&b);
	int ran = 0;

	for (i = 0; i < n; i++) {
		char why[300];

		if (!b[i].selected)
			continue;
		if (b[i].status) {
			snprintf(why, sizeof(why), "%s not available: %s",
				 b[i].name, b[i].reason[0] ? b[i].reason :
				 strerror(-b[i].status));
			tap_skip(why, "%s: %s", b[i].name, what);
			continue;
		}
		tap_diag("backend %s: caps 0x%x%s%s%s%s%s%s%s", b[i].name,
			 b[i].caps,
			 b[i].caps & SOFTDIRTY_CAP_SELF ? " SELF" : "",
			 b[i].caps & SOFTDIRTY_CAP_REMOTE ? " REMOTE" : "",
			 b[i].caps & SOFTDIRTY_CAP_KERNEL_WRITES ? " KERNEL_WRITES" : "",
			 b[i].caps & SOFTDIRTY_CAP_EXACT ? " EXACT" : "",
			 b[i].caps & SOFTDIRTY_CAP_CONTENTS ? " CONTENTS" : "",
			 b[i].reason[0] ? "; " : "", b[i].reason);
		fn(&b[i], ctx);
		ran++;
	}
	return ran;
}

bool td_inject_supported(void)
{
#ifdef __x86_64__
	return true;
#else
	printf("1..0 # SKIP sd_inject supports x86-64 only\n");
	return false;
#endif
}

bool td_backend_works(int which)
{
	struct td_backend *be;

	td_backends(&be);
	if (be[which].status)
		tap_skip(be[which].reason, "%s backend", be[which].name);
	return !be[which].status;
}

struct softdirty *td_open(const char *name)
{
	struct softdirty_opts o;
	struct softdirty *sd = NULL;
	int r;

	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.backend = name;
	r = softdirty_open(&sd, 0, &o);
	if (r < 0 || !sd)
		tap_bail("softdirty_open(%s): %s", name, strerror(-r));
	return sd;
}

bool td_exact(const struct td_backend *be)
{
	return be->caps & SOFTDIRTY_CAP_EXACT;
}

/* ---------- collecting ---------- */

#define KNOWN_FLAGS (SOFTDIRTY_RANGE_WRITTEN | SOFTDIRTY_RANGE_NEW | \
		     SOFTDIRTY_RANGE_UNTRACKED)

long td_collect(struct softdirty *sd, uint64_t start, uint64_t end,
		unsigned int flags, td_range_fn fn, void *ctx)
{
	struct softdirty_range vec[8];
	uint64_t cur = start, prev_end = 0, lim = end;
	long total = 0;
	unsigned int loops = 0;

	if (lim > (1ULL << 57))
		lim = UINT64_MAX;
	while (cur < end) {
		uint64_t we = 0xdeadbeefULL;
		long r, i;

		memset(vec, 0xa5, sizeof(vec));
		r = softdirty_collect(sd, cur, end, vec, ARRAY_SIZE(vec), flags,
				      &we);
		if (r < 0) {
			tap_diag("softdirty_collect(%#" PRIx64 ", %#" PRIx64
				 "): %s", cur, end, strerror((int)-r));
			return r;
		}
		if (r > (long)ARRAY_SIZE(vec)) {
			tap_diag("collect returned %ld > vec_len", r);
			return -EPROTO;
		}
		for (i = 0; i < r; i++) {
			struct softdirty_range *v = &vec[i];

			if (v->start % PG || v->end % PG || v->start >= v->end ||
			    v->start < (cur & ~(uint64_t)(PG - 1)) ||
			    (v->end > lim && lim != UINT64_MAX) ||
			    v->start < prev_end || !v->flags ||
			    (v->flags & ~(uint64_t)KNOWN_FLAGS)) {
				tap_diag("malformed range [%#" PRIx64 ", %#" PRIx64
					 ") flags %#" PRIx64 " (walk from %#"
					 PRIx64 ", previous end %#" PRIx64 ")",
					 v->start, v->end, v->flags, cur,
					 prev_end);
				return -EPROTO;
			}
			prev_end = v->end;
			if (fn)
				fn(ctx, v->start, v->end, v->flags);
		}
		total += r;
		if (we == 0xdeadbeefULL || we > end || we < cur ||
		    (r > 0 && we < vec[r - 1].end && we != end)) {
			tap_diag("bad walk_end %#" PRIx64 " (from %#" PRIx64
				 ", end %#" PRIx64 ", %ld ranges)", we, cur,
				 end, r);
			return -EPROTO;
		}
		if (we == cur) {
			/* no progress is only allowed with a full vector...
			 * and then it is a livelock */
			tap_diag("walk_end did not advance from %#" PRIx64, cur);
			return -EPROTO;
		}
		if (we < end && r < (long)ARRAY_SIZE(vec)) {
			/* allowed (the library may stop early), note it */
			if (++loops > 100000) {
				tap_diag("too many collect calls");
				return -EPROTO;
			}
		}
		cur = we;
	}
	return total;
}

struct region_ctx {
	uint64_t base, end;
	uint8_t *pf;
};

static void region_cb(void *ctx, uint64_t start, uint64_t end, uint64_t flags)
{
	struct region_ctx *c = ctx;
	uint64_t p;

	if (start < c->base)
		start = c->base;
	if (end > c->end)
		end = c->end;
	for (p = start; p < end; p += PG)
		c->pf[(p - c->base) / PG] |= (uint8_t)flags;
}

long td_collect_region(struct softdirty *sd, void *base, size_t npages,
		       unsigned int flags, uint8_t *pf)
{
	struct region_ctx c = {
		.base = (uint64_t)(uintptr_t)base,
		.end = (uint64_t)(uintptr_t)base + npages * PG,
		.pf = pf,
	};

	memset(pf, 0, npages);
	return td_collect(sd, c.base, c.end, flags, region_cb, &c);
}

size_t td_last_extras;

static const char *flagstr(uint8_t f)
{
	static char buf[4][32];
	static int k;
	char *b = buf[k++ & 3];

	snprintf(b, 32, "%s%s%s%s", f ? "" : "-",
		 f & SOFTDIRTY_RANGE_WRITTEN ? "W" : "",
		 f & SOFTDIRTY_RANGE_NEW ? "N" : "",
		 f & SOFTDIRTY_RANGE_UNTRACKED ? "U" : "");
	return b;
}

bool td_check_pages(const struct td_backend *be, const char *desc,
		    void *base, size_t npages, const uint8_t *pf,
		    const uint8_t *written, const uint8_t *isnew,
		    const uint8_t *may)
{
	size_t i, miss = 0, extra = 0, noflag = 0, shown = 0;
	bool exact = td_exact(be);
	uint64_t b = (uint64_t)(uintptr_t)base;
	bool ok;

	for (i = 0; i < npages; i++) {
		bool w = written && written[i];
		bool n = isnew && isnew[i];
		bool m = may && may[i];

		if ((w || n) && !pf[i]) {
			miss++;
			if (shown++ < 10)
				tap_diag("%s: MISSED page %zu (%#" PRIx64 ")%s%s",
					 be->name, i, b + i * PG,
					 w ? " written" : "", n ? " new" : "");
		} else if (exact && w && !n &&
			   !(pf[i] & SOFTDIRTY_RANGE_WRITTEN)) {
			noflag++;
			if (shown++ < 10)
				tap_diag("%s: written page %zu reported with "
					 "flags %s, not WRITTEN", be->name, i,
					 flagstr(pf[i]));
		} else if (!w && !n && pf[i] && !m) {
			extra++;
			if (exact && shown++ < 10)
				tap_diag("%s: page %zu (%#" PRIx64 ") reported "
					 "(%s) but neither written nor new",
					 be->name, i, b + i * PG,
					 flagstr(pf[i]));
		}
	}
	td_last_extras = extra;
	ok = !miss && !noflag && (!exact || !extra);
	if (extra && !exact)
		tap_diag("%s: %s: %zu extra pages of %zu (superset backend)",
			 be->name, desc, extra, npages);
	tap_ok(ok, "%s: %s", be->name, desc);
	return ok;
}

/* ---------- /proc ---------- */

long td_pagemap(uint64_t addr, uint64_t *buf, size_t n)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	size_t done = 0;

	if (fd < 0)
		return -errno;
	td_touch(buf, n * sizeof(*buf));
	while (done < n * 8) {
		ssize_t r = pread(fd, (char *)buf + done, n * 8 - done,
				  (off_t)((addr / PG) * 8 + done));

		if (r < 0) {
			int e = errno;

			if (e == EINTR)
				continue;
			close(fd);
			return done ? (long)(done / 8) : -e;
		}
		if (r == 0)
			break;
		done += (size_t)r;
	}
	close(fd);
	return (long)(done / 8);
}

long td_anon_huge_kb(uint64_t start, uint64_t end)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	char line[512];
	bool in = false;
	long kb = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long s, e;
		long v;

		if (sscanf(line, "%llx-%llx ", &s, &e) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			in = s < end && e > start;
			continue;
		}
		if (in && sscanf(line, "AnonHugePages: %ld kB", &v) == 1)
			kb += v;
	}
	fclose(f);
	return kb;
}

int td_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;	/* the directory's own fd */
}

void td_touch(void *p, size_t len)
{
	volatile char *c = p;
	uintptr_t a = (uintptr_t)p & ~(uintptr_t)(PG - 1);
	uintptr_t e = (uintptr_t)p + len;

	if (!len)
		return;
	c[0] = c[0];
	for (a += PG; a < e; a += PG)
		*(volatile char *)a = *(volatile char *)a;
}

void *td_mmap(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		tap_bail("mmap %zu: %s", len, strerror(errno));
	return p;
}

void *td_free_range(size_t len)
{
	void *p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);

	if (p == MAP_FAILED)
		tap_bail("mmap %zu: %s", len, strerror(errno));
	munmap(p, len);
	return p;
}

static sigjmp_buf fault_jb;
static volatile sig_atomic_t fault_armed;

static void fault_handler(int sig, siginfo_t *si, void *uc)
{
	(void)si;
	(void)uc;
	if (fault_armed) {
		fault_armed = 0;
		siglongjmp(fault_jb, sig);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

void td_catch_faults(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = fault_handler;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
}

bool td_try_write(volatile uint8_t *p, uint8_t delta)
{
	if (sigsetjmp(fault_jb, 1)) {
		tap_diag("write to %p faulted (SIGSEGV/SIGBUS reached the "
			 "program)", (void *)p);
		return false;
	}
	fault_armed = 1;
	*p = (uint8_t)(*p + delta);
	fault_armed = 0;
	return true;
}

int td_child_spawn(struct td_child *c, void (*fn)(int in, int out))
{
	int a[2], b[2];

	if (pipe(a))
		return -errno;
	if (pipe(b)) {
		close(a[0]);
		close(a[1]);
		return -errno;
	}
	c->pid = fork();
	if (c->pid < 0)
		return -errno;
	if (c->pid == 0) {
		close(a[1]);
		close(b[0]);
		fn(a[0], b[1]);
		_exit(0);
	}
	close(a[0]);
	close(b[1]);
	c->to = a[1];
	c->from = b[0];
	return 0;
}

void td_child_reap(struct td_child *c, int *status)
{
	if (c->pid > 0) {
		kill(c->pid, SIGKILL);
		waitpid(c->pid, status, 0);
	}
	c->pid = 0;
	close(c->to);
	close(c->from);
}

bool td_child_responds(struct td_child *c)
{
	struct pollfd p = { .fd = c->from, .events = POLLIN };
	char x = 'x';

	if (write(c->to, &x, 1) != 1 || poll(&p, 1, 3000) != 1)
		return false;
	return read(c->from, &x, 1) == 1 && x == 'x';
}

long td_tracer_pid(pid_t pid)
{
	char path[64], line[128];
	long t = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "TracerPid: %ld", &t) == 1)
			break;
	fclose(f);
	return t;
}

bool td_child_recv(struct td_child *c, void *buf, size_t n, int timeout_ms)
{
	struct pollfd p = { .fd = c->from, .events = POLLIN };
	size_t got = 0;

	while (got < n) {
		ssize_t r;

		if (poll(&p, 1, timeout_ms) != 1)
			return false;
		r = read(c->from, (char *)buf + got, n - got);
		if (r <= 0)
			return false;
		got += (size_t)r;
	}
	return true;
}

bool td_blocked_in_read(pid_t pid)
{
	char path[64], buf[64], want[16];
	int i, fd;

	snprintf(path, sizeof(path), "/proc/%d/syscall", (int)pid);
	snprintf(want, sizeof(want), "%d ", SYS_read);
	for (i = 0; i < 5000; i++) {
		ssize_t n;

		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return false;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n > 0 && !strncmp(buf, want, strlen(want)))
			return true;
		usleep(1000);
	}
	return false;
}

int td_run_vout(const char *out, int (*fn)(int, char **), va_list ap)
{
	char *argv[16];
	int argc = 0, st;
	pid_t p;

	while (argc < 15 && (argv[argc] = va_arg(ap, char *)))
		argc++;
	argv[argc] = NULL;
	fflush(stdout);
	p = fork();
	if (p < 0)
		return -1;
	if (!p) {
		int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

		if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
			_exit(99);
		st = fn(argc, argv);
		fflush(stdout);
		_exit(st);
	}
	if (waitpid(p, &st, 0) != p || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}
