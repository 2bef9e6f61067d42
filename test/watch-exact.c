// SPDX-License-Identifier: MIT
/*
 * softdirty watch (the built tool, ../softdirty next to this program, or
 * $SOFTDIRTY_TOOL) on a workload child, for every backend that can track
 * another process.  No timer decides anything: watch runs with --step-fd
 * and collects when the test writes a byte, after the workload has
 * acknowledged its burst.  Checked:
 *   - every JSON line parses; per step, the workload's own mapping shows
 *     exactly the pages it wrote, and the rest of the process (its stack,
 *     libc, the sanitizer's shadow) at most RUNTIME_BOUND pages;
 *   - the summary: "summary": true, total = the sum of the intervals,
 *     wss_pages of the workload mapping = the distinct pages written;
 *   - --heatmap: an <svg> document, one region per mapped range of the
 *     target (adjacent mappings join), the workload's region among them;
 *   - the target is left untraced (no userfaultfd in its fds, no tracer)
 *     and still answers;
 *   - SIGINT to watch prints the summary; the target's exit ends watch
 *     with the summary; -- COMMAND exits with the command's status;
 *   - errors: no such process, a command that does not exist, an unknown
 *     backend, a bad interval, a process we may not ptrace (as uid 65534).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#define NPAGES		64
#define GAP_PAGES	16
/* pages of the workload process outside its mapping per step (observed:
 * a few stack pages; sanitizer builds add shadow pages) */
#define RUNTIME_BOUND	64

static char tool[PATH_MAX];

/* ---------- the workload ---------- */

/*
 * 'w' + uint32 k: write the next k pages of the mapping (cycling), each
 * to a new value; reply 'k'.  'q': exit.  Anything else is echoed.
 */
static void workload(int in, int out)
{
	size_t len = (NPAGES + 2 * GAP_PAGES) * PG, cursor = 0;
	volatile uint8_t *p;
	uint8_t *r;
	uint64_t base;
	unsigned char c;

	/* free gaps on both sides: the mapping is a region of its own */
	r = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		 -1, 0);
	if (r == MAP_FAILED)
		_exit(3);
	munmap(r, GAP_PAGES * PG);
	munmap(r + (GAP_PAGES + NPAGES) * PG, GAP_PAGES * PG);
	p = r + GAP_PAGES * PG;
	madvise((void *)p, NPAGES * PG, MADV_NOHUGEPAGE);
	for (size_t i = 0; i < NPAGES; i++)
		p[i * PG] = 1;
	base = (uintptr_t)p;
	if (write(out, &base, sizeof(base)) != sizeof(base))
		_exit(3);
	while (read(in, &c, 1) == 1) {
		uint32_t k;

		if (c == 'q')
			_exit(0);
		if (c != 'w') {
			if (write(out, &c, 1) != 1)
				_exit(3);
			continue;
		}
		if (read(in, &k, sizeof(k)) != sizeof(k))
			_exit(3);
		for (uint32_t i = 0; i < k; i++) {
			p[cursor * PG + 8]++;
			cursor = (cursor + 1) % NPAGES;
		}
		c = 'k';
		if (write(out, &c, 1) != 1)
			_exit(3);
	}
	_exit(0);
}

static bool burst(struct td_child *w, uint32_t k)
{
	unsigned char c = 'w';

	return write(w->to, &c, 1) == 1 &&
	       write(w->to, &k, sizeof(k)) == sizeof(k) &&
	       read(w->from, &c, 1) == 1 && c == 'k';
}

/* ---------- running the tool ---------- */

struct run {
	pid_t pid;
	FILE *out;	/* its stdout */
	int err;	/* its stderr */
	int step;	/* write end of its --step-fd (or -1) */
};

