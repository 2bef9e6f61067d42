// SPDX-License-Identifier: MIT
/*
 * Acceptance of softdirty dump / image / restore, with every backend that
 * can track another process (it is the one that stops the target).
 *
 * The workload (this program re-executed with --workload) keeps a data
 * structure in four mappings between PROT_NONE guards and changes it on
 * command: random writes plus writes of identical bytes (A), a new mapping
 * mremap()ed over B, MADV_DONTNEED and writes (C), munmap + mmap at the
 * same address (D), and an extra mapping X that comes and goes.  It
 * answers a checksum of its whole structure on request, blocked in read(2)
 * between commands, so the test and the dumps see the same moments.
 *
 * Checked, exactly:
 *   - a chain of 6 images (full + 5 increments); each verifies;
 *   - each increment holds exactly the workload's pages whose contents
 *     changed or that became present (compared with the test's own
 *     snapshot through pagemap + process_vm_readv);
 *   - flatten of the chain == a full dump taken at the same moment
 *     (image diff exit 0); an earlier link differs (exit 1);
 *   - restore of links 5, 1, 4, 2, 0, 3: afterwards the workload's own
 *     checksum equals the one taken at that link; a second restore of the
 *     same link writes 0 pages; a link whose layout differs (X mapped or
 *     not) is refused and writes nothing;
 *   - restore into another process is refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
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
enum { RA, RB, RC, RD, RX, NR };
static const size_t npg[NR] = { 256, 16, 64, 32, 8 };

/* ---------- the workload (after exec) ---------- */

static uint8_t *wr[NR];
static volatile int x_mapped;
static uint64_t wrng;
static unsigned char wcmd[2];

static uint64_t wnext(void)
{
	wrng ^= wrng << 13;
	wrng ^= wrng >> 7;
	wrng ^= wrng << 17;
	return wrng;
}

static void wreply(int out, const void *p, size_t n)
{
	if (write(out, p, n) != (ssize_t)n)
		_exit(3);
}

static void *wmap(void *at, size_t pages, int prot)
{
	void *p = mmap(at, pages * PG, prot, MAP_PRIVATE | MAP_ANONYMOUS |
		       (at ? MAP_FIXED : 0), -1, 0);

	if (p == MAP_FAILED)
		_exit(2);
	return p;
}

static void wstep(unsigned seed)
{
	volatile uint8_t *v;
	uint8_t *tmp;
	size_t i;

	wrng = 0x9e3779b97f4a7c15ULL * (seed + 1);
	v = wr[RA];
	for (i = 0; i < 20; i++)
		v[wnext() % npg[RA] * PG + wnext() % PG] = (uint8_t)(wnext() | 1);
	for (i = 0; i < 5; i++) {		/* same bytes: no change */
		size_t o = wnext() % npg[RA] * PG;

		v[o] = v[o];
	}
	/* B: a fresh mapping moved over it, half of its pages written */
	tmp = wmap(NULL, npg[RB], PROT_READ | PROT_WRITE);
	for (i = 0; i < npg[RB]; i += 2)
		tmp[i * PG + seed % PG] = (uint8_t)(seed + i + 1);
	if (mremap(tmp, npg[RB] * PG, npg[RB] * PG,
		   MREMAP_MAYMOVE | MREMAP_FIXED, wr[RB]) != wr[RB])
		_exit(2);
	/* C: 8 pages dropped, 6 written */
	i = wnext() % (npg[RC] - 8);
	if (madvise(wr[RC] + i * PG, 8 * PG, MADV_DONTNEED))
		_exit(2);
	v = wr[RC];
	for (i = 0; i < 6; i++)
		v[wnext() % npg[RC] * PG + 100] = (uint8_t)(wnext() | 1);
	/* D: unmapped and mapped again, a third of it written */
	if (munmap(wr[RD], npg[RD] * PG))
		_exit(2);
	wmap(wr[RD], npg[RD], PROT_READ | PROT_WRITE);
	for (i = 0; i < npg[RD]; i += 3)
		wr[RD][i * PG + 7] = (uint8_t)(seed * 3 + i + 1);
}

