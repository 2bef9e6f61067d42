// SPDX-License-Identifier: MIT
/*
 * libsoftdirty-preload.so on a kernel with real soft-dirty: the shim must
 * step aside, the kernel answers.  The test runs itself under LD_PRELOAD
 * (SOFTDIRTY_PRELOAD, else ../libsoftdirty-preload.so next to its own
 * directory) and reports what it sees through libc (the shim) and through
 * raw syscalls (the kernel, past the shim):
 *   - a clear through the shim opens no tracker (no new fd) and reaches the
 *     kernel (its bit 55 of a page written before is cleared);
 *   - pagemap read through the shim equals the kernel's entries, also after
 *     a clear the shim never saw (raw syscall), which an emulating shim
 *     would answer from its own tracker;
 *   - the VmFlags of smaps equal the kernel's.
 * Control: with SOFTDIRTY_PRELOAD_FORCE=1 the shim emulates, and the same
 * checks tell it apart (the clear does not reach the kernel, the answer
 * after a raw clear differs): they can fail.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#define SD_BIT		(1ULL << 55)
#define NP		8
#define CHILD_ENV	"SOFTDIRTY_STEPASIDE_CHILD"

extern char _DYNAMIC[] __attribute__((weak));

static uint64_t raw_entry(const void *p)
{
	uint64_t e = 0;
	int fd = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/pagemap",
			      O_RDONLY);

	if (fd < 0 || syscall(SYS_pread64, (long)fd, &e, 8L,
			      (long)((uintptr_t)p / PG * 8)) != 8)
		tap_bail("raw pagemap read: %s", strerror(errno));
	syscall(SYS_close, (long)fd);
	return e;
}

/* "4" to clear_refs past the shim. */
static void raw_clear(void)
{
	int fd = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/clear_refs",
			      O_WRONLY);

	if (fd < 0 || syscall(SYS_write, (long)fd, "4", 1L) != 1)
		tap_bail("raw clear_refs: %s", strerror(errno));
	syscall(SYS_close, (long)fd);
}

