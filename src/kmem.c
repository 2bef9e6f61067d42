// SPDX-License-Identifier: MIT
/*
 * Buffers the kernel writes into on our behalf (read(2) of /proc files,
 * pread of pagemap, ioctl output vectors).  They are mmap'ed and listed
 * here so that the mprotect backend leaves them writable: its PROT_READ
 * would turn those kernel-mode writes into EFAULT — for every tracker in
 * the process, not only its own.
 */
#include <errno.h>
#include <sys/mman.h>

#include "internal.h"

static pthread_mutex_t kmem_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sd_rset kmem_set;

void *sd_kmem_alloc(size_t len)
{
	void *p;
	int err;

	len = PAGE_UP(len);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	pthread_mutex_lock(&kmem_lock);
	err = sd_rset_add(&kmem_set, (uintptr_t)p, (uintptr_t)p + len);
	pthread_mutex_unlock(&kmem_lock);
	if (err) {
		munmap(p, len);
		return NULL;
	}
	return p;
}

void sd_kmem_free(void *p, size_t len)
{
	if (!p)
		return;
	len = PAGE_UP(len);
	pthread_mutex_lock(&kmem_lock);
	/* a failed split leaves a stale entry: harmless, slightly imprecise */
	(void)!sd_rset_remove(&kmem_set, (uintptr_t)p, (uintptr_t)p + len);
	pthread_mutex_unlock(&kmem_lock);
	munmap(p, len);
}

int sd_kmem_ranges(struct sd_rset *out)
{
	size_t i;
	int err = 0;

	sd_rset_clear(out);
	pthread_mutex_lock(&kmem_lock);
	err = sd_rset_reserve(out, kmem_set.n);
	for (i = 0; !err && i < kmem_set.n; i++)
		err = sd_rset_add(out, kmem_set.v[i].start, kmem_set.v[i].end);
	pthread_mutex_unlock(&kmem_lock);
	return err;
}
