// SPDX-License-Identifier: MIT
/* The tracker object: backend choice, locking, the generic verbs. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/syscall.h>

#include "inject.h"
#include "internal.h"

/* pagemap entries per read in softdirty_pagemap() */
#define PM_CHUNK 8192

static const struct sd_backend *const backends[SOFTDIRTY_BACKEND_COUNT] = {
	[SOFTDIRTY_BACKEND_KERNEL] = &sd_backend_kernel,
	[SOFTDIRTY_BACKEND_UFFD] = &sd_backend_uffd,
	[SOFTDIRTY_BACKEND_MPROTECT] = &sd_backend_mprotect,
	[SOFTDIRTY_BACKEND_HASH] = &sd_backend_hash,
};

/*
 * Preference of "auto": cheapest exact mechanism first; hash before
 * mprotect, which cannot see the program's own mprotect() changes nor
 * kernel-mode writes: slower but sees every change is the better default.
 */
static const int auto_order[] = {
	SOFTDIRTY_BACKEND_UFFD,
	SOFTDIRTY_BACKEND_KERNEL,
	SOFTDIRTY_BACKEND_HASH,
	SOFTDIRTY_BACKEND_MPROTECT,
};

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static struct softdirty_probe_result probe_cache[SOFTDIRTY_BACKEND_COUNT];

/*
 * One tracker per (backend, process) in this process: two would fight over
 * the same kernel state (clear_refs is process-wide, a VMA has one
 * userfaultfd, the SIGSEGV handler is process-wide).
 */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t registry[SOFTDIRTY_BACKEND_COUNT][8];

static int registry_claim(int id, pid_t pid)
{
	int i, slot = -1, err = 0;

	pthread_mutex_lock(&registry_lock);
	for (i = 0; i < 8; i++) {
		if (registry[id][i] == pid) {
			err = -EBUSY;
			break;
		}
		if (!registry[id][i] && slot < 0)
			slot = i;
	}
	if (!err && slot < 0)
		err = -EMFILE;
	if (!err)
		registry[id][slot] = pid;
	pthread_mutex_unlock(&registry_lock);
	return err;
}

static void registry_release(int id, pid_t pid)
{
	int i;

	pthread_mutex_lock(&registry_lock);
	for (i = 0; i < 8; i++)
		if (registry[id][i] == pid)
			registry[id][i] = 0;
	pthread_mutex_unlock(&registry_lock);
}

static void probe_all(void)
{
	int i;

	for (i = 0; i < SOFTDIRTY_BACKEND_COUNT; i++) {
		struct softdirty_probe_result *r = &probe_cache[i];

		memset(r, 0, sizeof(*r));
		r->name = backends[i]->name;
		backends[i]->probe(r);
	}
}

int softdirty_probe(struct softdirty_probe_result *res, size_t n)
{
	int i, working = 0;

	if (!res && n)
		return -EINVAL;
	pthread_once(&probe_once, probe_all);
	for (i = 0; i < SOFTDIRTY_BACKEND_COUNT; i++) {
		if ((size_t)i < n)
			res[i] = probe_cache[i];
		if (!probe_cache[i].status)
			working++;
	}
	return working;
}

int sd_out_add(struct sd_out *o, uint64_t start, uint64_t end, uint64_t flags)
{
	struct softdirty_range *last;

	if (start >= end || o->discard)
		return 0;
	last = o->n ? &o->vec[o->n - 1] : NULL;
	if (last && last->end == start && last->flags == flags) {
		last->end = end;
		return 0;
	}
	if (o->n == o->len) {
		o->full = true;
		o->walk_end = start;
		return -ENOSPC;
	}
	o->vec[o->n++] = (struct softdirty_range){ start, end, flags };
	return 0;
}

int sd_emit_new_split(struct sd_out *o, const struct sd_rset *known,
		      uint64_t start, uint64_t end, sd_piece_fn known_fn,
		      sd_piece_fn new_fn, void *ctx)
{
	size_t i = sd_rset_find(known, start);
	uint64_t a = start;
	int err;

	while (a < end) {
		if (i < known->n && known->v[i].start <= a) {
			uint64_t b = MIN(end, known->v[i].end);

			err = known_fn(ctx, a, b);
			if (err)
				return err;
			a = b;
			i++;
		} else {
			uint64_t b = i < known->n ? MIN(end, known->v[i].start)
						  : end;

			err = sd_out_add(o, a, b, SOFTDIRTY_RANGE_NEW);
			if (!err && new_fn)
				err = new_fn(ctx, a, b);
			if (err)
				return err;
			a = b;
		}
	}
	return 0;
}

