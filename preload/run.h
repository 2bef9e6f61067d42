/* SPDX-License-Identifier: MIT */
#ifndef SOFTDIRTY_PRELOAD_RUN_H
#define SOFTDIRTY_PRELOAD_RUN_H

#include <stdbool.h>
#include <stddef.h>

/*
 * `softdirty run [--] COMMAND [ARGS...]` (argv[0] is "run"): exec COMMAND
 * with libsoftdirty-preload.so in LD_PRELOAD.  Returns only on failure: 2
 * for usage, 126/127 as a shell would (the message is on stderr).
 */
int softdirty_cmd_run(int argc, char **argv);

/* Where the shim is (see run.c); 0 or -errno. */
int softdirty_preload_path(char *out, size_t sz);

#endif
