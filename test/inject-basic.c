// SPDX-License-Identifier: MIT
/*
 * sd_inject: attach, run syscalls inside a forked target, detach; the
 * target must run on as if nothing happened:
 *   - injected getpid()/gettid() return the target's ids, repeatedly;
 *   - every general register survives (a target spinning in asm with
 *     known values in 14 registers checks them);
 *   - a thread stopped inside a blocking syscall resumes it exactly:
 *     read() on a pipe still returns the data written after detach,
 *     nanosleep()/clock_nanosleep() sleep the remaining time (the
 *     restart_block path), futex wait with and without timeout,
 *     FUTEX_LOCK_PI (-ERESTARTNOINTR), pause() (-ERESTARTNOHAND: sleeps
 *     on until a real signal), poll() with and without timeout,
 *     epoll_wait() (plain -EINTR, restarted by sd_inject);
 *   - a SIGSTOPped target stays stopped, SIGCONT resumes it;
 *   - nothing stays traced after detach; -ESRCH for a missing pid.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "inject.h"

struct result {
	long ret;
	int err;
	double elapsed;
	char buf[16];
};


static uint32_t *shared_word;

static void send_result(int fd, long ret, int err, double t0, const char *b)
{
	struct result r = { .ret = ret, .err = err, .elapsed = td_now() - t0 };

	if (b)
		snprintf(r.buf, sizeof(r.buf), "%s", b);
	if (write(fd, &r, sizeof(r)) != sizeof(r))
		_exit(3);
}

static bool get_result(struct td_child *c, struct result *r, int ms)
{
	struct pollfd p = { .fd = c->from, .events = POLLIN };

	if (poll(&p, 1, ms) != 1)
		return false;
	return read(c->from, r, sizeof(*r)) == sizeof(*r);
}

/* Syscall number the thread is blocked in (/proc/.../syscall), or -1. */
static long cur_syscall(pid_t tid)
{
	char path[64], buf[128];
	long nr = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/syscall", tid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	if (fgets(buf, sizeof(buf), f))
		nr = strtol(buf, NULL, 10);
	fclose(f);
	return nr;
}

static bool wait_in_syscall(pid_t tid, long nr)
{
	double end = td_now() + 3;

	while (td_now() < end) {
		if (cur_syscall(tid) == nr) {
			usleep(20000);	/* let it really block */
			return cur_syscall(tid) == nr;
		}
		usleep(2000);
	}
	return false;
}

/* attach, run a few getpid()s, hold the target @hold_ms, detach */
static int poke(pid_t pid, int hold_ms)
{
	struct sd_inject *in;
	long r = 0;
	int err, i;

	err = sd_inject_attach(&in, pid);
	if (err)
		return err;
	for (i = 0; i < 3 && !err; i++) {
		err = sd_inject_syscall(in, SYS_getpid, NULL, &r);
		if (!err && r != pid)
			err = -EPROTO;
	}
	if (hold_ms)
		usleep((useconds_t)hold_ms * 1000);
	sd_inject_detach(in);
	return err;
}

/* ---------- targets ---------- */

static void t_idle(int in, int out)
{
	char c;

	while (read(in, &c, 1) == 1)
		send_result(out, getpid(), 0, td_now(), "alive");
}

/*
 * Spin in asm with known values in rbx, rdx, rsi, rdi, r8-r15 and rax as
 * the loop counter; any register not restored shows up as a mismatch.
 */