int sd_refresh_maps(struct softdirty *sd)
{
	int err = sd_maps_read(&sd->maps, sd->maps_fd);

	/* a process that exited reads as empty or ESRCH */
	if (!err && !sd->maps.n && !sd->self)
		return -ESRCH;
	return err;
}

int sd_refresh_maps_range(struct softdirty *sd, uint64_t start, uint64_t end)
{
	/*
	 * Another process: an empty answer is how its exit shows.  The whole
	 * space: one read of the text beats a query per VMA.
	 */
	if (!sd->self || (start == 0 && end >= SD_ADDR_MAX))
		return sd_refresh_maps(sd);
	return sd_maps_read_range(&sd->maps, sd->maps_fd, start, end);
}

void sd_known_update(struct softdirty *sd, uint64_t start, uint64_t end)
{
	size_t i;
	int err;

	err = sd_rset_remove(&sd->known, start, end);
	for (i = 0; !err && i < sd->maps.n; i++) {
		const struct sd_vma *v = &sd->maps.v[i];

		if (v->end <= start || v->start >= end)
			continue;
		err = sd_rset_add(&sd->known, MAX(v->start, start),
				  MIN(v->end, end));
	}
	if (err)
		sd_rset_clear(&sd->known);
}

static const struct sd_backend *backend_by_name(const char *name)
{
	int i;

	for (i = 0; i < SOFTDIRTY_BACKEND_COUNT; i++)
		if (!strcmp(backends[i]->name, name))
			return backends[i];
	return NULL;
}

static int open_proc(pid_t pid, const char *what, int flags)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, what);
	fd = open(path, flags | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ESRCH : errno == EACCES ? -EPERM : -errno;
	return fd;
}

/* /proc/PID/maps and pagemap: bound to the address space at open time. */
static int open_proc_files(struct softdirty *sd)
{
	int fd;

	fd = open_proc(sd->pid, "maps", O_RDONLY);
	if (fd < 0)
		return fd;
	sd->maps_fd = fd;
	fd = open_proc(sd->pid, "pagemap", O_RDONLY);
	if (fd < 0)
		return fd;
	sd->pagemap_fd = fd;
	return 0;
}

static void tracker_free(struct softdirty *sd)
{
	sd_inject_detach(sd->frozen);
	if (sd->pidfd >= 0)
		close(sd->pidfd);
	if (sd->maps_fd >= 0)
		close(sd->maps_fd);
	if (sd->pagemap_fd >= 0)
		close(sd->pagemap_fd);
	sd_maps_free(&sd->maps);
	sd_rset_free(&sd->known);
	sd_kmem_free(sd->pm, PM_CHUNK * 8);
	pthread_mutex_destroy(&sd->lock);
	free(sd);
}

static int try_open(struct softdirty *sd, const struct sd_backend *be)
{
	struct sd_out discard = { .discard = true };
	int err;

	err = registry_claim(be->id, sd->pid);
	if (err)
		return err;
	sd->be = be;
	err = be->open(sd);
	if (err)
		goto out_release;
	/* the reference point is "now" */
	pthread_mutex_lock(&sd->lock);
	err = be->collect(sd, 0, UINT64_MAX, &discard, true);
	pthread_mutex_unlock(&sd->lock);
	if (!err)
		return 0;
	be->close(sd);
out_release:
	registry_release(be->id, sd->pid);
	sd->be = NULL;
	sd->priv = NULL;
	sd_rset_clear(&sd->known);
	return err;
}

