// SPDX-License-Identifier: MIT
/* Another process's memory: /proc/PID/maps, pagemap, process_vm_readv. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "proc-mem.h"
#include "../src/uapi.h"

int pmem_open(struct pmem *m, pid_t pid, bool write)
{
	char path[64];
	struct page_region pr;
	struct pm_scan_arg a = { 0 };

	m->pid = pid;
	m->pm_fd = -1;
	snprintf(path, sizeof(path), "/proc/%d/mem", (int)pid);
	m->mem_fd = open(path, (write ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (m->mem_fd < 0)
		return -errno;
	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
	m->pm_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (m->pm_fd < 0) {
		int e = -errno;

		close(m->mem_fd);
		return e;
	}
	/* PAGEMAP_SCAN (6.7+) walks only populated page tables */
	a.size = sizeof(a);
	a.start = 0;
	a.end = IMG_PAGE;
	a.vec = (uintptr_t)&pr;
	a.vec_len = 1;
	a.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
	a.return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
	m->scan = ioctl(m->pm_fd, PAGEMAP_SCAN, &a) >= 0;
	return 0;
}

void pmem_close(struct pmem *m)
{
	if (m->mem_fd >= 0)
		close(m->mem_fd);
	if (m->pm_fd >= 0)
		close(m->pm_fd);
	m->mem_fd = m->pm_fd = -1;
}

int pmem_identity(pid_t pid, uint64_t *start_time, char **exe)
{
	char path[64], buf[4096], *p;
	unsigned long long st = 0;
	ssize_t l;
	int fd, i;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	l = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (l <= 0)
		return -EIO;
	buf[l] = 0;
	/* the command name may hold spaces and parentheses: skip to the last ')' */
	p = strrchr(buf, ')');
	if (!p)
		return -EIO;
	/* field 3 starts after ") "; field 22 is 19 fields later */
	p += 2;
	for (i = 3; i < 22 && p; i++) {
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	if (!p || sscanf(p, "%llu", &st) != 1)
		return -EIO;
	*start_time = st;
	snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
	l = readlink(path, buf, sizeof(buf) - 1);
	if (l < 0)
		return -errno;
	buf[l] = 0;
	*exe = strdup(buf);
	return *exe ? 0 : -ENOMEM;
}

static bool special_name(const char *n)
{
	return !strcmp(n, "[vdso]") || !strncmp(n, "[vvar", 5) ||
	       !strcmp(n, "[vsyscall]") || !strcmp(n, "[uprobes]");
}

bool pmem_anon_name(const char *n)
{
	return !n[0] || (n[0] == '[' && !special_name(n));
}

void pmem_free_regions(struct img_region *r, uint32_t n)
{
	uint32_t i;

	for (i = 0; r && i < n; i++)
		free(r[i].name);
	free(r);
}

int pmem_regions(pid_t pid, struct img_region **out, uint32_t *nout)
{
	char path[64], *line = NULL;
	size_t cap = 0, alloc = 0;
	struct img_region *r = NULL;
	uint32_t n = 0;
	FILE *f;
	int e = 0;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		unsigned long long s, en, off, ino;
		char perms[8];
		int pos = 0;
		struct img_region *x;
		char *name;
		size_t l;

		if (sscanf(line, "%llx-%llx %7s %llx %*x:%*x %llu %n", &s, &en,
			   perms, &off, &ino, &pos) < 5) {
			e = -EIO;
			break;
		}
		/* [vsyscall] lies above user space: not the process's memory */
		if (en > IMG_ADDR_LIMIT)
			continue;
		name = line + pos;
		l = strlen(name);
		while (l && (name[l - 1] == '\n' || name[l - 1] == ' '))
			name[--l] = 0;
		if (n == alloc) {
			size_t na = alloc ? alloc * 2 : 64;
			struct img_region *nr = realloc(r, na * sizeof(*r));

			if (!nr) {
				e = -ENOMEM;
				break;
			}
			r = nr;
			alloc = na;
		}
		x = &r[n];
		memset(x, 0, sizeof(*x));
		x->start = s;
		x->end = en;
		x->offset = off;
		x->prot = (perms[0] == 'r' ? IMG_PROT_READ : 0) |
			  (perms[1] == 'w' ? IMG_PROT_WRITE : 0) |
			  (perms[2] == 'x' ? IMG_PROT_EXEC : 0) |
			  (perms[3] == 's' ? IMG_PROT_SHARED : 0);
		x->kind = special_name(name) ? IMG_KIND_SPECIAL : 0;
		x->name = strdup(name);
		if (!x->name) {
			e = -ENOMEM;
			break;
		}
		if (!x->kind)
			x->npages = (en - s) / IMG_PAGE;
		n++;
	}
	free(line);
	fclose(f);
	if (e) {
		pmem_free_regions(r, n);
		return e;
	}
	*out = r;
	*nout = n;
	return 0;
}

struct pvec {
	struct prange *v;
	size_t n, cap;
};

