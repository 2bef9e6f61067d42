// SPDX-License-Identifier: MIT
/*
 * End-to-end proof that remote uffd tracking works: sd_inject_userfaultfd()
 * creates a userfaultfd inside a forked target and hands us the fd; then,
 * entirely from here:
 *   - the target has no userfaultfd left in /proc/PID/fd, ours is
 *     close-on-exec;
 *   - UFFDIO_API with UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;
 *   - UFFDIO_REGISTER (WP) of the target's anonymous mapping at the
 *     target's address;
 *   - PAGEMAP_SCAN on /proc/PID/pagemap with PM_SCAN_WP_MATCHING and
 *     PAGE_IS_WRITTEN: a first scan arms, the target writes page 5 (and
 *     a kernel write by read(2) into page 11), the next scan reports
 *     exactly those pages, the one after nothing.
 * Run as root and again as uid 65534 on its own child (there only
 * UFFD_USER_MODE_ONLY userfaultfds may be created: the retry path).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "inject.h"
#include "uapi.h"

#define NPAGES 16

struct child {
	pid_t pid;
	int to, from;
	uint64_t base;
};

/*
 * Commands: 'w' <page> writes that page, 'r' <page> reads 8 bytes from
 * the command pipe into that page (a kernel-mode write); answer 'k'.
 */
static void target(int in, int out)
{
	char *p = mmap(NULL, NPAGES * PG, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t base = (uint64_t)(uintptr_t)p;
	unsigned char cmd[2];

	if (p == MAP_FAILED || write(out, &base, sizeof(base)) != sizeof(base))
		_exit(2);
	while (read(in, cmd, 2) == 2) {
		if (cmd[0] == 'w')
			p[cmd[1] * PG + 7]++;
		else if (cmd[0] == 'r' &&
			 read(in, p + cmd[1] * PG + 64, 8) != 8)
			_exit(2);
		if (write(out, "k", 1) != 1)
			_exit(2);
	}
	_exit(0);
}

static int spawn(struct child *c)
{
	int a[2], b[2];

	if (pipe(a) || pipe(b))
		return -errno;
	c->pid = fork();
	if (c->pid < 0)
		return -errno;
	if (c->pid == 0) {
		close(a[1]);
		close(b[0]);
		target(a[0], b[1]);
	}
	close(a[0]);
	close(b[1]);
	c->to = a[1];
	c->from = b[0];
	if (read(c->from, &c->base, sizeof(c->base)) != sizeof(c->base))
		return -EIO;
	return 0;
}

static void reap(struct child *c)
{
	if (c->pid > 0) {
		kill(c->pid, SIGKILL);
		waitpid(c->pid, NULL, 0);
	}
	c->pid = 0;
	close(c->to);
	close(c->from);
}

static bool command(struct child *c, char op, int page)
{
	unsigned char cmd[2] = { (unsigned char)op, (unsigned char)page };
	struct pollfd p = { .fd = c->from, .events = POLLIN };
	char k;

	if (write(c->to, cmd, 2) != 2)
		return false;
	if (op == 'r' && write(c->to, "12345678", 8) != 8)
		return false;
	return poll(&p, 1, 3000) == 1 && read(c->from, &k, 1) == 1 && k == 'k';
}

static int count_uffds(pid_t pid)
{
	char path[64], link[256];
	int fd, n = 0;

	for (fd = 0; fd < 1024; fd++) {
		ssize_t len;

		snprintf(path, sizeof(path), "/proc/%d/fd/%d", pid, fd);
		len = readlink(path, link, sizeof(link) - 1);
		if (len < 0)
			continue;
		link[len] = 0;
		n += strstr(link, "userfaultfd") != NULL;
	}
	return n;
}

/* Written pages of the target's region, re-armed; -errno on failure. */
static long scan(int pagemap, uint64_t base, struct page_region *vec,
		 size_t len)
{
	struct pm_scan_arg a = {
		.size = sizeof(a),
		.flags = PM_SCAN_WP_MATCHING,
		.start = base,
		.end = base + NPAGES * PG,
		.vec = (uint64_t)(uintptr_t)vec,
		.vec_len = len,
		.category_mask = PAGE_IS_WRITTEN,
		.return_mask = PAGE_IS_WRITTEN,
	};
	long r = ioctl(pagemap, PAGEMAP_SCAN, &a);

	return r < 0 ? -errno : r;
}

/*
 * The whole check; results are returned as TAP lines through @ok (run
 * possibly in an unprivileged child, see main).  Returns 77 when the
 * kernel lacks the features.
 */
struct verdict {
	bool ok[8];
	char msg[8][200];
	int n;
	int skip;	/* 77: features missing */
	char why[120];
};

#define V(v, cond, ...) do {						\
	snprintf((v)->msg[(v)->n], sizeof((v)->msg[0]), __VA_ARGS__);	\
	(v)->ok[(v)->n++] = (cond);					\
} while (0)

