// SPDX-License-Identifier: MIT
/*
 * softdirty dump series: one tracker kept open across the links of a
 * chain (dump_link(), what --every/--count runs), with every backend that
 * can track another process.
 *
 * The workload (this program re-executed with --workload) holds W (128
 * pages) and G (16 pages) and, on command, writes one byte to chosen
 * pages (a new value each time), drops pages (MADV_DONTNEED), or shrinks
 * G and grows it back in place with mremap and reads the regrown half
 * (fresh zero pages at addresses the parent holds with other contents).
 * It blocks in read(2) between commands, so the dumps see known moments.
 *
 * Checked, exactly, over 6 links (full + 5 increments):
 *   - a backend that sees every write records IMG_MODE_TRACKED, the others
 *     fall back to IMG_MODE_CONTENTS;
 *   - each increment stores exactly W's and G's pages that changed or
 *     appeared; tracked, it copies at most those plus the pages the
 *     runtime touches (stack, libc data: bounded) and the pages of
 *     shared or file mappings;
 *   - image verify of every link, flatten of the chain == a full dump at
 *     the same moment (image diff exit 0);
 *   - restore of a link gives the workload's checksum at that link;
 *   - the command (--every 0 --count 3) writes a valid chain of 3.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "commands.h"
#include "common.h"
#include "image-common.h"
#include "image-fmt.h"

#define NLINKS	6
#define NW	128
#define NG	16
/* pages outside W and G the runtime may write between two links */
#define RUNTIME_PAGES 64

/* ---------- the workload (after exec) ---------- */

static uint8_t *w, *g;
static size_t glen = NG;

static void wreply(int out, const void *p, size_t n)
{
	if (write(out, p, n) != (ssize_t)n)
		_exit(3);
}

