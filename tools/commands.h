/* SPDX-License-Identifier: MIT */
/* Subcommands of softdirty(1) that live in their own file. */
#ifndef SOFTDIRTY_TOOLS_COMMANDS_H
#define SOFTDIRTY_TOOLS_COMMANDS_H

/*
 * `softdirty watch [OPTIONS] (PID | -- COMMAND [ARGS...])` (argv[0] is
 * "watch"): a live monitor of another process's writes.  Returns the exit
 * status: 0, 1 on error, 2 for usage, or COMMAND's own status.
 */
int cmd_watch(int argc, char **argv);

#endif
