// SPDX-License-Identifier: MIT
/*
 * sd_inject on multi-threaded targets:
 *   - 4 threads spinning on counters: all frozen while attached, the
 *     injected gettid() is one of them, all running again after detach
 *     and no thread left traced;
 *   - a target creating and joining threads non-stop: 20 attaches each
 *     stop a stable set, inject, detach; the churn goes on afterwards;
 *   - a signal sent to a thread other than the injected one while
 *     attached is handled once;
 *   - timing: attach + getpid + detach, median of 20, 1 and 8 threads.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "inject.h"

#define NSPIN 4

struct shm {
	_Atomic unsigned long count[16];
	_Atomic int tids[16];
	_Atomic int ready;
	_Atomic unsigned long churn;
	_Atomic int usr1;
};

static struct shm *shm;

static void *spinner(void *arg)
{
	long i = (long)arg;

	shm->tids[i] = (int)syscall(SYS_gettid);
	atomic_fetch_add(&shm->ready, 1);
	for (;;)
		atomic_fetch_add(&shm->count[i], 1);
	return NULL;
}

static void *sleeper(void *arg)
{
	atomic_fetch_add(&shm->ready, 1);
	for (;;)
		pause();
	return arg;
}

static void on_usr1(int sig)
{
	(void)sig;
	atomic_fetch_add(&shm->usr1, 1);
}

/* @n spinning threads (the main thread sleeps in pause()) */
static pid_t spawn_threads(int n, bool spin)
{
	pid_t pid = fork();
	int i;

	if (pid < 0)
		tap_bail("fork");
	if (pid == 0) {
		signal(SIGUSR1, on_usr1);
		for (i = 0; i < n; i++) {
			pthread_t t;

			if (pthread_create(&t, NULL, spin ? spinner : sleeper,
					   (void *)(long)i))
				_exit(2);
		}
		for (;;)
			pause();
	}
	while (atomic_load(&shm->ready) < n)
		usleep(1000);
	return pid;
}

static void *short_lived(void *arg)
{
	atomic_fetch_add(&shm->churn, 1);
	return arg;
}

static pid_t spawn_churner(void)
{
	pid_t pid = fork();

	if (pid < 0)
		tap_bail("fork");
	if (pid == 0) {
		for (;;) {
			pthread_t t[4];
			int i;

			for (i = 0; i < 4; i++)
				if (pthread_create(&t[i], NULL, short_lived,
						   NULL))
					_exit(2);
			for (i = 0; i < 4; i++)
				pthread_join(t[i], NULL);
		}
	}
	while (atomic_load(&shm->churn) < 100)
		usleep(1000);
	return pid;
}

static void reap(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* Number of threads of @pid with a non-zero TracerPid. */
static int traced_threads(pid_t pid)
{
	char path[300], line[128];
	struct dirent *de;
	int n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	d = opendir(path);
	if (!d)
		return -1;
	while ((de = readdir(d))) {
		FILE *f;
		long t;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/status", pid,
			 de->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "TracerPid: %ld", &t) == 1) {
				n += t != 0;
				break;
			}
		fclose(f);
	}
	closedir(d);
	return n;
}

static void snap(unsigned long *v)
{
	int i;

	for (i = 0; i < NSPIN; i++)
		v[i] = atomic_load(&shm->count[i]);
}

