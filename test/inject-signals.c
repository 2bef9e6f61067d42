// SPDX-License-Identifier: MIT
/*
 * sd_inject and signals that arrive while the target is stopped: the
 * injected thread meets them as signal-delivery-stops; they must still be
 * delivered after detach, exactly once, with their own siginfo, and with
 * the kernel's restart semantics:
 *   - SIGUSR1 (kill) with an SA_RESTART handler while blocked in read():
 *     handler once, si_code SI_USER, si_pid ours, read() goes on;
 *   - the same without SA_RESTART: read() fails with EINTR once, as if
 *     the signal had interrupted it without us;
 *   - sigqueue(SIGRTMIN, 42): si_code SI_QUEUE and the value survive;
 *   - 20 rounds of a queued RT signal sent just before attach (it may be
 *     caught at any point of the attach): exactly 20 handler runs;
 *   - SIGUSR1 and SIGUSR2 both taken during injection, the SIGUSR1
 *     handler blocking SIGUSR2 (sa_mask) and sleeping 1 s: detach must
 *     not wait for it, and each handler still runs once.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "inject.h"

struct report {
	int usr1, usr2, rt, eintr;
	int code, value;
	pid_t from;
};


static volatile sig_atomic_t n_usr1, n_rt, last_code, last_value, last_pid;

static volatile sig_atomic_t n_usr2, slow_usr1;

static void on_sig(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	if (sig == SIGUSR2) {
		n_usr2++;
		return;
	}
	if (sig == SIGUSR1 && slow_usr1) {
		struct timespec ts = { 1, 0 };

		n_usr1++;
		nanosleep(&ts, NULL);
		return;
	}
	if (sig == SIGUSR1)
		n_usr1++;
	else
		n_rt++;
	last_code = si->si_code;
	last_value = si->si_value.sival_int;
	last_pid = si->si_pid;
}

static void target(int in, int out, int flags)
{
	struct sigaction sa = { .sa_sigaction = on_sig,
				.sa_flags = SA_SIGINFO | flags };
	int eintr = 0;

	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGRTMIN, &sa, NULL) || sigaction(SIGUSR2, &sa, NULL))
		_exit(2);
	if (flags & SA_NODEFER) {
		/* the slow variant: SIGUSR1 blocks SIGUSR2 while it runs */
		slow_usr1 = 1;
		flags &= ~SA_NODEFER;
		sa.sa_flags = SA_SIGINFO | flags;
		sigaddset(&sa.sa_mask, SIGUSR2);
	}
	if (sigaction(SIGUSR1, &sa, NULL))
		_exit(2);
	if (write(out, "r", 1) != 1)
		_exit(2);
	for (;;) {
		struct report r;
		char c;
		ssize_t n = read(in, &c, 1);

		if (n < 0 && errno == EINTR) {
			eintr++;
			continue;
		}
		if (n != 1)
			_exit(0);
		r = (struct report){ n_usr1, n_usr2, n_rt, eintr, last_code,
				     last_value, last_pid };
		if (write(out, &r, sizeof(r)) != sizeof(r))
			_exit(2);
	}
}

/* the target's sa_flags, set before the fork */
static int target_flags;

static void target_with_flags(int in, int out)
{
	target(in, out, target_flags);
}

static void spawn(struct td_child *c, int flags)
{
	char ch;

	target_flags = flags;
	if (td_child_spawn(c, target_with_flags))
		tap_bail("fork: %s", strerror(errno));
	if (read(c->from, &ch, 1) != 1)
		tap_bail("target did not start");
	usleep(20000);	/* into read() */
}

static bool ask(struct td_child *c, struct report *r)
{
	struct pollfd p = { .fd = c->from, .events = POLLIN };

	if (write(c->to, "?", 1) != 1)
		return false;
	if (poll(&p, 1, 3000) != 1)
		return false;
	return read(c->from, r, sizeof(*r)) == sizeof(*r);
}

/* attach; send the signal; inject a few calls; detach */
static int inject_with_signal(pid_t pid, int sig, int value)
{
	struct sd_inject *in;
	long r;
	int err, i;

	err = sd_inject_attach(&in, pid);
	if (err)
		return err;
	if (sig == SIGUSR1)
		kill(pid, sig);
	else
		sigqueue(pid, sig, (union sigval){ .sival_int = value });
	for (i = 0; i < 3 && !err; i++) {
		err = sd_inject_syscall(in, SYS_getpid, NULL, &r);
		if (!err && r != pid)
			err = -EPROTO;
	}
	sd_inject_detach(in);
	return err;
}

