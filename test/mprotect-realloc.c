// SPDX-License-Identifier: MIT
/*
 * mprotect backend: realloc() of a large block moves it with mremap(),
 * which carries our write protection to the new address, outside the
 * regions we know.  Writes there must still work (and be reported), with
 * or without a SIGSEGV handler of the program's own, which must not see
 * them.  The program's own read-only anonymous memory must still fault.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

static volatile int user_calls;

static void user_handler(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	user_calls++;
	/* the program's own read-only page: make it writable, as planned */
	mprotect((void *)((uintptr_t)si->si_addr & ~(PG - 1)), PG,
		 PROT_READ | PROT_WRITE);
}

static size_t reported_pages(struct softdirty *sd, char *p, size_t n)
{
	uint8_t *pf = malloc(n);
	size_t i, k = 0;

	if (!pf)
		tap_bail("out of memory");
	td_touch(pf, n);
	if (td_collect_region(sd, p, n, 0, pf) < 0)
		tap_bail("collect");
	for (i = 0; i < n; i++)
		k += pf[i] != 0;
	free(pf);
	return k;
}

static void run(bool with_handler)
{
	const char *what = with_handler ? "with a user SIGSEGV handler"
					: "with SIG_DFL";
	size_t n1 = 256, n2 = 1024, i, rep;
	struct softdirty *sd;
	char *p, *q, *ro;
	int calls;

	p = malloc(n1 * PG);
	ro = mmap(NULL, PG, PROT_READ | PROT_WRITE,
		  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!p || ro == MAP_FAILED)
		tap_bail("out of memory");
	memset(p, 1, n1 * PG);
	ro[0] = 1;
	/* read-only before the reset: its faults stay the program's */
	mprotect(ro, PG, PROT_READ);
	sd = td_open("mprotect");
	/* grow: glibc moves an mmapped chunk with mremap(MREMAP_MAYMOVE) */
	q = realloc(p, n2 * PG);
	if (!q)
		tap_bail("realloc");
	calls = user_calls;
	for (i = 0; i < n2; i++)
		((volatile char *)q)[i * PG] = 2;
	tap_ok(user_calls == calls, "%s: writes to a realloc()ed block work "
	       "and never reach the program's handler", what);
	rep = reported_pages(sd, (char *)((uintptr_t)q & ~(PG - 1)), n2);
	tap_ok(rep >= n2 - 1, "%s: the moved block is reported (%zu of %zu "
	       "pages)", what, rep, n2);

	if (with_handler) {
		calls = user_calls;
		((volatile char *)ro)[0] = 3;
		tap_ok(user_calls == calls + 1 && ro[0] == 3,
		       "%s: the program's own read-only page still faults to "
		       "its handler", what);
	}
	softdirty_close(sd);
	for (i = 0; i < n2; i++)
		((volatile char *)q)[i * PG] = 4;
	tap_ok(true, "%s: writes after close", what);
	free(q);
	munmap(ro, PG);
}

static int child_dfl_ro(void)
{
	struct softdirty *sd;
	char *ro = mmap(NULL, PG, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1,
			0);

	signal(SIGSEGV, SIG_DFL);
	sd = td_open("mprotect");
	((volatile char *)ro)[0] = 1;	/* must kill */
	softdirty_close(sd);
	return 0;
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	int status;
	pid_t pid;

	tap_init(argv[0]);
	(void)argc;
	if (!td_backend_works(SOFTDIRTY_BACKEND_MPROTECT))
		return tap_done();
	run(false);

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = user_handler;
	sa.sa_flags = SA_SIGINFO;
	if (sigaction(SIGSEGV, &sa, NULL))
		tap_bail("sigaction: %s", strerror(errno));
	run(true);

	pid = fork();
	if (pid < 0)
		tap_bail("fork: %s", strerror(errno));
	if (!pid)
		_exit(child_dfl_ro());
	waitpid(pid, &status, 0);
	tap_ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
	       "SIG_DFL: a write to the program's read-only page still kills "
	       "(status %#x)", status);
	return tap_done();
}