static long reg_spin(long iters)
{
#ifdef __x86_64__
	long bad;

	__asm__ volatile(
		"movabs $0x1111111111111111, %%rbx\n\t"
		"movabs $0x2222222222222222, %%rdx\n\t"
		"movabs $0x3333333333333333, %%rsi\n\t"
		"movabs $0x4444444444444444, %%rdi\n\t"
		"movabs $0x5555555555555555, %%r8\n\t"
		"movabs $0x6666666666666666, %%r9\n\t"
		"movabs $0x7777777777777777, %%r10\n\t"
		"movabs $0x8888888888888888, %%r11\n\t"
		"movabs $0x9999999999999999, %%r12\n\t"
		"movabs $0xaaaaaaaaaaaaaaaa, %%r13\n\t"
		"movabs $0xbbbbbbbbbbbbbbbb, %%r14\n\t"
		"movabs $0xcccccccccccccccc, %%r15\n\t"
		"1: subq $1, %%rax\n\t"
		"jnz 1b\n\t"
		"movabs $0x1111111111111111, %%rcx\n\t"
		"xorq %%rcx, %%rbx\n\t"
		"movabs $0x2222222222222222, %%rcx\n\t"
		"xorq %%rcx, %%rdx\n\t"
		"orq %%rdx, %%rbx\n\t"
		"movabs $0x3333333333333333, %%rcx\n\t"
		"xorq %%rcx, %%rsi\n\t"
		"orq %%rsi, %%rbx\n\t"
		"movabs $0x4444444444444444, %%rcx\n\t"
		"xorq %%rcx, %%rdi\n\t"
		"orq %%rdi, %%rbx\n\t"
		"movabs $0x5555555555555555, %%rcx\n\t"
		"xorq %%rcx, %%r8\n\t"
		"orq %%r8, %%rbx\n\t"
		"movabs $0x6666666666666666, %%rcx\n\t"
		"xorq %%rcx, %%r9\n\t"
		"orq %%r9, %%rbx\n\t"
		"movabs $0x7777777777777777, %%rcx\n\t"
		"xorq %%rcx, %%r10\n\t"
		"orq %%r10, %%rbx\n\t"
		"movabs $0x8888888888888888, %%rcx\n\t"
		"xorq %%rcx, %%r11\n\t"
		"orq %%r11, %%rbx\n\t"
		"movabs $0x9999999999999999, %%rcx\n\t"
		"xorq %%rcx, %%r12\n\t"
		"orq %%r12, %%rbx\n\t"
		"movabs $0xaaaaaaaaaaaaaaaa, %%rcx\n\t"
		"xorq %%rcx, %%r13\n\t"
		"orq %%r13, %%rbx\n\t"
		"movabs $0xbbbbbbbbbbbbbbbb, %%rcx\n\t"
		"xorq %%rcx, %%r14\n\t"
		"orq %%r14, %%rbx\n\t"
		"movabs $0xcccccccccccccccc, %%rcx\n\t"
		"xorq %%rcx, %%r15\n\t"
		"orq %%r15, %%rbx\n\t"
		"movq %%rbx, %%rax\n\t"
		: "=a"(bad)
		: "a"(iters)
		: "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11",
		  "r12", "r13", "r14", "r15", "cc", "memory");
	return bad;
#else
	(void)iters;
	return 0;
#endif
}

static void t_regs(int in, int out)
{
	double t0 = td_now();
	long bad = 0, rounds = 0;

	struct pollfd p = { .fd = in, .events = POLLIN };

	/* spin in rounds until told to stop (bounded: 20 s) */
	while (poll(&p, 1, 0) == 0 && td_now() - t0 < 20) {
		bad |= reg_spin(20000000);
		rounds++;
	}
	send_result(out, bad, (int)rounds, t0, NULL);
}

static void t_read(int in, int out)
{
	char buf[16] = { 0 };
	double t0 = td_now();
	long r = read(in, buf, sizeof(buf) - 1);

	send_result(out, r, r < 0 ? errno : 0, t0, buf);
}

static void t_nanosleep(int in, int out)
{
	struct timespec ts = { 1, 0 }, rem;
	double t0 = td_now();
	long r = syscall(SYS_nanosleep, &ts, &rem);

	send_result(out, r, r < 0 ? errno : 0, t0, NULL);
	(void)in;
}

static void t_clock_nanosleep(int in, int out)
{
	struct timespec ts = { 1, 0 };
	double t0 = td_now();
	int r = clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);

	send_result(out, r, r, t0, NULL);
	(void)in;
}

static void t_futex(int in, int out)
{
	double t0 = td_now();
	long r = syscall(SYS_futex, shared_word, FUTEX_WAIT, 0, NULL, NULL, 0);

	send_result(out, r, r < 0 ? errno : 0, t0, NULL);
	(void)in;
}

static void t_futex_timeout(int in, int out)
{
	struct timespec ts = { 5, 0 };
	double t0 = td_now();
	long r = syscall(SYS_futex, shared_word, FUTEX_WAIT, 0, &ts, NULL, 0);

	send_result(out, r, r < 0 ? errno : 0, t0, NULL);
	(void)in;
}

static void t_lock_pi(int in, int out)
{
	double t0 = td_now();
	long r = syscall(SYS_futex, shared_word, FUTEX_LOCK_PI, 0, NULL, NULL,
			 0);

	send_result(out, r, r < 0 ? errno : 0, t0, NULL);
	(void)in;
}

static void on_usr1(int sig)
{
	(void)sig;
}

static void t_pause(int in, int out)
{
	double t0 = td_now();
	long r;

	r = pause();
	send_result(out, r, r < 0 ? errno : 0, t0, NULL);
	(void)in;
}

static void t_poll(int in, int out)
{
	struct pollfd p = { .fd = in, .events = POLLIN };
	double t0 = td_now();
	long r = poll(&p, 1, -1);

	send_result(out, r, r < 0 ? errno : 0, t0, NULL);
}

static void t_poll_timeout(int in, int out)
{
	struct pollfd p = { .fd = in, .events = POLLIN };
	double t0 = td_now();
	long r = poll(&p, 1, 5000);

	send_result(out, r, r < 0 ? errno : 0, t0, NULL);
}

