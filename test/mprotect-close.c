// SPDX-License-Identifier: MIT
/*
 * mprotect backend: the SIGSEGV handler chain while open, and no trace
 * after close (the user's sigaction back exactly, no region left
 * protected, the user's handler still working).
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#define NDATA 16

/* PROT_NONE until the user's handler runs */
static volatile char *volatile guard;
static volatile int hits;
static volatile int last_code;
static void *volatile last_addr;
static volatile int usr1_blocked;
static sigjmp_buf jb;

static void user_handler(int sig, siginfo_t *si, void *uc)
{
	sigset_t cur;
	volatile char *a = si->si_addr;

	(void)uc;
	if (sig != SIGSEGV || a < guard || a >= guard + PG)
		_exit(99);
	sigprocmask(SIG_SETMASK, NULL, &cur);
	usr1_blocked = sigismember(&cur, SIGUSR1);
	last_code = si->si_code;
	last_addr = (void *)a;
	hits++;
	mprotect((void *)guard, PG, PROT_READ | PROT_WRITE);
}

static void jump_handler(int sig)
{
	(void)sig;
	siglongjmp(jb, 1);
}

struct vma {
	uint64_t start, end;
	char perms[5];
};

static size_t read_maps(struct vma *v, size_t cap)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	size_t n = 0;

	if (!f)
		tap_bail("/proc/self/maps: %s", strerror(errno));
	while (n < cap && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %4s", &v[n].start,
			   &v[n].end, v[n].perms) == 3)
			n++;
	}
	fclose(f);
	return n;
}

#if defined(__SANITIZE_ADDRESS__)
static const bool asan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
static const bool asan = true;
#else
static const bool asan = false;
#endif
#else
static const bool asan = false;
#endif

/* every address mapped before has the same permissions after */
static size_t maps_changed(const struct vma *b, size_t nb,
			   const struct vma *a, size_t na)
{
	size_t i, j, bad = 0;

	for (i = 0; i < nb; i++) {
		for (j = 0; j < na; j++) {
			if (a[j].end <= b[i].start || a[j].start >= b[i].end)
				continue;
			/*
			 * ASan's allocator carves read-write memory out of its
			 * own ---p reservations meanwhile; the library only
			 * ever takes write permission away and gives it back.
			 */
			if (asan && !strcmp(b[i].perms, "---p") &&
			    !strcmp(a[j].perms, "rw-p"))
				continue;
			if (strcmp(a[j].perms, b[i].perms)) {
				if (bad++ < 5)
					tap_diag("%" PRIx64 "-%" PRIx64 " was %s, "
						 "now %" PRIx64 "-%" PRIx64 " %s",
						 b[i].start, b[i].end, b[i].perms,
						 a[j].start, a[j].end, a[j].perms);
			}
		}
	}
	return bad;
}

static bool same_sigaction(const struct sigaction *x, const struct sigaction *y)
{
	int s;

	if (x->sa_flags != y->sa_flags ||
	    ((x->sa_flags & SA_SIGINFO) ? (void *)x->sa_sigaction != (void *)y->sa_sigaction
					: (void *)x->sa_handler != (void *)y->sa_handler))
		return false;
	for (s = 1; s < SIGRTMAX; s++)
		if (sigismember(&x->sa_mask, s) != sigismember(&y->sa_mask, s))
			return false;
	return true;
}

static bool reported(struct softdirty *sd, void *p)
{
	uint8_t pf[1];

	return td_collect_region(sd, p, 1, 0, pf) >= 0 &&
	       (pf[0] & SOFTDIRTY_RANGE_WRITTEN);
}

/* run @fn in a child; returns its wait status */
static int in_child(int (*fn)(void))
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		tap_bail("fork: %s", strerror(errno));
	if (!pid) {
		alarm(20);	/* a wedge shows as SIGALRM */
		_exit(fn());
	}
	if (waitpid(pid, &status, 0) != pid)
		tap_bail("waitpid: %s", strerror(errno));
	return status;
}

