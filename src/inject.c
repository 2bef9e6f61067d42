// SPDX-License-Identifier: MIT
/*
 * System call injection under ptrace (see inject.h).
 *
 * Every thread is seized (PTRACE_SEIZE, no PTRACE_O_EXITKILL: when we die
 * the kernel detaches and the target runs on) and interrupted.  The chosen
 * thread sits in a PTRACE_EVENT_STOP, i.e. inside get_signal() on its way
 * back to user mode, with the registers user mode will see.  An injection
 * points rip at a `syscall` instruction of the target (the vDSO has one),
 * runs to the syscall-exit stop, reads rax, puts the saved registers back
 * at once, and returns to an EVENT_STOP (PTRACE_INTERRUPT + PTRACE_CONT:
 * the trap is taken before the return to user mode).
 *
 * Restart: the saved registers are restored in a stop inside get_signal(),
 * so when the thread leaves it arch_do_signal_or_restart() applies the
 * kernel's own restart logic to them (-ERESTARTSYS, -ERESTARTNOINTR,
 * -ERESTARTNOHAND: rax = orig_rax, rip -= 2; -ERESTART_RESTARTBLOCK:
 * rax = __NR_restart_syscall, rip -= 2; or the signal-handler variants):
 * a thread interrupted in read(), nanosleep() or futex() resumes as if
 * nothing happened, restart_block included, and nothing here duplicates
 * that logic.  Injected calls run with orig_rax = -1 so that it never
 * touches their registers.  epoll_wait() fails with a plain -EINTR when
 * merely interrupted; see regs_eintr_restart().
 *
 * Signals: a thread may report a signal-delivery-stop instead of the
 * interrupt.  Other threads are simply left in that stop and detached with
 * the signal (delivered with its own siginfo).  For the chosen thread the
 * signal is taken (saved with its siginfo) so that the injection can run;
 * at detach a carrier (the same signal, tgkill) produces a new
 * signal-delivery-stop in which the saved siginfo is put back, so the
 * handler sees the original siginfo and SA_RESTART decides the restart,
 * exactly as if the signal had interrupted the thread.
 *
 * Seccomp: a filter could kill the target for an injected call; it is
 * suspended while attached (PTRACE_O_SUSPEND_SECCOMP, CAP_SYS_ADMIN) or
 * injection is refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "inject.h"
#include "uapi.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#ifndef NT_PRSTATUS
#define NT_PRSTATUS 1
#endif

#define MAX_SAVED_SIGS	16
#define SEIZE_OPTS	(PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACEEXEC)
/* linux/ptrace.h's value; glibc's headers may lack it */
#define OPT_SUSPEND_SECCOMP	(1 << 21)
/* How much of the executable mappings to search when there is no vDSO. */
#define SCAN_LIMIT	(16u << 20)

/*
 * ---------- architecture ----------
 * Each provides sd_regs (the NT_PRSTATUS regset), syscall_insn and the
 * regs_*() helpers.  arm64 would use struct user_pt_regs, `svc #0`
 * (01 00 00 d4), x8 = nr, x0-x5 = args, NT_ARM_SYSTEM_CALL to set or
 * cancel the syscall number at the entry stop, and its own restart
 * handling (orig_x0 is not visible to ptrace: save x0 at the stop).
 */

#if defined(__x86_64__)
#include <sys/user.h>
typedef struct user_regs_struct sd_regs;

static const uint8_t syscall_insn[] = { 0x0f, 0x05 };

static void regs_setup(sd_regs *r, uint64_t pc, long nr, const long a[6])
{
	r->rip = pc;
	r->rax = (uint64_t)nr;
	/* not a syscall: the restart logic must leave these registers alone */
	r->orig_rax = (uint64_t)-1;
	r->rdi = (uint64_t)a[0];
	r->rsi = (uint64_t)a[1];
	r->rdx = (uint64_t)a[2];
	r->r10 = (uint64_t)a[3];
	r->r8 = (uint64_t)a[4];
	r->r9 = (uint64_t)a[5];
}

static long regs_ret(const sd_regs *r)
{
	return (long)r->rax;
}

/*
 * epoll_wait() fails with -EINTR (no restart code) when merely
 * interrupted by ptrace.  An infinite wait without a signal mask is
 * restarted instead: indistinguishable from a signal arriving just before
 * the call, unlike a spurious EINTR.
 */
static bool regs_eintr_restart(sd_regs *r)
{
	bool restart = false;

	if ((long)r->rax != -EINTR)
		return false;
	switch ((long)r->orig_rax) {
	case SYS_epoll_wait:
		restart = (int)r->r10 < 0;
		break;
	case SYS_epoll_pwait:
		restart = (int)r->r10 < 0 && !r->r8;
		break;
#ifdef SYS_epoll_pwait2
	case SYS_epoll_pwait2:
		restart = !r->r10 && !r->r8;
		break;
#endif
	}
	if (!restart)
		return false;
	r->rax = r->orig_rax;
	r->rip -= sizeof(syscall_insn);
	return true;
}

