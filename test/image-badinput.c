// SPDX-License-Identifier: MIT
/*
 * Bad images: truncated, corrupted, hostile (sizes, overlaps, absurd
 * counts, runs outside their region), mismatched (parent of another
 * process, a parent that is not the one taken against, a missing parent)
 * and parent loops.  Each gives a clear error and a non-zero exit from
 * "image verify", and "restore" from it writes nothing into the process.
 * Hostile metadata is crafted with valid checksums so that the checks
 * behind them are what refuses it.  Then the fuzz corpus
 * (test/fuzz/corpus, embedded at build time): every file, as it is and
 * with its checksums repaired, parses into a consistent image or is
 * refused, and never crashes (ASan/UBSan in the asan build).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "commands.h"
#include "common.h"
#include "fuzz-corpus.h"
#include "image-common.h"
#include "image-fmt.h"

static char tmpdir[64];

/*
 * A small image: region 0x10000 (4 pages: 2 stored, 1 absent, 1 zero or
 * parent), region 0x20000 (2 pages: 1 stored).  Metadata layout (fixed
 * by the strings chosen): identity at 0, strings at 96, region 0 at 104
 * (its run count at 144, runs at 152), docs/image-format.md.
 */
static int make_image(const char *dir, uint64_t pid, const uint8_t id[16],
		      const uint8_t *parent_id, const char *parent)
{
	static uint8_t page[IMG_PAGE];
	struct img_run r0[2] = {
		{ .first = 0, .count = 2, .state = IMG_DATA },
		{ .first = 3, .count = 1, .state = parent ? IMG_PARENT : IMG_ZERO },
	};
	struct img_run r1[1] = { { .first = 0, .count = 1, .state = IMG_DATA } };
	uint8_t h0[3 * 16], h1[16];
	struct img_region reg[2] = {
		{ .start = 0x10000, .end = 0x14000, .prot = 3, .name = "",
		  .npages = 4, .nruns = 2, .runs = r0, .hash = h0 },
		{ .start = 0x20000, .end = 0x22000, .prot = 1, .name = "/x",
		  .npages = 2, .nruns = 1, .runs = r1, .hash = h1 },
	};
	struct img_writer w;
	char err[512];
	int i;

	if (img_writer_open(&w, dir, err, sizeof(err)))
		goto fail;
	for (i = 0; i < 3; i++) {
		memset(page, 0, sizeof(page));
		page[100] = (uint8_t)(i + 1);
		if (i < 2)
			img_page_hash(page, h0 + 16 * i);
		else
			img_page_hash(page, h1);
		if (img_writer_page(&w, page))
			goto fail;
	}
	/* the last page of region 0: zero, or what the parent holds there */
	img_page_hash(img_zero_page, h0 + 32);
	w.meta.pid = pid;
	w.meta.start_time = 777;
	w.meta.exe = "/x";
	w.meta.tracker = "t";
	w.meta.parent_path = (char *)(parent ? parent : "");
	w.meta.mode = parent ? IMG_MODE_CONTENTS : IMG_MODE_FULL;
	memcpy(w.meta.id, id, 16);
	if (parent_id)
		memcpy(w.meta.parent_id, parent_id, 16);
	w.meta.nreg = 2;
	w.meta.reg = reg;
	w.meta.ndata = w.ndata;
	if (img_writer_commit(&w, err, sizeof(err)))
		goto fail;
	return 0;
fail:
	tap_diag("make_image %s: %s", dir, err);
	img_writer_abort(&w);
	return -1;
}

static char *path_of(const char *name)
{
	static char p[4][256];
	static int k;

	k = (k + 1) % 4;
	snprintf(p[k], sizeof(p[k]), "%s/%s", tmpdir, name);
	return p[k];
}

static uint8_t *load(const char *dir, size_t *len)
{
	char path[512];
	struct stat st;
	uint8_t *b;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, IMG_FILE);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st))
		tap_bail("open %s", path);
	b = malloc((size_t)st.st_size + 1);
	if (!b || read(fd, b, (size_t)st.st_size) != st.st_size)
		tap_bail("read %s", path);
	close(fd);
	*len = (size_t)st.st_size;
	return b;
}

