// SPDX-License-Identifier: MIT
/*
 * libsoftdirty-preload.so: the kernel's soft-dirty interface for unmodified
 * programs on kernels without CONFIG_MEM_SOFT_DIRTY.
 *
 * In a process started with LD_PRELOAD=libsoftdirty-preload.so:
 *  - writing "4" to its own clear_refs resets a libsoftdirty tracker
 *    instead (other values still reach the kernel);
 *  - reads of its own pagemap return the kernel's entries, with bit 55
 *    computed by the tracker (and bit 57, uffd-wp, which only our tracking
 *    sets, cleared);
 *  - its own smaps shows "sd" in VmFlags for regions created, grown or
 *    moved since the last clear (VM_SOFTDIRTY), and no "uw" of ours.
 * Until the first clear every mapping is soft-dirty, as on a soft-dirty
 * kernel where every VMA of a new mm (exec) has VM_SOFTDIRTY; the tracker
 * is opened at that first clear.  After fork the child starts over the
 * same way.  Where the kernel has real soft-dirty bits, nothing is done.
 *
 * The program gets real kernel fds (the same file opened for real), so
 * fstat, fcntl, poll and close behave; an fd table remembers which of them
 * are ours.  pagemap reads go to the kernel first, so offsets, errno and
 * short reads are the kernel's own, and only bits are patched afterwards.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"
#include "softdirty.h"
#include "uapi.h"

#define PUBLIC __attribute__((visibility("default")))

/* ---------- the real functions ---------- */

/*
 * Resolved lazily: other libraries' constructors may call us before ours
 * runs.  dlsym is idempotent, so racing threads store the same value.
 */