/* At a syscall-entry stop: make the kernel skip the call. */
static void regs_skip_syscall(sd_regs *r)
{
	r->orig_rax = (uint64_t)-1;
}

/* At the syscall-entry stop: did it enter our call, from our insn? */
static bool regs_entered(const sd_regs *r, uint64_t pc, long nr)
{
	return r->orig_rax == (uint64_t)nr &&
	       r->rip == pc + sizeof(syscall_insn);
}
#endif

#ifdef SD_INJECT_ARCH

enum thr_state {
	T_RUNNING,	/* seized, interrupt requested, no stop seen yet */
	T_EVENT,	/* PTRACE_EVENT_STOP (interrupt or group stop) */
	T_SIGNAL,	/* signal-delivery-stop for stop_sig */
	T_SYSCALL,	/* syscall-entry/exit stop (chosen thread only) */
	T_GONE,		/* exited */
};

struct saved_sig {
	int signo;
	siginfo_t info;
};

struct thr {
	pid_t tid;
	enum thr_state state;
	int stop_sig;
};

struct sd_inject {
	pid_t pid;
	struct thr *t;		/* mapped: see map_zalloc() */
	size_t n, cap, t_bytes;
	size_t chosen;
	bool have_chosen;
	sd_regs saved;		/* the chosen thread's registers at the stop */
	bool regs_saved;
	uint64_t insn;		/* address of a syscall instruction, 0: unknown */
	struct saved_sig sigs[MAX_SAVED_SIGS];
	size_t nsigs;
	size_t lost_sigs;	/* saved list full: merged away (documented) */
	bool seccomp_blocked;	/* filtered and we cannot suspend it */
};

static int get_regs(pid_t tid, sd_regs *r)
{
	struct iovec iov = { .iov_base = r, .iov_len = sizeof(*r) };

	if (ptrace(PTRACE_GETREGSET, tid, (void *)NT_PRSTATUS, &iov))
		return -errno;
	return iov.iov_len == sizeof(*r) ? 0 : -EIO;
}

static int set_regs(pid_t tid, const sd_regs *r)
{
	struct iovec iov = { .iov_base = (void *)r, .iov_len = sizeof(*r) };

	if (ptrace(PTRACE_SETREGSET, tid, (void *)NT_PRSTATUS, &iov))
		return -errno;
	return 0;
}

/*
 * ---------- no allocator, no stdio ----------
 * sd_inject_userfaultfd() runs all this in a guardian task that shares the
 * caller's memory.  A thread of the caller killed while it held a lock of
 * malloc or stdio would leave the lock taken forever and the guardian, with
 * the target stopped, waiting on it: nothing here takes such a lock.
 * Memory comes from mmap, /proc files are read into buffers on the stack.
 */