static void store(const char *dir, const uint8_t *b, size_t len)
{
	char path[512];
	int fd;

	mkdir(dir, 0700);
	snprintf(path, sizeof(path), "%s/%s", dir, IMG_FILE);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, b, len) != (ssize_t)len)
		tap_bail("write %s", path);
	close(fd);
}

/* Recompute the header and metadata checksums where the sizes allow. */
static void fix_sums(uint8_t *b, size_t len)
{
	uint64_t off, ml;

	if (len < 64)
		return;
	off = get64(b + 16);
	ml = get64(b + 24);
	if (off <= len && ml <= len - off)
		put64(b + 40, XXH3_64bits(b + off, ml));
	put64(b + 48, XXH3_64bits(b, 48));
}

/* "image verify DIR" fails with a message holding @want. */
static void expect_refused(const char *dir, const char *want, const char *desc)
{
	int rc = run(cmd_image, "image", "verify", dir, NULL);
	const char *o = output();

	tap_ok(rc == 1 && strstr(o, want),
	       "%s: verify refuses it (exit %d): %s", desc, rc, o);
}

/* A copy of the good image with @fn applied (and checksums repaired). */
static void mutate(const char *name, void (*fn)(uint8_t *b, size_t *len),
		   bool fix, const char *want, const char *desc)
{
	size_t len;
	uint8_t *b = load(path_of("good"), &len);

	fn(b, &len);
	if (fix)
		fix_sums(b, len);
	store(path_of(name), b, len);
	expect_refused(path_of(name), want, desc);
	free(b);
}

static uint8_t *meta(uint8_t *b)
{
	return b + get64(b + 16);
}

static void m_magic(uint8_t *b, size_t *l) { (void)l; b[0] = 'X'; }
static void m_version(uint8_t *b, size_t *l) { (void)l; put32(b + 8, 2); }
static void m_data(uint8_t *b, size_t *l) { (void)l; b[IMG_HDR_SIZE + 100] ^= 1; }
static void m_meta(uint8_t *b, size_t *l) { (void)l; meta(b)[120] ^= 1; }
static void m_sizes(uint8_t *b, size_t *l) { (void)l; put64(b + 32, 1000); }
static void m_overlap(uint8_t *b, size_t *l)
{
	/* region 1 starts inside region 0 */
	uint8_t *r1 = meta(b) + 104 + 40 + 8 + 2 * 16 + 3 * 16;

	(void)l;
	put64(r1, 0x12000);
}
static void m_order(uint8_t *b, size_t *l)
{
	uint8_t *r1 = meta(b) + 104 + 40 + 8 + 2 * 16 + 3 * 16;

	(void)l;
	put64(r1, 0x1000);
	put64(r1 + 8, 0x3000);
}
static void m_unaligned(uint8_t *b, size_t *l) { (void)l; put64(meta(b) + 104 + 8, 0x14001); }
static void m_huge_range(uint8_t *b, size_t *l)
{
	(void)l;
	put64(meta(b) + 104 + 8, 0xfffffffffffff000ULL);
}
static void m_nruns(uint8_t *b, size_t *l) { (void)l; put64(meta(b) + 144, 1ULL << 40); }
static void m_nreg(uint8_t *b, size_t *l) { (void)l; put32(meta(b) + 72, 0xffffffffu); }
static void m_namelen(uint8_t *b, size_t *l) { (void)l; put32(meta(b) + 104 + 32, 0x7fffffff); }
static void m_run_out(uint8_t *b, size_t *l)
{
	/* the second run of region 0: pages 3..5 of a 4-page region */
	(void)l;
	put32(meta(b) + 152 + 16 + 8, 3);
}
static void m_run_overlap(uint8_t *b, size_t *l)
{
	(void)l;
	put64(meta(b) + 152 + 16, 1);	/* starts inside the first run */
}
static void m_run_zero(uint8_t *b, size_t *l) { (void)l; put32(meta(b) + 152 + 8, 0); }
static void m_state(uint8_t *b, size_t *l) { (void)l; put32(meta(b) + 152 + 12, 9); }
static void m_parent_state(uint8_t *b, size_t *l)
{
	(void)l;
	put32(meta(b) + 152 + 16 + 12, IMG_PARENT);
}
static void m_zero_hash(uint8_t *b, size_t *l)
{
	/* the zero page's checksum (third of region 0) */
	(void)l;
	meta(b)[152 + 32 + 2 * 16] ^= 1;
}
static void m_count(uint8_t *b, size_t *l)
{
	/* the zero run said to be stored: one data page more than stored */
	(void)l;
	put32(meta(b) + 152 + 16 + 12, IMG_DATA);
}
static void m_trail(uint8_t *b, size_t *l)
{
	/* bytes after the end marker */
	b[*l] = 0;
	(*l)++;
}

