// SPDX-License-Identifier: MIT
/*
 * softdirty run [--] COMMAND [ARGS...]: run COMMAND with the soft-dirty
 * shim preloaded (and every program it execs, since LD_PRELOAD stays in
 * the environment).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "run.h"

#define PRELOAD_NAME "libsoftdirty-preload.so"

/* Installed location, set by the Makefile (-DSOFTDIRTY_PRELOAD_PATH=...). */
#ifndef SOFTDIRTY_PRELOAD_PATH
#define SOFTDIRTY_PRELOAD_PATH "/usr/local/lib/" PRELOAD_NAME
#endif

/* dirname of /proc/self/exe + @rel, when that file exists */
static bool near_exe(char *out, size_t sz, const char *rel)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash;

	if (n <= 0)
		return false;
	exe[n] = 0;
	slash = strrchr(exe, '/');
	if (!slash)
		return false;
	*slash = 0;
	if ((size_t)snprintf(out, sz, "%s/%s", exe, rel) >= sz)
		return false;
	return !access(out, R_OK);
}

/*
 * The shim: $SOFTDIRTY_PRELOAD, else next to the executable (build tree),
 * else ../lib (installed tree), else the configured install path.
 */
int softdirty_preload_path(char *out, size_t sz)
{
	const char *env = getenv("SOFTDIRTY_PRELOAD");

	if (env && *env) {
		if ((size_t)snprintf(out, sz, "%s", env) >= sz)
			return -ENAMETOOLONG;
		return access(out, R_OK) ? -errno : 0;
	}
	if (near_exe(out, sz, PRELOAD_NAME) ||
	    near_exe(out, sz, "../lib/" PRELOAD_NAME))
		return 0;
	if ((size_t)snprintf(out, sz, "%s", SOFTDIRTY_PRELOAD_PATH) >= sz)
		return -ENAMETOOLONG;
	return access(out, R_OK) ? -errno : 0;
}

static void run_usage(FILE *f)
{
	fprintf(f, "usage: softdirty run [--] COMMAND [ARGS...]\n"
		"Runs COMMAND with " PRELOAD_NAME " preloaded: writing 4 to its\n"
		"own /proc/*/clear_refs and reading bit 55 of its pagemap work\n"
		"as on a kernel with CONFIG_MEM_SOFT_DIRTY.\n");
}

int softdirty_cmd_run(int argc, char **argv)
{
	char so[PATH_MAX], *val;
	const char *old;
	int i = 1, err;
	size_t len;

	/* argv[0] is "run" */
	if (i < argc && (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))) {
		run_usage(stdout);
		return 0;
	}
	if (i < argc && !strcmp(argv[i], "--"))
		i++;
	if (i >= argc) {
		run_usage(stderr);
		return 2;
	}
	err = softdirty_preload_path(so, sizeof(so));
	if (err) {
		fprintf(stderr, "softdirty run: cannot find %s (%s); set "
			"SOFTDIRTY_PRELOAD\n", PRELOAD_NAME, strerror(-err));
		return 127;
	}
	/* absolute and canonical: the command may chdir before it execs */
	{
		char abs[PATH_MAX];

		if (!realpath(so, abs)) {
			fprintf(stderr, "softdirty run: %s: %s\n", so,
				strerror(errno));
			return 127;
		}
		snprintf(so, sizeof(so), "%s", abs);
	}
	/* keep what was preloaded already; ours first */
	old = getenv("LD_PRELOAD");
	len = strlen(so) + (old ? strlen(old) + 1 : 0) + 1;
	val = malloc(len);
	if (!val) {
		fprintf(stderr, "softdirty run: out of memory\n");
		return 127;
	}
	snprintf(val, len, "%s%s%s", so, old && *old ? ":" : "",
		 old ? old : "");
	if (setenv("LD_PRELOAD", val, 1)) {
		fprintf(stderr, "softdirty run: setenv: %s\n", strerror(errno));
		free(val);
		return 127;
	}
	free(val);
	execvp(argv[i], argv + i);
	err = errno;
	fprintf(stderr, "softdirty run: %s: %s\n", argv[i], strerror(err));
	return err == ENOENT ? 127 : 126;
}
