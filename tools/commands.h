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

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct softdirty;
struct dump_stats {
	uint64_t present, reported, copied, stored;
	/* copied because other processes can change them (shared, file) */
	uint64_t always;
	uint64_t frozen_ns;
	uint32_t mode;		/* IMG_MODE_* */
};
/*
 * One link of a dump series (as --every/--count does): dump the tracked
 * process into dir with sd, open and not frozen, which the collect resets;
 * an increment of parent (NULL: full).  @tracked: copy only what sd
 * reports (dump_can_track() must have said yes).  Returns the exit status;
 * after a failure the tracker's reset point no longer matches the last
 * link: start a new series.
 */
int dump_link(struct softdirty *sd, bool tracked, const char *dir,
	      const char *parent, bool quiet, struct dump_stats *st);
/* Whether sd's backend sees every write a tracked increment relies on. */
bool dump_can_track(const struct softdirty *sd, const char **why);

#endif