static void crafted(void)
{
	static const uint8_t id1[16] = { 1 }, id2[16] = { 2 }, id3[16] = { 3 };
	size_t len, cut;
	uint8_t *b;
	int rc;

	if (make_image(path_of("good"), 4242, id1, NULL, NULL))
		tap_bail("cannot write an image");
	rc = run(cmd_image, "image", "verify", path_of("good"), NULL);
	tap_ok(rc == 0, "the crafted image verifies (exit %d): %s", rc, output());

	/* truncated anywhere: refused by the sizes or the end marker */
	b = load(path_of("good"), &len);
	for (cut = 0; cut < len; cut += len / 7 + 1) {
		char name[32];

		snprintf(name, sizeof(name), "cut%zu", cut);
		store(path_of(name), b, cut);
		expect_refused(path_of(name), !cut ? "non-empty" :
			       cut < IMG_HDR_SIZE + 16 ? "too short" : "truncated",
			       "truncated image");
	}
	store(path_of("cut-1"), b, len - 1);
	expect_refused(path_of("cut-1"), "truncated", "image one byte short");
	free(b);

	mutate("magic", m_magic, false, "bad magic", "bad magic");
	mutate("version", m_version, true, "format version 2", "unknown version");
	mutate("data", m_data, false, "checksum mismatch (corrupt data)",
	       "a flipped bit in a stored page");
	mutate("meta", m_meta, false, "metadata checksum mismatch",
	       "a flipped bit in the metadata");
	mutate("sizes", m_sizes, true, "sizes do not add up", "wrong data page count");
	mutate("overlap", m_overlap, true, "overlaps or out of order",
	       "overlapping regions");
	mutate("order", m_order, true, "overlaps or out of order",
	       "regions out of order");
	mutate("unaligned", m_unaligned, true, "bad range", "unaligned region");
	mutate("hugerange", m_huge_range, true, "bad range",
	       "region beyond the address space");
	mutate("nruns", m_nruns, true, "runs but the file is too short",
	       "absurd run count (2^40)");
	mutate("nreg", m_nreg, true, "absurd counts", "absurd region count");
	mutate("namelen", m_namelen, true, "name too long", "absurd name length");
	mutate("runout", m_run_out, true, "outside the region",
	       "run past the end of its region");
	mutate("runoverlap", m_run_overlap, true, "overlap", "overlapping runs");
	mutate("runzero", m_run_zero, true, "outside the region", "empty run");
	mutate("state", m_state, true, "bad state", "unknown page state");
	mutate("pstate", m_parent_state, true, "without parent",
	       "parent pages in a full image");
	mutate("zerohash", m_zero_hash, true, "zero page with a wrong checksum",
	       "zero page with a wrong checksum");
	mutate("count", m_count, true, "data pages in the tables",
	       "data page count disagrees");
	mutate("trail", m_trail, true, "sizes do not add up", "trailing bytes");

	/* chains */
	if (make_image(path_of("p-ok"), 4242, id2, id1, path_of("good")))
		tap_bail("cannot write an image");
	rc = run(cmd_image, "image", "verify", path_of("p-ok"), NULL);
	tap_ok(rc == 0, "a good increment verifies (exit %d): %s", rc, output());
	if (make_image(path_of("other"), 999, id3, NULL, NULL) ||
	    make_image(path_of("p-other"), 4242, id2, id3, path_of("other")))
		tap_bail("cannot write an image");
	expect_refused(path_of("p-other"), "of another process",
		       "parent of another process");
	if (make_image(path_of("p-id"), 4242, id2, id3, path_of("good")))
		tap_bail("cannot write an image");
	expect_refused(path_of("p-id"), "not the image it was taken against",
		       "parent that is not the one taken against");
	if (make_image(path_of("p-missing"), 4242, id2, id1, path_of("nowhere")))
		tap_bail("cannot write an image");
	expect_refused(path_of("p-missing"), "No such file", "missing parent");
	/* A's parent is B, B's parent is A */
	if (make_image(path_of("loop-a"), 4242, id1, id2, path_of("loop-b")) ||
	    make_image(path_of("loop-b"), 4242, id2, id1, path_of("loop-a")))
		tap_bail("cannot write an image");
	expect_refused(path_of("loop-a"), "loops back", "parent loop");
	rc = run(cmd_image, "image", "flatten", path_of("loop-a"), "-o",
		 path_of("flat-loop"), NULL);
	tap_ok(rc == 1 && access(path_of("flat-loop"), F_OK) != 0,
	       "flatten of a looping chain: refused, nothing written (exit %d)", rc);
	rc = run(cmd_image, "image", "diff", path_of("good"), path_of("magic"), NULL);
	tap_ok(rc == 2, "diff with a bad image: exit 2 (%d)", rc);
	rc = run(cmd_image, "image", "diff", path_of("good"), path_of("good"), NULL);
	tap_ok(rc == 0, "diff of an image with itself: exit 0 (%d)", rc);
	rc = run(cmd_image, "image", "flatten", path_of("p-ok"), "-o",
		 path_of("good"), NULL);
	tap_ok(rc == 1 && strstr(output(), "exists"),
	       "flatten onto an existing image: refused (exit %d)", rc);
}

