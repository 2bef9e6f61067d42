// SPDX-License-Identifier: MIT
/*
 * Tracking another process by pid, for every backend that says it can
 * (SOFTDIRTY_CAP_REMOTE).  The target is this program re-executed with
 * --target: a command loop over two pipes, blocked in read(2) between
 * commands.  Checked, exactly:
 *   - open while the target sleeps in read(2); the target answers after;
 *   - its own writes, a kernel-mode write (read(2) into the page), a
 *     write from another of its threads: reported, nothing else;
 *   - a new mapping: reported new;
 *   - a fork child's writes are its own: the parent reports nothing;
 *   - a target sleeping in nanosleep() while a tracker opens: the sleep
 *     is not cut short;
 *   - execve(): the tracker restarts on the new image (reported new) and
 *     goes on exactly;
 *   - softdirty_freeze(): a spinning thread makes no progress until
 *     softdirty_thaw();
 *   - close leaves no userfaultfd in /proc/PID/fd and no "uw" in smaps;
 *   - a tracker killed with SIGKILL mid-run leaves the target running,
 *     with no userfaultfd nor write-protection behind;
 *   - errors: no such process, a backend that cannot track others,
 *     a process we may not ptrace (as uid 65534), and tracking one's own
 *     child as uid 65534 works.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define NPAGES	64
#define MAX_(a, b) ((a) > (b) ? (a) : (b))
#define SPIN_PAGE 60

/* ---------- the target (after exec) ---------- */

static volatile char *region;
static int t_in, t_out;

static void reply(const void *p, size_t n)
{
	if (write(t_out, p, n) != (ssize_t)n)
		_exit(3);
}

static void *thread_write(void *arg)
{
	region[(uintptr_t)arg * PG + 9]++;
	return NULL;
}

static void *spinner(void *arg)
{
	volatile uint64_t *c = (volatile uint64_t *)(region + SPIN_PAGE * PG);

	(void)arg;
	for (;;)
		(*c)++;
	return NULL;
}

