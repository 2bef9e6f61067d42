// SPDX-License-Identifier: MIT
/*
 * sd_inject_userfaultfd() with its tracker SIGKILLed at any moment: a
 * tracker loops over the whole sequence (attach, userfaultfd inside the
 * target, pidfd_getfd, close inside the target, detach) and is killed
 * after a random delay, KILLS times, the delays spread over several
 * sequences; every other time its whole process group is killed.  Every
 * time the target must be alive, untraced, answering (its read()
 * restarted, no EINTR seen), with no userfaultfd in /proc/PID/fd.
 *
 * Also: the guardian stays invisible to the application (no SIGCHLD,
 * nothing to wait for); an unprivileged caller on its own child (under
 * YAMA ptrace_scope 1 the guardian may not attach: the caller's thread
 * does it); a target without a vDSO; what the guardian costs (printed).
 *
 * The tracker runs under a subreaper child, which reaps it and every
 * process orphaned by its death before exiting: once it is reaped, nothing
 * started by the tracker can still act on the target.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "inject.h"

#define KILLS		100
#define MIN(a, b)	((a) < (b) ? (a) : (b))
/* delays: uniform in [0, MAX_DELAY_US), a few sequences long */
#define MAX_DELAY_US	3000

/* answer every byte with the same byte; an EINTR is reported as 'E' */
static void echo_loop(int in, int out)
{
	char c;

	for (;;) {
		ssize_t n = read(in, &c, 1);

		if (n < 0 && errno == EINTR)
			c = 'E';
		else if (n != 1)
			_exit(0);
		if (write(out, &c, 1) != 1)
			_exit(2);
	}
}

static int uffd_fds(pid_t pid)
{
	char link[64], path[128];
	int fd, n = 0;

	for (fd = 0; fd < 256; fd++) {
		ssize_t r;

		snprintf(link, sizeof(link), "/proc/%d/fd/%d", (int)pid, fd);
		r = readlink(link, path, sizeof(path) - 1);
		if (r > 0) {
			path[r] = 0;
			n += !strcmp(path, "anon_inode:[userfaultfd]");
		}
	}
	return n;
}

/* The tracker: report its pid after one whole sequence, then loop. */
static void tracker(pid_t target, int out)
{
	pid_t self = getpid();
	bool told = false;

	/* a group of its own, killed as a whole in odd rounds */
	if (setpgid(0, 0))
		_exit(2);
	for (;;) {
		int fd = sd_inject_userfaultfd(target, NULL,
					       O_CLOEXEC | O_NONBLOCK);

		if (fd < 0)
			_exit(2);
		close(fd);
		if (!told) {
			if (write(out, &self, sizeof(self)) != sizeof(self))
				_exit(2);
			told = true;
		}
	}
}

/*
 * One round: a subreaper child forks the tracker; the tracker is killed
 * @delay_us after its first sequence, alone or (@group) with its whole
 * process group.  False when it never got there.
 * *orphans counts the processes it left behind (guardians that outlived
 * it).
 */
static bool kill_round(pid_t target, int delay_us, bool group,
		       int *orphans)
{
	pid_t reaper, tpid = 0;
	int p[2], st;

	if (pipe(p))
		tap_bail("pipe: %s", strerror(errno));
	reaper = fork();
	if (reaper < 0)
		tap_bail("fork: %s", strerror(errno));
	if (reaper == 0) {
		int left = 0;
		pid_t t;

		close(p[0]);
		if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
			_exit(2);
		t = fork();
		if (t < 0)
			_exit(2);
		if (t == 0)
			tracker(target, p[1]);
		close(p[1]);
		/* the tracker, then whatever its death orphaned */
		while ((t = waitpid(-1, &st, __WALL)) > 0 || errno == EINTR)
			left += t > 0;
		_exit(MIN(left - 1, 100));
	}
	close(p[1]);
	if (read(p[0], &tpid, sizeof(tpid)) != sizeof(tpid))
		tpid = 0;
	close(p[0]);
	if (tpid > 0) {
		usleep((useconds_t)delay_us);
		kill(group ? -tpid : tpid, SIGKILL);
	}
	if (waitpid(reaper, &st, 0) != reaper || !WIFEXITED(st))
		tap_bail("waitpid: %s", strerror(errno));
	*orphans += WEXITSTATUS(st);
	return tpid > 0;
}

