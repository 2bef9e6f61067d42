// SPDX-License-Identifier: MIT
/*
 * The API's error returns and small promises:
 *   open(NULL out) -EINVAL; unknown backend -ENOENT; opts.sz too small
 *   -EINVAL; a pid that does not exist -ESRCH; collect start > end -EINVAL;
 *   vec NULL with vec_len > 0 -EINVAL; unknown collect flags -EINVAL;
 *   close(NULL) is fine; the same backend twice for one process -EBUSY;
 *   softdirty_backend() names the backend asked for; softdirty_pid();
 *   "auto" (and NULL opts) picks a working backend; probe returns the
 *   number of working backends and gives a reason for every other one.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

static int open_name(struct softdirty **out, pid_t pid, const char *name)
{
	struct softdirty_opts o;

	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.backend = name;
	return softdirty_open(out, pid, &o);
}

static void per_backend(const struct td_backend *be, void *ctx)
{
	struct softdirty *sd = NULL, *sd2 = NULL;
	struct softdirty_range vec[4];
	uint64_t we;
	char *p = td_mmap(4 * PG);
	long r;
	int e;

	(void)ctx;
	e = open_name(&sd, 0, be->name);
	if (!tap_ok(e == 0 && sd, "%s: open works (%d)", be->name, e))
		return;
	tap_ok(softdirty_backend(sd) && !strcmp(softdirty_backend(sd), be->name),
	       "%s: softdirty_backend() returns the name asked for (%s)",
	       be->name, softdirty_backend(sd));
	tap_ok(softdirty_pid(sd) == getpid(), "%s: softdirty_pid() is the "
	       "caller's pid for pid 0", be->name);
	e = open_name(&sd2, 0, be->name);
	tap_ok(e == -EBUSY && !sd2, "%s: the same backend twice for the same "
	       "process: -EBUSY (%d)", be->name, e);
	softdirty_close(sd2);
	e = open_name(&sd2, getpid(), be->name);
	tap_ok(e == -EBUSY, "%s: again with the explicit own pid: -EBUSY (%d)",
	       be->name, e);
	if (!e)
		softdirty_close(sd2);

	r = softdirty_collect(sd, (uintptr_t)p + PG, (uintptr_t)p, vec, 4, 0,
			      &we);
	tap_ok(r == -EINVAL, "%s: collect start > end: -EINVAL (%ld)", be->name,
	       r);
	r = softdirty_collect(sd, (uintptr_t)p, (uintptr_t)p + 4 * PG, NULL, 4,
			      0, &we);
	tap_ok(r == -EINVAL, "%s: collect vec NULL, vec_len 4: -EINVAL (%ld)",
	       be->name, r);
	r = softdirty_collect(sd, (uintptr_t)p, (uintptr_t)p + 4 * PG, vec, 4,
			      1u << 7, &we);
	tap_ok(r == -EINVAL, "%s: collect unknown flags: -EINVAL (%ld)",
	       be->name, r);
	r = softdirty_collect(sd, (uintptr_t)p, (uintptr_t)p + 4 * PG, vec, 4,
			      SOFTDIRTY_COLLECT_RESET | (1u << 31), &we);
	tap_ok(r == -EINVAL, "%s: collect RESET | unknown flag: -EINVAL (%ld)",
	       be->name, r);
	/* the failed calls did not reset anything: a write stays visible */
	p[2 * PG] ^= 1;
	r = softdirty_collect(sd, (uintptr_t)p, (uintptr_t)p + 4 * PG, vec, 4,
			      SOFTDIRTY_COLLECT_RESET | (1u << 31), &we);
	{
		uint8_t pf[4];

		r = td_collect_region(sd, p, 4, 0, pf);
		tap_ok(r > 0 && pf[2], "%s: a rejected COLLECT_RESET reset "
		       "nothing", be->name);
	}
	r = softdirty_collect(sd, (uintptr_t)p, (uintptr_t)p, vec, 4, 0, &we);
	tap_ok(r == 0, "%s: empty range: 0 ranges (%ld)", be->name, r);
	softdirty_close(sd);
	e = open_name(&sd, 0, be->name);
	tap_ok(e == 0, "%s: open again after close works (%d)", be->name, e);
	if (!e)
		softdirty_close(sd);
	munmap(p, 4 * PG);
}

