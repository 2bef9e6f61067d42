// SPDX-License-Identifier: MIT
/*
 * libsoftdirty-preload.so: the fast pagemap read (no PROCMAP_QUERY, no
 * PAGEMAP_SCAN: the kernel's uffd-wp bit says it) and its fallbacks.
 *
 * After a clear: 1-page and 8-page reads of clean, written, mprotected,
 * never populated, zapped, replaced (munmap + mmap), moved, new, grown-into,
 * THP and vDSO pages must give exactly the library's bit 55.  Then, with a
 * seccomp filter making PAGEMAP_SCAN and PROCMAP_QUERY fail (EPERM), a read
 * that still gives the exact answer took the fast path, and a read that
 * must fall back gets no answer from the library and comes back all dirty
 * (the shim's answer when it cannot rule a write out).  Last, a userfaultfd
 * of the program's own turns the fast path off.
 *
 * The test re-executes itself with LD_PRELOAD set (SOFTDIRTY_PRELOAD, else
 * ../libsoftdirty-preload.so next to its directory).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common.h"
#include "uapi.h"

#define SD_BIT	(1ULL << 55)
#define WP_BIT	(1ULL << 57)
#define HUGE	(2UL << 20)
#define CHILD_ENV "SOFTDIRTY_PRELOAD_FAST_CHILD"
#define MIN(a, b)	((a) < (b) ? (a) : (b))

#if defined(__x86_64__)
#define SECCOMP_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SECCOMP_ARCH AUDIT_ARCH_AARCH64
#endif

static int pm;

static off_t pm_off(const void *p)
{
	return (off_t)((uintptr_t)p / PG * 8);
}

static void raw_read(const void *p, uint64_t *e, size_t n)
{
	if (syscall(SYS_pread64, (long)pm, e, (long)(n * 8), (long)pm_off(p)) !=
	    (long)(n * 8))
		tap_bail("raw pagemap read: %s", strerror(errno));
}

static void shim_read(const void *p, uint64_t *e, size_t n)
{
	if (pread(pm, e, n * 8, pm_off(p)) != (ssize_t)(n * 8))
		tap_bail("pagemap pread: %s", strerror(errno));
}

static void clear(void)
{
	int fd = open("/proc/self/clear_refs", O_WRONLY);

	if (fd < 0 || write(fd, "4", 1) != 1)
		tap_bail("clear_refs: %s", strerror(errno));
	close(fd);
}

/*
 * Reads of @n pages at @p, @step pages each (1 or 8): bit 55 as @exp
 * (one char per page, '1' dirty), every other bit the kernel's but 57.
 * With @all_dirty, every page must read dirty instead.
 */
static bool reads_give(const char *p, size_t n, size_t step, const char *exp,
		       bool all_dirty)
{
	uint64_t got[8], raw[8];
	size_t i, k;

	for (i = 0; i < n; i += step) {
		size_t c = MIN(step, n - i);

		shim_read(p + i * PG, got, c);
		raw_read(p + i * PG, raw, c);
		for (k = 0; k < c; k++) {
			bool want = all_dirty || exp[i + k] == '1';

			if (!!(got[k] & SD_BIT) != want ||
			    (got[k] & ~(SD_BIT | WP_BIT)) !=
			    (raw[k] & ~(SD_BIT | WP_BIT))) {
				tap_diag("page %zu (read of %zu at %zu): %#llx, "
					 "kernel %#llx, want 55=%d", i + k, c, i,
					 (unsigned long long)got[k],
					 (unsigned long long)raw[k], want);
				return false;
			}
		}
	}
	return true;
}

static void check(const char *what, const char *p, const char *exp,
		  bool all_dirty)
{
	size_t n = strlen(exp);

	tap_ok(reads_give(p, n, 1, exp, all_dirty) &&
	       reads_give(p, n, 8, exp, all_dirty), "%s", what);
}