static uint64_t wsum(void)
{
	uint64_t h = 0;
	int r;

	for (r = 0; r < NR; r++)
		if (r != RX || x_mapped)
			h = XXH3_64bits_withSeed(wr[r], npg[r] * PG, h + (uint64_t)r);
	return h;
}

static void workload(int in, int out)
{
	size_t total = 1, i;
	uint8_t *base;
	int r;

	for (r = 0; r < NR; r++)
		total += npg[r] + 1;
	base = wmap(NULL, total, PROT_NONE);
	for (r = 0, i = 1; r < NR; r++) {
		wr[r] = base + i * PG;
		if (r != RX)
			wmap(wr[r], npg[r], PROT_READ | PROT_WRITE);
		i += npg[r] + 1;
	}
	memset(wr[RA], 0x5a, npg[RA] * PG);
	memset(wr[RC], 0x33, npg[RC] * PG);
	wreply(out, wr, sizeof(wr));
	while (read(in, wcmd, 1) == 1) {
		switch (wcmd[0]) {
		case 's':
			if (read(in, wcmd + 1, 1) != 1)
				_exit(2);
			wstep(wcmd[1]);
			break;
		case 'c': {
			uint64_t h = wsum();

			wreply(out, &h, sizeof(h));
			continue;
		}
		case 'X':
			wmap(wr[RX], npg[RX], PROT_READ | PROT_WRITE);
			memset(wr[RX], 0x77, npg[RX] * PG);
			x_mapped = 1;
			break;
		case 'x':
			wmap(wr[RX], npg[RX], PROT_NONE);
			x_mapped = 0;
			break;
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
static uint64_t addr[NR];

static void spawn_fn(int in, int out)
{
	char a[16], b[16];

	snprintf(a, sizeof(a), "%d", in);
	snprintf(b, sizeof(b), "%d", out);
	/*
	 * Without rseq: the kernel rewrites the rseq area (cpu_id) whenever
	 * the thread returns to user space on another CPU, as it does after
	 * every stop; that would be a real change between two dumps.
	 */
	setenv("GLIBC_TUNABLES", "glibc.pthread.rseq=0", 1);
	execl(self_exe, self_exe, "--workload", a, b, (char *)NULL);
	_exit(4);
}

static long restored_pages(void)
{
	const char *p = strstr(output(), "pages written back");
	long n;

	if (!p)
		return -1;
	while (p > output() && p[-1] == ' ')
		p--;
	while (p > output() && p[-1] >= '0' && p[-1] <= '9')
		p--;
	return sscanf(p, "%ld", &n) == 1 ? n : -1;
}

/* What the test sees of a workload page: present, and its checksum. */
struct snap {
	bool present[NR][256];
	uint8_t hash[NR][256][16];
};

static bool take_snap(pid_t pid, struct snap *s)
{
	char path[64];
	uint8_t page[PG];
	int fd, r;
	size_t k;

	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	memset(s, 0, sizeof(*s));
	for (r = 0; r < NR; r++)
		for (k = 0; k < npg[r]; k++) {
			uint64_t a = addr[r] + k * PG, e = 0;
			struct iovec l = { page, PG }, rm = { (void *)(uintptr_t)a, PG };

			if (pread(fd, &e, 8, (off_t)(a / PG * 8)) != 8) {
				close(fd);
				return false;
			}
			if (!(e & (3ULL << 62)))
				continue;
			s->present[r][k] = true;
			if (process_vm_readv(pid, &l, 1, &rm, 1, 0) != (ssize_t)PG) {
				close(fd);
				return false;
			}
			img_page_hash(page, s->hash[r][k]);
		}
	close(fd);
	return true;
}

/* The increment link holds exactly the pages changed from prev to cur. */
static void check_increment(const char *be, int k, const char *dir,
			    const struct snap *prev, const struct snap *cur)
{
	struct img *im;
	char err[512];
	size_t want = 0, got = 0, bad = 0, p;
	int r;

	if (img_open(dir, false, false, &im, err, sizeof(err))) {
		tap_ok(false, "%s: link %d opens: %s", be, k, err);
		return;
	}
	for (r = 0; r < NR; r++)
		for (p = 0; p < npg[r]; p++) {
			uint64_t a = addr[r] + p * PG;
			const struct img_region *reg = img_find(im, a);
			const struct img_run *x = reg && reg->npages ?
				img_run_of(reg, (a - reg->start) / PG) : NULL;
			bool in = x && (x->state == IMG_DATA || x->state == IMG_ZERO);
			bool changed = cur->present[r][p] &&
				(!prev->present[r][p] ||
				 memcmp(cur->hash[r][p], prev->hash[r][p], 16));
			bool present = x != NULL;

			want += changed;
			got += in;
			if (in != changed || present != cur->present[r][p]) {
				if (bad++ < 5)
					tap_diag("%s: link %d page %#" PRIx64 " (region %d): in increment %d, changed %d, present %d/%d",
						 be, k, a, r, in, changed, present,
						 cur->present[r][p]);
			}
		}
	tap_ok(!bad && want > 0,
	       "%s: increment %d holds exactly the %zu workload pages that changed or appeared (%zu; %zu wrong)",
	       be, k, want, got, bad);
	img_free(im);
}

static void chain(const struct td_backend *be, void *ctx)
{
	char link[NLINKS][128], full[128], flat[128];
	uint64_t ck[NLINKS];
	struct snap *s[NLINKS];
	struct td_child c, other;
	char pid[16];
	int k, rc;
	static const int order[] = { 5, 1, 4, 2, 0, 3 };
	size_t i;

	(void)ctx;
	if (!(be->caps & SOFTDIRTY_CAP_REMOTE)) {
		tap_skip("the backend cannot track another process",
			 "%s: dump chain", be->name);
		return;
	}
	if (td_child_spawn(&c, spawn_fn) || !td_child_recv(&c, addr, sizeof(addr), 20000) ||
	    !td_blocked_in_read(c.pid))
		tap_bail("cannot start the workload");
	snprintf(pid, sizeof(pid), "%d", (int)c.pid);
	for (k = 0; k < NLINKS; k++) {
		s[k] = calloc(1, sizeof(*s[k]));
		if (!s[k])
			tap_bail("out of memory");
		snprintf(link[k], sizeof(link[k]), "%s/%s-%d", tmpdir, be->name, k);
	}
	snprintf(full, sizeof(full), "%s/%s-full", tmpdir, be->name);
	snprintf(flat, sizeof(flat), "%s/%s-flat", tmpdir, be->name);

	rc = run(cmd_dump, "dump", pid, "-D", link[0], "--backend", be->name,
		 "--quiet", NULL);
	if (!tap_ok(rc == 0, "%s: full dump (exit %d)", be->name, rc))
		show_output();
	take_snap(c.pid, s[0]);
	ck[0] = wl_sum(&c);
	for (k = 1; k < NLINKS; k++) {
		char m[2] = { 's', (char)k };
		bool ok = wl_cmd(&c, m, 2);

		if (k == 2)
			ok = ok && wl_cmd(&c, "X", 1);
		if (k == 3)
			ok = ok && wl_cmd(&c, "x", 1);
		rc = run(cmd_dump, "dump", pid, "-D", link[k], "--parent",
			 link[k - 1], "--backend", be->name, "--quiet", NULL);
		if (!tap_ok(ok && rc == 0, "%s: workload step %d, increment dump (exit %d)",
			    be->name, k, rc))
			show_output();
		if (k == NLINKS - 1) {
			rc = run(cmd_dump, "dump", pid, "-D", full, "--backend",
				 be->name, "--quiet", NULL);
			tap_ok(rc == 0, "%s: full dump at the same moment (exit %d)",
			       be->name, rc);
		}
		take_snap(c.pid, s[k]);
		check_increment(be->name, k, link[k], s[k - 1], s[k]);
		ck[k] = wl_sum(&c);
	}
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
	rc = run(cmd_image, "image", "diff", link[NLINKS - 2], full, NULL);
	tap_ok(rc == 1, "%s: the link before differs from it (diff exit %d)",
	       be->name, rc);
	rc = run(cmd_image, "image", "inspect", link[NLINKS - 1], NULL);
	tap_ok(rc == 0 && strstr(output(), "increment"),
	       "%s: image inspect shows the chain (exit %d)", be->name, rc);

	/* restores: link 2 has X mapped, the others not */
	for (i = 0; i < ARRAY_SIZE(order); i++) {
		int l = order[i];
		uint64_t before;
		long n;

		if (l == 2 || l == 0) {
			before = wl_sum(&c);
			rc = run(cmd_restore, "restore", link[l], "--pid", pid,
				 "--backend", be->name, NULL);
			tap_ok(rc == 1 && strstr(output(), "layout differs") &&
			       wl_sum(&c) == before,
			       "%s: restore of link %d with another layout: refused, nothing written (exit %d)",
			       be->name, l, rc);
			if (!wl_cmd(&c, l == 2 ? "X" : "x", 1))
				tap_bail("workload does not answer");
		}
		rc = run(cmd_restore, "restore", link[l], "--pid", pid,
			 "--backend", be->name, NULL);
		n = restored_pages();
		if (l == 1) {
			/* nothing ran in between: nothing to write */
			long n2;

			rc |= run(cmd_restore, "restore", link[l], "--pid", pid,
				  "--backend", be->name, NULL);
			n2 = restored_pages();
			tap_ok(n2 == 0, "%s: restore of the same link again writes 0 pages (%ld)",
			       be->name, n2);
		}
		if (!tap_ok(rc == 0 && wl_sum(&c) == ck[l],
			    "%s: restore link %d: the workload's checksum is the one at that link (exit %d, %ld pages written)",
			    be->name, l, rc, n)) {
			char d[128];

			show_output();
			/* what differs from the link now */
			snprintf(d, sizeof(d), "%s/%s-fail%d", tmpdir, be->name, l);
			run(cmd_dump, "dump", pid, "-D", d, "--quiet", NULL);
			run(cmd_image, "image", "diff", link[l], d, NULL);
			show_output();
		}
		if (l != NLINKS - 1)
			tap_ok(n > 0, "%s: restore of link %d wrote back pages (%ld)",
			       be->name, l, n);
	}
	/* after restores, the workload runs on and can be dumped again */
	{
		char m[2] = { 's', 9 };
		char d[128];

		snprintf(d, sizeof(d), "%s/%s-after", tmpdir, be->name);
		rc = run(cmd_dump, "dump", pid, "-D", d, "--parent", link[3],
			 "--backend", be->name, "--quiet", NULL);
		tap_ok(wl_cmd(&c, m, 2) && rc == 0,
		       "%s: after the restores the workload runs and dumps (exit %d)",
		       be->name, rc);
	}
	if (td_child_spawn(&other, spawn_fn) || !td_child_recv(&other, addr, sizeof(addr), 20000))
		tap_bail("cannot start a second workload");
	snprintf(pid, sizeof(pid), "%d", (int)other.pid);
	rc = run(cmd_restore, "restore", link[0], "--pid", pid, NULL);
	tap_ok(rc == 1 && strstr(output(), "not of this process"),
	       "%s: restore into another process: refused (exit %d)", be->name, rc);
	td_child_reap(&other, NULL);
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
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/sd-image-XXXXXX");
	if (!mkdtemp(tmpdir))
		tap_bail("mkdtemp");
	run_out_dir(tmpdir);
	td_for_each_backend("dump chain, flatten, restore", chain, NULL);
	if (tap_failures()) {
		tap_diag("images kept in %s", tmpdir);
	} else {
		snprintf(cmdline, sizeof(cmdline), "rm -rf '%s'", tmpdir);
		if (system(cmdline))
			tap_diag("could not remove %s", tmpdir);
	}
	return tap_done();
}