/* Start `softdirty watch ARGS...` (NULL-terminated); uid != 0: as that. */
static void run_start(struct run *r, uid_t uid, char *const *args)
{
	int o[2], e[2], s[2];
	char *argv[32];
	int n = 0;

	if (pipe2(o, O_CLOEXEC) || pipe2(e, O_CLOEXEC) || pipe2(s, O_CLOEXEC))
		tap_bail("pipe: %s", strerror(errno));
	argv[n++] = tool;
	argv[n++] = "watch";
	while (*args && n < 31)
		argv[n++] = *args++;
	argv[n] = NULL;
	r->pid = fork();
	if (r->pid < 0)
		tap_bail("fork: %s", strerror(errno));
	if (!r->pid) {
		dup2(o[1], 1);
		dup2(e[1], 2);
		dup2(s[0], 3);
		if (uid && (setgroups(0, NULL) || setgid(uid) || setuid(uid)))
			_exit(99);
		execv(tool, argv);
		_exit(98);
	}
	close(o[1]);
	close(e[1]);
	close(s[0]);
	r->out = fdopen(o[0], "r");
	r->err = e[0];
	r->step = s[1];
}

/* Its exit status (-1: killed); its stderr into @msg. */
static int run_end(struct run *r, char *msg, size_t sz)
{
	ssize_t n;
	int st;

	if (r->step >= 0)
		close(r->step);
	n = read(r->err, msg, sz - 1);
	msg[n > 0 ? n : 0] = 0;
	msg[strcspn(msg, "\n")] = 0;
	fclose(r->out);
	close(r->err);
	if (waitpid(r->pid, &st, 0) != r->pid)
		return -2;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *line_buf;
static size_t line_cap;

static const char *next_line(struct run *r)
{
	if (getline(&line_buf, &line_cap, r->out) <= 0)
		return NULL;
	return line_buf;
}

static bool step(struct run *r)
{
	return write(r->step, "s", 1) == 1;
}

/* ---------- JSON: a validator and field readers for watch's lines ---------- */

static const char *ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	return p;
}

static const char *value(const char *p, int depth);

static const char *string(const char *p)
{
	if (*p++ != '"')
		return NULL;
	while (*p && *p != '"') {
		if ((unsigned char)*p < 0x20)
			return NULL;
		if (*p == '\\') {
			p++;
			if (*p == 'u') {
				for (int i = 1; i <= 4; i++)
					if (!isxdigit((unsigned char)p[i]))
						return NULL;
				p += 4;
			} else if (!strchr("\"\\/bfnrt", *p) || !*p) {
				return NULL;
			}
		}
		p++;
	}
	return *p == '"' ? p + 1 : NULL;
}

static const char *number(const char *p)
{
	const char *s = p;

	if (*p == '-')
		p++;
	if (!isdigit((unsigned char)*p))
		return NULL;
	while (isdigit((unsigned char)*p))
		p++;
	if (*p == '.') {
		if (!isdigit((unsigned char)*++p))
			return NULL;
		while (isdigit((unsigned char)*p))
			p++;
	}
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		if (!isdigit((unsigned char)*p))
			return NULL;
		while (isdigit((unsigned char)*p))
			p++;
	}
	return p > s ? p : NULL;
}

static const char *value(const char *p, int depth)
{
	p = ws(p);
	if (depth > 16)
		return NULL;
	if (*p == '{' || *p == '[') {
		char close = *p == '{' ? '}' : ']';

		p = ws(p + 1);
		if (*p == close)
			return p + 1;
		for (;;) {
			if (close == '}') {
				p = string(p);
				if (!p || *(p = ws(p)) != ':')
					return NULL;
				p++;
			}
			p = value(p, depth + 1);
			if (!p)
				return NULL;
			p = ws(p);
			if (*p == close)
				return p + 1;
			if (*p++ != ',')
				return NULL;
			p = ws(p);
		}
	}
	if (*p == '"')
		return string(p);
	if (!strncmp(p, "true", 4) || !strncmp(p, "null", 4))
		return p + 4;
	if (!strncmp(p, "false", 5))
		return p + 5;
	return number(p);
}

static bool json_object(const char *line)
{
	const char *e;

	if (*ws(line) != '{')
		return false;
	e = value(line, 0);
	return e && !*ws(e);
}

/* Top-level numeric field (watch writes top-level fields before "mappings"). */
static bool field_u64(const char *line, const char *key, uint64_t *v)
{
	char pat[64];
	const char *p, *m = strstr(line, "\"mappings\"");

	snprintf(pat, sizeof(pat), "\"%s\": ", key);
	p = strstr(line, pat);
	if (!p || (m && p > m))
		return false;
	*v = strtoull(p + strlen(pat), NULL, 10);
	return true;
}

