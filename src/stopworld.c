// SPDX-License-Identifier: MIT
/*
 * Pausing the calling process's other threads, for mechanisms whose read
 * and reset are two separate kernel calls (clear_refs after a pagemap
 * read): a write landing between the two would be lost.  Each thread gets
 * a signal whose handler says "stopped" and waits on a futex until
 * released, as garbage collectors do.  Between stop and resume the caller
 * must not take any lock a paused thread may hold (malloc, stdio).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "stopworld.h"

#define MAX_TIDS 4096
#define DENTS_SZ 65536

static _Atomic int sw_active;	/* a stop is in progress */
static _Atomic int sw_acks;	/* threads parked in the handler */
static _Atomic int sw_release;	/* futex word: bumped to release them */
static struct sd_ksigaction sw_old;
static int sw_users;		/* trackers that installed the handler */
static bool sw_unsafe;		/* a signal may still be pending: keep ours */
static pthread_mutex_t sw_lock = PTHREAD_MUTEX_INITIALIZER;

static void futex_wait(_Atomic int *w, int val)
{
	syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic int *w)
{
	syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

static void sw_handler(int sig, siginfo_t *si, void *uc)
{
	int saved = errno, rel;

	(void)sig;
	(void)si;
	(void)uc;
	/* resume clears sw_active before bumping sw_release: read in reverse */
	rel = atomic_load(&sw_release);
	if (atomic_load(&sw_active)) {
		atomic_fetch_add(&sw_acks, 1);
		while (atomic_load(&sw_release) == rel)
			futex_wait(&sw_release, rel);
	}
	errno = saved;
}

int sd_ksigaction_get(int sig, struct sd_ksigaction *ka)
{
	return syscall(SYS_rt_sigaction, sig, NULL, ka, sizeof(ka->mask)) ?
		-errno : 0;
}

int sd_ksigaction_set(int sig, const struct sd_ksigaction *ka)
{
	return syscall(SYS_rt_sigaction, sig, ka, NULL, sizeof(ka->mask)) ?
		-errno : 0;
}

int sd_stopworld_signal(void)
{
	return SIGRTMAX - 2;
}

int sd_stopworld_get(void)
{
	struct sigaction sa;
	int err = 0;

	pthread_mutex_lock(&sw_lock);
	if (!sw_users++) {
		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = sw_handler;
		sa.sa_flags = SA_SIGINFO | SA_RESTART;
		sigfillset(&sa.sa_mask);
		err = sd_ksigaction_get(sd_stopworld_signal(), &sw_old);
		if (!err && sigaction(sd_stopworld_signal(), &sa, NULL))
			err = -errno;
		if (err)
			sw_users--;
	}
	pthread_mutex_unlock(&sw_lock);
	return err;
}

void sd_stopworld_put(void)
{
	pthread_mutex_lock(&sw_lock);
	if (!--sw_users && !sw_unsafe)
		(void)!sd_ksigaction_set(sd_stopworld_signal(), &sw_old);
	pthread_mutex_unlock(&sw_lock);
}

static bool seen(const int *tids, int n, int tid)
{
	int i;

	for (i = 0; i < n; i++)
		if (tids[i] == tid)
			return true;
	return false;
}

/*
 * Signal every thread not yet in @tids; returns how many more were
 * signalled (0: the set is complete), or -errno.  No malloc and no stdio
 * while threads are parked: raw getdents64 into a buffer made beforehand.
 */
static int signal_new(struct sd_world *w, int self)
{
	int added = 0;
	long n;

	if (lseek(w->dirfd, 0, SEEK_SET) < 0)
		return -errno;
	while ((n = syscall(SYS_getdents64, w->dirfd, w->dents, DENTS_SZ)) > 0) {
		long off = 0;

		while (off < n) {
			struct {
				uint64_t ino;
				int64_t off;
				unsigned short reclen;
				unsigned char type;
				char name[];
			} *de = (void *)(w->dents + off);
			int tid = atoi(de->name);

			off += de->reclen;
			if (tid <= 0 || tid == self || seen(w->tids, w->n, tid))
				continue;
			if (w->n == MAX_TIDS)
				return -E2BIG;
			if (syscall(SYS_tgkill, getpid(), tid,
				    sd_stopworld_signal())) {
				if (errno == ESRCH)
					continue;	/* exited meanwhile */
				return -errno;
			}
			w->tids[w->n++] = tid;
			added++;
		}
	}
	return n < 0 ? -errno : added;
}

int sd_world_stop(struct sd_world *w)
{
	struct timespec t0, now;
	int self = sd_gettid(), r;

	memset(w, 0, sizeof(*w));
	w->dirfd = -1;
	w->tids = malloc(MAX_TIDS * sizeof(int));
	w->dents = sd_kmem_alloc(DENTS_SZ);
	w->dirfd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (!w->tids || !w->dents || w->dirfd < 0) {
		r = w->dirfd < 0 ? -errno : -ENOMEM;
		goto fail;
	}
	/* set before any signal goes out, cleared by sd_world_resume() */
	atomic_store(&sw_acks, 0);
	atomic_store(&sw_active, 1);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* threads may be created until every creator is parked */
	do {
		r = signal_new(w, self);
		if (r < 0)
			goto fail;
		while (atomic_load(&sw_acks) < w->n) {
			clock_gettime(CLOCK_MONOTONIC, &now);
			if (now.tv_sec - t0.tv_sec > 2) {
				/* blocked the signal, or stuck in the kernel */
				r = -EAGAIN;
				pthread_mutex_lock(&sw_lock);
				sw_unsafe = true;
				pthread_mutex_unlock(&sw_lock);
				goto fail;
			}
			sched_yield();
		}
	} while (r > 0);
	w->stopped = true;
	return 0;
fail:
	sd_world_resume(w);
	return r;
}

void sd_world_resume(struct sd_world *w)
{
	atomic_store(&sw_active, 0);
	atomic_fetch_add(&sw_release, 1);
	futex_wake(&sw_release);
	if (w->dirfd >= 0)
		close(w->dirfd);
	sd_kmem_free(w->dents, DENTS_SZ);
	free(w->tids);
	memset(w, 0, sizeof(*w));
}