/* previous SIGSEGV action SIG_DFL: a foreign fault still kills */
static int child_dfl_fault(void)
{
	struct softdirty *sd;
	volatile char *p;

	signal(SIGSEGV, SIG_DFL);
	p = mmap(NULL, PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	sd = td_open("mprotect");
	p[0] = 1;
	softdirty_close(sd);
	return 0;
}

/* previous SIG_DFL: a SIGSEGV sent with kill() still kills */
static int child_dfl_kill(void)
{
	struct softdirty *sd;

	signal(SIGSEGV, SIG_DFL);
	sd = td_open("mprotect");
	kill(getpid(), SIGSEGV);
	softdirty_close(sd);
	return 0;
}

/* previous SIG_IGN: a SIGSEGV sent with kill() is ignored */
static int child_ign_kill(void)
{
	struct softdirty *sd;

	signal(SIGSEGV, SIG_IGN);
	sd = td_open("mprotect");
	kill(getpid(), SIGSEGV);
	softdirty_close(sd);
	return 0;
}

/*
 * A plain (non-SA_SIGINFO) handler that siglongjmp()s out: chained to,
 * and tracking still works afterwards (no wedge).
 */
static int child_longjmp(void)
{
	struct softdirty *sd;
	volatile char *p, *d;
	int i;

	signal(SIGSEGV, jump_handler);
	p = mmap(NULL, PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	/* a read-only page below: not taken for a thread stack's guard */
	d = mmap(NULL, 9 * PG, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (d == MAP_FAILED || mprotect((void *)d, PG, PROT_READ))
		return 4;
	d += PG;
	memset((void *)d, 1, 8 * PG);
	sd = td_open("mprotect");
	for (i = 0; i < 3; i++) {
		if (!sigsetjmp(jb, 1))
			p[0] = 1;
		d[i * 2 * PG] = 2;
		if (softdirty_reset(sd))
			return 2;
	}
	d[PG] = 3;
	if (!reported(sd, (void *)(d + PG)) || reported(sd, (void *)d))
		return 3;
	softdirty_close(sd);
	return 0;
}

int main(int argc, char **argv)
{
	struct sigaction sa, before, during, after;
	struct vma mb[512], ma[512];
	struct softdirty *sd;
	size_t nb, na;
	char *data;
	int st;

	tap_init(argv[0]);
	(void)argc;
	if (!td_backend_works(SOFTDIRTY_BACKEND_MPROTECT))
		return tap_done();

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = user_handler;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGUSR1);
	if (sigaction(SIGSEGV, &sa, NULL) || sigaction(SIGSEGV, NULL, &before))
		tap_bail("sigaction: %s", strerror(errno));
	guard = mmap(NULL, PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	/*
	 * A read-only page below the data: whatever the kernel's placement,
	 * the data never sits right above a PROT_NONE mapping, which the
	 * backend takes for a thread stack's guard (left untracked).
	 */
	data = mmap(NULL, (NDATA + 1) * PG, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (guard == MAP_FAILED || data == MAP_FAILED ||
	    mprotect(data, PG, PROT_READ))
		tap_bail("mmap: %s", strerror(errno));
	data += PG;
	memset(data, 1, NDATA * PG);
	nb = read_maps(mb, 512);

	sd = td_open("mprotect");
	sigaction(SIGSEGV, NULL, &during);
	tap_ok(!same_sigaction(&before, &during), "open installs a handler");

	data[3 * PG] = 2;
	tap_ok(reported(sd, data + 3 * PG) && !reported(sd, data + 4 * PG),
	       "tracking works with a user SIGSEGV handler installed");

	guard[5] = 7;
	tap_ok(hits == 1 && guard[5] == 7,
	       "a fault not ours reaches the user's handler, which fixes it");
	tap_ok(last_code == SEGV_ACCERR && last_addr == (void *)(guard + 5),
	       "the user's handler gets the original siginfo (code %d)",
	       last_code);
	tap_ok(usr1_blocked == 1, "the user's sa_mask is in effect in it");

	/*
	 * The program's own PROT_NONE page inside a tracked region: a read
	 * there is the program's fault, not a write of ours to resolve.
	 */
	{
		volatile char *saved = guard;
		int h = hits, calls;
		char c;

		guard = data + 6 * PG;
		if (mprotect(data + 6 * PG, PG, PROT_NONE))
			tap_bail("mprotect: %s", strerror(errno));
		c = guard[1];
		calls = hits - h;
		tap_ok(c == 1 && calls == 1,
		       "a read of the program's PROT_NONE page inside a "
		       "tracked region reaches its handler (%d calls)", calls);
		guard = saved;
	}

	softdirty_close(sd);
	sigaction(SIGSEGV, NULL, &after);
	tap_ok(same_sigaction(&before, &after),
	       "close restores the SIGSEGV sigaction exactly");
	mprotect((void *)guard, PG, PROT_NONE);	/* the test's own change */
	na = read_maps(ma, 512);
	tap_ok(!maps_changed(mb, nb, ma, na),
	       "close leaves no region with other permissions than before");
	data[9 * PG] = 3;
	tap_ok(data[9 * PG] == 3, "plain writes after close");

	{
		int h = hits, calls;

		guard[6] = 8;
		calls = hits - h;
		tap_ok(calls == 1 && guard[6] == 8,
		       "the user's handler still works after close (%d calls)",
		       calls);
	}

	st = in_child(child_dfl_fault);
	tap_ok(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV,
	       "previous SIG_DFL: a foreign fault kills with SIGSEGV (status %#x)",
	       st);
	st = in_child(child_dfl_kill);
	tap_ok(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV,
	       "previous SIG_DFL: kill(SIGSEGV) kills (status %#x)", st);
	st = in_child(child_ign_kill);
	tap_ok(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	       "previous SIG_IGN: kill(SIGSEGV) is ignored (status %#x)", st);
	st = in_child(child_longjmp);
	tap_ok(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	       "a chained handler that siglongjmp()s out: no wedge, tracking "
	       "intact (status %#x)", st);

	munmap((void *)guard, PG);
	munmap(data - PG, (NDATA + 1) * PG);
	return tap_done();
}
