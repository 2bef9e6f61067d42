// SPDX-License-Identifier: MIT
/*
 * libsoftdirty-preload.so: the kernel's soft-dirty files, every way a
 * program reaches them.  The test re-executes itself with LD_PRELOAD set
 * (SOFTDIRTY_PRELOAD, else ../libsoftdirty-preload.so next to its own
 * directory) and then uses only the kernel interface, checking each answer
 * against the raw syscalls (which the shim cannot see).
 */
#if defined(__OPTIMIZE__) && !defined(_FORTIFY_SOURCE)
#define _FORTIFY_SOURCE 2	/* glibc's __open_2, __read_chk, ... */
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#define SD_BIT	(1ULL << 55)
#define WP_BIT	(1ULL << 57)
#define CHILD_ENV "SOFTDIRTY_PRELOAD_API_CHILD"

/* The fortified entry points, called by name to be sure they are hit. */
int __open_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen);
ssize_t __pread_chk(int fd, void *buf, size_t n, off_t off, size_t buflen);

static off_t pm_off(const void *p)
{
	return (off_t)((uintptr_t)p / PG * 8);
}

/* The kernel's own entry, past the shim. */
static uint64_t raw_entry(int fd, const void *p)
{
	uint64_t e = 0;

	if (syscall(SYS_pread64, (long)fd, &e, 8L, (long)pm_off(p)) != 8)
		tap_bail("raw pagemap read: %s", strerror(errno));
	return e;
}

static uint64_t entry(int fd, const void *p)
{
	uint64_t e = 0;

	if (pread(fd, &e, 8, pm_off(p)) != 8)
		tap_bail("pagemap pread: %s", strerror(errno));
	return e;
}

static bool dirty(int fd, const void *p)
{
	return entry(fd, p) & SD_BIT;
}

/* echo 4 > @path (or another value); returns write's result */
static ssize_t write_to(const char *path, const char *s, size_t n)
{
	int fd = open(path, O_WRONLY);
	ssize_t r;

	if (fd < 0)
		return -1;
	r = write(fd, s, n);
	close(fd);
	return r;
}

static void clear(void)
{
	if (write_to("/proc/self/clear_refs", "4", 1) != 1)
		tap_bail("clear_refs: %s", strerror(errno));
}

static char *map_pages(size_t n)
{
	char *p = mmap(NULL, n * PG, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	if (p == MAP_FAILED)
		tap_bail("mmap: %s", strerror(errno));
	return p;
}

static bool shim_loaded(void)
{
	char line[512];
	bool found = false;
	FILE *f = fopen("/proc/self/maps", "r");

	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, "libsoftdirty-preload"))
			found = true;
	if (f)
		fclose(f);
	return found;
}

/* The VmFlags line of the mapping holding @p, via @fp (read anew). */
static bool vmflags(FILE *fp, const void *p, char *out, size_t sz)
{
	char line[512];
	bool in = false;

	rewind(fp);
	while (fgets(line, sizeof(line), fp)) {
		unsigned long a, b;

		if (sscanf(line, "%lx-%lx ", &a, &b) == 2 &&
		    strchr(line, '-') < strchr(line, ' '))
			in = (uintptr_t)p >= a && (uintptr_t)p < b;
		else if (in && !strncmp(line, "VmFlags:", 8)) {
			snprintf(out, sz, "%.200s", line + 8);
			out[strcspn(out, "\n")] = 0;
			return true;
		}
	}
	return false;
}

static bool has_flag(const char *flags, const char *f)
{
	char pat[8];

	snprintf(pat, sizeof(pat), " %s ", f);
	return strstr(flags, pat) != NULL;
}

/* ---------- each test ---------- */

