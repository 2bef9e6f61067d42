/* SPDX-License-Identifier: MIT */
/*
 * Helpers of the image tests (image-accept, image-series, image-badinput):
 * softdirty subcommands run in a child with their output in a file, and
 * the workload protocol (a command answered with 'k', "c" with a
 * checksum; the workload waits in read(2) in between).
 */
#ifndef SOFTDIRTY_TEST_IMAGE_COMMON_H
#define SOFTDIRTY_TEST_IMAGE_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* Commands' output goes to DIR/out (call once, before run()). */
void run_out_dir(const char *dir);
/*
 * Run a softdirty subcommand fn (it may exit) in a child with the
 * NULL-ended argv that follows.  Its exit status, or -1.
 */
int run(int (*fn)(int, char **), ...);
/* The last command's output (its first 8 KiB, final newline cut). */
const char *output(void);
/* The last command's output as diagnostics, line by line. */
void show_output(void);

/*
 * Send a command of n bytes and wait for 'k', then until the workload
 * sleeps in read(2) again, so that every dump and restore sees it at the
 * same place in its code (a restore rolls back its stack, not its
 * registers).
 */
bool wl_cmd(struct td_child *c, const char *m, size_t n);
/* The workload's checksum of its memory, or 0 when it does not answer. */
uint64_t wl_sum(struct td_child *c);

#endif
