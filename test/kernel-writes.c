// SPDX-License-Identifier: MIT
/*
 * Writes done by the kernel on the process's behalf:
 *   - read(2) from a pipe into a tracked page (populated, and never touched);
 *   - process_vm_writev() from a forked child into the parent's page;
 *   - pwrite() to /proc/self/mem.
 * A backend with SOFTDIRTY_CAP_KERNEL_WRITES must report each page, exactly
 * (EXACT backends: nothing else in the region).  A backend without it must
 * say so in probe (reason non-empty) and must not lose a write silently:
 * either the kernel write fails (EFAULT: the mprotect backend's protected
 * page) and the data is neither lost nor written, or the page is reported.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

enum { N = 8 };

static void wr_all(char *p)
{
	size_t i;

	for (i = 0; i < N; i++)
		p[i * PG] = (char)(p[i * PG] + 1);
}

static void reset_or_bail(struct softdirty *sd)
{
	int r = softdirty_reset(sd);

	if (r < 0)
		tap_bail("softdirty_reset: %s", strerror(-r));
}

/* check that page @k of @p is reported, and only it for EXACT */
static void expect_page(const struct td_backend *be, struct softdirty *sd,
			char *p, size_t k, const char *desc)
{
	uint8_t pf[N], w[N] = { 0 };

	w[k] = 1;
	if (td_collect_region(sd, p, N, 0, pf) < 0)
		tap_ok(false, "%s: %s: collect failed", be->name, desc);
	else
		td_check_pages(be, desc, p, N, pf, w, NULL, NULL);
}

static bool reported(struct softdirty *sd, char *p, size_t k)
{
	uint8_t pf[N];

	if (td_collect_region(sd, p, N, 0, pf) < 0)
		return false;
	return pf[k] != 0;
}

static void pipe_read(const struct td_backend *be, struct softdirty *sd,
		      bool populated)
{
	const char *what = populated ? "read(2) from a pipe into a written page"
				     : "read(2) from a pipe into a never touched page";
	char msg[100], back[100];
	char *p = td_mmap(N * PG);
	int fds[2];
	ssize_t r;
	size_t k = 3;

	memset(msg, 'k', sizeof(msg));
	msg[0] = populated ? 'P' : 'U';
	if (populated)
		wr_all(p);
	if (pipe(fds))
		tap_bail("pipe: %s", strerror(errno));
	reset_or_bail(sd);
	if (write(fds[1], msg, sizeof(msg)) != (ssize_t)sizeof(msg))
		tap_bail("pipe write: %s", strerror(errno));
	r = read(fds[0], p + k * PG + 50, sizeof(msg));
	if (be->caps & SOFTDIRTY_CAP_KERNEL_WRITES) {
		if (!tap_ok(r == (ssize_t)sizeof(msg) &&
			    !memcmp(p + k * PG + 50, msg, sizeof(msg)),
			    "%s: %s: read worked", be->name, what))
			tap_diag("read: %zd (%s)", r, r < 0 ? strerror(errno) : "");
		expect_page(be, sd, p, k, what);
	} else if (r < 0 && errno == EFAULT) {
		/* the data must still be in the pipe, the page untouched */
		bool untouched = p[k * PG + 50] != msg[0];
		ssize_t r2;

		td_touch(back, sizeof(back));
		r2 = read(fds[0], back, sizeof(back));
		tap_ok(untouched && r2 == (ssize_t)sizeof(msg) &&
		       !memcmp(back, msg, sizeof(msg)),
		       "%s: %s: EFAULT, page untouched, nothing lost from the "
		       "pipe (backend cannot see kernel writes)", be->name, what);
	} else {
		bool seen = r > 0 && reported(sd, p, k);

		tap_ok(seen, "%s: %s: read returned %zd: the write must then be "
		       "reported (no silent loss)", be->name, what, r);
	}
	close(fds[0]);
	close(fds[1]);
	munmap(p, N * PG);
}

