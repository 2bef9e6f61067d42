// SPDX-License-Identifier: MIT
/*
 * The demo: a bundled workload (a toy in-memory store: a hash table of
 * records over a 256 MiB heap, a hot set written often, a cold set rarely,
 * occasional region growth with mremap and a freed-and-reallocated arena)
 * runs in a thread while the main thread asks, every 250 ms, "which pages
 * were written since last time?" with each working backend, and checks the
 * answer against the workload's own record of what it wrote.
 *
 * `demo --workload SECONDS` runs only the workload, as a process for
 * softdirty watch and softdirty dump to look at (scripts/demo.sh).
 */
#include <softdirty.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE		4096UL
#define HEAP_PAGES	(256UL << 20) / PAGE
#define ROUNDS		8

static char *heap;
/*
 * The workload's record: truth[p] = the round in which page p was last
 * written, stored before the write.  A write stamped k started after
 * collect k-1 returned, so collect k or a later one must report it.
 */
static _Atomic uint32_t *truth;
static atomic_uint round_no = 1;
static atomic_ulong nwrites;
static atomic_int stop;

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void *workload(void *arg)
{
	uint64_t seed = 88172645463325252ULL;

	(void)arg;
	while (!atomic_load(&stop)) {
		/* 90% of writes to a hot 2% of the heap */
		uint64_t r = rnd(&seed), page;

		if (r % 10)
			page = (r >> 8) % (HEAP_PAGES / 50);
		else
			page = (r >> 8) % HEAP_PAGES;
		atomic_store(&truth[page], atomic_load(&round_no));
		heap[page * PAGE + (r >> 40) % PAGE] = (char)r;
		atomic_fetch_add(&nwrites, 1);
		if (!(r % 64))
			usleep(10);
	}
	return NULL;
}

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static int run(const char *backend)
{
	struct softdirty_opts opts = { .sz = sizeof(opts), .backend = backend };
	static struct softdirty_range vec[4096];
	static uint32_t reported[HEAP_PAGES];	/* last round reporting p */
	unsigned long missed_total = 0;
	struct softdirty *sd;
	pthread_t th;
	unsigned int k;
	int err;
	double t0;

	err = softdirty_open(&sd, 0, &opts);
	if (err) {
		printf("  %s: cannot open: %s\n", backend, strerror(-err));
		return 1;
	}
	memset(truth, 0, HEAP_PAGES * sizeof(*truth));
	memset(reported, 0, sizeof(reported));
	atomic_store(&round_no, 1);
	atomic_store(&stop, 0);
	pthread_create(&th, NULL, workload, NULL);
	printf("  %8s %12s %10s %10s %8s\n", "time", "writes", "dirty pages",
	       "MB/s", "missed");
	t0 = now();
	for (k = 1; k <= ROUNDS; k++) {
		uint64_t cur = (uintptr_t)heap, end = cur + HEAP_PAGES * PAGE;
		unsigned long dirty = 0, missed = 0, p;
		uint32_t w;

		usleep(250000);
		while (cur < end) {
			long n = softdirty_collect(sd, cur, end, vec, 4096,
						   SOFTDIRTY_COLLECT_RESET, &cur);
			long i;

			if (n < 0) {
				printf("collect: %s\n", strerror((int)-n));
				goto out;
			}
			for (i = 0; i < n; i++)
				for (p = (vec[i].start - (uintptr_t)heap) / PAGE;
				     p < (vec[i].end - (uintptr_t)heap) / PAGE; p++) {
					dirty++;
					reported[p] = k;
				}
		}
		atomic_store(&round_no, k + 1);
		/* writes stamped two rounds ago have surely landed by now */
		for (p = 0; k > 2 && p < HEAP_PAGES; p++) {
			w = atomic_load(&truth[p]);
			if (w && w <= k - 2 && reported[p] < w)
				missed++;
		}
		missed_total += missed;
		printf("  %7.2fs %12lu %10lu %10.1f %8lu\n", now() - t0,
		       atomic_exchange(&nwrites, 0), dirty,
		       dirty * PAGE / 0.25 / 1e6, missed);
	}
out:
	atomic_store(&stop, 1);
	pthread_join(th, NULL);
	softdirty_close(sd);
	return missed_total ? 1 : 0;
}

static int workload_only(const char *secs)
{
	pthread_t th;
	double end = now() + atof(secs);

	if (pthread_create(&th, NULL, workload, NULL))
		return 1;
	while (now() < end)
		usleep(10000);
	atomic_store(&stop, 1);
	pthread_join(th, NULL);
	return 0;
}

int main(int argc, char **argv)
{
	struct softdirty_probe_result r[SOFTDIRTY_BACKEND_COUNT];
	int i, n, bad = 0, status;
	pid_t pid;

	setvbuf(stdout, NULL, _IOLBF, 0);
	heap = mmap(NULL, HEAP_PAGES * PAGE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	truth = calloc(HEAP_PAGES, sizeof(*truth));
	if (heap == MAP_FAILED || !truth)
		return 1;
	memset(heap, 1, HEAP_PAGES * PAGE);
	if (argc == 3 && !strcmp(argv[1], "--workload"))
		return workload_only(argv[2]);
	n = softdirty_probe(r, SOFTDIRTY_BACKEND_COUNT);
	printf("softdirty demo: a toy store writing a 256 MiB heap; %d backend(s) work here\n", n);
	for (i = 0; i < SOFTDIRTY_BACKEND_COUNT; i++) {
		if (r[i].status) {
			printf("\n%s: not available: %s\n", r[i].name, r[i].reason);
			continue;
		}
		printf("\n%s (limits: %s)\n", r[i].name, r[i].reason);
		/*
		 * Each backend in a process of its own, on the pristine heap:
		 * the workload replays the same writes every run, and a
		 * second run in one process would rewrite identical bytes,
		 * which the hash backend rightly does not call a change.
		 */
		fflush(stdout);
		pid = fork();
		if (pid == 0)
			_exit(run(r[i].name));
		if (pid < 0 || waitpid(pid, &status, 0) != pid ||
		    !WIFEXITED(status) || WEXITSTATUS(status))
			bad = 1;
	}
	printf("\n'missed' counts writes the tracker never reported: it must be 0.\n");
	return bad;
}
