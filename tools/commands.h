/* SPDX-License-Identifier: MIT */
/* Subcommands of softdirty(1) that live in their own files. */
#ifndef SOFTDIRTY_TOOLS_COMMANDS_H
#define SOFTDIRTY_TOOLS_COMMANDS_H

/*
 * argv[0] is the subcommand's name.  Each returns the exit status: 0, 1 on
 * error, 2 for usage (watch -- COMMAND: COMMAND's own status).
 */
int cmd_watch(int argc, char **argv);
int cmd_dump(int argc, char **argv);
int cmd_image(int argc, char **argv);
int cmd_restore(int argc, char **argv);

#endif