/* Does the kernel have soft-dirty?  Bit 55 follows a write after a clear. */
static bool kernel_softdirty(void)
{
	volatile char *p = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	bool sd;

	if (p == MAP_FAILED)
		tap_bail("mmap: %s", strerror(errno));
	p[0] = 1;
	p[PG] = 1;
	raw_clear();
	p[0] = 2;
	sd = (raw_entry((void *)p) & SD_BIT) &&
	     !(raw_entry((void *)(p + PG)) & SD_BIT);
	munmap((void *)p, 2 * PG);
	return sd;
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	while (d && (de = readdir(d)))
		n += de->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

/* The VmFlags line of the mapping at @p: through libc (the shim) or raw. */
static void vmflags(const void *p, bool raw, char *out, size_t sz)
{
	static char text[1 << 20];
	char want[32], *s, *e;
	size_t len = 0;
	ssize_t r;
	int fd;

	*out = 0;
	fd = raw ? (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/smaps",
				O_RDONLY)
		 : open("/proc/self/smaps", O_RDONLY);
	if (fd < 0)
		return;
	do {
		r = raw ? syscall(SYS_read, (long)fd, text + len,
				  (long)(sizeof(text) - 1 - len))
			: read(fd, text + len, sizeof(text) - 1 - len);
		if (r > 0)
			len += (size_t)r;
	} while (r > 0 && len < sizeof(text) - 1);
	text[len] = 0;
	if (raw)
		syscall(SYS_close, (long)fd);
	else
		close(fd);
	snprintf(want, sizeof(want), "\n%lx-", (unsigned long)(uintptr_t)p);
	s = strstr(text, want);
	s = s ? strstr(s, "\nVmFlags:") : NULL;
	if (!s)
		return;
	e = strchr(s + 1, '\n');
	snprintf(out, sz, "%.*s", (int)(e ? e - s - 1 : (long)strlen(s + 1)),
		 s + 1);
}

/* Under the shim: report what is seen, one "key value" a line. */
static int child(void)
{
	char *p = mmap(NULL, NP * PG, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t shim[NP], raw[NP];
	char f1[256], f2[256];
	int fd, pm, before, i;
	bool eq;

	if (p == MAP_FAILED)
		return 1;
	memset(p, 1, NP * PG);
	printf("loaded %d\n", !!strstr(getenv("LD_PRELOAD") ?: "", "preload"));
	/* a clear through libc: the shim's path */
	before = count_fds();
	fd = open("/proc/self/clear_refs", O_WRONLY);
	if (fd < 0 || write(fd, "4", 1) != 1)
		return 1;
	close(fd);
	printf("newfds %d\n", count_fds() - before);
	printf("kernel_cleared %d\n", !(raw_entry(p) & SD_BIT));
	/* a write, a clear the shim does not see, another write */
	p[0] = 3;
	raw_clear();
	p[5 * PG] = 2;
	pm = open("/proc/self/pagemap", O_RDONLY);
	if (pm < 0 || pread(pm, shim, sizeof(shim),
			    (off_t)((uintptr_t)p / PG * 8)) != sizeof(shim))
		return 1;
	close(pm);
	for (i = 0, eq = true; i < NP; i++) {
		raw[i] = raw_entry(p + i * PG);
		eq = eq && raw[i] == shim[i];
	}
	printf("read_equal %d\n", eq);
	printf("read_dirty %d\n", !!(shim[5] & SD_BIT) + !!(shim[0] & SD_BIT));
	vmflags(p, false, f1, sizeof(f1));
	vmflags(p, true, f2, sizeof(f2));
	printf("smaps_equal %d\n", *f2 && !strcmp(f1, f2));
	return 0;
}

struct seen {
	int loaded, newfds, kernel_cleared, read_equal, read_dirty,
	    smaps_equal;
};

/* Run ourselves under the shim (forced to emulate or not). */
static bool run(const char *so, const char *exe, bool force, struct seen *s)
{
	char line[256], key[64];
	int fds[2], status, v;
	FILE *f;
	pid_t pid;

	memset(s, -1, sizeof(*s));
	if (pipe(fds))
		return false;
	pid = fork();
	if (!pid) {
		dup2(fds[1], 1);
		close(fds[0]);
		setenv("LD_PRELOAD", so, 1);
		setenv(CHILD_ENV, "1", 1);
		if (force)
			setenv("SOFTDIRTY_PRELOAD_FORCE", "1", 1);
		else
			unsetenv("SOFTDIRTY_PRELOAD_FORCE");
		execl(exe, exe, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	f = fdopen(fds[0], "r");
	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%63s %d", key, &v) != 2)
			continue;
		if (!strcmp(key, "loaded"))
			s->loaded = v;
		else if (!strcmp(key, "newfds"))
			s->newfds = v;
		else if (!strcmp(key, "kernel_cleared"))
			s->kernel_cleared = v;
		else if (!strcmp(key, "read_equal"))
			s->read_equal = v;
		else if (!strcmp(key, "read_dirty"))
			s->read_dirty = v;
		else if (!strcmp(key, "smaps_equal"))
			s->smaps_equal = v;
	}
	if (f)
		fclose(f);
	waitpid(pid, &status, 0);
	return WIFEXITED(status) && !WEXITSTATUS(status);
}

int main(void)
{
	char exe[PATH_MAX], so[PATH_MAX];
	struct seen s;

	if (getenv(CHILD_ENV))
		return child();
	tap_init("preload-stepaside");
	if (!_DYNAMIC) {
		tap_skip("static binary: LD_PRELOAD cannot apply", "step aside");
		return tap_done();
	}
	if (!kernel_softdirty()) {
		tap_skip("kernel without soft-dirty (CONFIG_MEM_SOFT_DIRTY): "
			 "bit 55 does not follow writes, nothing to step aside "
			 "for", "step aside");
		return tap_done();
	}
	td_preload_so(exe, sizeof(exe), so, sizeof(so));

	tap_ok(run(so, exe, false, &s), "under the shim: the run completed");
	tap_ok(s.loaded == 1, "the shim is preloaded");
	tap_ok(s.newfds == 0, "a clear opens no tracker (%d new fds)", s.newfds);
	tap_ok(s.kernel_cleared == 1, "a clear through the shim reaches the kernel");
	tap_ok(s.read_equal == 1 && s.read_dirty == 1,
	       "pagemap through the shim is the kernel's, also after a clear "
	       "it did not see (equal %d, dirty %d of 1)", s.read_equal,
	       s.read_dirty);
	tap_ok(s.smaps_equal == 1, "smaps VmFlags through the shim are the kernel's");

	/* control: an emulating shim fails the same checks */
	tap_ok(run(so, exe, true, &s), "forced emulation: the run completed");
	tap_ok(s.kernel_cleared == 0 && s.newfds > 0,
	       "forced emulation: the clear stays in the shim (%d new fds)",
	       s.newfds);
	tap_ok(s.read_equal == 0 && s.read_dirty == 2,
	       "forced emulation: the answer after an unseen clear is the "
	       "shim's (dirty %d: the page it saw written and the new one)",
	       s.read_dirty);
	return tap_done();
}