int main(int argc, char **argv)
{
	struct softdirty_probe_result res[SOFTDIRTY_BACKEND_COUNT + 1];
	struct softdirty_opts o;
	struct softdirty *sd = NULL;
	struct td_backend *be;
	size_t i, nb;
	int e, working = 0, n;
	pid_t dead;

	(void)argc;
	tap_init(argv[0]);

	e = softdirty_open(NULL, 0, NULL);
	tap_ok(e == -EINVAL, "open with NULL out: -EINVAL (%d)", e);
	e = open_name(&sd, 0, "no-such-backend");
	tap_ok(e == -ENOENT && !sd, "unknown backend name: -ENOENT (%d)", e);
	memset(&o, 0, sizeof(o));
	o.sz = 1;
	o.backend = "auto";
	e = softdirty_open(&sd, 0, &o);
	tap_ok(e == -EINVAL && !sd, "opts.sz too small: -EINVAL (%d)", e);
	o.sz = 0;
	e = softdirty_open(&sd, 0, &o);
	tap_ok(e == -EINVAL && !sd, "opts.sz 0: -EINVAL (%d)", e);

	dead = fork();
	if (dead == 0)
		_exit(0);
	waitpid(dead, NULL, 0);
	e = open_name(&sd, dead, "auto");
	tap_ok(e == -ESRCH && !sd, "a pid that does not exist (%d): -ESRCH "
	       "(%d)", (int)dead, e);
	e = open_name(&sd, -1, "auto");
	tap_ok(e < 0 && !sd, "pid -1: error (%d)", e);
	softdirty_close(NULL);
	tap_ok(true, "softdirty_close(NULL) is fine");

	/* probe */
	memset(res, 0x5a, sizeof(res));
	n = softdirty_probe(res, SOFTDIRTY_BACKEND_COUNT);
	nb = td_backends(&be);
	for (i = 0; i < SOFTDIRTY_BACKEND_COUNT; i++) {
		if (!res[i].status)
			working++;
		else
			tap_ok(res[i].status < 0 && res[i].reason[0] &&
			       memchr(res[i].reason, 0, sizeof(res[i].reason)),
			       "probe: %s does not work: status %d, reason "
			       "\"%.*s\"", res[i].name ? res[i].name : "?",
			       res[i].status, (int)sizeof(res[i].reason),
			       res[i].reason);
	}
	tap_ok(n == working && n >= 0, "probe returns the number of working "
	       "backends (%d, counted %d)", n, working);
	{
		static const char *names[] = { "kernel", "uffd", "mprotect",
					       "hash" };

		for (i = 0; i < SOFTDIRTY_BACKEND_COUNT; i++)
			if (!res[i].name || strcmp(res[i].name, names[i]))
				break;
		tap_ok(i == SOFTDIRTY_BACKEND_COUNT, "probe names the backends "
		       "by their SOFTDIRTY_BACKEND_* index");
	}
	{
		unsigned char *g = (unsigned char *)&res[SOFTDIRTY_BACKEND_COUNT];
		size_t k, touched = 0;

		for (k = 0; k < sizeof(res[0]); k++)
			touched += g[k] != 0x5a;
		tap_ok(!touched, "probe writes no more than n entries");
		memset(res, 0x5a, sizeof(res));
		e = softdirty_probe(res, 1);
		g = (unsigned char *)&res[1];
		for (touched = 0, k = 0; k < sizeof(res[0]); k++)
			touched += g[k] != 0x5a;
		tap_ok(e == n && !touched, "probe with n = 1: same count, one "
		       "entry written");
		e = softdirty_probe(NULL, 0);
		tap_ok(e == n, "probe(NULL, 0) returns the count (%d)", e);
	}
	for (i = 0; i < SOFTDIRTY_BACKEND_COUNT; i++)
		if (!res[i].status && (res[i].caps & SOFTDIRTY_CAP_SELF) == 0)
			tap_diag("%s works but lacks CAP_SELF", res[i].name);

	/* auto */
	e = open_name(&sd, 0, "auto");
	if (n > 0) {
		const char *name = e ? NULL : softdirty_backend(sd);
		bool works = false;

		for (i = 0; name && i < nb; i++)
			if (!strcmp(be[i].name, name) && !be[i].status)
				works = true;
		tap_ok(!e && works, "auto picks a working backend (%s, %d)",
		       name ? name : "none", e);
		softdirty_close(sd);
		sd = NULL;
		e = softdirty_open(&sd, 0, NULL);
		tap_ok(!e && sd, "NULL opts: auto (%s, %d)",
		       sd ? softdirty_backend(sd) : "none", e);
		softdirty_close(sd);
		memset(&o, 0, sizeof(o));
		o.sz = sizeof(o);
		sd = NULL;
		e = softdirty_open(&sd, 0, &o);
		tap_ok(!e && sd, "backend NULL in opts: auto (%s, %d)",
		       sd ? softdirty_backend(sd) : "none", e);
		softdirty_close(sd);
	} else {
		tap_ok(e == -ENOTSUP || e == -EOPNOTSUPP, "no working backend: "
		       "auto fails with -ENOTSUP (%d)", e);
	}
	/* a backend that does not work here: -ENOTSUP */
	for (i = 0; i < nb; i++)
		if (be[i].status && be[i].selected) {
			sd = NULL;
			e = open_name(&sd, 0, be[i].name);
			tap_ok(e < 0 && !sd, "%s (not available): open fails "
			       "(%d, probe status %d)", be[i].name, e,
			       be[i].status);
		}

	td_for_each_backend("API errors", per_backend, NULL);
	return tap_done();
}