static void test_new_and_clear(int pm)
{
	char *p = map_pages(4);

	tap_ok(dirty(pm, p) && dirty(pm, p + 3 * PG),
	       "a new mapping is soft-dirty before any clear");
	clear();
	tap_ok(!dirty(pm, p) && !dirty(pm, p + PG), "clear: pages are clean");
	p[PG] = 1;
	tap_ok(!dirty(pm, p) && dirty(pm, p + PG) && !dirty(pm, p + 2 * PG),
	       "a written page, and only it, is soft-dirty");
	tap_ok((entry(pm, p + PG) & ~SD_BIT) ==
	       (raw_entry(pm, p + PG) & ~(SD_BIT | WP_BIT)),
	       "the other bits are the kernel's (uffd-wp bit 57 hidden)");
	munmap(p, 4 * PG);
}

static void test_clear_paths(int pm)
{
	static const char *const fmt[] = {
		"/proc/self/clear_refs", "/proc/thread-self/clear_refs",
		"/proc/%d/clear_refs", "/proc/self/task/%d/clear_refs",
		"/proc/%d/task/%d/clear_refs", "/proc/self/../self/clear_refs",
	};
	char *p = map_pages(1), path[128];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(fmt); i++) {
		int id = i == 3 ? (int)syscall(SYS_gettid) : getpid();

		snprintf(path, sizeof(path), fmt[i], id, (int)syscall(SYS_gettid));
		p[0]++;
		tap_ok(write_to(path, "4", 1) == 1 && !dirty(pm, p),
		       "clear through %s", fmt[i]);
	}
	/* the kernel's parser: kstrtoint(strstrip(first 12 bytes)) */
	p[0]++;
	tap_ok(write_to("/proc/self/clear_refs", "4\n", 2) == 2 &&
	       !dirty(pm, p), "\"4\\n\" clears, returns 2");
	p[0]++;
	tap_ok(write_to("/proc/self/clear_refs", " +004 \n", 7) == 7 &&
	       !dirty(pm, p), "\" +004 \\n\" clears, returns 7");
	p[0]++;
	tap_ok(write_to("/proc/self/clear_refs", "4               ", 16) == 12 &&
	       !dirty(pm, p), "16 bytes: clears, returns 12 like the kernel");
	p[0]++;
	tap_ok(write_to("/proc/self/clear_refs", "1", 1) == 1 && dirty(pm, p),
	       "\"1\" reaches the kernel and does not reset soft-dirty");
	tap_ok(write_to("/proc/self/clear_refs", "2", 1) == 1 &&
	       write_to("/proc/self/clear_refs", "3", 1) == 1 &&
	       write_to("/proc/self/clear_refs", "5", 1) == 1 && dirty(pm, p),
	       "\"2\", \"3\", \"5\" reach the kernel");
	errno = 0;
	tap_ok(write_to("/proc/self/clear_refs", "6", 1) < 0 && errno == EINVAL,
	       "\"6\": EINVAL from the kernel");
	errno = 0;
	tap_ok(write_to("/proc/self/clear_refs", "x4", 2) < 0 && errno == EINVAL,
	       "\"x4\": EINVAL");
	errno = 0;
	tap_ok(write_to("/proc/self/clear_refs", "", 0) < 0 && errno == EINVAL,
	       "empty write: EINVAL");
	{
		int fd = open("/proc/self/clear_refs", O_WRONLY);
		const void *volatile bad = (void *)8;
		ssize_t r;

		errno = 0;
		r = write(fd, bad, 1);
		tap_ok(r < 0 && errno == EFAULT, "bad buffer: EFAULT");
		close(fd);
	}
	munmap(p, PG);
}

static void test_stdio_clear(int pm)
{
	char *p = map_pages(1);
	FILE *f;
	int ok;

	p[0]++;
	f = fopen("/proc/self/clear_refs", "w");
	ok = f && fileno(f) >= 0 && fprintf(f, "4\n") == 2;
	ok = ok && !fclose(f);
	tap_ok(ok && !dirty(pm, p), "fopen + fprintf \"4\\n\" + fclose clears");
	p[0]++;
	f = fopen64("/proc/self/clear_refs", "we");
	ok = f && fputs("4", f) >= 0 && !fflush(f) && !dirty(pm, p);
	tap_ok(ok && !fclose(f), "fopen64 + fputs + fflush clears");
	munmap(p, PG);
}