/* @key of the mapping object that starts at @start (0 when absent). */
static uint64_t mapping_u64(const char *line, uint64_t start, const char *key)
{
	char pat[64];
	const char *p, *e;

	snprintf(pat, sizeof(pat), "\"start\": %" PRIu64 ",", start);
	p = strstr(line, pat);
	if (!p)
		return 0;
	e = strchr(p, '}');
	snprintf(pat, sizeof(pat), "\"%s\": ", key);
	p = strstr(p, pat);
	if (!p || p > e)
		return 0;
	return strtoull(p + strlen(pat), NULL, 10);
}

/* ---------- the target's mapped regions, adjacent mappings joined ---------- */

static size_t count_regions(pid_t pid)
{
	char path[64], line[512];
	unsigned long long s, e, last = 0;
	size_t n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%llx-%llx", &s, &e) != 2)
			continue;
		if (!n || s != last)
			n++;
		last = e;
	}
	fclose(f);
	return n;
}

static bool has_uffd(pid_t pid)
{
	char dir[64], link[256];
	bool found = false;
	ssize_t n;

	for (int fd = 0; fd < 1024; fd++) {
		snprintf(dir, sizeof(dir), "/proc/%d/fd/%d", (int)pid, fd);
		n = readlink(dir, link, sizeof(link) - 1);
		if (n < 0)
			continue;
		link[n] = 0;
		if (strstr(link, "userfaultfd"))
			found = true;
	}
	return found;
}

/* ---------- per backend ---------- */

static bool long_done;
static void long_run(const struct td_backend *be);

static const uint32_t bursts[] = { 1, 7, NPAGES, 0, 33, 12, 5 };