static void test_kills(void)
{
	struct td_rng rng;
	struct td_child t;
	uint64_t seed = td_seed();
	int i, started = 0, dead = 0, traced = 0, mute = 0, stray = 0;
	int orphans = 0;

	td_rng_seed(&rng, seed);
	tap_diag("seed %llu", (unsigned long long)seed);
	if (td_child_spawn(&t, echo_loop))
		tap_bail("fork: %s", strerror(errno));
	for (i = 0; i < KILLS; i++) {
		bool bad = false;
		int st;

		if (!td_blocked_in_read(t.pid))
			tap_bail("the target does not block in read()");
		started += kill_round(t.pid, (int)td_rng_below(&rng,
							       MAX_DELAY_US),
				      i & 1, &orphans);
		if (waitpid(t.pid, &st, WNOHANG) == t.pid) {
			dead++;
			t.pid = 0;
			bad = true;
		} else {
			if (td_tracer_pid(t.pid) != 0) {
				traced++;
				bad = true;
			}
			if (uffd_fds(t.pid)) {
				stray++;
				bad = true;
			}
			if (!td_child_responds(&t)) {
				mute++;
				bad = true;
			}
		}
		if (bad) {
			/* a fresh target for the next round */
			td_child_reap(&t, NULL);
			if (td_child_spawn(&t, echo_loop))
				tap_bail("fork: %s", strerror(errno));
		}
	}
	td_child_reap(&t, NULL);
	tap_diag("%d of %d kills fell inside a sequence that a process left "
		 "behind then finished", orphans, KILLS);
	tap_ok(started == KILLS, "%d of %d trackers ran a whole sequence "
	       "before the kill", started, KILLS);
	tap_ok(dead == 0, "%d of %d kills left the target dead", dead, KILLS);
	tap_ok(traced == 0, "%d of %d kills left the target traced", traced,
	       KILLS);
	tap_ok(stray == 0, "%d of %d kills left a userfaultfd in the target",
	       stray, KILLS);
	tap_ok(mute == 0, "%d of %d kills left the target not answering or "
	       "seeing EINTR", mute, KILLS);
}

static volatile sig_atomic_t sigchld_seen;

static void on_sigchld(int sig)
{
	(void)sig;
	sigchld_seen++;
}

/*
 * The guardian is invisible to the application: no SIGCHLD (not even for
 * the target's ptrace stops, which go to the guardian), nothing for
 * wait(-1) or waitpid(-1, __WALL) to reap afterwards, and it works with
 * SIGCHLD ignored (auto-reaped children).
 */
static void test_invisible(void)
{
	struct sigaction sa = { .sa_handler = on_sigchld };
	struct td_child t;
	int fd, st;
	pid_t w;

	if (td_child_spawn(&t, echo_loop))
		tap_bail("fork: %s", strerror(errno));
	if (!td_blocked_in_read(t.pid))
		tap_bail("the target does not block in read()");
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGCHLD, &sa, NULL))
		tap_bail("sigaction: %s", strerror(errno));
	fd = sd_inject_userfaultfd(t.pid, NULL, O_CLOEXEC | O_NONBLOCK);
	tap_ok(fd >= 0, "a userfaultfd from the target (%s)",
	       strerror(fd < 0 ? -fd : 0));
	tap_ok(sigchld_seen == 0, "no SIGCHLD reached the caller (%d)",
	       (int)sigchld_seen);
	w = waitpid(-1, &st, WNOHANG | __WALL);
	tap_ok(w == 0, "nothing left for waitpid(-1, __WALL) (%d)", (int)w);
	if (fd >= 0)
		close(fd);

	signal(SIGCHLD, SIG_IGN);
	fd = sd_inject_userfaultfd(t.pid, NULL, O_CLOEXEC | O_NONBLOCK);
	tap_ok(fd >= 0, "with SIGCHLD ignored too (%s)",
	       strerror(fd < 0 ? -fd : 0));
	if (fd >= 0)
		close(fd);
	signal(SIGCHLD, SIG_DFL);
	tap_ok(uffd_fds(t.pid) == 0 && td_tracer_pid(t.pid) == 0 &&
	       td_child_responds(&t), "the target is untraced, has no "
	       "userfaultfd and answers");
	td_child_reap(&t, NULL);
}