/* pagemap through fd @fd must agree with the kernel (bit 55 ours) */
static bool agrees(int fd, char *p, size_t n, const bool *want)
{
	size_t i;

	for (i = 0; i < n; i++) {
		uint64_t e = entry(fd, p + i * PG), r = raw_entry(fd, p + i * PG);

		if (!!(e & SD_BIT) != want[i] ||
		    (e & ~SD_BIT) != (r & ~(SD_BIT | WP_BIT)))
			return false;
	}
	return true;
}

static void test_open_paths(void)
{
	static bool want[8] = { 0, 1, 0, 0, 1, 1, 0, 1 };
	char *p = map_pages(8), path[64];
	volatile int flags = O_RDONLY;
	int fds[10], i, n = 0, dir;
	const char *what[10];
	size_t k;
	FILE *f;

	clear();
	for (k = 0; k < 8; k++)
		if (want[k])
			p[k * PG] = 1;
	what[n] = "open";
	fds[n++] = open("/proc/self/pagemap", O_RDONLY);
	what[n] = "open64";
	fds[n++] = open64("/proc/self/pagemap", O_RDONLY);
	what[n] = "openat(AT_FDCWD)";
	fds[n++] = openat(AT_FDCWD, "/proc/thread-self/pagemap", O_RDONLY);
	dir = open("/proc/self", O_RDONLY | O_DIRECTORY);
	what[n] = "openat(/proc/self dirfd, \"pagemap\")";
	fds[n++] = openat(dir, "pagemap", O_RDONLY);
	what[n] = "__open_2 (fortified)";
	fds[n++] = __open_2("/proc/self/pagemap", flags);
	what[n] = "__openat_2 (fortified)";
	fds[n++] = __openat_2(dir, "task/../pagemap", flags);
	snprintf(path, sizeof(path), "/proc/%d/pagemap", getpid());
	what[n] = "open(/proc/<pid>/pagemap)";
	fds[n++] = open(path, O_RDONLY | O_CLOEXEC);
	close(dir);
	for (i = 0; i < n; i++) {
		tap_ok(fds[i] >= 0 && agrees(fds[i], p, 8, want),
		       "%s: pagemap entries with bit 55", what[i]);
		close(fds[i]);
	}
	for (i = 0; i < 2; i++) {
		uint64_t e[8];
		bool ok;

		f = i ? fopen64("/proc/self/pagemap", "re") :
			fopen("/proc/self/pagemap", "r");
		ok = f && !fseeko(f, pm_off(p), SEEK_SET) &&
		     fread(e, 8, 8, f) == 8;
		for (k = 0; ok && k < 8; k++)
			ok = !!(e[k] & SD_BIT) == want[k];
		tap_ok(ok, "%s + fseeko + fread", i ? "fopen64" : "fopen");
		if (f)
			fclose(f);
	}
	munmap(p, 8 * PG);
}