static void exact(const struct td_backend *be, void *ctx)
{
	char pidstr[16], svg[PATH_MAX], msg[4096];
	char *args[] = { "--backend", (char *)be->name, "--json",
			 "--step-fd", "3", "--heatmap", svg, pidstr, NULL };
	uint64_t base, sum = 0, dp, total = 0, v;
	uint8_t seen[NPAGES] = { 0 };
	size_t cursor = 0, distinct = 0, regions;
	bool all_json = true, exact_ok = true, bound_ok = true;
	uint64_t max_extra = 0;
	struct td_child w;
	struct run r;
	const char *l;
	int rc;

	(void)ctx;
	if (!(be->caps & SOFTDIRTY_CAP_REMOTE)) {
		tap_skip("no SOFTDIRTY_CAP_REMOTE: cannot track another process",
			 "%s: watch", be->name);
		return;
	}
	if (td_child_spawn(&w, workload) ||
	    read(w.from, &base, sizeof(base)) != sizeof(base))
		tap_bail("workload: %s", strerror(errno));
	snprintf(pidstr, sizeof(pidstr), "%d", (int)w.pid);
	snprintf(svg, sizeof(svg), "/tmp/softdirty-watch-%d-%s.svg",
		 (int)getpid(), be->name);
	unlink(svg);
	run_start(&r, 0, args);

	/* interval 0: from attach to now, whatever it holds */
	l = step(&r) ? next_line(&r) : NULL;
	if (!tap_ok(l && json_object(l), "%s: watch attached, first line is "
		    "a JSON object", be->name)) {
		run_end(&r, msg, sizeof(msg));
		tap_diag("watch said: %s", msg);
		td_child_reap(&w, NULL);
		return;
	}
	field_u64(l, "dirty_pages", &total);
	for (size_t i = 0; i < ARRAY_SIZE(bursts); i++) {
		uint64_t mine;

		if (!burst(&w, bursts[i]) || !step(&r) || !(l = next_line(&r)))
			tap_bail("%s: step %zu: workload or watch gone", be->name, i);
		all_json &= json_object(l);
		if (!field_u64(l, "dirty_pages", &dp) ||
		    !field_u64(l, "t", &v) || !field_u64(l, "dirty_bytes", &v) ||
		    v != dp * PG)
			all_json = false;
		mine = mapping_u64(l, base, "dirty_pages");
		if (mine != bursts[i] || mapping_u64(l, base, "end") !=
		    (bursts[i] ? base + NPAGES * PG : 0)) {
			tap_diag("step %zu: wrote %u pages, mapping shows %" PRIu64
				 ": %s", i, bursts[i], mine, l);
			exact_ok = false;
		}
		if (dp < mine || dp - mine > RUNTIME_BOUND) {
			tap_diag("step %zu: %" PRIu64 " pages outside the mapping",
				 i, dp - mine);
			bound_ok = false;
		}
		if (dp - mine > max_extra)
			max_extra = dp - mine;
		total += dp;
		sum += bursts[i];
		for (uint32_t k = 0; k < bursts[i]; k++) {
			distinct += !seen[cursor];
			seen[cursor] = 1;
			cursor = (cursor + 1) % NPAGES;
		}
	}
	tap_ok(all_json, "%s: every interval line is well-formed JSON with t, "
	       "dirty_pages, dirty_bytes = pages * 4096", be->name);
	tap_ok(exact_ok, "%s: per interval, the workload mapping shows exactly "
	       "the pages it wrote (%" PRIu64 " in %zu steps)", be->name, sum,
	       ARRAY_SIZE(bursts));
	tap_ok(bound_ok, "%s: the rest of the process wrote at most %d pages "
	       "per interval (max %" PRIu64 ")", be->name, RUNTIME_BOUND,
	       max_extra);

	regions = count_regions(w.pid);
	close(r.step);		/* EOF: the summary */
	r.step = -1;
	l = next_line(&r);
	tap_ok(l && json_object(l) && strstr(l, "\"summary\": true") &&
	       field_u64(l, "total_pages", &v) && v == total,
	       "%s: summary line after EOF on the step fd, total_pages = sum "
	       "of the intervals (%" PRIu64 ")", be->name, total);
	v = l ? mapping_u64(l, base, "wss_pages") : 0;
	tap_ok(v == distinct, "%s: summary wss_pages of the workload mapping "
	       "%" PRIu64 " = distinct pages written %zu", be->name, v,
	       distinct);
	tap_ok(l && field_u64(l, "wss_pages", &v) && v >= distinct,
	       "%s: summary wss_pages of the process includes them", be->name);
	rc = run_end(&r, msg, sizeof(msg));
	tap_ok(rc == 0, "%s: watch exits 0 (%d) %s", be->name, rc, msg);

	/* the heatmap */
	{
		FILE *f = fopen(svg, "re");
		char *s = NULL, pat[96];
		size_t n = 0, got = 0;
		const char *p;

		if (f) {
			struct stat st;

			if (!fstat(fileno(f), &st)) {
				s = malloc(st.st_size + 1);
				n = s ? fread(s, 1, st.st_size, f) : 0;
				if (s)
					s[n] = 0;
			}
			fclose(f);
		}
		tap_ok(s && !strncmp(s, "<svg ", 5) && n > 7 &&
		       !strcmp(s + n - 7, "</svg>\n"),
		       "%s: heatmap written, an <svg> element closed at the end",
		       be->name);
		for (p = s; p && (p = strstr(p, "<g class=\"region\"")); p++)
			got++;
		if (regions > 200)
			regions = 200;
		tap_ok(got == regions, "%s: heatmap has one region per mapped "
		       "range of the target (%zu, expected %zu)", be->name,
		       got, regions);
		snprintf(pat, sizeof(pat), "data-start=\"0x%" PRIx64
			 "\" data-end=\"0x%" PRIx64 "\"", base,
			 base + NPAGES * PG);
		tap_ok(s && strstr(s, pat), "%s: the workload mapping is a "
		       "region of its own in the heatmap", be->name);
		free(s);
		unlink(svg);
	}

	tap_ok(!has_uffd(w.pid) && td_tracer_pid(w.pid) == 0 &&
	       td_child_responds(&w), "%s: after watch, the target has no "
	       "userfaultfd, no tracer, and answers", be->name);

	/* the target's exit ends watch, with the summary */
	{
		char *a2[] = { "--backend", (char *)be->name, "--json",
			       "--step-fd", "3", pidstr, NULL };
		bool summary = false;

		run_start(&r, 0, a2);
		l = step(&r) ? next_line(&r) : NULL;
		if (write(w.to, "q", 1) != 1)
			tap_bail("workload: %s", strerror(errno));
		while (l && (l = next_line(&r)))
			if (strstr(l, "\"summary\": true") &&
			    strstr(l, "\"end\": \"target exited\""))
				summary = true;
		rc = run_end(&r, msg, sizeof(msg));
		tap_ok(summary && rc == 0, "%s: the target's exit ends watch "
		       "with the summary (exit %d) %s", be->name, rc, msg);
	}
	td_child_reap(&w, NULL);

	/* SIGINT: the summary; the timer mode */
	{
		char *a3[] = { "--backend", (char *)be->name, "--json",
			       "--interval", "20", pidstr, NULL };
		bool summary = false;

		if (td_child_spawn(&w, workload) ||
		    read(w.from, &base, sizeof(base)) != sizeof(base))
			tap_bail("workload: %s", strerror(errno));
		snprintf(pidstr, sizeof(pidstr), "%d", (int)w.pid);
		run_start(&r, 0, a3);
		l = next_line(&r);	/* it runs: one interval went by */
		kill(r.pid, SIGINT);
		while (l && (l = next_line(&r)))
			if (strstr(l, "\"summary\": true") &&
			    strstr(l, "\"end\": \"interrupted\""))
				summary = true;
		rc = run_end(&r, msg, sizeof(msg));
		tap_ok(summary && rc == 0, "%s: SIGINT ends watch with the "
		       "summary (exit %d) %s", be->name, rc, msg);
		tap_ok(!has_uffd(w.pid) && td_tracer_pid(w.pid) == 0 &&
		       td_child_responds(&w), "%s: after SIGINT, the target "
		       "has no userfaultfd, no tracer, and answers", be->name);
		td_child_reap(&w, NULL);
	}

	if (!long_done) {
		long_done = true;
		long_run(be);
	}

	/* -- COMMAND: its exit status */
	{
		char *a4[] = { "--backend", (char *)be->name, "--json",
			       "--", "/bin/sh", "-c", "exit 7", NULL };
		bool summary = false;

		run_start(&r, 0, a4);
		close(r.step);
		r.step = -1;
		while ((l = next_line(&r)))
			if (strstr(l, "\"summary\": true") &&
			    strstr(l, "\"exit_status\": 7"))
				summary = true;
		rc = run_end(&r, msg, sizeof(msg));
		tap_ok(summary && rc == 7, "%s: -- COMMAND: watch exits with its "
		       "status (7: %d) after the summary %s", be->name, rc, msg);
	}
}