static void t_epoll(int in, int out)
{
	struct epoll_event ev = { .events = EPOLLIN }, got;
	int ep = epoll_create1(0);
	double t0 = td_now();
	long r;

	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, in, &ev))
		_exit(4);
	r = epoll_wait(ep, &got, 1, -1);
	send_result(out, r, r < 0 ? errno : 0, t0, NULL);
}

/* ---------- scenarios ---------- */

static void test_getpid(void)
{
	struct sd_inject *in = NULL;
	struct td_child c;
	struct result res;
	long r1 = 0, r2 = 0, r3 = 0;
	pid_t pid;
	int err;

	if (td_child_spawn(&c, t_idle))
		tap_bail("spawn");
	err = sd_inject_attach(&in, c.pid);
	tap_ok(err == 0, "attach to a single-threaded target (%s)",
	       strerror(-err));
	if (!err) {
		err = sd_inject_syscall(in, SYS_getpid, NULL, &r1);
		if (!err)
			err = sd_inject_syscall(in, SYS_gettid, NULL, &r2);
		if (!err)
			err = sd_inject_syscall(in, SYS_getppid, NULL, &r3);
		tap_ok(!err && r1 == c.pid && r2 == c.pid && r3 == getpid(),
		       "injected getpid/gettid/getppid = %ld/%ld/%ld (%s)",
		       r1, r2, r3, strerror(-err));
		r1 = 0;
		err = sd_inject_syscall(in, SYS_close, (long[6]){ 9999 }, &r1);
		tap_ok(!err && r1 == -EBADF,
		       "an injected call's error comes back raw (%ld)", r1);
		tap_ok(td_tracer_pid(c.pid) == getpid(), "traced while attached");
		sd_inject_detach(in);
	}
	tap_ok(td_tracer_pid(c.pid) == 0, "not traced after detach");
	tap_ok(write(c.to, "x", 1) == 1 && get_result(&c, &res, 2000) &&
	       res.ret == c.pid, "target responds after detach");
	err = poke(c.pid, 0);
	tap_ok(err == 0, "attach again after detach (%s)", strerror(-err));
	tap_ok(write(c.to, "x", 1) == 1 && get_result(&c, &res, 2000),
	       "target responds after the second detach");
	pid = c.pid;
	td_child_reap(&c, NULL);

	err = sd_inject_attach(&in, pid);
	tap_ok(err == -ESRCH, "attach to a reaped pid: -ESRCH (%s)",
	       strerror(-err));
	if (!err)
		sd_inject_detach(in);
	err = sd_inject_attach(&in, getpid());
	tap_ok(err == -EPERM, "attach to ourselves: -EPERM (%s)",
	       strerror(-err));
	if (!err)
		sd_inject_detach(in);
}

static void test_regs(void)
{
	struct td_child c;
	struct result res;
	bool ok = true, got;
	int i, err = 0;

	if (td_child_spawn(&c, t_regs))
		tap_bail("spawn");
	for (i = 0; i < 20 && ok; i++) {
		usleep(20000);
		err = poke(c.pid, 1);
		ok = err == 0;
	}
	tap_ok(ok, "20 attach/inject/detach cycles on a spinning target (%s)",
	       strerror(-err));
	if (write(c.to, "q", 1) != 1)
		tap_diag("register target gone");
	got = get_result(&c, &res, 5000);
	tap_ok(got && res.ret == 0,
	       "all 14 general registers survived (%d rounds, mismatch %#lx)",
	       res.err, res.ret);
	td_child_reap(&c, NULL);
}

static char proc_state(pid_t pid)
{
	char path[64], line[128], st = '?';
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "re");
	if (!f)
		return '?';
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "State: %c", &st) == 1)
			break;
	fclose(f);
	return st;
}

/* A job-control-stopped target stays stopped, then SIGCONT resumes it. */
static void test_group_stop(void)
{
	struct td_child c;
	struct result res;
	int err, i;

	if (td_child_spawn(&c, t_idle))
		tap_bail("spawn");
	kill(c.pid, SIGSTOP);
	for (i = 0; i < 300 && proc_state(c.pid) != 'T'; i++)
		usleep(1000);
	err = poke(c.pid, 0);
	usleep(20000);
	tap_ok(!err && proc_state(c.pid) == 'T',
	       "SIGSTOPped target: injection works, still stopped after "
	       "detach (%s, state %c)", strerror(-err), proc_state(c.pid));
	kill(c.pid, SIGCONT);
	tap_ok(write(c.to, "x", 1) == 1 && get_result(&c, &res, 2000),
	       "SIGCONT: it runs and answers");
	td_child_reap(&c, NULL);
}