static void workload(int in, int out)
{
	uint8_t *base = mmap(NULL, (NW + NG + 3) * PG, PROT_NONE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	unsigned char c[3];

	if (base == MAP_FAILED)
		_exit(2);
	w = base + PG;
	g = base + (NW + 2) * PG;
	if (mprotect(w, NW * PG, PROT_READ | PROT_WRITE) ||
	    mprotect(g, NG * PG, PROT_READ | PROT_WRITE))
		_exit(2);
	memset(w, 0x11, NW * PG);
	memset(g, 0x22, NG * PG);
	wreply(out, &base, sizeof(base));
	while (read(in, c, 1) == 1) {
		switch (c[0]) {
		case 'w':	/* page, value */
			if (read(in, c + 1, 2) != 2)
				_exit(2);
			w[c[1] * PG + c[1] % 61] = c[2];
			break;
		case 'd':
			if (read(in, c + 1, 1) != 1 ||
			    madvise(w + c[1] * PG, PG, MADV_DONTNEED))
				_exit(2);
			break;
		case 'r': {
			volatile uint8_t *v = g;
			size_t i;

			if (mremap(g, NG * PG, NG / 2 * PG, 0) != g ||
			    mremap(g, NG / 2 * PG, NG * PG, 0) != g)
				_exit(2);
			for (i = NG / 2; i < NG; i++)
				(void)v[i * PG];
			break;
		}
		case 'c': {
			uint64_t h = XXH3_64bits(w, NW * PG) ^
				     XXH3_64bits(g, glen * PG);

			wreply(out, &h, sizeof(h));
			continue;
		}
		default:
			_exit(2);
		}
		wreply(out, "k", 1);
	}
	_exit(0);
}

/* ---------- the test side ---------- */

static char self_exe[4096];
static char tmpdir[64];
static uint64_t wa, ga;

static void spawn_fn(int in, int out)
{
	char a[16], b[16];

	snprintf(a, sizeof(a), "%d", in);
	snprintf(b, sizeof(b), "%d", out);
	/* no rseq: the kernel rewrites its cpu_id after every stop */
	setenv("GLIBC_TUNABLES", "glibc.pthread.rseq=0", 1);
	execl(self_exe, self_exe, "--workload", a, b, (char *)NULL);
	_exit(4);
}

/* The workload's pages as the test sees them: present, and checksum. */
struct snap {
	bool present[NW + NG];
	uint8_t hash[NW + NG][16];
};

static uint64_t page_addr(size_t k)
{
	return k < NW ? wa + k * PG : ga + (k - NW) * PG;
}

static bool take_snap(pid_t pid, struct snap *s)
{
	char path[64];
	uint8_t page[PG];
	bool ok = true;
	size_t k;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	memset(s, 0, sizeof(*s));
	for (k = 0; k < NW + NG && ok; k++) {
		uint64_t a = page_addr(k), e = 0;
		struct iovec l = { page, PG }, r = { (void *)(uintptr_t)a, PG };

		ok = pread(fd, &e, 8, (off_t)(a / PG * 8)) == 8;
		if (!ok || !(e & (3ULL << 62)))
			continue;
		s->present[k] = true;
		ok = process_vm_readv(pid, &l, 1, &r, 1, 0) == (ssize_t)PG;
		img_page_hash(page, s->hash[k]);
	}
	close(fd);
	return ok;
}

/* Stored pages (DATA/ZERO) of W and G == those changed or new; count. */
static size_t check_link(const char *be, int k, const char *dir,
			 const struct snap *prev, const struct snap *cur)
{
	size_t want = 0, bad = 0, p;
	struct img *im;
	char err[512];

	if (img_open(dir, false, false, &im, err, sizeof(err))) {
		tap_ok(false, "%s: link %d opens: %s", be, k, err);
		return 0;
	}
	for (p = 0; p < NW + NG; p++) {
		uint64_t a = page_addr(p);
		const struct img_region *r = img_find(im, a);
		const struct img_run *x = r && r->npages ?
			img_run_of(r, (a - r->start) / PG) : NULL;
		bool in = x && (x->state == IMG_DATA || x->state == IMG_ZERO);
		bool changed = cur->present[p] && (!prev->present[p] ||
				memcmp(cur->hash[p], prev->hash[p], 16));

		want += changed;
		if ((in != changed || !!x != cur->present[p]) && bad++ < 5)
			tap_diag("%s: link %d page %#" PRIx64 ": stored %d, changed %d, present %d/%d",
				 be, k, a, in, changed, !!x, cur->present[p]);
	}
	tap_ok(!bad && want > 0,
	       "%s: increment %d stores exactly the %zu workload pages that changed or appeared (%zu wrong)",
	       be, k, want, bad);
	img_free(im);
	return want;
}

/* What the workload does before link k (k >= 1). */
static bool step(struct td_child *c, int k)
{
	bool ok = true;
	int i;

	for (i = 0; i < 4 + k && ok; i++) {
		char m[3] = { 'w', (char)((k * 37 + i * 13) % NW),
			      (char)(k * 16 + i + 1) };

		ok = wl_cmd(c, m, 3);
	}
	if (k == 2)
		ok = ok && wl_cmd(c, "d\003", 2) && wl_cmd(c, "d\004", 2);
	if (k == 3)
		ok = ok && wl_cmd(c, "w\003\377", 3);	/* back, present */
	if (k == 4)
		ok = ok && wl_cmd(c, "r", 1);
	return ok;
}

static void series(const struct td_backend *be, void *ctx)
{
	struct softdirty_opts so = { .sz = sizeof(so), .backend = be->name };
	char link[NLINKS][128], full[128], flat[128], pid[16];
	struct snap *s[NLINKS];
	uint64_t ck[NLINKS];
	struct dump_stats st;
	struct softdirty *sd;
	struct td_child c;
	const char *why = "";
	bool tracked;
	int k, rc;

	(void)ctx;
	if (!(be->caps & SOFTDIRTY_CAP_REMOTE)) {
		tap_skip("the backend cannot track another process",
			 "%s: dump series", be->name);
		return;
	}
	if (td_child_spawn(&c, spawn_fn) || !td_child_recv(&c, &wa, sizeof(wa), 20000) ||
	    !td_blocked_in_read(c.pid))
		tap_bail("cannot start the workload");
	wa += PG;
	ga = wa + (NW + 1) * PG;
	snprintf(pid, sizeof(pid), "%d", (int)c.pid);
	for (k = 0; k < NLINKS; k++) {
		s[k] = calloc(1, sizeof(*s[k]));
		if (!s[k])
			tap_bail("out of memory");
		snprintf(link[k], sizeof(link[k]), "%s/%s-%d", tmpdir, be->name, k);
	}
	snprintf(full, sizeof(full), "%s/%s-full", tmpdir, be->name);
	snprintf(flat, sizeof(flat), "%s/%s-flat", tmpdir, be->name);
	if (softdirty_open(&sd, c.pid, &so))
		tap_bail("%s: cannot open a tracker on the workload", be->name);
	tracked = dump_can_track(sd, &why);
	tap_diag("%s: %s%s", be->name, tracked ? "tracked increments" :
		 "contents fallback: ", tracked ? "" : why);

	/*
	 * The test looks before each dump: after it, a collect may leave
	 * uffd-wp markers on absent pages, which pagemap shows as swapped.
	 */
	take_snap(c.pid, s[0]);
	rc = dump_link(sd, tracked, link[0], NULL, true, &st);
	tap_ok(rc == 0 && st.mode == IMG_MODE_FULL && st.copied == st.present,
	       "%s: link 0 full (exit %d, %" PRIu64 " of %" PRIu64 " present pages copied)",
	       be->name, rc, st.copied, st.present);
	ck[0] = wl_sum(&c);
	for (k = 1; k < NLINKS; k++) {
		bool ok = step(&c, k) && take_snap(c.pid, s[k]);
		size_t want;

		rc = dump_link(sd, tracked, link[k], link[k - 1], true, &st);
		tap_ok(ok && rc == 0 && st.mode == (tracked ? IMG_MODE_TRACKED :
						     IMG_MODE_CONTENTS),
		       "%s: workload step %d, increment (exit %d, mode %u)",
		       be->name, k, rc, st.mode);
		if (k == NLINKS - 1) {
			rc = dump_link(sd, false, full, NULL, true, NULL);
			tap_ok(rc == 0, "%s: full dump at the same moment (exit %d)",
			       be->name, rc);
		}
		want = check_link(be->name, k, link[k], s[k - 1], s[k]);
		if (tracked)
			tap_ok(ok && st.copied >= want &&
			       st.copied - st.always <= want + RUNTIME_PAGES,
			       "%s: link %d copied %" PRIu64 " pages: the %zu changed, %" PRIu64
			       " of shared or file mappings, at most %d the runtime wrote (tracker reported %" PRIu64 " of %" PRIu64 " present)",
			       be->name, k, st.copied, want, st.always,
			       RUNTIME_PAGES, st.reported, st.present);
		else
			tap_ok(ok && st.copied == st.present,
			       "%s: link %d (contents) copied all %" PRIu64 " present pages",
			       be->name, k, st.present);
		ck[k] = wl_sum(&c);
	}
	softdirty_close(sd);
	for (k = 0; k < NLINKS; k++) {
		rc = run(cmd_image, "image", "verify", link[k], NULL);
		if (!tap_ok(rc == 0, "%s: image verify link %d (exit %d)",
			    be->name, k, rc))
			show_output();
	}
	rc = run(cmd_image, "image", "flatten", link[NLINKS - 1], "-o", flat, NULL);
	tap_ok(rc == 0, "%s: flatten the chain (exit %d)", be->name, rc);
	rc = run(cmd_image, "image", "diff", flat, full, NULL);
	if (!tap_ok(rc == 0, "%s: flatten of the chain == full dump at the same moment (diff exit %d)",
		    be->name, rc))
		show_output();
	rc = run(cmd_image, "image", "inspect", link[NLINKS - 1], NULL);
	tap_ok(rc == 0, "%s: image inspect (exit %d)", be->name, rc);
	for (k = 1; k <= NLINKS - 1; k += NLINKS - 2) {
		rc = run(cmd_restore, "restore", link[k], "--pid", pid,
			 "--backend", be->name, NULL);
		if (!tap_ok(rc == 0 && wl_sum(&c) == ck[k],
			    "%s: restore link %d: the workload's checksum at that link (exit %d)",
			    be->name, k, rc))
			show_output();
	}
	{
		char d[128], l2[160];

		snprintf(d, sizeof(d), "%s/%s-cmd", tmpdir, be->name);
		snprintf(l2, sizeof(l2), "%s/2", d);
		rc = run(cmd_dump, "dump", pid, "-D", d, "--every", "0",
			 "--count", "3", "--backend", be->name, "--quiet", NULL);
		if (!tap_ok(rc == 0, "%s: dump --every 0 --count 3 (exit %d)",
			    be->name, rc))
			show_output();
		rc = run(cmd_image, "image", "verify", l2, NULL);
		if (!tap_ok(rc == 0, "%s: its chain of 3 verifies (exit %d)",
			    be->name, rc))
			show_output();
	}
	td_child_reap(&c, NULL);
	for (k = 0; k < NLINKS; k++)
		free(s[k]);
}

int main(int argc, char **argv)
{
	char cmdline[200];

	if (argc == 4 && !strcmp(argv[1], "--workload")) {
		workload(atoi(argv[2]), atoi(argv[3]));
		return 0;
	}
	tap_init(argv[0]);
	td_self_exe(self_exe, sizeof(self_exe));
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/sd-series-XXXXXX");
	if (!mkdtemp(tmpdir))
		tap_bail("mkdtemp");
	run_out_dir(tmpdir);
	td_for_each_backend("dump series", series, NULL);
	if (tap_failures()) {
		tap_diag("images kept in %s", tmpdir);
	} else {
		snprintf(cmdline, sizeof(cmdline), "rm -rf '%s'", tmpdir);
		if (system(cmdline))
			tap_diag("could not remove %s", tmpdir);
	}
	return tap_done();
}