static int add_range(struct pvec *p, uint64_t s, uint64_t e)
{
	if (p->n && p->v[p->n - 1].end == s) {
		p->v[p->n - 1].end = e;
		return 0;
	}
	if (p->n == p->cap) {
		size_t nc = p->cap ? p->cap * 2 : 16;
		struct prange *nv = realloc(p->v, nc * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		p->v = nv;
		p->cap = nc;
	}
	p->v[p->n].start = s;
	p->v[p->n].end = e;
	p->n++;
	return 0;
}

/*
 * A uffd-wp PTE marker (what a tracker's write-protection leaves in an
 * unpopulated PTE) looks swapped: swap type 31 (the last, never a swap
 * file), offset the marker bits.  It is no page.  The type shows only to
 * CAP_SYS_ADMIN; others count markers as present (read as zeros: a
 * zero page more in the image, never a page less).
 */
static bool pte_marker(uint64_t e)
{
	return (e & (3ULL << 62)) == 1ULL << 62 && (e & 0x1f) == 0x1f &&
	       (e & ((1ULL << 55) - 1)) >> 5 < 64;
}

static int read_present(struct pmem *m, uint64_t start, uint64_t end,
			struct pvec *p);

static int scan_present(struct pmem *m, uint64_t start, uint64_t end,
			struct pvec *p)
{
	struct page_region v[512];
	uint64_t cur = start;

	while (cur < end) {
		struct pm_scan_arg a = { 0 };
		long r, i;

		a.size = sizeof(a);
		a.start = cur;
		a.end = end;
		a.vec = (uintptr_t)v;
		a.vec_len = 512;
		a.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
		a.return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
		r = ioctl(m->pm_fd, PAGEMAP_SCAN, &a);
		if (r < 0)
			return -errno;
		for (i = 0; i < r; i++) {
			int e = 0;

			/* swapped only: look for markers in the pagemap */
			if (!(v[i].categories & PAGE_IS_PRESENT))
				e = read_present(m, v[i].start, v[i].end, p);
			else if (add_range(p, v[i].start, v[i].end))
				e = -ENOMEM;
			if (e)
				return e;
		}
		if (a.walk_end <= cur)
			return -EIO;
		cur = a.walk_end;
	}
	return 0;
}

static int read_present(struct pmem *m, uint64_t start, uint64_t end,
			struct pvec *p)
{
	uint64_t np = (end - start) / IMG_PAGE, k;

	for (k = 0; k < np;) {
		uint64_t buf[512];
		size_t want = np - k > 512 ? 512 : (size_t)(np - k), i;
		ssize_t r = pread(m->pm_fd, buf, want * 8,
				  (off_t)((start / IMG_PAGE + k) * 8));

		if (r <= 0 || r % 8)
			return r < 0 ? -errno : -EIO;
		for (i = 0; i < (size_t)r / 8; i++) {
			uint64_t a = start + (k + i) * IMG_PAGE;

			if ((buf[i] & (3ULL << 62)) && !pte_marker(buf[i]) &&
			    add_range(p, a, a + IMG_PAGE))
				return -ENOMEM;
		}
		k += (size_t)r / 8;
	}
	return 0;
}

int pmem_present(struct pmem *m, uint64_t start, uint64_t end,
		 struct prange **out, size_t *n)
{
	struct pvec p = { 0 };
	int e = m->scan ? scan_present(m, start, end, &p) :
			  read_present(m, start, end, &p);

	if (e) {
		free(p.v);
		return e;
	}
	*out = p.v;
	*n = p.n;
	return 0;
}

int pmem_read(struct pmem *m, uint64_t addr, void *buf, size_t len)
{
	struct iovec l = { buf, len };
	struct iovec r = { (void *)(uintptr_t)addr, len };
	ssize_t got = process_vm_readv(m->pid, &l, 1, &r, 1, 0);
	size_t done = got > 0 ? (size_t)got : 0;

	/* the rest (PROT_NONE, or a short read): through /proc/PID/mem */
	while (done < len) {
		ssize_t x = pread(m->mem_fd, (char *)buf + done, len - done,
				  (off_t)(addr + done));

		if (x <= 0)
			return x < 0 ? -errno : -EIO;
		done += (size_t)x;
	}
	return 0;
}

int pmem_write(struct pmem *m, uint64_t addr, const void *buf, size_t len)
{
	struct iovec l = { (void *)buf, len };
	struct iovec r = { (void *)(uintptr_t)addr, len };
	ssize_t got = process_vm_writev(m->pid, &l, 1, &r, 1, 0);
	size_t done = got > 0 ? (size_t)got : 0;

	/* read-only pages: /proc/PID/mem writes with FOLL_FORCE */
	while (done < len) {
		ssize_t x = pwrite(m->mem_fd, (const char *)buf + done,
				   len - done, (off_t)(addr + done));

		if (x <= 0)
			return x < 0 ? -errno : -EIO;
		done += (size_t)x;
	}
	return 0;
}