static void test_read_paths(int pm)
{
	char *p = map_pages(64);
	uint64_t buf[64], raw[64], a[3], b[5];
	struct iovec iov[2];
	bool ok = true;
	size_t k, len, off;
	int d, copies[5], i;
	ssize_t r;

	clear();
	for (k = 0; k < 64; k += 3)
		p[k * PG] = 1;
	/* every 8-multiple size at many 8-aligned offsets */
	for (off = 0; off < 64 && ok; off += 5)
		for (len = 1; off + len <= 64 && ok; len += 7) {
			memset(buf, 0xaa, sizeof(buf));
			r = pread(pm, buf, len * 8, pm_off(p) + (off_t)off * 8);
			ok = r == (ssize_t)(len * 8);
			syscall(SYS_pread64, (long)pm, raw, (long)len * 8,
				(long)(pm_off(p) + (off_t)off * 8));
			for (k = 0; ok && k < len; k++)
				ok = !!(buf[k] & SD_BIT) == ((off + k) % 3 == 0) &&
				     (buf[k] & ~SD_BIT) == (raw[k] & ~(SD_BIT | WP_BIT));
		}
	tap_ok(ok, "pread of every multiple of 8 at 8-aligned offsets");

	ok = lseek(pm, pm_off(p + 3 * PG), SEEK_SET) == pm_off(p + 3 * PG) &&
	     read(pm, a, 24) == 24 && (a[0] & SD_BIT) && !(a[1] & SD_BIT) &&
	     !(a[2] & SD_BIT) && lseek(pm, 0, SEEK_CUR) == pm_off(p + 6 * PG) &&
	     read(pm, a, 8) == 8 && (a[0] & SD_BIT);
	tap_ok(ok, "read at the file offset after lseek, offset advances");
	ok = lseek(pm, pm_off(p + 5 * PG), SEEK_SET) >= 0 &&
	     __read_chk(pm, a, 16, sizeof(a)) == 16 && !(a[0] & SD_BIT) &&
	     (a[1] & SD_BIT) &&
	     __pread_chk(pm, b, 8, pm_off(p + 9 * PG), sizeof(b)) == 8 &&
	     (b[0] & SD_BIT);
	tap_ok(ok, "__read_chk and __pread_chk (fortified)");

	iov[0] = (struct iovec){ a, 16 };
	iov[1] = (struct iovec){ b, 24 };
	ok = lseek(pm, pm_off(p + 2 * PG), SEEK_SET) >= 0 &&
	     readv(pm, iov, 2) == 40 && !(a[0] & SD_BIT) && (a[1] & SD_BIT) &&
	     !(b[0] & SD_BIT) && !(b[1] & SD_BIT) && (b[2] & SD_BIT);
	tap_ok(ok, "readv over two iovecs");
	memset(a, 0, sizeof(a));
	memset(b, 0, sizeof(b));
	ok = preadv(pm, iov, 2, pm_off(p + 12 * PG)) == 40 &&
	     (a[0] & SD_BIT) && !(a[1] & SD_BIT) && (b[1] & SD_BIT);
	tap_ok(ok, "preadv over two iovecs");
	ok = lseek(pm, pm_off(p + 15 * PG), SEEK_SET) >= 0 &&
	     preadv2(pm, iov, 1, -1, 0) == 16 && (a[0] & SD_BIT) &&
	     !(a[1] & SD_BIT);
	tap_ok(ok, "preadv2 at the file offset");

	errno = 0;
	tap_ok(pread(pm, a, 7, pm_off(p)) < 0 && errno == EINVAL,
	       "size not a multiple of 8: EINVAL");
	errno = 0;
	tap_ok(pread(pm, a, 8, pm_off(p) + 4) < 0 && errno == EINVAL,
	       "offset not a multiple of 8: EINVAL");
	errno = 0;
	tap_ok(write(pm, a, 8) < 0 && errno == EBADF,
	       "write to a read-only pagemap fd: EBADF");
	tap_ok(pread(pm, a, 0, pm_off(p)) == 0, "zero-byte read: 0");
	{
		int cr = open("/proc/self/clear_refs", O_WRONLY), e1, e2;

		errno = 12345;
		r = pread(pm, buf, 64 * 8, pm_off(p));
		e1 = errno;
		errno = 12345;
		e2 = write(cr, "4", 1) == 1 ? errno : -1;
		tap_ok(r == 64 * 8 && e1 == 12345 && e2 == 12345,
		       "successful read and clear leave errno alone");
		close(cr);
		for (k = 0; k < 64; k += 3)
			p[k * PG] = 1;
	}

	/* the end of the address space: as short as the kernel's */
	{
		off_t end = 0x7ffffffff000LL / 4096 * 8;
		long rr = syscall(SYS_pread64, (long)pm, buf, 64L, (long)end - 16);

		r = pread(pm, buf, 64, end - 16);
		tap_ok(r == rr && r >= 0 && r < 64,
		       "short read at the end of the address space (%zd, kernel %ld)",
		       r, rr);
		tap_ok(pread(pm, buf, 64, (off_t)1 << 60) ==
		       syscall(SYS_pread64, (long)pm, buf, 64L, 1L << 60),
		       "read past the end: as the kernel");
	}

	/* copies of the fd */
	copies[0] = dup(pm);
	copies[1] = dup2(pm, 200);
	copies[2] = dup3(pm, 201, O_CLOEXEC);
	copies[3] = fcntl(pm, F_DUPFD, 300);
	copies[4] = fcntl(pm, F_DUPFD_CLOEXEC, 300);
	d = open("/proc/self/pagemap", O_RDONLY);
	ok = d >= 0;
	for (i = 0; i < 5; i++) {
		int c = dup(d);

		ok = ok && copies[i] >= 0 &&
		     dirty(copies[i], p) && !dirty(copies[i], p + PG);
		/* the copy outlives the original */
		close(d);
		d = c;
	}
	tap_ok(ok && dirty(d, p + 3 * PG), "dup, dup2, dup3, F_DUPFD(_CLOEXEC)");
	close(d);
	for (i = 0; i < 5; i++)
		close(copies[i]);
	errno = 0;
	tap_ok(pread(200, a, 8, 0) < 0 && errno == EBADF,
	       "closed copy: EBADF");
	{
		int cr = open("/proc/self/clear_refs", O_WRONLY), c2 = dup(cr);

		p[PG] = 2;
		close(cr);
		tap_ok(write(c2, "4", 1) == 1 && !dirty(pm, p + PG),
		       "a dup'd clear_refs fd clears");
		close(c2);
	}
	munmap(p, 64 * PG);
}

