// SPDX-License-Identifier: MIT
/* /proc/PID/maps parsing and small I/O helpers. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"
#include "uapi.h"

ssize_t sd_pread_full(int fd, void *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t r = pread(fd, (char *)buf + done, len - done,
				  off + (off_t)done);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		done += (size_t)r;
	}
	return (ssize_t)done;
}

long sd_pm_scan(int pagemap_fd, struct pm_scan_arg *a)
{
	long r;

	do {
		r = ioctl(pagemap_fd, PAGEMAP_SCAN, a);
	} while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : r;
}

int sd_pm_scan_rset(int pagemap_fd, uint64_t a, uint64_t b,
		    const struct pm_scan_arg *masks, struct page_region *vec,
		    size_t vec_len, struct sd_rset *out)
{
	struct pm_scan_arg arg;
	long r, i;
	int err;

	while (a < b) {
		arg = *masks;
		arg.size = sizeof(arg);
		arg.flags = 0;
		arg.start = a;
		arg.end = b;
		arg.vec = (uintptr_t)vec;
		arg.vec_len = vec_len;
		r = sd_pm_scan(pagemap_fd, &arg);
		if (r < 0)
			return (int)r;
		for (i = 0; i < r; i++) {
			err = sd_rset_add(out, vec[i].start, vec[i].end);
			if (err)
				return err;
		}
		if (arg.walk_end <= a)
			return -EIO;
		a = arg.walk_end;
	}
	return 0;
}

int sd_write_str(int fd, const char *s)
{
	size_t len = strlen(s);
	ssize_t r;

	do {
		r = write(fd, s, len);
	} while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	return (size_t)r == len ? 0 : -EIO;
}

int sd_gettid(void)
{
	return (int)syscall(SYS_gettid);
}

void sd_maps_free(struct sd_maps *m)
{
	free(m->v);
	sd_kmem_free(m->buf, m->buf_cap);
	memset(m, 0, sizeof(*m));
}

static int buf_init(struct sd_maps *m)
{
	if (!m->buf_cap) {
		m->buf = sd_kmem_alloc(65536);
		if (!m->buf)
			return -ENOMEM;
		m->buf_cap = 65536;
	}
	return 0;
}

static int read_all(struct sd_maps *m, int fd, size_t *len)
{
	size_t n = 0;
	int err = buf_init(m);

	if (err)
		return err;
	if (lseek(fd, 0, SEEK_SET) < 0)
		return -errno;
	for (;;) {
		ssize_t r;

		if (m->buf_cap - n < 4096) {
			char *b = sd_kmem_alloc(m->buf_cap * 2);

			if (!b)
				return -ENOMEM;
			memcpy(b, m->buf, n);
			sd_kmem_free(m->buf, m->buf_cap);
			m->buf = b;
			m->buf_cap *= 2;
		}
		r = read(fd, m->buf + n, m->buf_cap - n - 1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	m->buf[n] = '\0';
	*len = n;
	return 0;
}

static uint64_t hex(char **p)
{
	uint64_t v = 0;

	for (;; (*p)++) {
		char c = **p;

		if (c >= '0' && c <= '9')
			v = v * 16 + (uint64_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v = v * 16 + (uint64_t)(c - 'a' + 10);
		else
			return v;
	}
}

static int vma_push(struct sd_maps *m, const struct sd_vma *v)
{
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 64;
		struct sd_vma *nv = realloc(m->v, cap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		m->v = nv;
		m->cap = cap;
	}
	m->v[m->n++] = *v;
	return 0;
}

int sd_maps_read(struct sd_maps *m, int fd)
{
	size_t len = 0;
	char *p, *eol;
	int err;

	err = read_all(m, fd, &len);
	if (err)
		return err;
	m->n = 0;
	for (p = m->buf; *p; p = eol + 1) {
		struct sd_vma v = { 0 };

		eol = strchr(p, '\n');
		if (!eol)
			eol = p + strlen(p);
		*eol = '\0';
		v.start = hex(&p);
		if (*p++ != '-')
			return -EPROTO;
		v.end = hex(&p);
		if (*p++ != ' ' || strlen(p) < 5)
			return -EPROTO;
		v.prot = (p[0] == 'r' ? PROT_READ : 0) |
			 (p[1] == 'w' ? PROT_WRITE : 0) |
			 (p[2] == 'x' ? PROT_EXEC : 0);
		v.shared = p[3] == 's';
		p += 5;
		v.offset = hex(&p);
		p++;		/* dev major:minor */
		hex(&p);
		p++;
		hex(&p);
		while (*p == ' ')
			p++;
		v.inode = strtoull(p, &p, 10);
		while (*p == ' ')
			p++;
		v.path = p;
		err = vma_push(m, &v);
		if (err)
			return err;
		if (eol == m->buf + len)
			break;
	}
	return 0;
}