#define REAL(ret, name, ...)						\
	static ret (*real_##name##_p)(__VA_ARGS__);			\
	static ret (*real_##name(void))(__VA_ARGS__)			\
	{								\
		ret (*f)(__VA_ARGS__) =					\
			__atomic_load_n(&real_##name##_p, __ATOMIC_ACQUIRE); \
		if (!f) {						\
			f = (ret (*)(__VA_ARGS__))dlsym(RTLD_NEXT, #name); \
			__atomic_store_n(&real_##name##_p, f,		\
					 __ATOMIC_RELEASE);		\
		}							\
		return f;						\
	}

REAL(int, open, const char *, int, ...)
REAL(int, open64, const char *, int, ...)
REAL(int, openat, int, const char *, int, ...)
REAL(int, openat64, int, const char *, int, ...)
REAL(int, __open_2, const char *, int)
REAL(int, __open64_2, const char *, int)
REAL(int, __openat_2, int, const char *, int)
REAL(int, __openat64_2, int, const char *, int)
REAL(FILE *, fopen, const char *, const char *)
REAL(FILE *, fopen64, const char *, const char *)
REAL(int, fclose, FILE *)
REAL(ssize_t, read, int, void *, size_t)
REAL(ssize_t, pread, int, void *, size_t, off_t)
REAL(ssize_t, pread64, int, void *, size_t, off_t)
REAL(ssize_t, readv, int, const struct iovec *, int)
REAL(ssize_t, preadv, int, const struct iovec *, int, off_t)
REAL(ssize_t, preadv64, int, const struct iovec *, int, off_t)
REAL(ssize_t, preadv2, int, const struct iovec *, int, off_t, int)
REAL(ssize_t, preadv64v2, int, const struct iovec *, int, off_t, int)
REAL(ssize_t, write, int, const void *, size_t)
REAL(ssize_t, pwrite, int, const void *, size_t, off_t)
REAL(ssize_t, pwrite64, int, const void *, size_t, off_t)
REAL(ssize_t, writev, int, const struct iovec *, int)
REAL(off_t, lseek, int, off_t, int)
REAL(off_t, lseek64, int, off_t, int)
REAL(int, close, int)
REAL(int, dup, int)
REAL(int, dup2, int, int)
REAL(int, dup3, int, int, int)
REAL(int, fcntl, int, int, ...)
REAL(int, fcntl64, int, int, ...)
REAL(int, ioctl, int, unsigned long, ...)
REAL(int, close_range, unsigned int, unsigned int, int)
REAL(void, closefrom, int)

extern void __chk_fail(void) __attribute__((noreturn));
/* glibc's fortified entry points (no header declares them) */
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);
ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen);
ssize_t __pread_chk(int fd, void *buf, size_t n, off_t off, size_t buflen);
ssize_t __pread64_chk(int fd, void *buf, size_t n, off_t off, size_t buflen);

/*
 * Set while we run library code: its own open/read/close/fork must reach
 * libc untouched (the library is linked into this object, so its calls
 * bind to our interposers).
 */
static __thread int in_lib __attribute__((tls_model("initial-exec")));

#define LIB(expr) \
	({ __typeof__(expr) r_; in_lib++; r_ = (expr); in_lib--; r_; })

/*
 * errno back to @saved, without a store when it is already: the clear and
 * the fast read write no page the library's reset does not (see
 * tracker_here()), and errno's page is one.
 */
static void errno_restore(int saved)
{
	if (errno != saved)
		errno = saved;
}

/* ---------- the files we answer for ---------- */

enum kind { K_CLEAR_REFS = 1, K_PAGEMAP, K_SMAPS };

/* What an open file description of ours is; shared by dup'd fds. */
struct sfile {
	atomic_int refs;
	enum kind kind;
	int accmode;
	/* the file the fd held when we saw it opened */
	dev_t dev;
	ino_t ino;
	/*
	 * The process that opened it: a pagemap fd reads the mm it was opened
	 * in, so after fork the child's fd shows the parent's uffd-wp bits.
	 */
	pid_t pid;
	/* smaps: our text and our own file position (the text is longer) */
	pthread_mutex_t lock;
	char *text;
	size_t len;
	off_t pos;
};

/* fd -> struct sfile *, two levels so that any fd number fits */
#define FD_L2		1024
#define FD_L1		1024
static _Atomic(struct sfile *) *_Atomic fdtab[FD_L1];

static struct sfile *fd_get(int fd)
{
	_Atomic(struct sfile *) *l2;

	if (fd < 0 || fd >= FD_L1 * FD_L2)
		return NULL;
	l2 = atomic_load_explicit(&fdtab[fd / FD_L2], memory_order_acquire);
	return l2 ? atomic_load_explicit(&l2[fd % FD_L2],
					 memory_order_acquire) : NULL;
}

static void sfile_put(struct sfile *f)
{
	if (f && atomic_fetch_sub(&f->refs, 1) == 1) {
		free(f->text);
		pthread_mutex_destroy(&f->lock);
		free(f);
	}
}

/* Point @fd at @f (may be NULL), taking a reference; drop the old one. */
static void fd_store(int fd, struct sfile *f)
{
	_Atomic(struct sfile *) *l2, *fresh = NULL;
	struct sfile *old;

	if (fd < 0 || fd >= FD_L1 * FD_L2)
		return;
	l2 = atomic_load_explicit(&fdtab[fd / FD_L2], memory_order_acquire);
	if (!l2) {
		if (!f)
			return;
		fresh = calloc(FD_L2, sizeof(*fresh));
		if (!fresh)
			return;
		if (atomic_compare_exchange_strong(&fdtab[fd / FD_L2], &l2,
						   fresh))
			l2 = fresh;
		else
			free(fresh);
	}
	if (f)
		atomic_fetch_add(&f->refs, 1);
	old = atomic_exchange(&l2[fd % FD_L2], f);
	sfile_put(old);
}

/* Forget @fd if it still points at @f (its file was closed behind us). */
static void fd_forget(int fd, struct sfile *f)
{
	_Atomic(struct sfile *) *l2;

	if (!f || fd < 0 || fd >= FD_L1 * FD_L2)
		return;
	l2 = atomic_load_explicit(&fdtab[fd / FD_L2], memory_order_acquire);
	if (l2 && atomic_compare_exchange_strong(&l2[fd % FD_L2], &f, NULL))
		sfile_put(f);
}

/* ---------- global state ---------- */

enum mode { M_UNKNOWN, M_PASS, M_EMULATE };

static pthread_mutex_t glock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int mode = M_UNKNOWN;
/*
 * NULL: all dirty (before a clear).  Set under glock, last, with release
 * (tracker_here() reads it without glock); tracker_pid, same_mm,
 * tracker_uffd and priv_fd do not change while it is set.
 */
static struct softdirty *tracker;
static pid_t tracker_pid;
/*
 * 1 in the process that opened the tracker: a MADV_WIPEONFORK page reads 0
 * in any child with a copy of our memory (fork, or a raw clone without
 * CLONE_VM, which runs no atfork handler), without a getpid() per read.
 */
static volatile char *same_mm;
static bool tracker_uffd;
/* the tracker's own fds: the program cannot close what it never opened */
static int priv_fd[16];
static int npriv;
static const char *backend_pref = "uffd,hash";
/*
 * The program registered memory with a userfaultfd of its own: bit 57 of
 * pagemap may be its write-protection, not ours, so no fast reads.
 */
static atomic_bool foreign_uffd;
static struct sd_maps scratch_maps;

static bool is_priv_fd(int fd)
{
	int i;

	for (i = 0; i < npriv; i++)
		if (priv_fd[i] == fd)
			return true;
	return false;
}

/* Does the kernel have soft-dirty?  A new, written page says so. */
static bool kernel_has_softdirty(void)
{
	volatile char *p;
	uint64_t e = 0;
	int fd;

	p = mmap(NULL, PAGE_SZ, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return false;
	p[0] = 1;
	fd = real_open()("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (real_pread()(fd, &e, 8, (off_t)((uintptr_t)p / PAGE_SZ * 8)) != 8)
			e = 0;
		real_close()(fd);
	}
	munmap((void *)p, PAGE_SZ);
	return e & SOFTDIRTY_PM_SOFT_DIRTY;
}

/* Is backend @name in the comma-separated list @list? */
static bool in_list(const char *list, const char *name)
{
	size_t n = strlen(name);

	while (list && *list) {
		if (!strncmp(list, name, n) && (list[n] == ',' || !list[n]))
			return true;
		list = strchr(list, ',');
		if (list)
			list++;
	}
	return false;
}

/* Decide once per process image (called with glock held). */
static void decide(void)
{
	struct softdirty_probe_result res[SOFTDIRTY_BACKEND_COUNT];
	const char *force = getenv("SOFTDIRTY_PRELOAD_FORCE");
	const char *pref = getenv("SOFTDIRTY_PRELOAD_BACKEND");
	int n, i, m = M_PASS;

	if (atomic_load(&mode) != M_UNKNOWN)
		return;
	if (pref && *pref)
		backend_pref = pref;
	if ((!force || strcmp(force, "1")) && kernel_has_softdirty())
		goto out;
	n = LIB(softdirty_probe(res, SOFTDIRTY_BACKEND_COUNT));
	for (i = 0; n > 0 && i < SOFTDIRTY_BACKEND_COUNT; i++)
		if (!res[i].status && (res[i].caps & SOFTDIRTY_CAP_SELF) &&
		    in_list(backend_pref, res[i].name))
			m = M_EMULATE;
out:
	atomic_store(&mode, m);
}

static bool emulating(void)
{
	int m = atomic_load_explicit(&mode, memory_order_acquire);

	if (m == M_UNKNOWN) {
		pthread_mutex_lock(&glock);
		decide();
		pthread_mutex_unlock(&glock);
		m = atomic_load(&mode);
	}
	return m == M_EMULATE;
}

/* A forked child (or clone) must not touch the parent's tracker. */
static void drop_tracker_locked(void)
{
	int i;

	for (i = 0; i < npriv; i++)
		syscall(SYS_close, (long)priv_fd[i]);
	npriv = 0;
	/* leaked on purpose: its backend state refers to the parent */
	__atomic_store_n(&tracker, NULL, __ATOMIC_RELEASE);
}

static void check_pid_locked(void)
{
	if (tracker && (same_mm ? !*same_mm : tracker_pid != getpid()))
		drop_tracker_locked();
}

/*
 * The tracker, when this process opened it and it is known still to be
 * this process's (same_mm), without glock; else NULL: take glock.
 *
 * Why without: after a clear every page is write-protected, and each one
 * written in the next clear or read costs a fault (15-25 us here).  glock's
 * page, and the TLS page that in_lib and errno share, are pages the
 * library's own reset does not write: taking glock and LIB() made a clear
 * cost 2 faults more than softdirty_reset() (5 % of a 64 MiB reset).  The
 * tracker's own lock serializes its calls; the wrappers let the library's
 * calls through by their fds (is_priv_fd()), and a reset opens or closes
 * none.  The tracker is never freed, only dropped in a child.
 */
static struct softdirty *tracker_here(void)
{
	struct softdirty *t = __atomic_load_n(&tracker, __ATOMIC_ACQUIRE);

	/* uffd: the backend whose reset is known to open and close nothing */
	return t && tracker_uffd && same_mm && *same_mm ? t : NULL;
}

/* The fds open now (sorted, as the kernel lists them), or NULL. */
static int *list_fds(size_t *n)
{
	size_t cap = 64;
	int *v = malloc(cap * sizeof(*v));
	struct dirent *de;
	DIR *d;

	*n = 0;
	d = opendir("/proc/self/fd");
	if (!d || !v) {
		if (d)
			closedir(d);
		free(v);
		return NULL;
	}
	while ((de = readdir(d))) {
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		if (*n == cap) {
			int *nv = realloc(v, cap * 2 * sizeof(*v));

			if (!nv)
				break;
			v = nv;
			cap *= 2;
		}
		v[(*n)++] = atoi(de->d_name);
	}
	closedir(d);
	return v;
}

/* Is @fd one the tracker just opened (its /proc files, its uffd)? */
static bool tracker_fd(int fd)
{
	char link[64], path[64], mine[32];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n < 0)
		return false;
	path[n] = 0;
	snprintf(mine, sizeof(mine), "/proc/%d/", (int)getpid());
	return !strcmp(path, "anon_inode:[userfaultfd]") ||
	       !strncmp(path, mine, strlen(mine));
}

/*
 * The kernel's clear: forget every write (called with glock held).  Out of
 * line: inlined, its locals deepened every clear's stack by 240 bytes,
 * which can put one more stack page under the reset (see tracker_here()).
 */
static __attribute__((noinline)) int reset_locked(void)
{
	const char *p = backend_pref;
	size_t nb = 0, na = 0, i, j;
	struct softdirty *t = NULL;
	int *before, *after;
	int err = -ENOTSUP;

	check_pid_locked();
	if (tracker)
		return LIB(softdirty_reset(tracker));
	before = list_fds(&nb);
	while (p && *p) {
		char name[32];
		size_t n = strcspn(p, ",");
		struct softdirty_opts o = { .sz = sizeof(o), .backend = name };

		snprintf(name, sizeof(name), "%.*s", (int)MIN(n, 31), p);
		err = LIB(softdirty_open(&t, 0, &o));
		if (!err)
			break;
		p = p[n] ? p + n + 1 : NULL;
	}
	if (err) {
		free(before);
		return err;
	}
	tracker_pid = getpid();
	if (!same_mm) {
		void *m = mmap(NULL, PAGE_SZ, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		/* before 4.14: getpid() at every read */
		if (m != MAP_FAILED && madvise(m, PAGE_SZ, MADV_WIPEONFORK))
			munmap(m, PAGE_SZ);
		else if (m != MAP_FAILED)
			same_mm = m;
	}
	if (same_mm)
		*same_mm = 1;
	tracker_uffd = !strcmp(softdirty_backend(t), "uffd");
	/* new fds that are the tracker's, not another thread's */
	after = list_fds(&na);
	for (i = 0; after && i < na && npriv < 16; i++) {
		for (j = 0; j < nb && before[j] != after[i]; j++)
			;
		if (j == nb && tracker_fd(after[i]))
			priv_fd[npriv++] = after[i];
	}
	free(before);
	free(after);
	__atomic_store_n(&tracker, t, __ATOMIC_RELEASE);
	return 0;
}

static void atfork_prepare(void)
{
	if (!in_lib)
		pthread_mutex_lock(&glock);
}

static void atfork_parent(void)
{
	if (!in_lib)
		pthread_mutex_unlock(&glock);
}

/* The child's regions are new to it: all dirty until its first clear. */
static void atfork_child(void)
{
	if (in_lib)
		return;
	pthread_mutex_init(&glock, NULL);
	if (tracker)
		drop_tracker_locked();
}

__attribute__((constructor)) static void preload_init(void)
{
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* ---------- bit 55 ---------- */

/*
 * Call @fn for each soft-dirty run of [start, end) (page aligned), as the
 * kernel would report it.  Called with glock held.
 */
typedef void (*dirty_fn)(void *ctx, uint64_t start, uint64_t end,
			 uint64_t flags);

static int for_each_dirty_locked(uint64_t start, uint64_t end, dirty_fn fn,
				 void *ctx)
{
	struct softdirty_range vec[256];
	uint64_t cur = start, we;
	long n, i;
	int fd, err;

	check_pid_locked();
	if (tracker) {
		while (cur < end) {
			n = LIB(softdirty_collect(tracker, cur, end, vec, 256,
						  0, &we));
			if (n < 0)
				return (int)n;
			for (i = 0; i < n; i++)
				fn(ctx, vec[i].start, vec[i].end, vec[i].flags);
			if (we <= cur)
				break;
			cur = we;
		}
		return 0;
	}
	/* before the first clear: every mapping is VM_SOFTDIRTY */
	fd = real_open()("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	err = LIB(sd_maps_read(&scratch_maps, fd));
	real_close()(fd);
	if (err)
		return err;
	for (i = 0; i < (long)scratch_maps.n; i++) {
		const struct sd_vma *v = &scratch_maps.v[i];

		/* the gate area is not in the mm: the kernel reports 0 */
		if (!strcmp(v->path, "[vsyscall]"))
			continue;
		if (v->end > start && v->start < end)
			fn(ctx, MAX(v->start, start), MIN(v->end, end),
			   SOFTDIRTY_RANGE_NEW);
	}
	return 0;
}

/* The user's buffer as iovecs, entries at file offset @off. */
struct pm_patch {
	const struct iovec *iov;
	int iovcnt;
	uint64_t off;		/* file offset of the first byte */
	size_t len;		/* bytes the kernel returned */
};

static unsigned char *pm_byte(const struct pm_patch *p, uint64_t foff)
{
	uint64_t rel = foff - p->off;
	int i;

	for (i = 0; i < p->iovcnt; i++) {
		if (rel < p->iov[i].iov_len)
			return (unsigned char *)p->iov[i].iov_base + rel;
		rel -= p->iov[i].iov_len;
	}
	return NULL;
}

static void pm_set(void *ctx, uint64_t start, uint64_t end, uint64_t flags)
{
	const struct pm_patch *p = ctx;
	uint64_t a;

	(void)flags;
	/* little endian: bit 55 is bit 7 of byte 6 */
	for (a = start; a < end; a += PAGE_SZ) {
		unsigned char *b = pm_byte(p, a / PAGE_SZ * 8 + 6);

		if (b)
			*b |= 0x80;
	}
}

/*
 * The fast read, without a kernel call: where the library vouches for
 * pagemap's uffd-wp bit (sd_uffd_wp_exact()), a present or swapped page
 * without bit 57 is one it reports written (or new), a page with it one it
 * does not report.  False, with nothing changed, when an entry is neither
 * (a hole, an empty PTE: the library's answer depends on more) or the
 * range is not covered.  Bytes 6 and 7 of an entry (little endian): bit
 * 55 is 0x80 of byte 6; 57, 62 and 63 are 0x02, 0x40, 0x80 of byte 7.
 */
static bool pagemap_fast(const struct sfile *f, const struct iovec *iov,
			 int iovcnt, uint64_t off, size_t len)
{
	struct softdirty *t;
	size_t done = 0, n, k;
	bool ok;
	int i;

	for (i = 0; i < iovcnt && done < len; i++) {
		const unsigned char *b = iov[i].iov_base;

		n = MIN(iov[i].iov_len, len - done);
		for (k = 0; k + 8 <= n; k += 8)
			if (!(b[k + 7] & 0xc2))
				return false;
		done += n;
	}
	t = tracker_here();
	/* the tracker is this process's (checked): so must the fd's mm be */
	ok = t && f->pid == tracker_pid && !atomic_load(&foreign_uffd) &&
	     sd_uffd_wp_exact(t, off / 8 * PAGE_SZ, (off + len) / 8 * PAGE_SZ);
	if (!ok)
		return false;
	for (i = 0, done = 0; i < iovcnt && done < len; i++) {
		unsigned char *b = iov[i].iov_base;

		n = MIN(iov[i].iov_len, len - done);
		for (k = 0; k + 8 <= n; k += 8) {
			if (b[k + 7] & 0x02)
				b[k + 6] &= 0x7f;
			else
				b[k + 6] |= 0x80;
			b[k + 7] &= ~0x02;
		}
		done += n;
	}
	return true;
}

/*
 * The kernel filled @len bytes of pagemap at @off into @iov: make bit 55
 * ours.  Each iovec was a separate ->read for the kernel, so every entry
 * lies whole inside one iovec.
 */
static void pagemap_patch(const struct sfile *f, const struct iovec *iov,
			  int iovcnt, uint64_t off, size_t len)
{
	struct pm_patch p = { iov, iovcnt, off, len };
	uint64_t start = off / 8 * PAGE_SZ, end = (off + len) / 8 * PAGE_SZ;
	size_t done = 0;
	int i, err, saved = errno;

	if (!len || off % 8)
		return;
	if (pagemap_fast(f, iov, iovcnt, off, len))
		goto out;
	for (i = 0; i < iovcnt && done < len; i++) {
		unsigned char *b = iov[i].iov_base;
		size_t n = MIN(iov[i].iov_len, len - done), k;

		/* clear 55 (the kernel's, if forced) and 57 (our uffd-wp) */
		for (k = 0; k + 8 <= n; k += 8) {
			b[k + 6] &= 0x7f;
			b[k + 7] &= ~0x02;
		}
		done += n;
	}
	pthread_mutex_lock(&glock);
	err = for_each_dirty_locked(start, end, pm_set, &p);
	pthread_mutex_unlock(&glock);
	/* no answer: a write cannot be ruled out anywhere */
	if (err)
		pm_set(&p, start, end, 0);
out:
	/* a successful read leaves errno alone */
	errno_restore(saved);
}

static void pagemap_patch1(const struct sfile *f, void *buf, uint64_t off,
			   ssize_t len)
{
	struct iovec iov = { buf, (size_t)len };

	if (len > 0)
		pagemap_patch(f, &iov, 1, off, (size_t)len);
}

/* ---------- clear_refs ---------- */

/* The kernel's isspace(): Latin-1, so NBSP too. */
static bool kspace(char c)
{
	unsigned char u = (unsigned char)c;

	return u == ' ' || (u >= '\t' && u <= '\r') || u == 0xa0;
}

/*
 * The kernel's clear_refs_write: up to 12 bytes, stripped, kstrtoint base
 * 10.  Returns true when it would read the value 4.
 */
static bool is_clear_4(const char *b)
{
	const char *e;
	long v = 0;

	while (kspace(*b))
		b++;
	e = b + strlen(b);
	while (e > b && kspace(e[-1]))
		e--;
	if (b < e && *b == '+')
		b++;
	if (b == e)
		return false;
	for (; b < e; b++) {
		if (*b < '0' || *b > '9')
			return false;
		v = v * 10 + (*b - '0');
		if (v > 4)
			return false;
	}
	return v == 4;
}

/*
 * Write @count bytes at @buf to the clear_refs fd @fd: "4" is ours, the
 * rest goes to the kernel through @fwd.  Returns the write's result.
 */
static ssize_t clear_refs_write(struct sfile *f, const void *buf,
				size_t count, ssize_t (*fwd)(void *),
				void *fwd_ctx)
{
	char b[13] = { 0 };
	struct iovec l = { b, MIN(count, 12) }, r = { (void *)buf, l.iov_len };
	struct softdirty *t;
	int err, saved;

	if (f->accmode == O_RDONLY || !count)
		return fwd(fwd_ctx);
	/* copy_from_user: a bad buffer is the kernel's EFAULT */
	/* syscall() reads longs: no int varargs */
	if (syscall(SYS_process_vm_readv, (long)getpid(), &l, 1L, &r, 1L, 0L) !=
	    (ssize_t)l.iov_len || !is_clear_4(b))
		return fwd(fwd_ctx);
	saved = errno;
	t = tracker_here();
	if (t) {
		err = softdirty_reset(t);
	} else {
		pthread_mutex_lock(&glock);
		err = reset_locked();
		pthread_mutex_unlock(&glock);
	}
	if (err) {
		errno = err == -ENOMEM ? ENOMEM : EIO;
		return -1;
	}
	errno_restore(saved);
	return (ssize_t)l.iov_len;
}

/* ---------- smaps ---------- */

struct smaps_ctx {
	struct softdirty_range *v;
	size_t n, cap;
};

static void smaps_new(void *ctx, uint64_t start, uint64_t end, uint64_t flags)
{
	struct smaps_ctx *c = ctx;
	struct softdirty_range *nv;

	if (!(flags & SOFTDIRTY_RANGE_NEW))
		return;
	if (c->n == c->cap) {
		nv = realloc(c->v, (c->cap * 2 + 16) * sizeof(*nv));
		if (!nv)
			return;
		c->v = nv;
		c->cap = c->cap * 2 + 16;
	}
	c->v[c->n++] = (struct softdirty_range){ start, end, flags };
}

static bool smaps_sd(const struct smaps_ctx *c, uint64_t s, uint64_t e)
{
	size_t i;

	for (i = 0; i < c->n; i++)
		if (c->v[i].start < e && c->v[i].end > s)
			return true;
	return false;
}

/* Flags of bits below VM_SOFTDIRTY (27): "sd" comes after them. */
static bool flag_below_sd(const char *t)
{
	static const char low[] = "rd wr ex sh mr mw me ms gd pf um lo uw io "
				  "sr rr dc de lf ac nr ht sf ar bt wf dd ";
	char tok[4] = { t[0], t[1], ' ', 0 };

	return t[0] && t[1] && (t[2] == ' ' || t[2] == '\n') &&
	       strstr(low, tok) && (strstr(low, tok) - low) % 3 == 0;
}

/* Append to a growing buffer; false when out of memory. */
static bool append(char **buf, size_t *len, size_t *cap, const char *s,
		   size_t n)
{
	if (*len + n + 1 > *cap) {
		size_t nc = (*len + n + 1) * 2;
		char *nb = realloc(*buf, nc);

		if (!nb)
			return false;
		*buf = nb;
		*cap = nc;
	}
	memcpy(*buf + *len, s, n);
	*len += n;
	return true;
}

/* The kernel's smaps text, with VmFlags as a soft-dirty kernel has them. */
static int smaps_generate(struct sfile *f)
{
	struct smaps_ctx c = { 0 };
	char *in = NULL, *out = NULL, *line, *nl;
	size_t inlen = 0, incap = 0, outlen = 0, outcap = 0;
	uint64_t vs = 0, ve = 0;
	char chunk[65536];
	ssize_t n;
	int fd, err = 0;

	fd = real_open()("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	while ((n = real_read()(fd, chunk, sizeof(chunk))) > 0)
		if (!append(&in, &inlen, &incap, chunk, (size_t)n)) {
			n = -1;
			errno = ENOMEM;
			break;
		}
	err = n < 0 ? -errno : 0;
	real_close()(fd);
	if (err || !in)
		goto out;
	in[inlen] = 0;

	pthread_mutex_lock(&glock);
	err = for_each_dirty_locked(0, SD_ADDR_MAX, smaps_new, &c);
	pthread_mutex_unlock(&glock);
	if (err)
		goto out;

	for (line = in; *line; line = nl) {
		unsigned long long a, b;
		const char *t;
		bool sd, put = false;

		nl = strchr(line, '\n');
		nl = nl ? nl + 1 : line + strlen(line);
		if (strncmp(line, "VmFlags:", 8)) {
			if (sscanf(line, "%llx-%llx ", &a, &b) == 2 &&
			    strchr(line, '-') < strchr(line, ' ')) {
				vs = a;
				ve = b;
			}
			if (!append(&out, &outlen, &outcap, line,
				    (size_t)(nl - line)))
				goto nomem;
			continue;
		}
		sd = smaps_sd(&c, vs, ve);
		if (!append(&out, &outlen, &outcap, "VmFlags: ", 9))
			goto nomem;
		for (t = line + 9; t < nl && *t != '\n'; t += 3) {
			if (sd && !put && !flag_below_sd(t)) {
				if (!append(&out, &outlen, &outcap, "sd ", 3))
					goto nomem;
				put = true;
			}
			/* uffd-wp is our tracking, not the program's */
			if (tracker_uffd && !strncmp(t, "uw", 2))
				continue;
			/* ours replaces the kernel's (SOFTDIRTY_PRELOAD_FORCE) */
			if (!strncmp(t, "sd", 2))
				continue;
			if (!append(&out, &outlen, &outcap, t, 3))
				goto nomem;
		}
		if (sd && !put && !append(&out, &outlen, &outcap, "sd ", 3))
			goto nomem;
		if (!append(&out, &outlen, &outcap, "\n", 1))
			goto nomem;
	}
	free(f->text);
	f->text = out;
	f->len = outlen;
	out = NULL;
	goto out;
nomem:
	err = -ENOMEM;
out:
	free(out);
	free(in);
	free(c.v);
	return err;
}

/* Read @len bytes of our smaps text at @pos (a read at 0 regenerates). */
static ssize_t smaps_read(struct sfile *f, const struct iovec *iov, int cnt,
			  off_t *pos)
{
	ssize_t done = 0;
	int i, err, saved = errno;

	if (f->accmode == O_WRONLY) {
		errno = EBADF;
		return -1;
	}
	if (*pos == 0 || !f->text) {
		err = smaps_generate(f);
		if (err) {
			errno = -err;
			return -1;
		}
	}
	for (i = 0; i < cnt; i++) {
		size_t n;

		if ((size_t)*pos >= f->len)
			break;
		n = MIN(iov[i].iov_len, f->len - (size_t)*pos);
		memcpy(iov[i].iov_base, f->text + *pos, n);
		*pos += (off_t)n;
		done += (ssize_t)n;
	}
	errno_restore(saved);
	return done;
}

/* ---------- opening ---------- */

/* Which file of ours is fd (a fresh real open), from its /proc path? */
static enum kind classify(int fd)
{
	char link[64], path[PATH_MAX];
	const char *p, *name;
	ssize_t n;
	long pid;
	char *end;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n < 0)
		return 0;
	path[n] = 0;
	/* the kernel resolved self, thread-self, "..", symlinks and dirfds */
	if (strncmp(path, "/proc/", 6))
		return 0;
	pid = strtol(path + 6, &end, 10);
	if (end == path + 6 || *end != '/')
		return 0;
	if (pid != getpid()) {
		/* /proc/<tid>/...: one of our threads shares our mm */
		snprintf(link, sizeof(link), "/proc/self/task/%ld", pid);
		if (access(link, F_OK))
			return 0;
	}
	p = end + 1;
	if (!strncmp(p, "task/", 5)) {
		strtol(p + 5, &end, 10);
		if (end == p + 5 || *end != '/')
			return 0;
		p = end + 1;
	}
	name = p;
	if (!strcmp(name, "clear_refs"))
		return K_CLEAR_REFS;
	if (!strcmp(name, "pagemap"))
		return K_PAGEMAP;
	if (!strcmp(name, "smaps"))
		return K_SMAPS;
	return 0;
}

/* Cheap filter before the readlink: is the last component one of ours? */
static bool maybe_ours(const char *path)
{
	const char *b;
	size_t n;

	if (!path)
		return false;
	n = strlen(path);
	while (n > 1 && path[n - 1] == '/')
		n--;
	b = path + n;
	while (b > path && b[-1] != '/')
		b--;
	n = (size_t)(path + n - b);
	return (n == 10 && !memcmp(b, "clear_refs", 10)) ||
	       (n == 7 && !memcmp(b, "pagemap", 7)) ||
	       (n == 5 && !memcmp(b, "smaps", 5));
}

/* After a successful real open of @path: remember the fd if it is ours. */
static int opened(int fd, const char *path, int flags)
{
	struct sfile *f;
	struct stat st;
	enum kind k;
	int saved = errno;

	if (fd < 0 || in_lib)
		return fd;
	fd_store(fd, NULL);
	if (!maybe_ours(path) || !emulating())
		return fd;
	k = classify(fd);
	if (!k)
		goto out;
	f = calloc(1, sizeof(*f));
	if (!f)
		goto out;	/* answered by the kernel: no soft-dirty */
	if (fstat(fd, &st)) {
		free(f);
		goto out;
	}
	f->kind = k;
	f->accmode = flags & O_ACCMODE;
	f->dev = st.st_dev;
	f->ino = st.st_ino;
	f->pid = getpid();
	pthread_mutex_init(&f->lock, NULL);
	fd_store(fd, f);		/* the table holds the one reference */
out:
	errno_restore(saved);
	return fd;
}

static mode_t open_mode(int flags, va_list ap)
{
	return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ?
	       (mode_t)va_arg(ap, int) : 0;
}

PUBLIC int open(const char *path, int flags, ...)
{
	va_list ap;
	mode_t m;

	va_start(ap, flags);
	m = open_mode(flags, ap);
	va_end(ap);
	return opened(real_open()(path, flags, m), path, flags);
}

PUBLIC int open64(const char *path, int flags, ...)
{
	va_list ap;
	mode_t m;

	va_start(ap, flags);
	m = open_mode(flags, ap);
	va_end(ap);
	return opened(real_open64()(path, flags, m), path, flags);
}

PUBLIC int openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t m;

	va_start(ap, flags);
	m = open_mode(flags, ap);
	va_end(ap);
	return opened(real_openat()(dirfd, path, flags, m), path, flags);
}

PUBLIC int openat64(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t m;

	va_start(ap, flags);
	m = open_mode(flags, ap);
	va_end(ap);
	return opened(real_openat64()(dirfd, path, flags, m), path, flags);
}

PUBLIC int __open_2(const char *path, int flags)
{
	return opened(real___open_2()(path, flags), path, flags);
}

PUBLIC int __open64_2(const char *path, int flags)
{
	return opened(real___open64_2()(path, flags), path, flags);
}

PUBLIC int __openat_2(int dirfd, const char *path, int flags)
{
	return opened(real___openat_2()(dirfd, path, flags), path, flags);
}

PUBLIC int __openat64_2(int dirfd, const char *path, int flags)
{
	return opened(real___openat64_2()(dirfd, path, flags), path, flags);
}

/* ---------- stdio: our fds behind a cookie stream ---------- */

static ssize_t ck_read(void *c, char *buf, size_t n)
{
	return read((int)(intptr_t)c, buf, n);
}

static ssize_t ck_write(void *c, const char *buf, size_t n)
{
	ssize_t r = write((int)(intptr_t)c, buf, n);

	/* stdio retries a short write forever; the kernel's file is done */
	return r > 0 ? (ssize_t)n : r;
}

static int ck_seek(void *c, off64_t *off, int whence)
{
	off_t r = lseek((int)(intptr_t)c, *off, whence);

	if (r < 0)
		return -1;
	*off = r;
	return 0;
}

static int ck_close(void *c)
{
	return close((int)(intptr_t)c);
}

/* glibc's fopen mode string as open flags */
static int fopen_flags(const char *m)
{
	int fl;

	switch (*m) {
	case 'r':
		fl = O_RDONLY;
		break;
	case 'w':
		fl = O_WRONLY | O_CREAT | O_TRUNC;
		break;
	case 'a':
		fl = O_WRONLY | O_CREAT | O_APPEND;
		break;
	default:
		return -1;
	}
	for (m++; *m && *m != ','; m++) {
		if (*m == '+')
			fl = (fl & ~O_ACCMODE) | O_RDWR;
		else if (*m == 'e')
			fl |= O_CLOEXEC;
		else if (*m == 'x')
			fl |= O_EXCL;
	}
	return fl;
}

static FILE *do_fopen(FILE *(*real)(const char *, const char *),
		      const char *path, const char *m)
{
	cookie_io_functions_t io = { ck_read, ck_write, ck_seek, ck_close };
	char cm[8];
	FILE *fp;
	int fl, fd;

	if (in_lib || !maybe_ours(path) || !emulating() || !m ||
	    (fl = fopen_flags(m)) < 0)
		return real(path, m);
	fd = open(path, fl, 0666);
	if (fd < 0)
		return NULL;
	if (!fd_get(fd)) {
		/* not ours after all: a plain stream on that fd */
		fp = fdopen(fd, m);
		if (!fp)
			real_close()(fd);
		return fp;
	}
	snprintf(cm, sizeof(cm), "%s", (fl & O_ACCMODE) == O_RDONLY ? "r" :
		 (fl & O_ACCMODE) == O_WRONLY ? "w" : "r+");
	fp = fopencookie((void *)(intptr_t)fd, cm, io);
	if (!fp) {
		int e = errno;

		close(fd);
		errno = e;
		return NULL;
	}
	/* fileno() gives the real fd, as for a real stream */
	fp->_fileno = fd;
	return fp;
}

PUBLIC FILE *fopen(const char *path, const char *m)
{
	return do_fopen(real_fopen(), path, m);
}

PUBLIC FILE *fopen64(const char *path, const char *m)
{
	return do_fopen(real_fopen64(), path, m);
}

/* fclose of an fdopen'd stream closes its fd inside glibc */
PUBLIC int fclose(FILE *fp)
{
	int fd = fp && !in_lib ? fp->_fileno : -1;
	struct sfile *f = fd_get(fd);
	int r = real_fclose()(fp);

	fd_forget(fd, f);
	return r;
}

/* ---------- reading ---------- */

/*
 * Our entry for @fd, if the fd still holds that file: glibc's own close
 * (fclose of an fdopen'd stream) and raw syscalls close fds behind our
 * back, and the number may now name something else.
 */
static struct sfile *ours(int fd)
{
	struct sfile *f = in_lib ? NULL : fd_get(fd);
	struct stat st;
	int saved;

	if (!f)
		return NULL;
	saved = errno;
	if (!fstat(fd, &st) && st.st_dev == f->dev && st.st_ino == f->ino) {
		errno_restore(saved);
		return f;
	}
	errno_restore(saved);
	fd_forget(fd, f);
	return NULL;
}

/* smaps: our text at our position, shared by dup'd fds */
static ssize_t smaps_readv_at(struct sfile *f, const struct iovec *iov,
			      int cnt, off_t *at)
{
	ssize_t r;

	pthread_mutex_lock(&f->lock);
	r = smaps_read(f, iov, cnt, at ? at : &f->pos);
	pthread_mutex_unlock(&f->lock);
	return r;
}

static ssize_t pm_read_cur(int fd, ssize_t r)
{
	int saved = errno;
	off_t end;

	if (r <= 0)
		return -1;
	end = real_lseek()(fd, 0, SEEK_CUR);
	errno_restore(saved);
	return end < r ? -1 : end - r;
}

PUBLIC ssize_t read(int fd, void *buf, size_t n)
{
	struct sfile *f = ours(fd);
	ssize_t r;
	off_t at;

	if (!f)
		return real_read()(fd, buf, n);
	if (f->kind == K_SMAPS) {
		struct iovec iov = { buf, n };

		return smaps_readv_at(f, &iov, 1, NULL);
	}
	r = real_read()(fd, buf, n);
	if (f->kind == K_PAGEMAP && r > 0 && (at = pm_read_cur(fd, r)) >= 0)
		pagemap_patch1(f, buf, (uint64_t)at, r);
	return r;
}

PUBLIC ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
	if (n > buflen)
		__chk_fail();
	return read(fd, buf, n);
}

static ssize_t do_pread(ssize_t (*real)(int, void *, size_t, off_t), int fd,
			void *buf, size_t n, off_t off)
{
	struct sfile *f = ours(fd);
	ssize_t r;

	if (f && f->kind == K_SMAPS) {
		struct iovec iov = { buf, n };

		if (off < 0) {
			errno = EINVAL;
			return -1;
		}
		return smaps_readv_at(f, &iov, 1, &off);
	}
	r = real(fd, buf, n, off);
	if (f && f->kind == K_PAGEMAP && r > 0)
		pagemap_patch1(f, buf, (uint64_t)off, r);
	return r;
}

PUBLIC ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
	return do_pread(real_pread(), fd, buf, n, off);
}

PUBLIC ssize_t pread64(int fd, void *buf, size_t n, off_t off)
{
	return do_pread(real_pread64(), fd, buf, n, off);
}

PUBLIC ssize_t __pread_chk(int fd, void *buf, size_t n, off_t off,
			   size_t buflen)
{
	if (n > buflen)
		__chk_fail();
	return pread(fd, buf, n, off);
}

PUBLIC ssize_t __pread64_chk(int fd, void *buf, size_t n, off_t off,
			     size_t buflen)
{
	if (n > buflen)
		__chk_fail();
	return pread64(fd, buf, n, off);
}

PUBLIC ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
	struct sfile *f = ours(fd);
	ssize_t r;
	off_t at;

	if (f && f->kind == K_SMAPS) {
		if (cnt < 0 || cnt > IOV_MAX) {
			errno = EINVAL;
			return -1;
		}
		return smaps_readv_at(f, iov, cnt, NULL);
	}
	r = real_readv()(fd, iov, cnt);
	if (f && f->kind == K_PAGEMAP && r > 0 &&
	    (at = pm_read_cur(fd, r)) >= 0)
		pagemap_patch(f, iov, cnt, (uint64_t)at, (size_t)r);
	return r;
}

static ssize_t do_preadv(ssize_t (*rv)(int, const struct iovec *, int, off_t),
			 ssize_t (*rv2)(int, const struct iovec *, int, off_t,
					int),
			 int fd, const struct iovec *iov, int cnt, off_t off,
			 int flags)
{
	struct sfile *f = ours(fd);
	ssize_t r;
	off_t at = off;

	if (f && f->kind == K_SMAPS) {
		if (cnt < 0 || cnt > IOV_MAX || off < -1 || (!rv2 && off < 0)) {
			errno = EINVAL;
			return -1;
		}
		return smaps_readv_at(f, iov, cnt, off == -1 ? NULL : &at);
	}
	r = rv2 ? rv2(fd, iov, cnt, off, flags) : rv(fd, iov, cnt, off);
	if (f && f->kind == K_PAGEMAP && r > 0) {
		if (rv2 && off == -1)
			at = pm_read_cur(fd, r);
		if (at >= 0)
			pagemap_patch(f, iov, cnt, (uint64_t)at, (size_t)r);
	}
	return r;
}

PUBLIC ssize_t preadv(int fd, const struct iovec *iov, int cnt, off_t off)
{
	return do_preadv(real_preadv(), NULL, fd, iov, cnt, off, 0);
}

PUBLIC ssize_t preadv64(int fd, const struct iovec *iov, int cnt, off_t off)
{
	return do_preadv(real_preadv64(), NULL, fd, iov, cnt, off, 0);
}

PUBLIC ssize_t preadv2(int fd, const struct iovec *iov, int cnt, off_t off,
		       int flags)
{
	return do_preadv(NULL, real_preadv2(), fd, iov, cnt, off, flags);
}

PUBLIC ssize_t preadv64v2(int fd, const struct iovec *iov, int cnt, off_t off,
			  int flags)
{
	return do_preadv(NULL, real_preadv64v2(), fd, iov, cnt, off, flags);
}

/* ---------- writing ---------- */

struct fwd_write {
	ssize_t (*fn)(int, const void *, size_t, off_t);
	int fd;
	const void *buf;
	size_t n;
	off_t off;
	bool positional;
};

static ssize_t fwd_write(void *c)
{
	struct fwd_write *w = c;

	if (w->positional)
		return w->fn(w->fd, w->buf, w->n, w->off);
	return real_write()(w->fd, w->buf, w->n);
}

PUBLIC ssize_t write(int fd, const void *buf, size_t n)
{
	struct sfile *f = ours(fd);
	struct fwd_write w = { NULL, fd, buf, n, 0, false };

	if (!f || f->kind != K_CLEAR_REFS)
		return real_write()(fd, buf, n);
	return clear_refs_write(f, buf, n, fwd_write, &w);
}

static ssize_t do_pwrite(ssize_t (*real)(int, const void *, size_t, off_t),
			 int fd, const void *buf, size_t n, off_t off)
{
	struct sfile *f = ours(fd);
	struct fwd_write w = { real, fd, buf, n, off, true };

	if (!f || f->kind != K_CLEAR_REFS || off < 0)
		return real(fd, buf, n, off);
	return clear_refs_write(f, buf, n, fwd_write, &w);
}

PUBLIC ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	return do_pwrite(real_pwrite(), fd, buf, n, off);
}