/* fds closed behind the shim's back, their numbers reused */
static void test_stale_fds(void)
{
	uint64_t z[4] = { 0 }, back[4];
	char *p = map_pages(4), buf[8] = { 0 };
	int fd, mfd;
	FILE *fp;

	fd = open("/proc/self/pagemap", O_RDONLY);
	syscall(SYS_close, (long)fd);
	mfd = memfd_create("stale", 0);
	tap_ok(mfd == fd && write(mfd, z, sizeof(z)) == sizeof(z) &&
	       pread(mfd, back, sizeof(back), 0) == sizeof(back) &&
	       !memcmp(z, back, sizeof(z)),
	       "raw close, number reused by memfd: plain file data");
	close(mfd);

	fd = open("/proc/self/clear_refs", O_WRONLY);
	fp = fdopen(fd, "w");
	if (fp)
		fclose(fp);	/* glibc closes the fd inside */
	fp = fopen("/proc/self/cmdline", "r");	/* not ours */
	mfd = memfd_create("stale2", 0);
	p[0] = 1;
	tap_ok(write(mfd, "4", 1) == 1 && pread(mfd, buf, 1, 0) == 1 &&
	       buf[0] == '4', "fdopen + fclose, number reused: a plain write");
	if (fp)
		fclose(fp);
	close(mfd);
	munmap(p, 4 * PG);
}

