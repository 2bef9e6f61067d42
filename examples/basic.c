// SPDX-License-Identifier: MIT
/* The README's example: which of my pages did this code write? */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <softdirty.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

int main(void)
{
	struct softdirty_opts opts = { .sz = sizeof(opts), .backend = "auto" };
	struct softdirty_range vec[16];
	struct softdirty *sd;
	size_t len = 16 << 20;
	uint64_t next;
	long i, n;
	char *buf;
	int err;

	buf = mmap(NULL, len, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		return 1;
	memset(buf, 0, len);

	err = softdirty_open(&sd, 0, &opts);	/* 0: this process */
	if (err) {
		fprintf(stderr, "softdirty_open: %s\n", strerror(-err));
		return 1;
	}
	buf[5 * 4096] = 1;			/* dirty page 5 */
	memset(buf + (1 << 20), 7, 3 * 4096);	/* and 256..258 */

	n = softdirty_collect(sd, (uintptr_t)buf, (uintptr_t)buf + len, vec,
			      16, SOFTDIRTY_COLLECT_RESET, &next);
	if (n < 0) {
		fprintf(stderr, "softdirty_collect: %s\n", strerror((int)-n));
		return 1;
	}
	printf("backend %s: %ld dirty ranges\n", softdirty_backend(sd), n);
	for (i = 0; i < n; i++)
		printf("  pages %llu-%llu\n",
		       (unsigned long long)(vec[i].start - (uintptr_t)buf) / 4096,
		       (unsigned long long)(vec[i].end - (uintptr_t)buf) / 4096 - 1);
	softdirty_close(sd);
	return 0;
}
