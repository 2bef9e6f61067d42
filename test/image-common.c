// SPDX-License-Identifier: MIT
/* Helpers of the image tests: see image-common.h. */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "image-common.h"

static char out_path[128];

void run_out_dir(const char *dir)
{
	snprintf(out_path, sizeof(out_path), "%s/out", dir);
}

int run(int (*fn)(int, char **), ...)
{
	va_list ap;
	int st;

	va_start(ap, fn);
	st = td_run_vout(out_path, fn, ap);
	va_end(ap);
	return st;
}

const char *output(void)
{
	static char buf[8192];
	ssize_t n;
	int fd;

	fd = open(out_path, O_RDONLY | O_CLOEXEC);
	n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = 0;
	if (n > 0 && buf[n - 1] == '\n')
		buf[n - 1] = 0;
	return buf;
}

void show_output(void)
{
	const char *o = output(), *e;

	while (*o) {
		e = strchr(o, '\n');
		tap_diag("  | %.*s", (int)(e ? e - o : (long)strlen(o)), o);
		if (!e)
			break;
		o = e + 1;
	}
}

bool wl_cmd(struct td_child *c, const char *m, size_t n)
{
	char k = 0;

	return write(c->to, m, n) == (ssize_t)n && td_child_recv(c, &k, 1, 20000) &&
	       k == 'k' && td_blocked_in_read(c->pid);
}

uint64_t wl_sum(struct td_child *c)
{
	uint64_t h = 0;

	if (write(c->to, "c", 1) != 1 || !td_child_recv(c, &h, sizeof(h), 20000) ||
	    !td_blocked_in_read(c->pid))
		return 0;
	return h;
}