static void run(struct verdict *v)
{
	struct uffdio_api api = {
		.api = UFFD_API,
		.features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED,
	};
	struct uffdio_register reg;
	struct page_region vec[8];
	struct child c = { 0 };
	char path[64];
	int fd = -1, pagemap = -1, err, fl;
	long n1, n2, n3;

	err = spawn(&c);
	if (err) {
		V(v, false, "spawn target: %s", strerror(-err));
		goto out;
	}
	fd = sd_inject_userfaultfd(c.pid, NULL, O_CLOEXEC | O_NONBLOCK);
	if (fd == -ENOSYS || fd == -EOPNOTSUPP) {
		v->skip = 77;
		snprintf(v->why, sizeof(v->why), "userfaultfd: %s",
			 strerror(-fd));
		goto out;
	}
	fl = fd >= 0 ? fcntl(fd, F_GETFD) : 0;
	V(v, fd >= 0 && (fl & FD_CLOEXEC),
	  "sd_inject_userfaultfd returns a close-on-exec fd (%s)",
	  fd < 0 ? strerror(-fd) : "ok");
	if (fd < 0)
		goto out;
	V(v, count_uffds(c.pid) == 0 && command(&c, 'w', 0),
	  "the target keeps no userfaultfd and runs on");
	if (ioctl(fd, UFFDIO_API, &api)) {
		v->skip = 77;
		snprintf(v->why, sizeof(v->why),
			 "UFFDIO_API WP_ASYNC|WP_UNPOPULATED: %s",
			 strerror(errno));
		goto out;
	}
	reg = (struct uffdio_register){
		.range = { .start = c.base, .len = NPAGES * PG },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};
	err = ioctl(fd, UFFDIO_REGISTER, &reg) ? -errno : 0;
	V(v, !err, "UFFDIO_REGISTER(WP) of the target's mapping at %#" PRIx64
	  " from the tracker (%s)", c.base, strerror(-err));
	if (err)
		goto out;
	snprintf(path, sizeof(path), "/proc/%d/pagemap", c.pid);
	pagemap = open(path, O_RDONLY | O_CLOEXEC);
	if (pagemap < 0) {
		V(v, false, "open %s: %s", path, strerror(errno));
		goto out;
	}
	n1 = scan(pagemap, c.base, vec, 8);
	if (n1 == -EINVAL || n1 == -ENOTTY) {
		v->skip = 77;
		snprintf(v->why, sizeof(v->why), "PAGEMAP_SCAN: %s",
			 strerror((int)-n1));
		goto out;
	}
	V(v, n1 >= 0, "first PAGEMAP_SCAN arms the range (%ld regions)", n1);
	if (!command(&c, 'w', 5) || !command(&c, 'r', 11)) {
		V(v, false, "target writes");
		goto out;
	}
	n2 = scan(pagemap, c.base, vec, 8);
	V(v, n2 == 2 && vec[0].start == c.base + 5 * PG &&
	  vec[0].end == c.base + 6 * PG && vec[1].start == c.base + 11 * PG &&
	  vec[1].end == c.base + 12 * PG &&
	  (vec[0].categories & PAGE_IS_WRITTEN),
	  "after the target wrote page 5 (user) and 11 (read(2)) the scan "
	  "reports exactly those (%ld regions, first %+" PRId64 " pages)",
	  n2, n2 > 0 ? (int64_t)(vec[0].start - c.base) / (int64_t)PG : -1);
	n3 = scan(pagemap, c.base, vec, 8);
	V(v, n3 == 0, "the next scan reports nothing (%ld)", n3);
out:
	if (pagemap >= 0)
		close(pagemap);
	if (fd >= 0)
		close(fd);
	reap(&c);
}

static void report(const struct verdict *v, const char *who)
{
	int i;

	for (i = 0; i < v->n; i++)
		tap_ok(v->ok[i], "%s: %s", who, v->msg[i]);
	if (v->skip)
		tap_skip(v->why, "%s: remote uffd tracking", who);
}

int main(int argc, char **argv)
{
	struct verdict v = { .n = 0 };
	int p[2];
	pid_t pid;

	(void)argc;
	tap_init(argv[0]);
	if (!td_inject_supported())
		return 77;
	signal(SIGPIPE, SIG_IGN);
	run(&v);
	report(&v, getuid() ? "caller's uid" : "root");

	if (getuid() != 0)
		return tap_done();
	/* the unprivileged path: user-mode-only uffd, own child */
	if (pipe(p))
		tap_bail("pipe");
	pid = fork();
	if (pid < 0)
		tap_bail("fork");
	if (pid == 0) {
		memset(&v, 0, sizeof(v));
		close(p[0]);
		if (setgroups(0, NULL) || setgid(65534) || setuid(65534) ||
		    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0))
			V(&v, false, "drop privileges: %s", strerror(errno));
		else
			run(&v);
		if (write(p[1], &v, sizeof(v)) != sizeof(v))
			_exit(2);
		_exit(0);
	}
	close(p[1]);
	memset(&v, 0, sizeof(v));
	if (read(p[0], &v, sizeof(v)) != sizeof(v))
		V(&v, false, "unprivileged child reported");
	close(p[0]);
	waitpid(pid, NULL, 0);
	report(&v, "uid 65534");
	return tap_done();
}
