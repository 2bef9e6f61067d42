/* SPDX-License-Identifier: MIT */
#ifndef SOFTDIRTY_STOPWORLD_H
#define SOFTDIRTY_STOPWORLD_H

#include <stdbool.h>

#include "internal.h"

struct sd_world {
	int dirfd;		/* /proc/self/task */
	char *dents;		/* getdents64 buffer (kernel-written) */
	int *tids;
	int n;
	bool stopped;
};

/* The signal used to park threads (SIGRTMAX - 2). */
int sd_stopworld_signal(void);
/* Install (refcounted) / restore the handler. */
MUST_CHECK int sd_stopworld_get(void);
void sd_stopworld_put(void);
/* Park every other thread of the process, or fail (-EAGAIN after 2 s). */
MUST_CHECK int sd_world_stop(struct sd_world *w);
void sd_world_resume(struct sd_world *w);

#endif