static void target_main(const char *exe, int in, int out)
{
	uint64_t base;
	unsigned char cmd, arg;
	pthread_t th;

	t_in = in;
	t_out = out;
	/*
	 * Guard pages on both sides: a thread stack mapped next to the
	 * region would merge with it, and the kernel marks a merged VMA
	 * soft-dirty as a whole (VM_SOFTDIRTY), which is not what we test.
	 */
	region = mmap(NULL, (NPAGES + 2) * PG, PROT_NONE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED)
		_exit(2);
	region += PG;
	if (mprotect((char *)region, NPAGES * PG, PROT_READ | PROT_WRITE))
		_exit(2);
	memset((char *)region, 1, NPAGES * PG);
	base = (uint64_t)(uintptr_t)region;
	reply(&base, sizeof(base));
	while (read(in, &cmd, 1) == 1) {
		if (cmd == 'x') {		/* echo (td_child_responds) */
			reply(&cmd, 1);
			continue;
		}
		if (read(in, &arg, 1) != 1)
			_exit(2);
		switch (cmd) {
		case 'w':			/* write page arg */
			region[arg * PG + 5]++;
			break;
		case 'r': {			/* read(2) 8 bytes into page arg */
			char *p = (char *)region + arg * PG + 64;
			size_t got = 0;

			while (got < 8) {
				ssize_t r = read(in, p + got, 8 - got);

				if (r <= 0)
					_exit(2);
				got += (size_t)r;
			}
			break;
		}
		case 't':			/* write page arg from a thread */
			if (pthread_create(&th, NULL, thread_write,
					   (void *)(uintptr_t)arg) ||
			    pthread_join(th, NULL))
				_exit(2);
			break;
		case 'n': {			/* new mapping of arg pages */
			void *p = mmap(NULL, arg * PG, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			uint64_t a = (uint64_t)(uintptr_t)p;

			if (p == MAP_FAILED)
				_exit(2);
			reply(&a, sizeof(a));
			break;
		}
		case 'f': {			/* a child writes page arg */
			pid_t c = fork();
			int st;

			if (c < 0)
				_exit(2);
			if (!c) {
				region[arg * PG + 5]++;
				_exit(0);
			}
			if (waitpid(c, &st, 0) != c || !WIFEXITED(st))
				_exit(2);
			break;
		}
		case 's': {			/* nanosleep arg * 10 ms */
			struct timespec ts = { 0, (long)arg * 10000000L };
			int r = nanosleep(&ts, &ts);
			char ok = r == 0 ? 'k' : 'e';

			reply(&ok, 1);
			continue;
		}
		case 'c':			/* start the spinner */
			if (pthread_create(&th, NULL, spinner, NULL))
				_exit(2);
			break;
		case 'e': {			/* execve ourselves anew */
			char a[16], b[16];

			snprintf(a, sizeof(a), "%d", in);
			snprintf(b, sizeof(b), "%d", out);
			execl(exe, exe, "--target", a, b, (char *)NULL);
			_exit(4);
		}
		default:
			_exit(2);
		}
		cmd = 'k';
		reply(&cmd, 1);
	}
	_exit(0);
}

/* ---------- the test side ---------- */

static char self_exe[4096];

static void spawn_fn(int in, int out)
{
	char a[16], b[16];

	snprintf(a, sizeof(a), "%d", in);
	snprintf(b, sizeof(b), "%d", out);
	execl(self_exe, self_exe, "--target", a, b, (char *)NULL);
	_exit(4);
}

static bool cmd(struct td_child *c, char op, unsigned char arg)
{
	char m[2] = { op, (char)arg }, k;

	return write(c->to, m, 2) == 2 && td_child_recv(c, &k, 1, 10000) && k == 'k';
}

static bool spawn_target(struct td_child *c, uint64_t *base)
{
	if (td_child_spawn(c, spawn_fn))
		return false;
	return td_child_recv(c, base, sizeof(*base), 10000);
}

static struct softdirty *open_remote(const char *be, pid_t pid, int *errp)
{
	struct softdirty_opts o = { .sz = sizeof(o), .backend = be };
	struct softdirty *sd = NULL;

	*errp = softdirty_open(&sd, pid, &o);
	return sd;
}

struct ranges {
	struct softdirty_range r[64];
	size_t n;
};

/* Collect (and reset) the whole address space, looping on walk_end. */
static long collect_all(struct softdirty *sd, struct ranges *rs)
{
	uint64_t cur = 0, we;

	rs->n = 0;
	while (cur < UINT64_MAX) {
		long n = softdirty_collect(sd, cur, UINT64_MAX, rs->r + rs->n,
					   ARRAY_SIZE(rs->r) - rs->n,
					   SOFTDIRTY_COLLECT_RESET, &we);

		if (n < 0)
			return n;
		rs->n += (size_t)n;
		if (we == UINT64_MAX)
			break;
		if (rs->n == ARRAY_SIZE(rs->r))
			return -ENOSPC;
		cur = we;
	}
	return (long)rs->n;
}

/* The pages of [base, base + NPAGES) reported, as a bitmap; flags OR'd. */
static uint64_t region_pages(const struct ranges *rs, uint64_t base,
			     uint64_t *flags)
{
	uint64_t bits = 0, p;
	size_t i;

	*flags = 0;
	for (i = 0; i < rs->n; i++)
		for (p = MAX_(rs->r[i].start, base);
		     p < rs->r[i].end && p < base + NPAGES * PG; p += PG) {
			bits |= 1ULL << ((p - base) / PG);
			*flags |= rs->r[i].flags;
		}
	return bits;
}

static bool covered(const struct ranges *rs, uint64_t a, uint64_t b,
		    uint64_t flag)
{
	size_t i;

	for (i = 0; i < rs->n && a < b; i++)
		if (rs->r[i].start <= a && rs->r[i].end > a &&
		    (rs->r[i].flags & flag))
			a = rs->r[i].end;
	return a >= b;
}

static int count_uffd_fds(pid_t pid)
{
	char path[64], link[256];
	int n = 0, fd;

	for (fd = 0; fd < 1024; fd++) {
		ssize_t l;

		snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, fd);
		l = readlink(path, link, sizeof(link) - 1);
		if (l <= 0)
			continue;
		link[l] = 0;
		if (strstr(link, "userfaultfd"))
			n++;
	}
	return n;
}

/* VmFlags lines of the target's smaps holding "uw" (uffd-wp registered). */
static int count_uw(pid_t pid)
{
	char path[64], line[512];
	int n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmFlags:", 8) && strstr(line, " uw"))
			n++;
	fclose(f);
	return n;
}

