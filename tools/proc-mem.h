/* SPDX-License-Identifier: MIT */
/* Another process's memory, for dump and restore: layout, presence, I/O. */
#ifndef SOFTDIRTY_PROC_MEM_H
#define SOFTDIRTY_PROC_MEM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "image-fmt.h"

struct pmem {
	pid_t pid;
	int mem_fd;		/* /proc/PID/mem, read-write when allowed */
	int pm_fd;		/* /proc/PID/pagemap */
	bool scan;		/* PAGEMAP_SCAN works */
};

int pmem_open(struct pmem *m, pid_t pid, bool write);
void pmem_close(struct pmem *m);
/* pid, start time (stat field 22), executable path */
int pmem_identity(pid_t pid, uint64_t *start_time, char **exe);
/* Parse /proc/PID/maps into regions (name, prot, offset, kind set). */
int pmem_regions(pid_t pid, struct img_region **out, uint32_t *n);
void pmem_free_regions(struct img_region *r, uint32_t n);
/* A range of present (or swapped) pages, end exclusive. */
struct prange {
	uint64_t start, end;
};
/* The present ranges of [start, end), coalesced, into *out (malloc'd). */
int pmem_present(struct pmem *m, uint64_t start, uint64_t end,
		 struct prange **out, size_t *n);
/* Read / write whole pages; falls back to /proc/PID/mem (PROT_NONE, RO). */
int pmem_read(struct pmem *m, uint64_t addr, void *buf, size_t len);
int pmem_write(struct pmem *m, uint64_t addr, const void *buf, size_t len);
/* is this region's name an anonymous one (no file behind it)? */
bool pmem_anon_name(const char *name);

#endif