/* Room for a name at @used (d_path() gives at most PATH_MAX). */
static int name_room(struct sd_maps *m, size_t used)
{
	size_t i;
	char *b;

	if (m->buf_cap - used >= PATH_MAX)
		return 0;
	b = sd_kmem_alloc(m->buf_cap * 2);
	if (!b)
		return -ENOMEM;
	memcpy(b, m->buf, used);
	for (i = 0; i < m->n; i++)
		if (*m->v[i].path)
			m->v[i].path = b + (m->v[i].path - m->buf);
	sd_kmem_free(m->buf, m->buf_cap);
	m->buf = b;
	m->buf_cap *= 2;
	return 0;
}

/* -ENOTTY: the kernel has no PROCMAP_QUERY. */
static int query_range(struct sd_maps *m, int fd, uint64_t start, uint64_t end)
{
	uint64_t addr = start;
	size_t used = 0;
	int err = buf_init(m);

	m->n = 0;
	while (!err && addr < end) {
		struct procmap_query q = {
			.size = sizeof(q),
			.query_flags = PROCMAP_QUERY_COVERING_OR_NEXT_VMA,
			.query_addr = addr,
		};
		struct sd_vma v = { .path = "" };

		err = name_room(m, used);
		if (err)
			break;
		q.vma_name_addr = (uintptr_t)(m->buf + used);
		q.vma_name_size = (uint32_t)MIN(m->buf_cap - used, UINT32_MAX);
		if (ioctl(fd, PROCMAP_QUERY, &q)) {
			if (errno == EINTR)
				continue;
			/* nothing at or above addr */
			return errno == ENOENT ? 0 : -errno;
		}
		if (q.vma_start >= end)
			break;
		v.start = q.vma_start;
		v.end = q.vma_end;
		v.offset = q.vma_offset;
		v.inode = q.inode;
		v.prot = (q.vma_flags & PROCMAP_QUERY_VMA_READABLE ? PROT_READ : 0) |
			 (q.vma_flags & PROCMAP_QUERY_VMA_WRITABLE ? PROT_WRITE : 0) |
			 (q.vma_flags & PROCMAP_QUERY_VMA_EXECUTABLE ? PROT_EXEC : 0);
		v.shared = q.vma_flags & PROCMAP_QUERY_VMA_SHARED;
		if (q.vma_name_size) {
			v.path = m->buf + used;
			used += q.vma_name_size;
		}
		err = vma_push(m, &v);
		addr = q.vma_end;
	}
	return err;
}

int sd_maps_read_range(struct sd_maps *m, int fd, uint64_t start, uint64_t end)
{
	size_t i, k = 0;
	int err;

	if (!m->text_only) {
		err = query_range(m, fd, start, end);
		if (err != -ENOTTY)
			return err;
		m->text_only = true;
	}
	err = sd_maps_read(m, fd);
	if (err)
		return err;
	for (i = 0; i < m->n; i++)
		if (m->v[i].end > start && m->v[i].start < end)
			m->v[k++] = m->v[i];
	m->n = k;
	return 0;
}

bool sd_vma_special(const struct sd_vma *v)
{
	return !strcmp(v->path, "[vvar]") || !strcmp(v->path, "[vdso]") ||
	       !strcmp(v->path, "[vsyscall]") ||
	       !strcmp(v->path, "[vvar_vclock]") ||
	       !strcmp(v->path, "[uprobes]");
}

bool sd_vma_hugetlb(const struct sd_vma *v)
{
	return !strncmp(v->path, "/anon_hugepage", 14) ||
	       !strncmp(v->path, "/dev/hugepages/", 15) ||
	       strstr(v->path, "/hugetlbfs/") != NULL;
}