PUBLIC ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	return do_pwrite(real_pwrite64(), fd, buf, n, off);
}

/* clear_refs has no write_iter: the kernel writes each iovec in turn */
PUBLIC ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	struct sfile *f = ours(fd);
	ssize_t done = 0, r;
	int i;

	if (!f || f->kind != K_CLEAR_REFS || cnt <= 0 || cnt > IOV_MAX)
		return real_writev()(fd, iov, cnt);
	for (i = 0; i < cnt; i++) {
		struct fwd_write w = { NULL, fd, iov[i].iov_base,
				       iov[i].iov_len, 0, false };

		if (!iov[i].iov_len)
			continue;
		r = clear_refs_write(f, iov[i].iov_base, iov[i].iov_len,
				     fwd_write, &w);
		if (r < 0)
			return done ? done : r;
		done += r;
		if ((size_t)r < iov[i].iov_len)
			break;
	}
	return done;
}

/* ---------- positions, copies, close ---------- */

static off_t do_lseek(off_t (*real)(int, off_t, int), int fd, off_t off,
		      int whence)
{
	struct sfile *f = ours(fd);
	off_t r = -1;

	if (!f || f->kind != K_SMAPS)
		return real(fd, off, whence);
	/* seq_lseek: SEEK_SET and SEEK_CUR only */
	pthread_mutex_lock(&f->lock);
	if (whence == SEEK_CUR)
		off += f->pos;
	if ((whence == SEEK_SET || whence == SEEK_CUR) && off >= 0)
		r = f->pos = off;
	else
		errno = EINVAL;
	pthread_mutex_unlock(&f->lock);
	return r;
}