/* ---------- restore from bad images into a live process ---------- */

/* echoes every byte (td_child_responds), blocked in read(2) otherwise */
static void echo(int in, int out)
{
	char c;

	while (read(in, &c, 1) == 1)
		if (write(out, &c, 1) != 1)
			break;
	_exit(0);
}

/* A checksum of the readable mappings of pid up to 256 MiB each. */
static uint64_t mem_sum(pid_t pid)
{
	char path[64], line[512];
	uint64_t h = 0;
	uint8_t page[PG];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long s, e;
		char perm[8];

		/* not ASan's terabytes of shadow: reading them would take hours */
		if (sscanf(line, "%llx-%llx %7s", &s, &e, perm) != 3 ||
		    perm[0] != 'r' || strstr(line, "[v") || e - s > (256ULL << 20))
			continue;
		for (; s < e; s += PG) {
			struct iovec l = { page, PG }, r = { (void *)(uintptr_t)s, PG };

			if (process_vm_readv(pid, &l, 1, &r, 1, 0) == (ssize_t)PG)
				h = XXH3_64bits_withSeed(page, PG, h);
		}
	}
	fclose(f);
	return h;
}

static void restore_bad(void)
{
	struct td_child c;
	char pid[16], good[256], bad[256];
	size_t len;
	uint8_t *b;
	uint64_t before;
	int rc;

	if (td_child_spawn(&c, echo) || !td_child_responds(&c))
		tap_bail("cannot start the child");
	snprintf(pid, sizeof(pid), "%d", (int)c.pid);
	snprintf(good, sizeof(good), "%s", path_of("live"));
	rc = run(cmd_dump, "dump", pid, "-D", good, "--quiet", NULL);
	if (!tap_ok(rc == 0, "dump of a live process (exit %d): %s", rc, output())) {
		td_child_reap(&c, NULL);
		return;
	}
	rc = run(cmd_dump, "dump", pid, "-D", good, "--quiet", NULL);
	tap_ok(rc == 1 && strstr(output(), "exists"),
	       "dump onto an existing image: refused (exit %d)", rc);
	rc = run(cmd_dump, "dump", pid, "-D", path_of("live-x"), "--parent",
		 path_of("good"), "--quiet", NULL);
	tap_ok(rc == 1 && strstr(output(), "another process") &&
	       access(path_of("live-x"), F_OK) != 0,
	       "dump with a parent of another process: refused, nothing left behind (exit %d)",
	       rc);

	/* a corrupted page: nothing may reach the process */
	b = load(good, &len);
	b[IMG_HDR_SIZE + 5] ^= 0x40;
	snprintf(bad, sizeof(bad), "%s", path_of("live-bad"));
	store(bad, b, len);
	free(b);
	before = mem_sum(c.pid);
	rc = run(cmd_restore, "restore", bad, "--pid", pid, NULL);
	tap_ok(rc == 1 && strstr(output(), "checksum mismatch") &&
	       mem_sum(c.pid) == before && td_tracer_pid(c.pid) == 0,
	       "restore from a corrupt image: refused before touching the process (exit %d): %s",
	       rc, output());
	rc = run(cmd_restore, "restore", path_of("p-other"), "--pid", pid, NULL);
	tap_ok(rc == 1 && mem_sum(c.pid) == before,
	       "restore from an image whose chain does not verify: refused (exit %d)",
	       rc);
	rc = run(cmd_restore, "restore", path_of("good"), "--pid", pid, NULL);
	tap_ok(rc == 1 && strstr(output(), "not of this process") &&
	       mem_sum(c.pid) == before,
	       "restore of another process's image: refused (exit %d)", rc);
	tap_ok(td_child_responds(&c), "the process runs on after the refusals");

	/* --leave-stopped: stopped (job control) until SIGCONT */
	rc = run(cmd_dump, "dump", pid, "-D", path_of("live-stopped"),
		 "--parent", good, "--leave-stopped", "--quiet", NULL);
	{
		char path[64], st[512], *p = NULL;
		int fd, i;
		ssize_t n = 0;

		snprintf(path, sizeof(path), "/proc/%d/stat", (int)c.pid);
		/* the SIGSTOP is delivered once the threads are let go */
		for (i = 0; i < 300; i++) {
			fd = open(path, O_RDONLY | O_CLOEXEC);
			n = fd < 0 ? -1 : read(fd, st, sizeof(st) - 1);
			if (fd >= 0)
				close(fd);
			st[n > 0 ? n : 0] = 0;
			p = strrchr(st, ')');
			if (p && p[2] == 'T')
				break;
			usleep(10000);
		}
		tap_ok(rc == 0 && p && p[2] == 'T',
		       "dump --leave-stopped: the process is left stopped (exit %d, state %c)",
		       rc, p ? p[2] : '?');
		kill(c.pid, SIGCONT);
		tap_ok(td_child_responds(&c), "after SIGCONT it runs on");
	}
	td_child_reap(&c, NULL);
}

