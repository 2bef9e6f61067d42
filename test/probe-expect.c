// SPDX-License-Identifier: MIT
/*
 * softdirty_probe() against the facts: a probe that wrongly says "no"
 * would hide a backend from every other test.  Each kernel mechanism is
 * checked here by hand, independently of the library, and the probe must
 * agree; where the harness says what the kernel is known to have
 * (SOFTDIRTY_EXPECT, e.g. "sd,noscan,nowpasync" in the qemu runs), the
 * probe must agree with that too.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "uapi.h"	/* the kernel's uapi values only, no library code */

/* clear_refs "4", write, bit 55 set; in a child so nothing else is reset */
static bool raw_soft_dirty(void)
{
	pid_t pid = fork();
	int st;

	if (pid == 0) {
		volatile char *m = mmap(NULL, PG, PROT_READ | PROT_WRITE,
					MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		int pm = open("/proc/self/pagemap", O_RDONLY);
		int cr = open("/proc/self/clear_refs", O_WRONLY);
		uint64_t e = 0;

		m[0] = 1;
		if (cr < 0 || write(cr, "4", 1) != 1)
			_exit(1);
		m[0] = 2;
		if (pread(pm, &e, 8, (off_t)((uintptr_t)m / PG * 8)) != 8)
			_exit(1);
		_exit(e & (1ULL << 55) ? 0 : 1);
	}
	return pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) &&
	       !WEXITSTATUS(st);
}

static bool raw_wp_async(void)
{
	struct uffdio_api api = { .api = UFFD_API };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	bool ok;

	if (fd < 0)
		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
	if (fd < 0)
		return false;
	ok = !ioctl(fd, UFFDIO_API, &api) && (api.features & UFFD_FEATURE_WP_ASYNC);
	close(fd);
	return ok;
}

static bool raw_pagemap_scan(void)
{
	struct pm_scan_arg a = { .size = sizeof(a), .end = PG };
	int pm = open("/proc/self/pagemap", O_RDONLY);
	bool ok = pm >= 0 && ioctl(pm, PAGEMAP_SCAN, &a) >= 0;

	if (pm >= 0)
		close(pm);
	return ok;
}

static bool expect_has(const char *list, const char *word)
{
	size_t n = strlen(word);
	const char *p = list;

	while ((p = strstr(p, word))) {
		if ((p == list || p[-1] == ',') && (p[n] == ',' || !p[n]))
			return true;
		p += n;
	}
	return false;
}

int main(void)
{
	struct softdirty_probe_result r[SOFTDIRTY_BACKEND_COUNT];
	const char *expect = getenv("SOFTDIRTY_EXPECT");
	bool sd, wpa, scan;
	int n;

	tap_init("probe-expect");
	n = softdirty_probe(r, SOFTDIRTY_BACKEND_COUNT);
	if (n < 0)
		tap_bail("softdirty_probe: %s", strerror(-n));
	sd = raw_soft_dirty();
	wpa = raw_wp_async();
	scan = raw_pagemap_scan();
	tap_diag("by hand: soft-dirty %s, UFFD_FEATURE_WP_ASYNC %s, PAGEMAP_SCAN %s",
		 sd ? "yes" : "no", wpa ? "yes" : "no", scan ? "yes" : "no");

	tap_ok(!r[SOFTDIRTY_BACKEND_KERNEL].status == sd,
	       "kernel backend: probe says %s, clear_refs + bit 55 by hand says %s (%s)",
	       r[SOFTDIRTY_BACKEND_KERNEL].status ? "no" : "yes", sd ? "yes" : "no",
	       r[SOFTDIRTY_BACKEND_KERNEL].reason);
	tap_ok(!r[SOFTDIRTY_BACKEND_UFFD].status == (wpa && scan),
	       "uffd backend: probe says %s, WP_ASYNC and PAGEMAP_SCAN by hand say %s (%s)",
	       r[SOFTDIRTY_BACKEND_UFFD].status ? "no" : "yes",
	       wpa && scan ? "yes" : "no", r[SOFTDIRTY_BACKEND_UFFD].reason);
	tap_ok(!r[SOFTDIRTY_BACKEND_MPROTECT].status,
	       "mprotect backend works on any kernel (%s)",
	       r[SOFTDIRTY_BACKEND_MPROTECT].reason);
	tap_ok(!r[SOFTDIRTY_BACKEND_HASH].status,
	       "hash backend works on any kernel (%s)",
	       r[SOFTDIRTY_BACKEND_HASH].reason);
	tap_ok(n == !!sd + !!(wpa && scan) + 2,
	       "probe counts %d working backends", n);
	/* what the reason says when a backend does not work names the feature */
	if (!sd)
		tap_ok(strstr(r[SOFTDIRTY_BACKEND_KERNEL].reason,
			      "CONFIG_MEM_SOFT_DIRTY") != NULL,
		       "kernel backend's reason names CONFIG_MEM_SOFT_DIRTY");
	if (!(wpa && scan))
		tap_ok(strstr(r[SOFTDIRTY_BACKEND_UFFD].reason, "WP_ASYNC") ||
		       strstr(r[SOFTDIRTY_BACKEND_UFFD].reason, "PAGEMAP_SCAN"),
		       "uffd backend's reason names the missing feature");

	if (expect && *expect) {
		tap_ok(!r[SOFTDIRTY_BACKEND_KERNEL].status ==
		       expect_has(expect, "sd"),
		       "kernel backend as this kernel is known to be (%s)", expect);
		tap_ok(!r[SOFTDIRTY_BACKEND_UFFD].status ==
		       (expect_has(expect, "scan") && expect_has(expect, "wpasync")),
		       "uffd backend as this kernel is known to be (%s)", expect);
	}
	return tap_done();
}