int softdirty_open(struct softdirty **out, pid_t pid,
		   const struct softdirty_opts *opts)
{
	const char *name = "auto";
	struct softdirty *sd;
	int err;

	if (!out || pid < 0)
		return -EINVAL;
	*out = NULL;
	if (opts) {
		if (opts->sz < offsetof(struct softdirty_opts, backend) +
				sizeof(opts->backend))
			return -EINVAL;
		if (opts->backend)
			name = opts->backend;
	}
	if (strcmp(name, "auto") && !backend_by_name(name))
		return -ENOENT;

	sd = calloc(1, sizeof(*sd));
	if (!sd)
		return -ENOMEM;
	sd->maps_fd = sd->pagemap_fd = sd->pidfd = -1;
	pthread_mutex_init(&sd->lock, NULL);
	sd->self = pid == 0 || pid == getpid();
	sd->pid = sd->self ? getpid() : pid;
	if (!sd->self) {
		sd->pidfd = (int)syscall(SYS_pidfd_open, sd->pid, 0);
		if (sd->pidfd < 0) {
			err = errno == EINVAL ? -ESRCH : -errno;
			goto fail;
		}
	}
	err = open_proc_files(sd);
	if (err)
		goto fail;

	if (strcmp(name, "auto")) {
		const struct sd_backend *be = backend_by_name(name);
		struct softdirty_probe_result r;

		err = softdirty_probe(NULL, 0);
		if (err < 0)
			goto fail;
		r = probe_cache[be->id];
		if (!r.status && !sd->self && !(r.caps & SOFTDIRTY_CAP_REMOTE))
			r.status = -EOPNOTSUPP;
		err = r.status ? r.status : try_open(sd, be);
	} else {
		size_t i;

		err = softdirty_probe(NULL, 0);
		if (err < 0)
			goto fail;
		err = -ENOTSUP;
		for (i = 0; i < sizeof(auto_order) / sizeof(auto_order[0]); i++) {
			const struct sd_backend *be = backends[auto_order[i]];

			if (probe_cache[be->id].status ||
			    (!sd->self && !(probe_cache[be->id].caps &
					    SOFTDIRTY_CAP_REMOTE)))
				continue;
			err = try_open(sd, be);
			if (!err)
				break;
		}
	}
	if (err)
		goto fail;
	*out = sd;
	return 0;
fail:
	tracker_free(sd);
	return err;
}

void softdirty_close(struct softdirty *sd)
{
	if (!sd)
		return;
	/* let it run before undoing anything (unregistering needs no stop) */
	sd_inject_detach(sd->frozen);
	sd->frozen = NULL;
	sd->be->close(sd);
	registry_release(sd->be->id, sd->pid);
	tracker_free(sd);
}

const char *softdirty_backend(const struct softdirty *sd)
{
	return sd ? sd->be->name : NULL;
}

pid_t softdirty_pid(const struct softdirty *sd)
{
	return sd ? sd->pid : 0;
}

static void clamp(uint64_t *start, uint64_t *end)
{
	*start = PAGE_DOWN(*start);
	*end = *end > SD_ADDR_MAX ? SD_ADDR_MAX : PAGE_UP(*end);
}

/*
 * The tracked process called execve(): its old address space, which our
 * /proc files and the backend's state are bound to, is gone.  Start over on
 * the new one with an empty baseline, so that all of it is reported new.
 */
static int restart_after_exec(struct softdirty *sd)
{
	int err;

	sd->be->close(sd);
	sd->priv = NULL;
	close(sd->maps_fd);
	close(sd->pagemap_fd);
	sd->maps_fd = sd->pagemap_fd = -1;
	sd_rset_clear(&sd->known);
	err = open_proc_files(sd);
	if (!err)
		err = sd->be->open(sd);
	if (err)
		sd->broken = err;
	return err;
}

/* An empty address space while the process lives: it has exec'd. */
static bool execed(struct softdirty *sd)
{
	if (sd->self || syscall(SYS_pidfd_send_signal, sd->pidfd, 0, NULL, 0))
		return false;
	if (sd_maps_read(&sd->maps, sd->maps_fd) || sd->maps.n)
		return false;
	/* a zombie has no address space either: see if a new one is there */
	{
		int fd = open_proc(sd->pid, "maps", O_RDONLY);
		struct sd_maps m = { 0 };
		bool fresh;

		if (fd < 0)
			return false;
		fresh = !sd_maps_read(&m, fd) && m.n;
		sd_maps_free(&m);
		close(fd);
		return fresh;
	}
}

static int collect_locked(struct softdirty *sd, uint64_t start, uint64_t end,
			  struct sd_out *o, bool reset)
{
	int err;

	if (sd->broken)
		return sd->broken;
	err = sd->be->collect(sd, start, end, o, reset);
	if (err != -ESRCH || !execed(sd))
		return err;
	err = restart_after_exec(sd);
	if (err)
		return err;
	o->n = 0;
	o->full = false;
	return sd->be->collect(sd, start, end, o, reset);
}