/* ---------- the fuzz corpus ---------- */

static void corpus_run(void)
{
	size_t i, valid = 0, refused = 0, fixed_valid = 0;
	volatile size_t n = CORPUS_N;

	for (i = 0; i < n; i++) {
		int pass;

		for (pass = 0; pass < 2; pass++) {
			uint8_t *b = malloc(corpus_len[i] + 1);
			struct img *im;
			char err[512];
			uint32_t r;

			if (!b)
				tap_bail("out of memory");
			memcpy(b, corpus[i], corpus_len[i]);
			if (pass)
				fix_sums(b, corpus_len[i]);
			if (img_parse(b, corpus_len[i], &im, err, sizeof(err))) {
				refused += !pass;
				free(b);
				continue;
			}
			if (pass)
				fixed_valid++;
			else
				valid++;
			(void)img_check_data(im, err, sizeof(err));
			for (r = 0; r < im->nreg; r++) {
				const struct img_region *g = &im->reg[r];
				uint64_t k;

				for (k = 0; k < g->nruns; k++) {
					const uint8_t *d, *h;

					(void)img_page(im, g->start +
						       g->runs[k].first * PG, &d, &h);
				}
			}
			img_free(im);
			free(b);
		}
	}
	tap_ok(n > 0,
	       "fuzz corpus: %d files read without a crash: %zu valid, %zu refused; with checksums repaired %zu valid",
	       (int)n, valid, refused, fixed_valid);
}

int main(int argc, char **argv)
{
	char cmdline[200];

	(void)argc;
	tap_init(argv[0]);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/sd-badimg-XXXXXX");
	if (!mkdtemp(tmpdir))
		tap_bail("mkdtemp");
	run_out_dir(tmpdir);
	crafted();
	restore_bad();
	corpus_run();
	snprintf(cmdline, sizeof(cmdline), "rm -rf '%s'", tmpdir);
	if (system(cmdline))
		tap_diag("could not remove %s", tmpdir);
	return tap_done();
}