static char *map(size_t pages, bool populate)
{
	char *p = mmap(NULL, pages * PG, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS |
		       (populate ? MAP_POPULATE : 0), -1, 0);

	if (p == MAP_FAILED)
		tap_bail("mmap: %s", strerror(errno));
	return p;
}

/* PAGEMAP_SCAN and PROCMAP_QUERY fail with EPERM from now on. */
static bool block_library_calls(void)
{
#ifdef SECCOMP_ARCH
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SECCOMP_ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		/* the command's low 32 bits (little endian) */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, args[1])),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)PAGEMAP_SCAN, 2, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)PROCMAP_QUERY, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
	};
	struct sock_fprog prog = { ARRAY_SIZE(f), f };

	return !prctl(PR_SET_NO_NEW_PRIVS, 1L, 0L, 0L, 0L) &&
	       !prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0L, 0L);
#else
	return false;
#endif
}

static void run(void)
{
	char exp[17], *a, *u, *z, *r, *mv, *n, *k, *raw_h = NULL, *h = NULL;
	const char *vdso = (const char *)getauxval(AT_SYSINFO_EHDR);
	uint64_t e;
	void *to;
	int i, uffd;

	pm = open("/proc/self/pagemap", O_RDONLY);
	if (pm < 0)
		tap_bail("open pagemap: %s", strerror(errno));
	/*
	 * The tracker and its buffers first: the clear below must not map
	 * anything into the hole after k, which the test maps into later.
	 */
	clear();
	a = map(16, true);		/* written, mprotected */
	u = map(8, false);		/* never populated */
	z = map(8, true);		/* a page zapped */
	r = map(8, true);		/* replaced */
	mv = map(8, true);		/* moved */
	k = map(16, true);		/* the second half new: grown */
	/* two 2 MiB blocks mapped huge, if the kernel gives THPs */
	raw_h = mmap(NULL, 3 * HUGE, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw_h != MAP_FAILED) {
		h = (char *)(((uintptr_t)raw_h + HUGE - 1) & ~(HUGE - 1));
		madvise(h, 2 * HUGE, MADV_HUGEPAGE);
		memset(h, 1, 2 * HUGE);
		if (td_anon_huge_kb((uintptr_t)h, (uintptr_t)h + 2 * HUGE) <
		    (long)(2 * HUGE / 1024))
			h = NULL;
	}

	munmap(k + 8 * PG, 8 * PG);
	clear();
	/* grown in place (never over something else), before other mmaps */
	if (mremap(k, 8 * PG, 16 * PG, 0) != k)
		tap_bail("mremap grow in place: %s", strerror(errno));
	memset(k + 8 * PG, 1, 8 * PG);
	raw_read(a, &e, 1);
	if (!(e & WP_BIT)) {
		tap_skip("the shim does not track with uffd-wp here "
			 "(no UFFD_FEATURE_WP_ASYNC, or a soft-dirty kernel)",
			 "fast pagemap reads");
		return;
	}

	a[1 * PG] = 1;
	a[5 * PG] = 1;
	a[9 * PG] = 1;
	a[13 * PG] = 1;
	mprotect(a + 8 * PG, 4 * PG, PROT_READ);
	mprotect(a + 12 * PG, 4 * PG, PROT_NONE);
	(void)*(volatile char *)(u + 3 * PG);	/* a read fault: zero page */
	madvise(z + 2 * PG, PG, MADV_DONTNEED);
	if (mmap(r, 8 * PG, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_POPULATE, -1,
		 0) != r)
		tap_bail("mmap MAP_FIXED: %s", strerror(errno));
	to = td_free_range(8 * PG);
	mv = mremap(mv, 8 * PG, 8 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, to);
	if (mv == MAP_FAILED)
		tap_bail("mremap: %s", strerror(errno));
	n = map(8, true);
	if (h)
		h[7 * PG] = 2;	/* splits the first block */

	raw_read(u, &e, 1);
	tap_diag("a never populated page after the clear: kernel entry %#llx",
		 (unsigned long long)e);
	if (vdso) {
		raw_read(vdso, &e, 1);
		tap_diag("the vDSO's first page: kernel entry %#llx",
			 (unsigned long long)e);
	}

	/* the library's answers, read by the fast path or not */
	check("written pages, and only they, dirty (mprotected RO and NONE "
	      "too)", a, "0100010001000100", false);
	check("never populated pages (uffd-wp markers) and a read fault: "
	      "clean", u, "00000000", false);
	check("a zapped page (MADV_DONTNEED): dirty, the rest clean", z,
	      "00100000", false);
	check("munmap + mmap at the same address: all dirty (new)", r,
	      "11111111", false);
	check("moved by mremap: all dirty", mv, "11111111", false);
	check("a new mapping: all dirty", n, "11111111", false);
	check("a known half and a new half: clean, then dirty", k,
	      "0000000011111111", false);
	if (vdso)
		check("the vDSO: never reported", vdso, "0", false);
	if (h) {
		memset(exp, '1', 16);
		exp[16] = 0;
		check("THP: the written block whole", h, exp, false);
		check("THP: the other block clean", h + HUGE + 16 * PG,
		      "0000000000000000", false);
		check("THP: the written block's end", h + HUGE - 16 * PG, exp,
		      false);
	} else {
		tap_skip("no transparent huge pages (THP disabled or none "
			 "free)", "THP blocks");
	}

	if (!block_library_calls()) {
		tap_skip("seccomp filter refused (no CONFIG_SECCOMP_FILTER?)",
			 "the fast path taken, and its fallbacks");
		return;
	}
	check("fast path (no PAGEMAP_SCAN, no PROCMAP_QUERY): written, "
	      "mprotected", a, "0100010001000100", false);
	check("fast path: uffd-wp markers and the zero page", u, "00000000",
	      false);
	for (i = 0; i < 8; i++)
		exp[i] = i == 2 ? '1' : '0';
	exp[8] = 0;
	tap_ok(reads_give(z, 2, 1, exp, false) &&
	       reads_give(z + 3 * PG, 5, 1, exp + 3, false),
	       "fast path: the zapped page's neighbours");
	tap_ok(reads_give(z, 8, 8, NULL, true),
	       "fallback: a read holding the zapped (empty) PTE");
	tap_ok(reads_give(k + 4 * PG, 8, 8, NULL, true),
	       "fallback: a read reaching into a new mapping");
	if (vdso)
		tap_ok(reads_give(vdso, 1, 1, NULL, true),
		       "fallback: the vDSO (never reported, not written)");
	if (h)
		tap_ok(reads_give(h + HUGE + 16 * PG, 1, 1, NULL, true),
		       "fallback: a clean page of a block armed huge");

	/* the program's own userfaultfd: bit 57 may be its own */
	uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
	if (uffd < 0) {
		tap_skip("userfaultfd refused (vm.unprivileged_userfaultfd?)",
			 "the program's own userfaultfd");
	} else {
		struct uffdio_api api = { .api = UFFD_API };
		char *own = map(1, true);
		struct uffdio_register reg = {
			.range = { (uintptr_t)own, PG },
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};

		if (ioctl(uffd, UFFDIO_API, &api) ||
		    ioctl(uffd, UFFDIO_REGISTER, &reg))
			tap_bail("the program's UFFDIO_REGISTER: %s",
				 strerror(errno));
		tap_ok(reads_give(a, 1, 1, NULL, true),
		       "fallback: after a UFFDIO_REGISTER of the program's own");
		close(uffd);
	}
}

/* ---------- setup ---------- */

int main(int argc, char **argv)
{
	(void)argc;
	tap_init("preload-fast");
	if (!td_under_preload(argv, CHILD_ENV))
		return tap_done();
	run();
	return tap_done();
}