int softdirty_reset(struct softdirty *sd)
{
	struct sd_out discard = { .discard = true };
	int err;

	if (!sd)
		return -EINVAL;
	pthread_mutex_lock(&sd->lock);
	err = collect_locked(sd, 0, SD_ADDR_MAX, &discard, true);
	pthread_mutex_unlock(&sd->lock);
	return err;
}

int softdirty_freeze(struct softdirty *sd)
{
	int err;

	if (!sd || sd->self)
		return -EINVAL;
	pthread_mutex_lock(&sd->lock);
	err = sd->frozen ? -EBUSY : sd_inject_attach(&sd->frozen, sd->pid);
	pthread_mutex_unlock(&sd->lock);
	return err;
}

int softdirty_thaw(struct softdirty *sd)
{
	int err = -EINVAL;

	if (!sd)
		return -EINVAL;
	pthread_mutex_lock(&sd->lock);
	if (sd->frozen) {
		sd_inject_detach(sd->frozen);
		sd->frozen = NULL;
		err = 0;
	}
	pthread_mutex_unlock(&sd->lock);
	return err;
}

long softdirty_collect(struct softdirty *sd, uint64_t start, uint64_t end,
		       struct softdirty_range *vec, size_t vec_len,
		       unsigned int flags, uint64_t *walk_end)
{
	struct sd_out o = { .vec = vec, .len = vec_len };
	uint64_t s = start, e = end;
	int err;

	if (!sd || (!vec && vec_len) || (flags & ~SOFTDIRTY_COLLECT_RESET) ||
	    start > end)
		return -EINVAL;
	clamp(&s, &e);
	if (s >= e) {
		if (walk_end)
			*walk_end = end;
		return 0;
	}
	pthread_mutex_lock(&sd->lock);
	err = collect_locked(sd, s, e, &o, flags & SOFTDIRTY_COLLECT_RESET);
	pthread_mutex_unlock(&sd->lock);
	if (err && err != -ENOSPC)
		return err;
	if (walk_end)
		*walk_end = o.full ? o.walk_end : end;
	return (long)o.n;
}

long softdirty_pagemap(struct softdirty *sd, uint64_t addr, uint64_t *buf,
		       size_t n)
{
	struct softdirty_range vec[256];
	uint64_t start = PAGE_DOWN(addr), end, cur;
	size_t i, done = 0;
	ssize_t got;

	if (!sd || (!buf && n))
		return -EINVAL;
	if (start >= SD_ADDR_MAX || !n)
		return 0;
	n = MIN(n, (SD_ADDR_MAX - start) / PAGE_SZ);
	/*
	 * Through our own buffer, not the caller's: a kernel-mode write into
	 * memory the mprotect backend protects would fail with EFAULT.
	 */
	pthread_mutex_lock(&sd->lock);
	if (!sd->pm)
		sd->pm = sd_kmem_alloc(PM_CHUNK * 8);
	pthread_mutex_unlock(&sd->lock);
	if (!sd->pm)
		return -ENOMEM;
	while (done < n) {
		size_t k = MIN(n - done, (size_t)PM_CHUNK);

		pthread_mutex_lock(&sd->lock);
		got = sd_pread_full(sd->pagemap_fd, sd->pm, k * 8,
				    (off_t)((start / PAGE_SZ + done) * 8));
		if (got > 0)
			memcpy(buf + done, sd->pm, (size_t)got & ~7UL);
		pthread_mutex_unlock(&sd->lock);
		if (got < 0)
			return got;
		done += (size_t)got / 8;
		if ((size_t)got < k * 8)
			break;
	}
	n = done;
	end = start + n * PAGE_SZ;
	for (i = 0; i < n; i++)
		buf[i] &= ~SOFTDIRTY_PM_SOFT_DIRTY;
	for (cur = start; cur < end;) {
		uint64_t we;
		long r = softdirty_collect(sd, cur, end, vec, 256, 0, &we);
		long k;

		if (r < 0)
			return r;
		for (k = 0; k < r; k++) {
			uint64_t p;

			for (p = vec[k].start; p < vec[k].end; p += PAGE_SZ)
				buf[(p - start) / PAGE_SZ] |= SOFTDIRTY_PM_SOFT_DIRTY;
		}
		cur = we;
	}
	return (long)n;
}
