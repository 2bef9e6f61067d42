// SPDX-License-Identifier: MIT
/*
 * The "hash" backend reports changed contents, exactly:
 *   - pages written with new bytes, and only those;
 *   - a page rewritten with identical bytes is NOT reported (the documented
 *     limitation of a content-based tracker);
 *   - a present page dropped by MADV_DONTNEED is reported;
 *   - writes by the kernel (read(2), process_vm_writev) and by another
 *     process through shared memory are reported;
 *   - a page first read (zero page) or written with zeros after the reset
 *     is not a change; a new mapping is reported NEW;
 *   - a writable page that cannot be read (PROT_WRITE only) is UNTRACKED,
 *     a page written before PROT_NONE is reported;
 *   - close leaves no fd behind.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

enum { N = 64 };

static struct softdirty *sd;

static void reset_or_bail(void)
{
	int r = softdirty_reset(sd);

	if (r < 0)
		tap_bail("softdirty_reset: %s", strerror(-r));
}

/* Every page of @p's N pages reported with exactly @want[i] (0: not). */
static bool check(char *p, size_t n, const uint8_t *want, unsigned int flags,
		  const char *desc)
{
	uint8_t pf[N];
	size_t i, bad = 0;
	long r = td_collect_region(sd, p, n, flags, pf);

	if (r < 0)
		return tap_ok(false, "%s: collect: %s", desc, strerror((int)-r));
	for (i = 0; i < n; i++) {
		if (pf[i] == want[i])
			continue;
		if (bad++ < 8)
			tap_diag("page %zu: got flags %u, want %u", i, pf[i],
				 want[i]);
	}
	return tap_ok(!bad, "%s", desc);
}

static void test_probe(void)
{
	struct softdirty_probe_result res[SOFTDIRTY_BACKEND_COUNT];
	const struct softdirty_probe_result *h = &res[SOFTDIRTY_BACKEND_HASH];
	int r = softdirty_probe(res, SOFTDIRTY_BACKEND_COUNT);

	if (r < 0)
		tap_bail("softdirty_probe: %s", strerror(-r));
	if (h->status)
		tap_bail("hash backend not available: %s", h->reason);
	tap_ok(!strcmp(h->name, "hash"), "probe: name \"hash\"");
	{
		unsigned int need = SOFTDIRTY_CAP_SELF |
			SOFTDIRTY_CAP_KERNEL_WRITES | SOFTDIRTY_CAP_CONTENTS |
			SOFTDIRTY_CAP_REGROWN | SOFTDIRTY_CAP_PROT_CHANGES |
			SOFTDIRTY_CAP_REMOTE;

		/* HUGE_PAGES only where PAGEMAP_SCAN tells huge pages */
		tap_ok((h->caps & need) == need &&
		       !(h->caps & SOFTDIRTY_CAP_EXACT),
		       "probe: caps SELF|REMOTE|KERNEL_WRITES|CONTENTS|REGROWN|"
		       "PROT_CHANGES, not EXACT (got %#x)", h->caps);
	}
	tap_ok(strstr(h->reason, "identical") != NULL,
	       "probe: reason states the identical-bytes limitation");
	tap_diag("hash: %s", h->reason);
}

static void test_writes(char *p)
{
	uint8_t want[N] = { 0 };
	static const size_t pages[] = { 0, 1, 7, 31, 32, 63 };
	size_t i;

	reset_or_bail();
	check(p, N, want, 0, "nothing written: nothing reported");
	for (i = 0; i < ARRAY_SIZE(pages); i++) {
		p[pages[i] * PG + 123] ^= 0x55;
		want[pages[i]] = SOFTDIRTY_RANGE_WRITTEN;
	}
	check(p, N, want, 0, "exactly the 6 written pages reported");
	check(p, N, want, 0, "collect without reset: reported again");
	check(p, N, want, SOFTDIRTY_COLLECT_RESET, "collect-and-reset: same");
	memset(want, 0, sizeof(want));
	check(p, N, want, 0, "after collect-and-reset: nothing");
}

static void test_identical(char *p)
{
	uint8_t want[N] = { 0 };
	char save[PG];

	reset_or_bail();
	memcpy(save, p + 5 * PG, PG);
	memset(p + 5 * PG, 0xee, PG);
	memcpy(p + 5 * PG, save, PG);
	p[9 * PG] = p[9 * PG];
	check(p, N, want, 0,
	      "rewrite with identical bytes: not reported (limitation)");
}

static void test_dontneed(char *p)
{
	uint8_t want[N] = { 0 };

	reset_or_bail();
	p[10 * PG] ^= 1;
	madvise(p + 10 * PG, PG, MADV_DONTNEED);
	/* present at the reset, unchanged, then dropped: zeros now */
	madvise(p + 11 * PG, PG, MADV_DONTNEED);
	want[10] = want[11] = SOFTDIRTY_RANGE_WRITTEN;
	check(p, N, want, SOFTDIRTY_COLLECT_RESET,
	      "MADV_DONTNEED of a written and of a clean page: reported");
	memset(want, 0, sizeof(want));
	check(p, N, want, 0, "absent page after reset: nothing");
	/* read-faulting the zero page, or writing zeros, is no change */
	if (p[10 * PG + 1] || p[11 * PG + 1])
		tap_diag("unexpected non-zero byte");
	p[11 * PG] = 0;
	check(p, N, want, 0, "zero page read, zeros written: nothing");
	memset(p + 10 * PG, 0x11, PG);
	memset(p + 11 * PG, 0x22, PG);
}