static void vm_writev(const struct td_backend *be, struct softdirty *sd)
{
	const char *what = "process_vm_writev from a child into the page";
	char *p = td_mmap(N * PG);
	size_t k = 5;
	char *target = p + k * PG + 123;
	pid_t pid;
	int st, res;
	char before;

	wr_all(p);
	before = *target;
	reset_or_bail(sd);
	pid = fork();
	if (pid < 0)
		tap_bail("fork: %s", strerror(errno));
	if (pid == 0) {
		char buf[16];
		struct iovec l = { buf, sizeof(buf) };
		struct iovec rm = { target, sizeof(buf) };
		ssize_t r;

		memset(buf, 'V', sizeof(buf));
		r = process_vm_writev(getppid(), &l, 1, &rm, 1, 0);
		if (r == (ssize_t)sizeof(buf))
			_exit(0);
		_exit(r < 0 && errno == EFAULT ? 2 :
		      r < 0 && (errno == EPERM || errno == ENOSYS) ? 3 : 4);
	}
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		tap_bail("child died");
	res = WEXITSTATUS(st);
	if (res == 3) {
		tap_skip("process_vm_writev not permitted here", "%s: %s",
			 be->name, what);
	} else if (be->caps & SOFTDIRTY_CAP_KERNEL_WRITES) {
		tap_ok(res == 0 && *target == 'V', "%s: %s: write worked "
		       "(child status %d)", be->name, what, res);
		expect_page(be, sd, p, k, what);
	} else if (res == 2) {
		tap_ok(*target == before, "%s: %s: EFAULT and the page is "
		       "unchanged (backend cannot see kernel writes)", be->name,
		       what);
	} else {
		tap_ok(res == 0 && reported(sd, p, k), "%s: %s: child status %d: "
		       "the write must then be reported (no silent loss)",
		       be->name, what, res);
	}
	munmap(p, N * PG);
}

static void proc_mem(const struct td_backend *be, struct softdirty *sd)
{
	const char *what = "pwrite to /proc/self/mem";
	char *p = td_mmap(N * PG);
	size_t k = 6;
	char buf[8] = "MEMWRIT";
	int fd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
	ssize_t r;

	if (fd < 0) {
		tap_skip("cannot open /proc/self/mem", "%s: %s", be->name, what);
		munmap(p, N * PG);
		return;
	}
	wr_all(p);
	reset_or_bail(sd);
	r = pwrite(fd, buf, sizeof(buf), (off_t)(uintptr_t)(p + k * PG + 7));
	close(fd);
	if (be->caps & SOFTDIRTY_CAP_KERNEL_WRITES) {
		tap_ok(r == (ssize_t)sizeof(buf), "%s: %s worked", be->name, what);
		expect_page(be, sd, p, k, what);
	} else {
		/*
		 * /proc/PID/mem writes with FOLL_FORCE, through any
		 * protection: a backend that cannot see kernel writes may
		 * miss it; it must say so (checked in run()).
		 */
		tap_diag("%s: %s: returned %zd; reported: %s (documented "
			 "blind spot)", be->name, what, r,
			 reported(sd, p, k) ? "yes" : "no");
	}
	munmap(p, N * PG);
}

static void run(const struct td_backend *be, void *ctx)
{
	struct softdirty *sd;

	(void)ctx;
	if (!(be->caps & SOFTDIRTY_CAP_KERNEL_WRITES))
		tap_ok(be->reason[0] != 0, "%s: probe says it cannot see kernel "
		       "writes (caps lacks KERNEL_WRITES), reason: \"%s\"",
		       be->name, be->reason);
	sd = td_open(be->name);
	pipe_read(be, sd, true);
	pipe_read(be, sd, false);
	vm_writev(be, sd);
	proc_mem(be, sd);
	softdirty_close(sd);
}

int main(int argc, char **argv)
{
	(void)argc;
	tap_init(argv[0]);
	td_for_each_backend("kernel writes", run, NULL);
	return tap_done();
}