/* ---------- a long run: the heatmap stays bounded ---------- */

#define LONG_STEPS	450

/*
 * More intervals than columns (the first one empty): columns merge, the image keeps at most 200
 * columns (distinct x of its cells) and every written page is still in it.
 */
static void long_run(const struct td_backend *be)
{
	char pidstr[16], svg[PATH_MAX], msg[4096];
	char *args[] = { "--backend", (char *)be->name, "--json",
			 "--step-fd", "3", "--heatmap", svg, pidstr, NULL };
	char xs[2048] = { 0 };
	size_t cols = 0, bad = 0;
	uint64_t base, inregion = 0;
	struct td_child w;
	struct run r;
	const char *l = NULL;
	char *s = NULL;
	FILE *f;
	int rc;

	if (td_child_spawn(&w, workload) ||
	    read(w.from, &base, sizeof(base)) != sizeof(base))
		tap_bail("workload: %s", strerror(errno));
	snprintf(pidstr, sizeof(pidstr), "%d", (int)w.pid);
	snprintf(svg, sizeof(svg), "/tmp/softdirty-watch-long-%d.svg",
		 (int)getpid());
	run_start(&r, 0, args);
	/* attached: the first line is out (an interval without writes) */
	if (!step(&r) || !next_line(&r))
		tap_bail("%s: long run: watch gone", be->name);
	for (int i = 0; i < LONG_STEPS; i++)
		if (!burst(&w, 1) || !step(&r) || !(l = next_line(&r)))
			tap_bail("%s: long run: workload or watch gone", be->name);
	rc = run_end(&r, msg, sizeof(msg));
	f = fopen(svg, "re");
	if (f) {
		size_t n = 0, cap = 0;
		ssize_t k;
		char *line = NULL;
		bool in = false;
		char pat[96];

		snprintf(pat, sizeof(pat), "data-start=\"0x%" PRIx64 "\"", base);
		while ((k = getline(&line, &cap, f)) > 0) {
			unsigned x;
			const char *t;

			if (strstr(line, "<g class=\"region\""))
				in = strstr(line, pat) != NULL;
			if (sscanf(line, "<rect x=\"%u\"", &x) == 1) {
				if (x < sizeof(xs) && !xs[x]) {
					xs[x] = 1;
					cols++;
				} else if (x >= sizeof(xs)) {
					bad++;
				}
				t = strstr(line, "<title>");
				if (in && t)
					inregion += strtoull(t + 7, NULL, 10);
			}
			n += (size_t)k;
		}
		free(line);
		fclose(f);
		s = (char *)1;
		(void)n;
	}
	tap_ok(rc == 0 && s && cols > 0 && cols <= 200 && !bad,
	       "%s: %d intervals: the heatmap has %zu columns (at most 200)",
	       be->name, LONG_STEPS, cols);
	tap_ok(inregion == LONG_STEPS, "%s: its cells of the workload region "
	       "add up to the pages written (%" PRIu64 " of %d)", be->name,
	       inregion, LONG_STEPS);
	unlink(svg);
	td_child_reap(&w, NULL);
}