/* Zeroed pages (@size rounded up), or NULL. */
static void *map_zalloc(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static char *put_uint(char *p, unsigned int v)
{
	char digits[12];
	int n = 0;

	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*p++ = digits[--n];
	return p;
}

/* "/proc/PID/task/TID/@leaf", or "/proc/PID/@leaf" when @tid is 0 */
static void proc_path(char path[64], pid_t pid, pid_t tid, const char *leaf)
{
	char *p = stpcpy(path, "/proc/");

	p = put_uint(p, (unsigned int)pid);
	if (tid) {
		p = stpcpy(p, "/task/");
		p = put_uint(p, (unsigned int)tid);
	}
	*p++ = '/';
	strcpy(p, leaf);
}

/* The start of /proc/PID/task/TID/status in @buf (NUL-ended); false if gone. */
static bool read_status(pid_t pid, pid_t tid, char *buf, size_t size)
{
	char path[64];
	size_t len = 0;
	int fd;

	proc_path(path, pid, tid, "status");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	while (len + 1 < size) {
		ssize_t n = read(fd, buf + len, size - 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = 0;
	return len > 0;
}

/* What follows "@key" at the start of a line of @buf, or NULL. */
static const char *status_field(const char *buf, const char *key)
{
	size_t n = strlen(key);

	while (buf) {
		if (!strncmp(buf, key, n))
			return buf + n;
		buf = strchr(buf, '\n');
		if (buf)
			buf++;
	}
	return NULL;
}

/* the fields used here are all in the first 2 KiB */
#define STATUS_BUF	4096

/* The "Seccomp:" mode of @tid: 0 none, 1 strict, 2 filter; -1 unknown. */
static int thread_seccomp(pid_t pid, pid_t tid)
{
	char buf[STATUS_BUF];
	const char *v;

	if (!read_status(pid, tid, buf, sizeof(buf)))
		return -1;
	v = status_field(buf, "Seccomp:");
	return v ? (int)strtol(v, NULL, 10) : 0;
}

/* Has @tid exited (gone, or a zombie waiting for the group)? */
static bool thread_dead(pid_t pid, pid_t tid)
{
	char buf[STATUS_BUF];
	const char *v;

	if (!read_status(pid, tid, buf, sizeof(buf)))
		return true;
	v = status_field(buf, "State:");
	if (!v)
		return true;
	v += strspn(v, " \t");
	return *v == 'Z' || *v == 'X';
}

/* EPERM from PTRACE_SEIZE: someone else's tracee, or not allowed? */
static int seize_error(pid_t pid, pid_t tid)
{
	char buf[STATUS_BUF];
	const char *v;

	if (!read_status(pid, tid, buf, sizeof(buf)))
		return -EPERM;
	v = status_field(buf, "TracerPid:");
	return v && strtol(v, NULL, 10) != 0 ? -EBUSY : -EPERM;
}

/* The pending (own, shared) and blocked masks of @tid; false if unknown. */
static bool sig_masks(pid_t pid, pid_t tid, unsigned long long m[3])
{
	static const char *const key[3] = { "SigPnd:", "ShdPnd:", "SigBlk:" };
	char buf[STATUS_BUF];
	int i;

	if (!read_status(pid, tid, buf, sizeof(buf)))
		return false;
	for (i = 0; i < 3; i++) {
		const char *v = status_field(buf, key[i]);
		char *e;

		if (!v)
			return false;
		m[i] = strtoull(v, &e, 16);
		if (e == v)
			return false;
	}
	return true;
}

/* Does @tid have an unblocked signal pending (its own or the process's)? */
static bool signal_pending(pid_t pid, pid_t tid)
{
	unsigned long long m[3];

	if (!sig_masks(pid, tid, m))
		return true;	/* unknown: assume the worst */
	return ((m[0] | m[1]) & ~m[2]) != 0;
}

static bool signal_blocked(pid_t pid, pid_t tid, int sig)
{
	unsigned long long m[3];

	if (!sig_masks(pid, tid, m))
		return true;
	return (m[2] >> (sig - 1)) & 1;
}

/* Undo a ptrace-caused EINTR in a thread stopped in get_signal(). */
static void fix_eintr(struct sd_inject *in, pid_t tid, sd_regs *r)
{
	if (signal_pending(in->pid, tid))
		return;
	(void)regs_eintr_restart(r);
}

static struct thr *thr_find(struct sd_inject *in, pid_t tid)
{
	size_t i;

	for (i = 0; i < in->n; i++)
		if (in->t[i].tid == tid)
			return &in->t[i];
	return NULL;
}

static int thr_reserve(struct sd_inject *in)
{
	size_t bytes = in->t_bytes ? in->t_bytes * 2 : PAGE_SZ;
	void *t;

	if (in->n < in->cap)
		return 0;
	t = in->t ? mremap(in->t, in->t_bytes, bytes, MREMAP_MAYMOVE)
		  : mmap(NULL, bytes, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (t == MAP_FAILED)
		return -ENOMEM;
	in->t = t;
	in->t_bytes = bytes;
	in->cap = bytes / sizeof(*in->t);
	return 0;
}

/*
 * Wait for the next stop (or exit) of @th and record what it is.
 * Returns 0, or -ESRCH when the thread is gone.
 */
static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* As thr_wait(), giving up after @timeout_ms (< 0: never): -ETIMEDOUT. */
static int thr_wait_ms(struct thr *th, int timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;
	int st, ev;
	pid_t r;

	for (;;) {
		r = waitpid(th->tid, &st,
			    __WALL | (timeout_ms >= 0 ? WNOHANG : 0));
		if (r < 0 && errno == EINTR)
			continue;
		if (r != 0)
			break;
		if (now_ms() >= end)
			return -ETIMEDOUT;
		usleep(500);
	}
	if (r < 0) {
		th->state = T_GONE;
		return errno == ECHILD ? -ESRCH : -errno;
	}
	if (WIFEXITED(st) || WIFSIGNALED(st)) {
		th->state = T_GONE;
		return -ESRCH;
	}
	if (!WIFSTOPPED(st))
		return -EPROTO;
	ev = st >> 16;
	th->stop_sig = 0;
	if (ev == PTRACE_EVENT_STOP || ev == PTRACE_EVENT_EXEC)
		th->state = T_EVENT;
	else if (ev == 0 && WSTOPSIG(st) == (SIGTRAP | 0x80))
		th->state = T_SYSCALL;
	else if (ev == 0) {
		th->state = T_SIGNAL;
		th->stop_sig = WSTOPSIG(st);
	} else {
		/* no other event is enabled */
		th->state = T_EVENT;
	}
	return 0;
}

static int thr_wait(struct thr *th)
{
	return thr_wait_ms(th, -1);
}

/* Take the chosen thread's pending delivery-stop signal for later. */
static int save_signal(struct sd_inject *in, struct thr *th)
{
	struct saved_sig *s;

	if (in->nsigs == MAX_SAVED_SIGS) {
		in->lost_sigs++;
		goto out;
	}
	s = &in->sigs[in->nsigs];
	memset(s, 0, sizeof(*s));
	s->signo = th->stop_sig;
	if (ptrace(PTRACE_GETSIGINFO, th->tid, NULL, &s->info))
		return -errno;
	in->nsigs++;
out:
	th->stop_sig = 0;
	return 0;
}

/*
 * Resume the chosen thread (@req, no signal) and wait until it reaches a
 * stop of kind @want, saving the signals it meets on the way.
 */
static int chosen_run_to(struct sd_inject *in, enum __ptrace_request req,
			 enum thr_state want)
{
	struct thr *th = &in->t[in->chosen];
	int err;

	for (;;) {
		if (ptrace(req, th->tid, NULL, NULL))
			return -errno;
		err = thr_wait(th);
		if (err)
			return err;
		if (th->state == want)
			return 0;
		if (th->state == T_SIGNAL) {
			err = save_signal(in, th);
			if (err)
				return err;
			continue;
		}
		/* an EVENT_STOP while running to a syscall stop: go on */
		if (th->state == T_EVENT || th->state == T_SYSCALL)
			continue;
		return -EPROTO;
	}
}

/* Bring the chosen thread from a ptrace-stop back to an EVENT_STOP. */
static int chosen_to_event(struct sd_inject *in)
{
	struct thr *th = &in->t[in->chosen];

	if (th->state == T_EVENT)
		return 0;
	if (th->state == T_SIGNAL) {
		int err = save_signal(in, th);

		if (err)
			return err;
	}
	/* the trap is taken in get_signal(), before user mode runs */
	if (ptrace(PTRACE_INTERRUPT, th->tid, NULL, NULL))
		return -errno;
	return chosen_run_to(in, PTRACE_CONT, T_EVENT);
}

/* Seize and interrupt @tid if not seen yet: 1 if it was new, 0, -errno. */
static int seize_one(struct sd_inject *in, pid_t tid)
{
	int err;

	if (tid <= 0 || thr_find(in, tid))
		return 0;
	/* room first: a seized thread must always be on the list */
	err = thr_reserve(in);
	if (err)
		return err;
	if (ptrace(PTRACE_SEIZE, tid, NULL, (void *)(long)SEIZE_OPTS)) {
		int e = errno;

		if (e == ESRCH)
			return 0;	/* exited meanwhile */
		/* a zombie thread cannot be seized: not an error */
		if (e == EPERM && thread_dead(in->pid, tid))
			return 0;
		return e == EPERM ? seize_error(in->pid, tid) : -e;
	}
	in->t[in->n++] = (struct thr){ .tid = tid, .state = T_RUNNING };
	if (ptrace(PTRACE_INTERRUPT, tid, NULL, NULL) && errno != ESRCH)
		return -errno;
	return 1;
}

/* the kernel's struct linux_dirent64 */
struct dent64 {
	uint64_t ino;
	int64_t off;
	unsigned short reclen;
	unsigned char type;
	char name[];
};

/* Seize and interrupt the threads not seen yet; how many were new. */
static int seize_new(struct sd_inject *in)
{
	char buf[4096] __attribute__((aligned(8)));
	char path[64];
	int fd, added = 0, err = 0;

	proc_path(path, in->pid, 0, "task");
	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ESRCH : -errno;
	for (;;) {
		long len = syscall(SYS_getdents64, fd, buf, sizeof(buf));
		long off;

		if (len < 0 && errno == EINTR)
			continue;
		if (len < 0)
			err = -errno;
		if (len <= 0)
			break;
		for (off = 0; off < len && !err;) {
			const struct dent64 *d = (const void *)(buf + off);
			int r = seize_one(in, (pid_t)strtol(d->name, NULL, 10));

			if (r < 0)
				err = r;
			else
				added += r;
			off += d->reclen;
		}
		if (err)
			break;
	}
	close(fd);
	return err ? err : added;
}

static void detach_others(struct sd_inject *in)
{
	size_t i;

	for (i = 0; i < in->n; i++) {
		struct thr *th = &in->t[i];

		if (th->state == T_GONE)
			continue;
		if (th->state == T_RUNNING) {
			/* seized but never waited for: must stop to detach */
			if (thr_wait(th))
				continue;
		}
		if (th->state == T_EVENT) {
			sd_regs r;

			if (!get_regs(th->tid, &r)) {
				sd_regs o = r;

				fix_eintr(in, th->tid, &r);
				if (memcmp(&o, &r, sizeof(r)))
					(void)set_regs(th->tid, &r);
			}
		}
		/* a delivery-stop hands its signal on, with its siginfo */
		ptrace(PTRACE_DETACH, th->tid, NULL,
		       (void *)(long)(th->state == T_SIGNAL ? th->stop_sig
							     : 0));
		th->state = T_GONE;
	}
}

/*
 * Detach the chosen thread: registers back, then the saved signals
 * delivered one by one through carrier delivery-stops.
 */
/* A synchronous fault: re-raised when the instruction runs again. */
static bool is_fault(const struct saved_sig *s)
{
	switch (s->signo) {
	case SIGSEGV:
	case SIGBUS:
	case SIGILL:
	case SIGFPE:
	case SIGTRAP:
		return s->info.si_code > 0 && s->info.si_code != SI_KERNEL;
	}
	return false;
}

/*
 * Is this delivery-stop our carrier for @s?  A standard signal merges with
 * a pending one of the same number (the kernel may always merge those);
 * an RT one queues behind older instances, which are delivered first.
 */
static bool is_carrier(const struct saved_sig *s, int sig, const siginfo_t *si)
{
	if (sig != s->signo)
		return false;
	return sig < SIGRTMIN ||
	       (si->si_code == SI_TKILL && si->si_pid == getpid());
}

/*
 * Detach the chosen thread: registers back, then the saved signals
 * delivered one by one through carrier delivery-stops.  Every wait is
 * bounded: a carrier can get blocked by a handler's sa_mask, then it is
 * simply left pending (delivered later with a tgkill siginfo).
 */
static void detach_chosen(struct sd_inject *in)
{
	struct thr *th = &in->t[in->chosen];
	bool carrier = false;
	size_t next = 0;
	int deliver = 0, err;

	if (th->state == T_GONE)
		return;
	/* back to a stop inside get_signal() before restoring */
	if (chosen_to_event(in) ||
	    (in->regs_saved && set_regs(th->tid, &in->saved)))
		goto out;
	while (next < in->nsigs) {
		const struct saved_sig *s = &in->sigs[next];
		siginfo_t si;

		if (!carrier) {
			/*
			 * Blocked now: a fault (forced on a blocked signal)
			 * comes back when the instruction re-executes;
			 * anything else stays pending until unblocked.
			 */
			if (signal_blocked(in->pid, th->tid, s->signo)) {
				if (!is_fault(s))
					syscall(SYS_tgkill, in->pid, th->tid,
						s->signo);
				next++;
				continue;
			}
			if (syscall(SYS_tgkill, in->pid, th->tid, s->signo))
				break;
			carrier = true;
		}
		if (ptrace(PTRACE_CONT, th->tid, NULL, (void *)(long)deliver))
			goto out;
		deliver = 0;
		err = thr_wait_ms(th, 100);
		if (err == -ETIMEDOUT) {
			/* running a handler with the carrier blocked */
			if (ptrace(PTRACE_INTERRUPT, th->tid, NULL, NULL) ||
			    thr_wait(th))
				goto out;
			if (th->state == T_SIGNAL)
				deliver = th->stop_sig;
			break;
		}
		if (err)
			goto out;
		if (th->state != T_SIGNAL)
			continue;	/* e.g. a group stop: go on */
		memset(&si, 0, sizeof(si));
		if (ptrace(PTRACE_GETSIGINFO, th->tid, NULL, &si))
			goto out;
		if (is_carrier(s, th->stop_sig, &si)) {
			/* put the original siginfo back */
			if (ptrace(PTRACE_SETSIGINFO, th->tid, NULL, &s->info))
				goto out;
			carrier = false;
			next++;
		}
		/* the carrier, or a new signal delivered on the way */
		deliver = th->stop_sig;
	}
	/* left over after a timeout: queued without their siginfo */
	for (next += carrier; next < in->nsigs; next++)
		syscall(SYS_tgkill, in->pid, th->tid, in->sigs[next].signo);
out:
	/* on error nothing better is possible: at least let it run */
	ptrace(PTRACE_DETACH, th->tid, NULL, (void *)(long)deliver);
	th->state = T_GONE;
}

void sd_inject_detach(struct sd_inject *in)
{
	if (!in)
		return;
	/* the chosen one first: its round trips are quick while the others
	 * still hold no CPU */
	if (in->have_chosen)
		detach_chosen(in);
	detach_others(in);
	if (in->t)
		munmap(in->t, in->t_bytes);
	munmap(in, sizeof(*in));
}

int sd_inject_attach(struct sd_inject **out, pid_t pid)
{
	struct sd_inject *in;
	bool chosen = false;
	size_t i;
	int err;

	*out = NULL;
	if (pid <= 0)
		return -EINVAL;
	if (pid == getpid())
		return -EPERM;
	in = map_zalloc(sizeof(*in));
	if (!in)
		return -ENOMEM;
	in->pid = pid;
	/*
	 * Stopped threads cannot clone: once a scan finds no new thread
	 * after all known ones stopped, the set is complete.
	 */
	for (;;) {
		int added = seize_new(in);

		if (added < 0) {
			err = added;
			goto fail;
		}
		for (i = 0; i < in->n; i++)
			if (in->t[i].state == T_RUNNING)
				(void)thr_wait(&in->t[i]);
		if (!added)
			break;
	}
	/* prefer a thread in the interrupt stop: its signal stays untouched */
	for (i = 0; i < in->n && !chosen; i++) {
		if (in->t[i].state == T_EVENT) {
			in->chosen = i;
			chosen = true;
		}
	}
	for (i = 0; i < in->n && !chosen; i++) {
		if (in->t[i].state == T_SIGNAL) {
			in->chosen = i;
			chosen = true;
		}
	}
	if (!chosen) {
		err = -ESRCH;
		goto fail;
	}
	in->have_chosen = true;
	err = chosen_to_event(in);
	if (err)
		goto fail;
	err = get_regs(in->t[in->chosen].tid, &in->saved);
	if (err)
		goto fail;
	/* a signal it had taken is delivered at detach: EINTR is right */
	if (!in->nsigs)
		fix_eintr(in, in->t[in->chosen].tid, &in->saved);
	/*
	 * A seccomp filter may kill the target (or SIGSYS it with our
	 * registers) for an injected call: suspend it, which needs
	 * CAP_SYS_ADMIN, or refuse to inject.
	 */
	if (thread_seccomp(pid, in->t[in->chosen].tid) != 0 &&
	    ptrace(PTRACE_SETOPTIONS, in->t[in->chosen].tid, NULL,
		   (void *)(long)(SEIZE_OPTS | OPT_SUSPEND_SECCOMP)))
		in->seccomp_blocked = true;
	in->regs_saved = true;
	*out = in;
	return 0;
fail:
	sd_inject_detach(in);
	return err;
}

/*
 * Reads a file line by line into its own buffer (no stdio, see above).
 * A /proc/PID/maps line holds at most a PATH_MAX path: one longer than the
 * buffer cannot happen, and would end the file.
 */
struct line_reader {
	int fd;
	size_t pos, len;
	bool eof;
	char buf[8192];
};

/* The next line, NUL-ended without its newline; NULL at the end. */
static char *next_line(struct line_reader *lr)
{
	char *line, *nl;

	for (;;) {
		size_t room;
		ssize_t n;

		nl = memchr(lr->buf + lr->pos, '\n', lr->len - lr->pos);
		if (nl || lr->eof)
			break;
		room = sizeof(lr->buf) - 1 - (lr->len - lr->pos);
		if (!room) {
			lr->eof = true;
			lr->pos = lr->len;
			break;
		}
		memmove(lr->buf, lr->buf + lr->pos, lr->len - lr->pos);
		lr->len -= lr->pos;
		lr->pos = 0;
		n = read(lr->fd, lr->buf + lr->len, room);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			lr->eof = true;
		else
			lr->len += (size_t)n;
	}
	if (lr->pos == lr->len)
		return NULL;
	line = lr->buf + lr->pos;
	if (nl) {
		*nl = 0;
		lr->pos = (size_t)(nl + 1 - lr->buf);
	} else {
		/* the last line, without a newline */
		lr->buf[lr->len] = 0;
		lr->pos = lr->len;
	}
	return line;
}

/* "start-end perms ..." of a /proc/PID/maps line; false if malformed */
static bool parse_map(const char *line, uint64_t *start, uint64_t *end,
		      const char **perms)
{
	char *e;

	*start = strtoull(line, &e, 16);
	if (e == line || *e != '-')
		return false;
	line = e + 1;
	*end = strtoull(line, &e, 16);
	if (e == line || *e != ' ' || strlen(e + 1) < 4)
		return false;
	*perms = e + 1;
	return true;
}

/* Search [start, end) for a syscall instruction, within *budget bytes. */
static uint64_t scan_range(pid_t pid, uint64_t start, uint64_t end,
			   uint8_t *buf, size_t bufsz, size_t *budget)
{
	uint64_t a;

	for (a = start; a < end && *budget;) {
		size_t len = MIN(MIN(end - a, (uint64_t)bufsz), *budget);
		struct iovec l = { buf, len };
		struct iovec r = { (void *)(uintptr_t)a, len };
		ssize_t got, k;

		got = process_vm_readv(pid, &l, 1, &r, 1, 0);
		if (got < (ssize_t)sizeof(syscall_insn))
			break;
		*budget -= (size_t)got;
		for (k = 0; k + 1 < got; k++)
			if (!memcmp(buf + k, syscall_insn, sizeof(syscall_insn)))
				return a + (uint64_t)k;
		/* an instruction across the chunk end is missed: fine,
		 * there are others */
		a += (uint64_t)got;
	}
	return 0;
}

#define SCAN_BUF	(1u << 16)

/* Find a syscall instruction: the vDSO first, then any executable map. */
static int find_insn(struct sd_inject *in)
{
	struct line_reader lr = { 0 };
	size_t budget = SCAN_LIMIT;
	char path[64];
	uint8_t *buf;
	int pass, err = -ENOEXEC;

	proc_path(path, in->pid, 0, "maps");
	lr.fd = open(path, O_RDONLY | O_CLOEXEC);
	if (lr.fd < 0)
		return -errno;
	buf = map_zalloc(SCAN_BUF);
	if (!buf) {
		err = -ENOMEM;
		goto out;
	}
	for (pass = 0; pass < 2 && !in->insn; pass++) {
		char *line;

		if (lseek(lr.fd, 0, SEEK_SET) < 0) {
			err = -errno;
			goto out;
		}
		lr.pos = lr.len = 0;
		lr.eof = false;
		while (!in->insn && (line = next_line(&lr))) {
			bool vdso = strstr(line, "[vdso]") != NULL;
			const char *perms;
			uint64_t start, end;

			if (!parse_map(line, &start, &end, &perms))
				continue;
			if (perms[2] != 'x' || vdso != (pass == 0))
				continue;
			if (strstr(line, "[vsyscall]"))
				continue;	/* not readable, emulated */
			in->insn = scan_range(in->pid, start, end, buf,
					      SCAN_BUF, &budget);
		}
	}
	if (in->insn)
		err = 0;
out:
	if (buf)
		munmap(buf, SCAN_BUF);
	close(lr.fd);
	return err;
}

int sd_inject_syscall(struct sd_inject *in, long nr, const long args[6],
		      long *ret)
{
	static const long zero[6];
	bool entered = false;
	struct thr *th;
	sd_regs r;
	int err, e;

	if (!in || !in->regs_saved)
		return -EINVAL;
	th = &in->t[in->chosen];
	if (th->state == T_GONE)
		return -ESRCH;
	if (in->seccomp_blocked)
		return -EPERM;
	if (!in->insn) {
		err = find_insn(in);
		if (err)
			return err;
	}
	r = in->saved;
	regs_setup(&r, in->insn, nr, args ? args : zero);
	err = set_regs(th->tid, &r);
	if (err)
		return err;
	/* the window opens: dying now leaves it with these registers */
	err = chosen_run_to(in, PTRACE_SYSCALL, T_SYSCALL);
	if (err)
		goto out;
	entered = true;
	err = get_regs(th->tid, &r);
	if (err)
		goto out;
	if (!regs_entered(&r, in->insn, nr)) {
		err = -EPROTO;
		goto out;
	}
	err = chosen_run_to(in, PTRACE_SYSCALL, T_SYSCALL);
	if (err)
		goto out;
	entered = false;
	err = get_regs(th->tid, &r);
	if (err)
		goto out;
	*ret = regs_ret(&r);
out:
	if (th->state == T_GONE)
		return err;
	/*
	 * Restore at once, in whatever stop it is.  At the exit stop that
	 * closes the window: should we die now, the kernel's detach sets
	 * TIF_SIGPENDING on a traced thread, so the restart logic still runs
	 * on these.  Still at the entry stop, the call must be cancelled:
	 * the kernel would run whatever orig_rax says.
	 */
	r = in->saved;
	if (entered)
		regs_skip_syscall(&r);
	(void)set_regs(th->tid, &r);
	/* park the thread where the next call and detach expect it */
	e = chosen_to_event(in);
	if (!err)
		err = e;
	if (!e)
		(void)set_regs(th->tid, &in->saved);
	return err;
}

#else /* !SD_INJECT_ARCH */

struct sd_inject {
	int unused;
};

int sd_inject_attach(struct sd_inject **out, pid_t pid)
{
	(void)pid;
	*out = NULL;
	return -EOPNOTSUPP;
}

int sd_inject_syscall(struct sd_inject *in, long nr, const long args[6],
		      long *ret)
{
	(void)in;
	(void)nr;
	(void)args;
	(void)ret;
	return -EOPNOTSUPP;
}

void sd_inject_detach(struct sd_inject *in)
{
	(void)in;
}

#endif /* SD_INJECT_ARCH */

static int inject_call(struct sd_inject *in, long nr, long a0, long a1,
		       long *ret)
{
	const long args[6] = { a0, a1 };

	return sd_inject_syscall(in, nr, args, ret);
}

/*
 * userfaultfd() in the target, copied out through @pidfd, closed there.
 * *fd gets the local copy as soon as it exists.  0 or -errno.
 */
static int uffd_steal(struct sd_inject *in, int pidfd, int flags, int *fd)
{
	long tfd = -1, r;
	int err;

	err = inject_call(in, SYS_userfaultfd, flags, 0, &tfd);
	if (err)
		return err;
	/* without CAP_SYS_PTRACE only user-mode-only uffds are allowed */
	if (tfd == -EPERM && !(flags & UFFD_USER_MODE_ONLY)) {
		err = inject_call(in, SYS_userfaultfd,
				  flags | UFFD_USER_MODE_ONLY, 0, &tfd);
		if (err)
			return err;
	}
	if (tfd < 0)
		return (int)tfd;
	/* the copy is always close-on-exec */
	*fd = (int)syscall(SYS_pidfd_getfd, pidfd, (int)tfd, 0);
	if (*fd < 0)
		err = -errno;
	/* the target must not keep its copy, whatever happened */
	if ((inject_call(in, SYS_close, tfd, 0, &r) || r) && !err)
		err = -EIO;
	return err;
}

/*
 * The guardian: a task sharing the caller's memory and descriptor table
 * but in a thread group (and process group) of its own, so a SIGKILL of
 * the caller's process (or group) does not reach it: it always finishes
 * the sequence and detaches, leaving the target's registers restored and
 * no userfaultfd inside it.  The descriptor it copied out lands in the
 * shared table and goes away with the last of its users.  It is the
 * tracer: ptrace requests must come from it, so it does it all.  It runs
 * on the caller's TLS (errno, the sanitizers' thread state), which is
 * safe because the caller's thread sleeps until it is done; glibc's
 * clone() is not intercepted by ASan, and every frame it pushes on its
 * own stack returns, so no shadow poison is left there.
 */
struct guard_job {
	pid_t pid;
	int pidfd, flags;
	int attach_err;		/* out: what the attach returned */
	int err;		/* out: 0 or -errno */
	int fd;			/* out: the local copy, or -1 */
	bool pinned;
	cpu_set_t mask;		/* the caller's affinity */
};

#define GUARD_STACK	(256u << 10)

/* Attach, steal, detach: the whole sequence, in the task that runs it. */
static void attach_steal(struct guard_job *j)
{
	struct sd_inject *in;

	j->attach_err = sd_inject_attach(&in, j->pid);
	j->err = j->attach_err ? j->attach_err
			       : uffd_steal(in, j->pidfd, j->flags, &j->fd);
	sd_inject_detach(in);
}

static int guard_main(void *arg)
{
	struct guard_job *j = arg;

	/* started on the caller's CPU (see run_guardian): free it again */
	if (j->pinned)
		(void)sched_setaffinity(0, sizeof(j->mask), &j->mask);
	/* not killed with the caller's process group either */
	(void)setpgid(0, 0);
	attach_steal(j);
	return 0;
}

/*
 * Run @j in a guardian; the calling thread waits (CLONE_VFORK) and reaps
 * it.  No exit signal: the application's SIGCHLD handling and its
 * wait(-1) never see it (only __WALL/__WCLONE waits do).  All signals are
 * blocked in it (inherited mask), so no handler of the application runs
 * in it.  0 or -errno of the guardian itself.
 */
static int run_guardian(struct guard_job *j)
{
	sigset_t all, old;
	char *stack;
	int st, cpu, err = 0;
	pid_t g;

	stack = mmap(NULL, GUARD_STACK, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (stack == MAP_FAILED)
		return -ENOMEM;
	/* a guard page: an overflow faults instead of writing below */
	if (mprotect(stack, PAGE_SZ, PROT_NONE)) {
		err = -errno;
		goto out;
	}
	sigfillset(&all);
	/*
	 * Start it on this CPU, which this thread leaves for it: placed
	 * elsewhere, a new task can wait behind whatever runs there (2 ms on
	 * a loaded 2-CPU host, for a sequence of 0.5 ms).
	 */
	cpu = sched_getcpu();
	if (cpu >= 0 && !sched_getaffinity(0, sizeof(j->mask), &j->mask)) {
		cpu_set_t one;

		CPU_ZERO(&one);
		CPU_SET(cpu, &one);
		j->pinned = !sched_setaffinity(0, sizeof(one), &one);
	}
	pthread_sigmask(SIG_SETMASK, &all, &old);
	g = clone(guard_main, stack + GUARD_STACK,
		  CLONE_VM | CLONE_FILES | CLONE_VFORK, j);
	if (g < 0)
		err = -errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (j->pinned)
		(void)sched_setaffinity(0, sizeof(j->mask), &j->mask);
	if (g < 0)
		goto out;
	/* it has left our memory; wait until it is gone entirely */
	while (waitpid(g, &st, __WALL) < 0) {
		if (errno != EINTR) {
			/* reaped by the application's own __WALL wait */
			st = 0;
			break;
		}
	}
	/* killed on its own (by PID, or the OOM killer) */
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		err = -EIO;
out:
	munmap(stack, GUARD_STACK);
	return err;
}

int sd_inject_userfaultfd(pid_t pid, struct sd_inject *held, int flags)
{
	struct guard_job j = { .pid = pid, .flags = flags, .fd = -1 };
	int err;

	if (pid <= 0)
		return -EINVAL;
	/* the guardian could seize us, waiting for it: never */
	if (pid == getpid())
		return -EPERM;
	j.pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (j.pidfd < 0)
		return -errno;
	if (held) {
		/* ptrace requests must come from the caller, the tracer */
		err = uffd_steal(held, j.pidfd, flags, &j.fd);
		goto out;
	}
	j.err = -EIO;
	err = run_guardian(&j);
	if (!err)
		err = j.err;
	/*
	 * YAMA's ptrace_scope 1 lets a process trace its descendants only:
	 * the guardian is not an ancestor of the caller's children.  Only
	 * then, without the guardian's protection, do it here.
	 */
	if (!err || j.attach_err != -EPERM)
		goto out;
	if (j.fd >= 0)
		close(j.fd);
	j.fd = -1;
	attach_steal(&j);
	err = j.err;
out:
	close(j.pidfd);
	if (err) {
		if (j.fd >= 0)
			close(j.fd);
		return err;
	}
	return j.fd;
}