PUBLIC off_t lseek(int fd, off_t off, int whence)
{
	return do_lseek(real_lseek(), fd, off, whence);
}

PUBLIC off_t lseek64(int fd, off_t off, int whence)
{
	return do_lseek(real_lseek64(), fd, off, whence);
}

/* @nfd is now a copy of @ofd (or a different file, when ofd is not ours) */
static int copied(int ofd, int nfd)
{
	if (nfd >= 0 && !in_lib)
		fd_store(nfd, fd_get(ofd));
	return nfd;
}

PUBLIC int dup(int fd)
{
	return copied(fd, real_dup()(fd));
}

PUBLIC int dup2(int fd, int nfd)
{
	if (!in_lib && is_priv_fd(nfd)) {
		/* keep the tracker alive: the program never had this fd */
		errno = EBUSY;
		return -1;
	}
	return copied(fd, real_dup2()(fd, nfd));
}

PUBLIC int dup3(int fd, int nfd, int flags)
{
	if (!in_lib && is_priv_fd(nfd)) {
		errno = EBUSY;
		return -1;
	}
	return copied(fd, real_dup3()(fd, nfd, flags));
}

static int do_fcntl(int (*real)(int, int, ...), int fd, int cmd, void *arg)
{
	int r = real(fd, cmd, arg);

	if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)
		copied(fd, r);
	return r;
}