static int yama_scope(void)
{
	FILE *f = fopen("/proc/sys/kernel/yama/ptrace_scope", "re");
	int v = -1;

	if (!f)
		return -1;
	if (fscanf(f, "%d", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

static int yama_set(int v)
{
	FILE *f = fopen("/proc/sys/kernel/yama/ptrace_scope", "we");
	int err = 0;

	if (!f)
		return -errno;
	if (fprintf(f, "%d\n", v) < 0)
		err = -EIO;
	if (fclose(f) && !err)
		err = -errno;
	return err;
}

/* unprivileged_round()'s child: as uid 65534, its two results to @out. */
static void unprivileged_child(int in, int out)
{
	int res[2] = { -EIO, -EIO };
	struct td_child t;

	(void)in;
	/* a uid change clears "dumpable"; ordinary processes have it */
	if (setgroups(0, NULL) || setgid(65534) || setuid(65534) ||
	    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0))
		res[0] = -errno;
	else if (td_child_spawn(&t, echo_loop))
		res[0] = -errno;
	else {
		if (!td_blocked_in_read(t.pid))
			_exit(2);
		res[0] = sd_inject_userfaultfd(t.pid, NULL, O_CLOEXEC);
		res[1] = uffd_fds(t.pid) == 0 &&
			 td_tracer_pid(t.pid) == 0 &&
			 td_child_responds(&t) ? 0 : -EIO;
		td_child_reap(&t, NULL);
	}
	/* a short write is the parent's missing answer */
	(void)!write(out, res, sizeof(res));
}

/*
 * As uid 65534, on its own child: the guardian attaches (no YAMA), or
 * YAMA's ptrace_scope 1 refuses it (not the target's ancestor) and the
 * caller's thread does it: either way a userfaultfd, none left behind.
 */
static void unprivileged_round(void)
{
	int res[2] = { -EIO, -EIO }, scope = yama_scope();
	struct td_child c;
	int err = td_child_spawn(&c, unprivileged_child);

	if (err)
		tap_bail("fork: %s", strerror(-err));
	if (!td_child_recv(&c, res, sizeof(res), 60000))
		res[0] = res[1] = -EIO;
	td_child_reap(&c, NULL);
	if (res[0] == -EPERM && scope >= 2) {
		tap_skip("YAMA ptrace_scope >= 2", "uid 65534 on its own child");
		return;
	}
	tap_ok(res[0] >= 0, "uid 65534 gets a userfaultfd of its own child, "
	       "YAMA ptrace_scope %d (%s)", scope,
	       strerror(res[0] < 0 ? -res[0] : 0));
	tap_ok(res[1] == 0, "and the child is untraced, has no userfaultfd "
	       "and answers");
}

static void test_unprivileged(void)
{
	if (getuid() != 0) {
		tap_skip("not root", "uid 65534 on its own child");
		return;
	}
	unprivileged_round();
	/*
	 * In the throw-away qemu VMs only (never on a host), YAMA is built
	 * in but at 0: once more at 1, where the guardian is refused and
	 * the caller's thread injects.
	 */
	if (!getenv("SOFTDIRTY_KERNEL") || yama_scope() != 0)
		return;
	if (yama_set(1)) {
		tap_skip("cannot set YAMA ptrace_scope", "uid 65534 on its "
			 "own child, YAMA ptrace_scope 1");
		return;
	}
	unprivileged_round();
	if (yama_set(0))
		tap_bail("cannot put YAMA ptrace_scope back to 0");
}

/* echo_loop() with the vDSO unmapped (read and write do not use it) */
static void echo_no_vdso(int in, int out)
{
	char line[256];
	FILE *f = fopen("/proc/self/maps", "re");
	unsigned long a, b;
	char c = 'n';

	while (f && fgets(line, sizeof(line), f)) {
		if (strstr(line, "[vdso]") &&
		    sscanf(line, "%lx-%lx", &a, &b) == 2 &&
		    !munmap((void *)a, b - a))
			c = 'y';
	}
	if (f)
		fclose(f);
	/* tell the parent whether it is gone */
	if (write(out, &c, 1) != 1)
		_exit(2);
	echo_loop(in, out);
}

/*
 * No vDSO in the target: the syscall instruction is found in the other
 * executable mappings (the second pass over /proc/PID/maps).
 */
static void test_no_vdso(void)
{
	struct td_child t;
	char c = 0;
	int fd;

	if (td_child_spawn(&t, echo_no_vdso))
		tap_bail("fork: %s", strerror(errno));
	if (!td_child_recv(&t, &c, 1, 10000) || c != 'y') {
		tap_skip("no [vdso] mapping to unmap", "a target without a "
			 "vDSO");
		td_child_reap(&t, NULL);
		return;
	}
	if (!td_blocked_in_read(t.pid))
		tap_bail("the target does not block in read()");
	fd = sd_inject_userfaultfd(t.pid, NULL, O_CLOEXEC);
	tap_ok(fd >= 0, "a target without a vDSO: a userfaultfd (%s)",
	       strerror(fd < 0 ? -fd : 0));
	if (fd >= 0)
		close(fd);
	tap_ok(uffd_fds(t.pid) == 0 && td_tracer_pid(t.pid) == 0 &&
	       td_child_responds(&t), "and it is untraced, has no "
	       "userfaultfd and answers");
	td_child_reap(&t, NULL);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

#define COST_REPS	40

/* What the guardian costs: the same sequence with it and in this thread. */
static void test_cost(void)
{
	double g[COST_REPS], h[COST_REPS];
	struct td_child t;
	int i, bad = 0;

	if (td_child_spawn(&t, echo_loop))
		tap_bail("fork: %s", strerror(errno));
	if (!td_blocked_in_read(t.pid))
		tap_bail("the target does not block in read()");
	for (i = 0; i < COST_REPS; i++) {
		struct sd_inject *in;
		double t0 = td_now();
		int fd = sd_inject_userfaultfd(t.pid, NULL, O_CLOEXEC);

		g[i] = td_now() - t0;
		bad += fd < 0;
		if (fd >= 0)
			close(fd);
		t0 = td_now();
		fd = sd_inject_attach(&in, t.pid);
		if (!fd) {
			fd = sd_inject_userfaultfd(t.pid, in, O_CLOEXEC);
			sd_inject_detach(in);
		}
		h[i] = td_now() - t0;
		bad += fd < 0;
		if (fd >= 0)
			close(fd);
	}
	qsort(g, COST_REPS, sizeof(g[0]), cmp_double);
	qsort(h, COST_REPS, sizeof(h[0]), cmp_double);
	tap_ok(bad == 0, "%d sequences, each way, all succeeded (%d failed)",
	       COST_REPS, bad);
	tap_diag("attach + userfaultfd + pidfd_getfd + close + detach, median "
		 "of %d: %.1f us in a guardian, %.1f us in the caller's thread "
		 "(ratio %.2f)", COST_REPS, g[COST_REPS / 2] * 1e6,
		 h[COST_REPS / 2] * 1e6, g[COST_REPS / 2] / h[COST_REPS / 2]);
	td_child_reap(&t, NULL);
}

int main(int argc, char **argv)
{
	(void)argc;
	tap_init(argv[0]);
	if (!td_inject_supported())
		return 77;
	signal(SIGPIPE, SIG_IGN);
	/* a hung round must not hang the suite */
	alarm(120);
	test_invisible();
	test_unprivileged();
	test_no_vdso();
	test_kills();
	test_cost();
	return tap_done();
}