/*
 * Target @fn blocks in syscall @nr; attach, inject, hold @hold_ms, detach;
 * then @wake (if any) after @wake_ms, and check the result.
 */
enum wake { W_PIPE, W_FUTEX, W_PI, W_SIGNAL };

static void blocked(const char *what, void (*fn)(int, int), long nr,
		    int hold_ms, int wake_ms, enum wake how, long want_ret,
		    double tmin, double tmax)
{
	struct td_child c;
	struct result res = { .ret = -999 };
	int err;
	bool got;

	/* a PI futex owned by us: the target blocks in FUTEX_LOCK_PI */
	*shared_word = how == W_PI ? (uint32_t)syscall(SYS_gettid) : 0;
	if (td_child_spawn(&c, fn))
		tap_bail("spawn");
	if (!wait_in_syscall(c.pid, nr)) {
		tap_ok(false, "%s: target blocked in syscall %ld", what, nr);
		td_child_reap(&c, NULL);
		return;
	}
	err = poke(c.pid, hold_ms);
	if (wake_ms >= 0) {
		usleep((useconds_t)wake_ms * 1000);
		if (how == W_FUTEX) {
			*shared_word = 1;
			syscall(SYS_futex, shared_word, FUTEX_WAKE, 1, NULL,
				NULL, 0);
		} else if (how == W_PI) {
			syscall(SYS_futex, shared_word, FUTEX_UNLOCK_PI, 0,
				NULL, NULL, 0);
		} else if (how == W_SIGNAL) {
			kill(c.pid, SIGUSR1);
		} else if (write(c.to, "hello", 5) != 5) {
			tap_diag("%s: the target is gone already", what);
		}
	}
	got = get_result(&c, &res, 5000);
	tap_ok(!err && got && res.ret == want_ret && res.elapsed >= tmin &&
	       res.elapsed <= tmax,
	       "%s: resumes as if never interrupted (inject %s, ret %ld "
	       "errno %d, %.3f s in [%.2f, %.2f]%s%s)", what,
	       strerror(-err), res.ret, res.err, res.elapsed, tmin, tmax,
	       res.buf[0] ? ", data " : "", res.buf);
	if (got && how == W_PIPE && wake_ms >= 0 && want_ret == 5)
		tap_ok(!strcmp(res.buf, "hello"), "%s: data intact", what);
	td_child_reap(&c, NULL);
}

int main(int argc, char **argv)
{
	(void)argc;
	tap_init(argv[0]);
	if (!td_inject_supported())
		return 77;
	signal(SIGPIPE, SIG_IGN);
	/* inherited by the pause() target: a handler, so pause() returns */
	signal(SIGUSR1, on_usr1);
	shared_word = mmap(NULL, PG, PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared_word == MAP_FAILED)
		tap_bail("mmap");
	test_getpid();
	test_regs();
	test_group_stop();
	/* read: -ERESTARTSYS */
	blocked("read(pipe)", t_read, SYS_read, 100, 100, W_PIPE, 5, 0, 2);
	/*
	 * nanosleep: -ERESTART_RESTARTBLOCK, must sleep the rest only;
	 * restarting from the full second would take >= 1.6 s
	 */
	blocked("nanosleep(1 s)", t_nanosleep, SYS_nanosleep, 600, -1, W_PIPE,
		0, 0.99, 1.5);
	blocked("clock_nanosleep(1 s)", t_clock_nanosleep,
		SYS_clock_nanosleep, 600, -1, W_PIPE, 0, 0.99, 1.5);
	/* futex without timeout: -ERESTARTSYS; with: restart block */
	blocked("futex wait", t_futex, SYS_futex, 100, 100, W_FUTEX, 0, 0, 2);
	blocked("futex wait (5 s timeout)", t_futex_timeout, SYS_futex, 100,
		100, W_FUTEX, 0, 0, 2);
	/* FUTEX_LOCK_PI: -ERESTARTNOINTR */
	blocked("futex LOCK_PI", t_lock_pi, SYS_futex, 100, 100, W_PI, 0, 0,
		2);
	/* pause(): -ERESTARTNOHAND; sleeps on until a real signal */
	blocked("pause()", t_pause, SYS_pause, 100, 300, W_SIGNAL, -1, 0.35,
		2);
	/* poll: -ERESTARTNOHAND without timeout, restart block with */
	blocked("poll(-1)", t_poll, SYS_poll, 100, 100, W_PIPE, 1, 0, 2);
	blocked("poll(5 s)", t_poll_timeout, SYS_poll, 100, 100, W_PIPE, 1, 0,
		2);
	/* epoll_wait: plain -EINTR, restarted by sd_inject (see inject.c) */
	blocked("epoll_wait(-1)", t_epoll, SYS_epoll_wait, 100, 100, W_PIPE, 1,
		0, 2);
	munmap(shared_word, PG);
	return tap_done();
}