/* ---------- errors ---------- */

static void expect_error(uid_t uid, char *const *args, int want_rc,
			 const char *want_msg, const char *desc)
{
	char msg[4096];
	struct run r;
	int rc;

	run_start(&r, uid, args);
	rc = run_end(&r, msg, sizeof(msg));
	tap_ok(rc == want_rc && strstr(msg, want_msg), "error: %s: exit %d "
	       "(want %d), says \"%s\": %s", desc, rc, want_rc, want_msg, msg);
}

static void errors(void)
{
	char pidstr[16];
	struct td_child w;
	pid_t gone = fork();

	if (gone < 0)
		tap_bail("fork: %s", strerror(errno));
	if (!gone)
		_exit(0);
	waitpid(gone, NULL, 0);
	snprintf(pidstr, sizeof(pidstr), "%d", (int)gone);
	expect_error(0, (char *[]){ pidstr, NULL }, 1, "no such process",
		     "a pid that exited");
	expect_error(0, (char *[]){ "--", "/nonexistent/command", NULL }, 127,
		     "cannot run", "-- a command that does not exist");
	expect_error(0, (char *[]){ "--backend", "nope", "1", NULL }, 1,
		     "unknown backend", "--backend nope");
	expect_error(0, (char *[]){ "--interval", "0", "1", NULL }, 2,
		     "bad interval", "--interval 0");
	expect_error(0, (char *[]){ "--interval", "x", "1", NULL }, 2,
		     "bad interval", "--interval x");
	expect_error(0, (char *[]){ "12x", NULL }, 2, "bad pid", "pid 12x");
	if (geteuid() != 0) {
		tap_skip("not root: cannot test another uid", "error: EPERM");
		return;
	}
	if (td_child_spawn(&w, workload) ||
	    read(w.from, &(uint64_t){ 0 }, sizeof(uint64_t)) != sizeof(uint64_t))
		tap_bail("workload: %s", strerror(errno));
	snprintf(pidstr, sizeof(pidstr), "%d", (int)w.pid);
	expect_error(65534, (char *[]){ pidstr, NULL }, 1, "permission denied",
		     "uid 65534 on a root process");
	td_child_reap(&w, NULL);
}

int main(int argc, char **argv)
{
	const char *env = getenv("SOFTDIRTY_TOOL");
	char self[PATH_MAX];

	tap_init(argv[0]);
	signal(SIGPIPE, SIG_IGN);
	td_self_exe(self, sizeof(self));
	if (env && *env)
		snprintf(tool, sizeof(tool), "%s", env);
	else
		snprintf(tool, sizeof(tool), "%.*s/../softdirty",
			 (int)(strrchr(self, '/') - self), self);
	if (access(tool, X_OK)) {
		printf("1..0 # SKIP %s not built (the softdirty tool)\n", tool);
		return 77;
	}
	td_for_each_backend("watch", exact, NULL);
	errors();
	(void)argc;
	return tap_done();
}