static uint64_t read_counter(pid_t pid, uint64_t base)
{
	uint64_t v = 0;
	struct iovec l = { &v, sizeof(v) };
	struct iovec r = { (void *)(uintptr_t)(base + SPIN_PAGE * PG),
			   sizeof(v) };

	if (process_vm_readv(pid, &l, 1, &r, 1, 0) != sizeof(v))
		return UINT64_MAX;
	return v;
}

#define EXPECT_REGION(sd, rs, base, want, desc) do {			\
	uint64_t fl_, got_;						\
	long n_ = collect_all(sd, rs);					\
	got_ = n_ < 0 ? 0 : region_pages(rs, base, &fl_);		\
	tap_ok(n_ >= 0 && got_ == (want), "%s: %s (got %#" PRIx64	\
	       ", want %#" PRIx64 ", err %ld)", be->name, desc, got_,	\
	       (uint64_t)(want), n_ < 0 ? n_ : 0);			\
} while (0)

static void run_backend(const struct td_backend *be, void *ctx)
{
	struct td_child c;
	struct ranges rs;
	struct softdirty *sd;
	uint64_t base, nb, f;
	int err, i;

	(void)ctx;
	if (!(be->caps & SOFTDIRTY_CAP_REMOTE)) {
		int e;

		if (!spawn_target(&c, &base))
			tap_bail("cannot start the target");
		sd = open_remote(be->name, c.pid, &e);
		tap_ok(e == -EOPNOTSUPP && !sd,
		       "%s: cannot track another process: open says -EOPNOTSUPP (%d)",
		       be->name, e);
		softdirty_close(sd);
		td_child_reap(&c, NULL);
		return;
	}
	if (!spawn_target(&c, &base))
		tap_bail("cannot start the target");
	/* the target sleeps in read(2) now */
	sd = open_remote(be->name, c.pid, &err);
	if (!tap_ok(!err, "%s: open another process blocked in read(2) (%d)",
		    be->name, err)) {
		td_child_reap(&c, NULL);
		return;
	}
	tap_ok(td_child_responds(&c), "%s: the target answers after open",
	       be->name);
	EXPECT_REGION(sd, &rs, base, 0, "nothing written: nothing reported");

	tap_ok(cmd(&c, 'w', 3) && cmd(&c, 'w', 7), "%s: target writes",
	       be->name);
	EXPECT_REGION(sd, &rs, base, (1ULL << 3) | (1ULL << 7),
		      "its writes, exactly");
	(void)region_pages(&rs, base, &f);
	tap_ok(f == SOFTDIRTY_RANGE_WRITTEN, "%s: reported as written (%#" PRIx64 ")",
	       be->name, f);
	EXPECT_REGION(sd, &rs, base, 0, "after collect-and-reset: clean");

	if (be->caps & SOFTDIRTY_CAP_KERNEL_WRITES) {
		bool ok = write(c.to, "r\013abcdefgh", 10) == 10;
		char k = 0;

		ok = ok && td_child_recv(&c, &k, 1, 10000) && k == 'k';
		tap_ok(ok, "%s: target read(2)s into page 11", be->name);
		EXPECT_REGION(sd, &rs, base, 1ULL << 11,
			      "kernel-mode write reported");
	}
	tap_ok(cmd(&c, 't', 20), "%s: another thread writes", be->name);
	EXPECT_REGION(sd, &rs, base, 1ULL << 20, "a thread's write reported");

	nb = 0;
	tap_ok(write(c.to, "n\004", 2) == 2 && td_child_recv(&c, &nb, 8, 10000) &&
	       td_child_recv(&c, &f, 1, 10000), "%s: target maps 4 pages", be->name);
	{
		long n = collect_all(sd, &rs);

		tap_ok(n >= 0 && covered(&rs, nb, nb + 4 * PG,
					 SOFTDIRTY_RANGE_NEW),
		       "%s: the new mapping is reported new (%ld)", be->name, n);
	}

	tap_ok(cmd(&c, 'f', 30), "%s: target forks, the child writes",
	       be->name);
	EXPECT_REGION(sd, &rs, base, 0, "a fork child's writes are not ours");
	tap_ok(cmd(&c, 'w', 31), "%s: parent writes after fork", be->name);
	EXPECT_REGION(sd, &rs, base, 1ULL << 31, "parent still tracked after fork");

	/* exec: the tracker follows onto the new image */
	{
		char m[2] = { 'e', 0 };
		long n;

		nb = 0;
		tap_ok(write(c.to, m, 2) == 2 && td_child_recv(&c, &nb, 8, 10000),
		       "%s: target execs itself", be->name);
		n = collect_all(sd, &rs);
		tap_ok(n > 0 && covered(&rs, nb, nb + NPAGES * PG,
					SOFTDIRTY_RANGE_NEW),
		       "%s: after exec, tracking restarts: the new image is reported new (%ld)",
		       be->name, n);
		base = nb;
		tap_ok(cmd(&c, 'w', 2), "%s: new image writes", be->name);
		EXPECT_REGION(sd, &rs, base, 1ULL << 2,
			      "after exec, writes reported exactly");
	}

	softdirty_close(sd);
	tap_ok(count_uffd_fds(c.pid) == 0 && count_uw(c.pid) == 0,
	       "%s: close leaves no userfaultfd and no uffd-wp VMA in the target",
	       be->name);
	tap_ok(td_child_responds(&c), "%s: target answers after close",
	       be->name);

	/* open while the target sleeps: the sleep is not cut short */
	{
		char k = 0;
		bool ok = write(c.to, "s\024", 2) == 2;

		usleep(50000);
		sd = open_remote(be->name, c.pid, &err);
		ok = ok && !err && td_child_recv(&c, &k, 1, 10000);
		tap_ok(ok && k == 'k',
		       "%s: open during the target's nanosleep(200ms): the sleep completes (%d, %c)",
		       be->name, err, k ? k : '?');
		softdirty_close(sd);
	}

	/* freeze: a spinning thread makes no progress */
	sd = open_remote(be->name, c.pid, &err);
	if (!err && cmd(&c, 'c', 0)) {
		uint64_t a, b, d = 0, c0 = read_counter(c.pid, base);

		/* the spinner has started once its counter moves */
		for (i = 0; i < 300 && read_counter(c.pid, base) == c0; i++)
			usleep(10000);
		err = softdirty_freeze(sd);
		a = read_counter(c.pid, base);
		usleep(100000);
		b = read_counter(c.pid, base);
		tap_ok(!err && a == b && a != UINT64_MAX,
		       "%s: frozen: the spinning thread does not move (%d, %" PRIu64 " -> %" PRIu64 ")",
		       be->name, err, a, b);
		{
			long n = collect_all(sd, &rs);
			uint64_t got = n < 0 ? 0 : region_pages(&rs, base, &f);

			tap_ok(got == 1ULL << SPIN_PAGE,
			       "%s: collect while frozen: the spinner's page (%ld, %#" PRIx64 ")",
			       be->name, n, got);
		}
		tap_ok(softdirty_freeze(sd) == -EBUSY,
		       "%s: freeze twice: -EBUSY", be->name);
		tap_ok(!softdirty_thaw(sd), "%s: thaw", be->name);
		for (i = 0; i < 300 && d == 0; i++) {
			usleep(10000);
			d = read_counter(c.pid, base) - b;
		}
		tap_ok(d > 0, "%s: thawed: the spinner runs again", be->name);
		tap_ok(softdirty_thaw(sd) == -EINVAL,
		       "%s: thaw when not frozen: -EINVAL", be->name);
		tap_ok(td_child_responds(&c), "%s: target answers after thaw",
		       be->name);
	} else {
		tap_ok(false, "%s: reopen and start the spinner (%d)",
		       be->name, err);
	}
	softdirty_close(sd);
	td_child_reap(&c, NULL);
}