static void test_kernel_writes(char *p)
{
	uint8_t want[N] = { 0 };
	int fds[2], st;
	pid_t pid;

	reset_or_bail();
	if (pipe(fds))
		tap_bail("pipe: %s", strerror(errno));
	if (write(fds[1], "kernel", 6) != 6 ||
	    read(fds[0], p + 20 * PG + 8, 6) != 6)
		tap_bail("pipe I/O: %s", strerror(errno));
	close(fds[0]);
	close(fds[1]);
	want[20] = SOFTDIRTY_RANGE_WRITTEN;
	pid = fork();
	if (pid < 0)
		tap_bail("fork: %s", strerror(errno));
	if (!pid) {
		char c = 'x';
		struct iovec l = { &c, 1 };
		struct iovec r = { p + 21 * PG + 9, 1 };

		_exit(process_vm_writev(getppid(), &l, 1, &r, 1, 0) == 1 ? 0 : 1);
	}
	waitpid(pid, &st, 0);
	if (WIFEXITED(st) && !WEXITSTATUS(st))
		want[21] = SOFTDIRTY_RANGE_WRITTEN;
	else
		tap_diag("process_vm_writev from a child failed: not checked");
	check(p, N, want, SOFTDIRTY_COLLECT_RESET,
	      "read(2) and process_vm_writev: exactly those pages");
}

static void test_shared(void)
{
	char *s = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint8_t want[N] = { 0 };
	int st;
	pid_t pid;

	if (s == MAP_FAILED)
		tap_bail("mmap shared: %s", strerror(errno));
	memset(s, 1, 4 * PG);
	reset_or_bail();
	pid = fork();
	if (pid < 0)
		tap_bail("fork: %s", strerror(errno));
	if (!pid) {
		s[2 * PG + 5] = 9;
		_exit(0);
	}
	waitpid(pid, &st, 0);
	want[2] = SOFTDIRTY_RANGE_WRITTEN;
	check(s, 4, want, SOFTDIRTY_COLLECT_RESET,
	      "another process's write to shared memory: reported");
	munmap(s, 4 * PG);
}

static void test_new(void)
{
	uint8_t want[N];
	char *q;

	reset_or_bail();
	q = td_mmap(4 * PG);
	q[PG] = 1;
	memset(want, SOFTDIRTY_RANGE_NEW, sizeof(want));
	check(q, 4, want, SOFTDIRTY_COLLECT_RESET, "new mapping: all NEW");
	memset(want, 0, sizeof(want));
	check(q, 4, want, 0, "after reset: nothing");
	q[2 * PG] = 2;
	want[2] = SOFTDIRTY_RANGE_WRITTEN;
	check(q, 4, want, 0, "then a write: that page");
	munmap(q, 4 * PG);
}

static void test_unreadable(void)
{
	char *q = td_mmap(4 * PG);
	uint8_t want[N] = { 0 };

	memset(q, 3, 4 * PG);
	reset_or_bail();
	q[0] = 4;
	if (mprotect(q, 2 * PG, PROT_WRITE) ||
	    mprotect(q + 2 * PG, 2 * PG, PROT_NONE))
		tap_bail("mprotect: %s", strerror(errno));
	want[0] = want[1] = SOFTDIRTY_RANGE_UNTRACKED;
	/* hashed when readable, unreadable now: cannot rule a change out */
	want[2] = want[3] = SOFTDIRTY_RANGE_UNTRACKED;
	check(q, 4, want, SOFTDIRTY_COLLECT_RESET,
	      "PROT_WRITE-only and newly PROT_NONE pages: UNTRACKED");
	want[2] = want[3] = 0;
	check(q, 4, want, 0, "after reset: PROT_NONE skipped");
	if (mprotect(q, 4 * PG, PROT_READ | PROT_WRITE))
		tap_bail("mprotect: %s", strerror(errno));
	/* digests unknown while unreadable: reported once readable again */
	want[0] = want[1] = want[2] = want[3] = SOFTDIRTY_RANGE_WRITTEN;
	check(q, 4, want, SOFTDIRTY_COLLECT_RESET,
	      "readable again: pages present while unreadable reported");
	memset(want, 0, sizeof(want));
	check(q, 4, want, 0, "then nothing");
	munmap(q, 4 * PG);
}

static void test_close(void)
{
	struct softdirty_opts o = { .sz = sizeof(o), .backend = "hash" };
	struct softdirty *t;
	int before, r;

	softdirty_close(sd);
	sd = NULL;
	before = td_count_fds();
	r = softdirty_open(&t, 0, &o);
	if (r)
		tap_bail("softdirty_open: %s", strerror(-r));
	softdirty_close(t);
	tap_ok(td_count_fds() == before, "close leaves no fd behind (%d -> %d)",
	       before, td_count_fds());
}

int main(int argc, char **argv)
{
	char *p;

	(void)argc;
	tap_init(argv[0]);
	test_probe();
	p = td_mmap(N * PG);
	memset(p, 0x33, N * PG);
	sd = td_open("hash");
	tap_ok(!strcmp(softdirty_backend(sd), "hash"), "opened \"hash\"");
	test_writes(p);
	test_identical(p);
	test_dontneed(p);
	test_kernel_writes(p);
	test_shared();
	test_new();
	test_unreadable();
	test_close();
	munmap(p, N * PG);
	return tap_done();
}