static void test_spinners(void)
{
	unsigned long a[NSPIN], b[NSPIN], c[NSPIN];
	struct sd_inject *in;
	bool frozen = true, moving = false, known = false;
	double t0;
	long tid = 0;
	pid_t pid;
	int i, err, usr1;

	memset(shm, 0, sizeof(*shm));
	pid = spawn_threads(NSPIN, true);
	err = sd_inject_attach(&in, pid);
	tap_ok(!err, "attach to a 5-thread target (%s)", strerror(-err));
	if (err)
		goto out;
	tap_ok(traced_threads(pid) == NSPIN + 1, "all %d threads traced",
	       NSPIN + 1);
	snap(a);
	usleep(50000);
	snap(b);
	for (i = 0; i < NSPIN; i++)
		frozen &= a[i] == b[i];
	tap_ok(frozen, "every thread is stopped while attached");
	err = sd_inject_syscall(in, SYS_gettid, NULL, &tid);
	known = tid == pid;
	for (i = 0; i < NSPIN; i++)
		known |= tid == shm->tids[i];
	tap_ok(!err && known, "injected gettid() = %ld, one of the target's",
	       tid);
	/* a signal for some thread while attached */
	syscall(SYS_tgkill, pid, shm->tids[NSPIN - 1], SIGUSR1);
	err = sd_inject_syscall(in, SYS_getpid, NULL, &tid);
	tap_ok(!err && tid == pid, "a second injection (%s)", strerror(-err));
	snap(a);
	sd_inject_detach(in);
	tap_ok(traced_threads(pid) == 0, "no thread traced after detach");
	/* the machine may be busy: give every thread up to 3 s */
	for (t0 = td_now(); td_now() - t0 < 3;) {
		usleep(10000);
		snap(c);
		moving = true;
		for (i = 0; i < NSPIN; i++)
			moving &= c[i] > a[i];
		if (moving)
			break;
	}
	tap_ok(moving, "all %d spinning threads run again", NSPIN);
	usr1 = atomic_load(&shm->usr1);
	tap_ok(usr1 == 1, "the signal sent while attached was handled once "
	       "(%d)", usr1);
out:
	reap(pid);
}

static void test_churn(void)
{
	unsigned long before, after;
	int i, err = 0;
	pid_t pid;

	memset(shm, 0, sizeof(*shm));
	pid = spawn_churner();
	for (i = 0; i < 20 && !err; i++) {
		struct sd_inject *in;
		long r = 0;

		err = sd_inject_attach(&in, pid);
		if (err)
			break;
		before = atomic_load(&shm->churn);
		usleep(5000);
		after = atomic_load(&shm->churn);
		if (before != after)
			err = -EAGAIN;	/* a thread escaped the stop */
		if (!err)
			err = sd_inject_syscall(in, SYS_getpid, NULL, &r);
		if (!err && r != pid)
			err = -EPROTO;
		sd_inject_detach(in);
		usleep(2000);
	}
	tap_ok(!err, "20 attaches while threads come and go: all stopped, "
	       "injected (%s)", strerror(-err));
	before = atomic_load(&shm->churn);
	for (i = 0; i < 300; i++) {
		usleep(10000);
		after = atomic_load(&shm->churn);
		if (after > before)
			break;
	}
	tap_ok(after > before && traced_threads(pid) == 0,
	       "thread churn goes on after detach, nothing traced");
	reap(pid);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static void timing(int nthreads, bool spin)
{
	double t[20];
	pid_t pid;
	int i, err = 0;

	memset(shm, 0, sizeof(*shm));
	pid = spawn_threads(nthreads, spin);
	for (i = 0; i < 20 && !err; i++) {
		struct sd_inject *in;
		double t0 = td_now();
		long r;

		err = sd_inject_attach(&in, pid);
		if (err)
			break;
		err = sd_inject_syscall(in, SYS_getpid, NULL, &r);
		sd_inject_detach(in);
		t[i] = td_now() - t0;
		usleep(1000);
	}
	reap(pid);
	if (!tap_ok(!err, "timing run, %d %s threads (%s)", nthreads,
		    spin ? "spinning" : "sleeping", strerror(-err)))
		return;
	qsort(t, 20, sizeof(t[0]), cmp_double);
	tap_diag("attach + getpid + detach, main + %d %s threads: median "
		 "%.1f us (min %.1f, max %.1f)", nthreads,
		 spin ? "spinning" : "sleeping", t[10] * 1e6, t[0] * 1e6,
		 t[19] * 1e6);
}

int main(int argc, char **argv)
{
	(void)argc;
	tap_init(argv[0]);
	if (!td_inject_supported())
		return 77;
	shm = mmap(NULL, sizeof(*shm), PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shm == MAP_FAILED)
		tap_bail("mmap");
	test_spinners();
	test_churn();
	timing(0, false);
	timing(7, false);
	timing(7, true);
	return tap_done();
}
