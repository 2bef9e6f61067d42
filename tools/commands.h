/* SPDX-License-Identifier: MIT */
/* Subcommands of softdirty(1) that live in their own files. */
#ifndef SOFTDIRTY_COMMANDS_H
#define SOFTDIRTY_COMMANDS_H

/* argv[0] is the subcommand's name; return the exit status */
int cmd_dump(int argc, char **argv);
int cmd_image(int argc, char **argv);
int cmd_restore(int argc, char **argv);

#endif