/* A tracker process killed with SIGKILL while it collects. */
static void kill_tracker(const struct td_backend *be, void *ctx)
{
	struct td_rng *rng = ctx;
	struct td_child c;
	uint64_t base;
	int round, good = 0, rounds = td_quick() ? 3 : 10;

	if (!(be->caps & SOFTDIRTY_CAP_REMOTE))
		return;
	if (!spawn_target(&c, &base))
		tap_bail("cannot start the target");
	for (round = 0; round < rounds; round++) {
		int p[2], st;
		pid_t t;
		char x;

		if (pipe(p))
			tap_bail("pipe");
		t = fork();
		if (t < 0)
			tap_bail("fork");
		if (!t) {
			struct ranges rs;
			int err;
			struct softdirty *sd = open_remote(be->name, c.pid,
							   &err);

			if (err)
				_exit(1);
			if (write(p[1], "o", 1) != 1)
				_exit(1);
			for (;;)
				if (collect_all(sd, &rs) < 0)
					_exit(1);
		}
		close(p[1]);
		if (read(p[0], &x, 1) == 1) {
			usleep((useconds_t)td_rng_below(rng, 30000));
			kill(t, SIGKILL);
		}
		close(p[0]);
		waitpid(t, &st, 0);
		if (WIFSIGNALED(st) && cmd(&c, 'w', 1) &&
		    td_child_responds(&c) && count_uffd_fds(c.pid) == 0 &&
		    count_uw(c.pid) == 0 && td_tracer_pid(c.pid) == 0)
			good++;
	}
	tap_ok(good == rounds,
	       "%s: tracker SIGKILLed mid-collect %d times: target runs on, no userfaultfd, no uffd-wp, not traced (%d good)",
	       be->name, rounds, good);
	td_child_reap(&c, NULL);
}