static void test_smaps(int pm)
{
	char flags[256], *q, *r;
	char *p = map_pages(2);
	FILE *f;
	bool got;

	clear();
	f = fopen("/proc/self/smaps", "r");
	if (!f)
		tap_bail("fopen smaps: %s", strerror(errno));
	got = vmflags(f, p, flags, sizeof(flags));
	tap_ok(got && !has_flag(flags, "sd") && !has_flag(flags, "uw"),
	       "smaps after a clear: no sd (and no uw of the shim):%s", flags);
	q = map_pages(1);
	got = vmflags(f, q, flags, sizeof(flags));
	tap_ok(got && has_flag(flags, "sd"),
	       "smaps of a new mapping: sd, as VM_SOFTDIRTY:%s", flags);
	/* move into a reservation of our own */
	r = mmap(NULL, 2 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	clear();
	r = mremap(p, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, r);
	got = r != MAP_FAILED && vmflags(f, r, flags, sizeof(flags));
	tap_ok(got && has_flag(flags, "sd") && dirty(pm, r),
	       "a moved mapping: sd and soft-dirty");
	fclose(f);

	/* read() in small pieces gives whole, well-formed text */
	{
		int fd = open("/proc/self/smaps", O_RDONLY);
		static char a[1 << 20], b[4096];
		size_t na = 0, heads = 0, vmf = 0;
		ssize_t n;
		char *l;

		while (fd >= 0 && na < sizeof(a) - 101 &&
		       (n = read(fd, a + na, 100)) > 0)
			na += (size_t)n;
		a[na] = 0;
		for (l = a; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : l) {
			unsigned long x, y;

			heads += sscanf(l, "%lx-%lx ", &x, &y) == 2;
			vmf += !strncmp(l, "VmFlags:", 8);
		}
		n = pread(fd, b, sizeof(b), 0);
		tap_ok(fd >= 0 && heads > 3 && heads == vmf && n > 0 &&
		       !memcmp(a, b, (size_t)(strchr(a, '\n') - a)),
		       "smaps by read() in 100-byte pieces: %zu mappings, "
		       "%zu VmFlags; pread at 0 starts over", heads, vmf);
		errno = 0;
		tap_ok(lseek(fd, 0, SEEK_END) < 0 && errno == EINVAL &&
		       lseek(fd, 10, SEEK_SET) == 10 &&
		       read(fd, b, 10) == 10 && !memcmp(a + 10, b, 10),
		       "smaps: lseek SEEK_END EINVAL, SEEK_SET then read");
		close(fd);
	}
	munmap(q, PG);
	munmap(r, 2 * PG);
}

/* ---------- threads ---------- */

#define TH_PAGES	256
#define TH_WRITERS	3
static char *th_mem;
static atomic_int th_epoch;
static atomic_int th_done[TH_PAGES];
static atomic_bool th_stop;

static void *writer(void *arg)
{
	unsigned int i = (unsigned int)(uintptr_t)arg * 7919;

	while (!atomic_load(&th_stop)) {
		size_t pg = i++ % TH_PAGES;
		int e = atomic_load(&th_epoch);

		((volatile char *)th_mem)[pg * PG]++;
		atomic_store(&th_done[pg], e);
	}
	return NULL;
}

static void test_threads(int pm)
{
	pthread_t t[TH_WRITERS];
	uint64_t e[TH_PAGES];
	int snap[TH_PAGES];
	long lost = 0, checked = 0;
	int k, i, rounds = td_quick() ? 50 : 300;

	th_mem = map_pages(TH_PAGES);
	for (i = 0; i < TH_WRITERS; i++)
		pthread_create(&t[i], NULL, writer, (void *)(uintptr_t)(i + 1));
	for (k = 1; k <= rounds; k++) {
		clear();
		/* writes that start after this store follow the clear */
		atomic_store(&th_epoch, k);
		usleep(200);
		for (i = 0; i < TH_PAGES; i++)
			snap[i] = atomic_load(&th_done[i]);
		if (pread(pm, e, sizeof(e), pm_off(th_mem)) != sizeof(e))
			tap_bail("pread: %s", strerror(errno));
		for (i = 0; i < TH_PAGES; i++) {
			if (snap[i] != k)
				continue;
			checked++;
			if (!(e[i] & SD_BIT))
				lost++;
		}
	}
	atomic_store(&th_stop, true);
	for (i = 0; i < TH_WRITERS; i++)
		pthread_join(t[i], NULL);
	tap_ok(lost == 0 && checked > 0,
	       "%d writer threads racing %d clears: %ld writes checked, %ld lost",
	       TH_WRITERS, rounds, checked, lost);
	munmap(th_mem, TH_PAGES * PG);
}

/*
 * Threads that clear and read at once, from the first clear on (in a
 * child: it has no tracker until one of them clears).  Clears and fast
 * reads take no lock of the shim's, only the tracker's; a page a thread
 * wrote must read soft-dirty when no clear started or ran between its
 * write and its read.  A clear counts itself in flight before started, a
 * check reads started before in flight: a clear that overlaps the check
 * either is seen in flight or moves started.
 */
#define CT_THREADS	4
#define CT_PAGES	8
static char *ct_mem;
static int ct_pm, ct_cr;
static atomic_long ct_started, ct_inflight, ct_checked, ct_lost, ct_clears;
static atomic_long ct_fails;

static void *clearer_reader(void *arg)
{
	unsigned int seed = (unsigned int)(uintptr_t)arg * 2654435761u;
	char *mine = ct_mem + (uintptr_t)arg * CT_PAGES * PG;
	double end = td_now() + 60;
	uint64_t e;

	while ((atomic_load(&ct_checked) < 2000 ||
		atomic_load(&ct_clears) < 200) && td_now() < end) {
		char *pg = mine + (size_t)(rand_r(&seed) % CT_PAGES) * PG;
		long st0, st1;

		if (rand_r(&seed) % 64 == 0) {
			atomic_fetch_add(&ct_inflight, 1);
			atomic_fetch_add(&ct_started, 1);
			if (write(ct_cr, "4", 1) != 1)
				atomic_fetch_add(&ct_fails, 1);
			atomic_fetch_sub(&ct_inflight, 1);
			atomic_fetch_add(&ct_clears, 1);
			continue;
		}
		st0 = atomic_load(&ct_started);
		if (atomic_load(&ct_inflight) || !st0) {
			/* no spinning into the next clear's lottery */
			sched_yield();
			continue;
		}
		((volatile char *)pg)[0]++;
		if (pread(ct_pm, &e, 8, pm_off(pg)) != 8)
			atomic_fetch_add(&ct_fails, 1);
		st1 = atomic_load(&ct_started);
		if (st1 != st0)
			continue;
		atomic_fetch_add(&ct_checked, 1);
		if (!(e & SD_BIT))
			atomic_fetch_add(&ct_lost, 1);
	}
	return NULL;
}

/* The child: its threads' counts, 4 longs, to @out (nothing if it failed). */
static void clearing_child(int in, int out)
{
	pthread_t t[CT_THREADS];
	long r[4];
	int i;

	(void)in;
	ct_mem = map_pages(CT_THREADS * CT_PAGES);
	ct_pm = open("/proc/self/pagemap", O_RDONLY);
	ct_cr = open("/proc/self/clear_refs", O_WRONLY);
	if (ct_pm < 0 || ct_cr < 0)
		return;
	for (i = 0; i < CT_THREADS; i++)
		pthread_create(&t[i], NULL, clearer_reader,
			       (void *)(uintptr_t)i);
	for (i = 0; i < CT_THREADS; i++)
		pthread_join(t[i], NULL);
	r[0] = atomic_load(&ct_checked);
	r[1] = atomic_load(&ct_lost);
	r[2] = atomic_load(&ct_clears);
	r[3] = atomic_load(&ct_fails);
	/* a short write is the parent's missing answer */
	(void)!write(out, r, sizeof(r));
}

static void test_clearing_threads(void)
{
	long r[4] = { -1, -1, -1, -1 };
	struct td_child c;
	int err = td_child_spawn(&c, clearing_child);
	bool got;

	if (err)
		tap_bail("fork: %s", strerror(-err));
	/* the threads stop by themselves within 60 s */
	got = td_child_recv(&c, r, sizeof(r), 120000);
	td_child_reap(&c, NULL);
	tap_ok(got && r[0] > 0 && !r[1] && r[2] > 0 && !r[3],
	       "%d threads clearing and reading at once, from the first "
	       "clear: %ld clears, %ld writes checked, %ld lost, %ld failed "
	       "calls", CT_THREADS, r[2], r[0], r[1], r[3]);
}

/* ---------- fork and exec ---------- */

static int has_uffd_fd(void)
{
	char link[64], path[128];
	int fd, n = 0;

	for (fd = 0; fd < 1024; fd++) {
		ssize_t r;

		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		r = readlink(link, path, sizeof(path) - 1);
		if (r > 0) {
			path[r] = 0;
			n += !strcmp(path, "anon_inode:[userfaultfd]");
		}
	}
	return n;
}

static void test_fork(int pm)
{
	char *p = map_pages(2);
	int status;
	pid_t pid;

	clear();
	p[0] = 1;
	pid = fork();
	if (pid < 0)
		tap_bail("fork: %s", strerror(errno));
	if (!pid) {
		int bad = 0;

		/* new to the child: dirty until its first clear */
		if (!dirty(pm, p + PG) || !dirty(pm, p))
			bad |= 1;
		if (has_uffd_fd())
			bad |= 2;
		clear();
		if (dirty(pm, p) || dirty(pm, p + PG))
			bad |= 4;
		p[PG] = 2;
		if (!dirty(pm, p + PG) || dirty(pm, p))
			bad |= 8;
		_exit(bad);
	}
	waitpid(pid, &status, 0);
	tap_ok(WIFEXITED(status) && !(WEXITSTATUS(status) & 1),
	       "fork: the child's pages are dirty until its first clear");
	tap_ok(WIFEXITED(status) && !(WEXITSTATUS(status) & 2),
	       "fork: the child holds no userfaultfd of the parent");
	tap_ok(WIFEXITED(status) && !(WEXITSTATUS(status) & 12),
	       "fork: the child clears and tracks on its own");
	tap_ok(dirty(pm, p) && !dirty(pm, p + PG),
	       "fork: the parent's tracking goes on (child's write not seen)");
	p[PG] = 3;
	tap_ok(dirty(pm, p + PG), "fork: the parent's write after fork seen");
	munmap(p, 2 * PG);
}

/* In the exec'd image: the shim is there and works. */
static int exec_check(void)
{
	int pm = open("/proc/self/pagemap", O_RDONLY);
	char *p = map_pages(1);
	int bad = 0;

	if (!shim_loaded())
		bad |= 1;
	if (pm < 0 || !dirty(pm, p))
		bad |= 2;
	clear();
	if (dirty(pm, p))
		bad |= 4;
	p[0] = 1;
	if (!dirty(pm, p))
		bad |= 8;
	return bad;
}

static void test_exec(const char *self)
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		tap_bail("fork: %s", strerror(errno));
	if (!pid) {
		execl(self, self, "--exec-check", (char *)NULL);
		_exit(127);
	}
	waitpid(pid, &status, 0);
	tap_ok(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	       "exec: the new image has the shim and it works (status %d)",
	       WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

/* ---------- setup ---------- */

int main(int argc, char **argv)
{
	char exe[PATH_MAX];
	int pm;

	if (argc > 1 && !strcmp(argv[1], "--exec-check"))
		return exec_check();
	tap_init("preload-api");
	if (!td_under_preload(argv, CHILD_ENV))
		return tap_done();
	td_self_exe(exe, sizeof(exe));

	tap_ok(shim_loaded(), "libsoftdirty-preload.so is loaded");
	pm = open("/proc/self/pagemap", O_RDONLY);
	if (pm < 0)
		tap_bail("open pagemap: %s", strerror(errno));
	test_new_and_clear(pm);
	test_clear_paths(pm);
	test_stdio_clear(pm);
	test_open_paths();
	test_read_paths(pm);
	test_stale_fds();
	test_smaps(pm);
	test_threads(pm);
	test_clearing_threads();
	test_fork(pm);
	test_exec(exe);
	close(pm);
	return tap_done();
}