static void test_usr1(int flags, const char *what)
{
	struct report r = { 0 };
	struct td_child c;
	bool got;
	int err;

	spawn(&c, flags);
	err = inject_with_signal(c.pid, SIGUSR1, 0);
	got = ask(&c, &r);
	tap_ok(!err && got && r.usr1 == 1 && r.code == SI_USER &&
	       r.from == getpid(),
	       "%s: SIGUSR1 handled once with its siginfo (inject %s, "
	       "runs %d, si_code %d, si_pid %d)", what, strerror(-err),
	       r.usr1, r.code, (int)r.from);
	tap_ok(got && r.eintr == (flags & SA_RESTART ? 0 : 1),
	       "%s: read() saw %d EINTR, as without ptrace", what, r.eintr);
	got = ask(&c, &r);
	tap_ok(got && r.usr1 == 1, "%s: still once, target responsive",
	       what);
	td_child_reap(&c, NULL);
}

static void test_queue(void)
{
	struct report r = { 0 };
	struct td_child c;
	bool got;
	int err;

	spawn(&c, SA_RESTART);
	err = inject_with_signal(c.pid, SIGRTMIN, 42);
	got = ask(&c, &r);
	tap_ok(!err && got && r.rt == 1 && r.code == SI_QUEUE &&
	       r.value == 42,
	       "sigqueue(SIGRTMIN, 42): handled once, si_code %d value %d "
	       "(%s)", r.code, r.value, strerror(-err));
	td_child_reap(&c, NULL);
}

static void test_race(void)
{
	struct report r = { 0 };
	struct td_child c;
	int i, err = 0;
	bool got;

	spawn(&c, SA_RESTART);
	for (i = 0; i < 20 && !err; i++) {
		struct sd_inject *in;
		long ret;

		sigqueue(c.pid, SIGRTMIN, (union sigval){ .sival_int = i });
		if (i & 1)
			sigqueue(c.pid, SIGRTMIN,
				 (union sigval){ .sival_int = i });
		err = sd_inject_attach(&in, c.pid);
		if (err)
			break;
		err = sd_inject_syscall(in, SYS_getpid, NULL, &ret);
		sd_inject_detach(in);
	}
	usleep(50000);
	got = ask(&c, &r);
	tap_ok(!err && got && r.rt == 30,
	       "30 RT signals racing with 20 attaches: %d handled (%s)",
	       r.rt, strerror(-err));
	td_child_reap(&c, NULL);
}

static void test_slow_handler(void)
{
	struct report r = { 0 };
	struct sd_inject *in;
	struct td_child c;
	double t0, t;
	long ret;
	int err;
	bool got;

	spawn(&c, SA_RESTART | SA_NODEFER);
	err = sd_inject_attach(&in, c.pid);
	if (!err) {
		kill(c.pid, SIGUSR1);
		kill(c.pid, SIGUSR2);
		err = sd_inject_syscall(in, SYS_getpid, NULL, &ret);
		if (!err)
			err = sd_inject_syscall(in, SYS_getpid, NULL, &ret);
		t0 = td_now();
		sd_inject_detach(in);
		t = td_now() - t0;
		tap_ok(!err && t < 0.9, "detach does not wait for a slow "
		       "handler (%.3f s, %s)", t, strerror(-err));
	} else {
		tap_ok(false, "attach: %s", strerror(-err));
	}
	usleep(1200000);
	got = ask(&c, &r);
	tap_ok(got && r.usr1 == 1 && r.usr2 == 1,
	       "slow SIGUSR1 handler blocking SIGUSR2: each ran once "
	       "(%d, %d)", r.usr1, r.usr2);
	td_child_reap(&c, NULL);
}

int main(int argc, char **argv)
{
	(void)argc;
	tap_init(argv[0]);
	if (!td_inject_supported())
		return 77;
	signal(SIGPIPE, SIG_IGN);
	test_usr1(SA_RESTART, "SA_RESTART");
	test_usr1(0, "no SA_RESTART");
	test_queue();
	test_race();
	test_slow_handler();
	return tap_done();
}