PUBLIC int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	return do_fcntl(real_fcntl(), fd, cmd, arg);
}

PUBLIC int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	return do_fcntl(real_fcntl64(), fd, cmd, arg);
}

PUBLIC int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	/* before it takes effect: a fast read racing it must not trust 57 */
	if (!in_lib && req == UFFDIO_REGISTER && !is_priv_fd(fd))
		atomic_store(&foreign_uffd, true);
	return real_ioctl()(fd, req, arg);
}

PUBLIC int close(int fd)
{
	if (in_lib)
		return real_close()(fd);
	if (is_priv_fd(fd)) {
		/* not the program's: as if it were not open */
		errno = EBADF;
		return -1;
	}
	fd_store(fd, NULL);
	return real_close()(fd);
}

static void forget_range(unsigned int lo, unsigned int hi)
{
	unsigned int fd;

	for (fd = lo; fd <= hi && fd < FD_L1 * FD_L2; fd++) {
		if (!atomic_load(&fdtab[fd / FD_L2])) {
			fd |= FD_L2 - 1;
			continue;
		}
		if (!is_priv_fd((int)fd))
			fd_store((int)fd, NULL);
	}
}

/* Close [lo, hi] around the tracker's own fds. */
PUBLIC int close_range(unsigned int lo, unsigned int hi, int flags)
{
	unsigned int a = lo;
	int i, r = 0;

	if (in_lib || !npriv || (flags & CLOSE_RANGE_CLOEXEC))
		goto plain;
	while (a <= hi && !r) {
		unsigned int b = hi;

		for (i = 0; i < npriv; i++)
			if ((unsigned int)priv_fd[i] >= a &&
			    (unsigned int)priv_fd[i] - 1 < b)
				b = (unsigned int)priv_fd[i] - 1;
		if (is_priv_fd((int)a)) {
			a++;
			continue;
		}
		r = real_close_range()(a, b, flags);
		if (!r && !(flags & CLOSE_RANGE_UNSHARE))
			forget_range(a, b);
		if (b == UINT_MAX)
			break;
		a = b + 1;
	}
	return r;
plain:
	r = real_close_range()(lo, hi, flags);
	if (!r && !in_lib && !(flags & CLOSE_RANGE_CLOEXEC))
		forget_range(lo, hi);
	return r;
}

PUBLIC void closefrom(int lo)
{
	if (lo < 0)
		lo = 0;
	if (in_lib || !npriv) {
		real_closefrom()(lo);
		if (!in_lib)
			forget_range((unsigned int)lo, UINT_MAX);
		return;
	}
	close_range((unsigned int)lo, UINT_MAX, 0);
}