/* As uid 65534: our own child works, a root process is refused. */
static void unprivileged(void)
{
	struct td_backend *bes;
	size_t nb = td_backends(&bes), i;
	int p[2], st;
	pid_t t;

	if (pipe(p))
		tap_bail("pipe");
	t = fork();
	if (!t) {
		/* results travel back as lines: "ok|not ok <text>" */
		FILE *o = fdopen(p[1], "w");

		close(p[0]);
		if (!o || setgroups(0, NULL) || setresgid(65534, 65534, 65534) ||
		    setresuid(65534, 65534, 65534)) {
			fprintf(o, "not ok setresuid(65534)\n");
			_exit(1);
		}
		for (i = 0; i < nb; i++) {
			struct td_child c;
			struct softdirty *sd;
			struct ranges rs;
			uint64_t base, f;
			int err;

			if (bes[i].status || !(bes[i].caps & SOFTDIRTY_CAP_REMOTE) ||
			    !bes[i].selected)
				continue;
			if (!spawn_target(&c, &base)) {
				fprintf(o, "not ok %s: start a target\n",
					bes[i].name);
				continue;
			}
			sd = open_remote(bes[i].name, c.pid, &err);
			if (!err && cmd(&c, 'w', 4) && collect_all(sd, &rs) >= 0 &&
			    region_pages(&rs, base, &f) == 1ULL << 4)
				fprintf(o, "ok %s: as uid 65534, track our own child exactly\n",
					bes[i].name);
			else
				fprintf(o, "not ok %s: as uid 65534, track our own child (%d)\n",
					bes[i].name, err);
			softdirty_close(sd);
			td_child_reap(&c, NULL);
			sd = open_remote(bes[i].name, 1, &err);
			fprintf(o, "%s %s: as uid 65534, tracking pid 1 is refused with -EPERM (%d)\n",
				err == -EPERM && !sd ? "ok" : "not ok",
				bes[i].name, err);
			softdirty_close(sd);
		}
		fclose(o);
		_exit(0);
	}
	close(p[1]);
	{
		FILE *in = fdopen(p[0], "r");
		char line[512];

		while (in && fgets(line, sizeof(line), in)) {
			bool ok = !strncmp(line, "ok ", 3);

			line[strcspn(line, "\n")] = 0;
			tap_ok(ok, "%s", line + (ok ? 3 : 7));
		}
		if (in)
			fclose(in);
	}
	waitpid(t, &st, 0);
	tap_ok(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	       "unprivileged checks ran to the end");
}

int main(int argc, char **argv)
{
	struct td_rng rng;
	int err;
	struct softdirty *sd = NULL;

	if (argc == 4 && !strcmp(argv[1], "--target")) {
		target_main(argv[0], atoi(argv[2]), atoi(argv[3]));
		return 0;
	}
	tap_init(argv[0]);
	td_self_exe(self_exe, sizeof(self_exe));
	td_rng_seed(&rng, td_seed());

	err = softdirty_open(&sd, 999999999, NULL);
	tap_ok(err == -ESRCH && !sd, "open of no such process: -ESRCH (%d)",
	       err);
	td_for_each_backend("remote tracking", run_backend, NULL);
	td_for_each_backend("tracker killed", kill_tracker, &rng);
	if (getuid() == 0)
		unprivileged();
	else
		tap_skip("not root", "unprivileged checks need root to drop to uid 65534");
	return tap_done();
}
