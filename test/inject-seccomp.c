// SPDX-License-Identifier: MIT
/*
 * sd_inject on a target under a seccomp filter that kills the process on
 * getppid(): an injected call must never trip it.
 *   - as root, the filter is suspended while attached
 *     (PTRACE_O_SUSPEND_SECCOMP): the injected getppid() works, the
 *     target lives, and the filter is back after detach (a getppid() of
 *     its own would still kill it: checked last);
 *   - as uid 65534 (no CAP_SYS_ADMIN), injection is refused with -EPERM
 *     and the target lives.
 */
#include <errno.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "inject.h"

#ifndef SECCOMP_RET_KILL_PROCESS
#define SECCOMP_RET_KILL_PROCESS 0x80000000U
#endif


static int install_filter(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = ARRAY_SIZE(f), .filter = f };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
		return -errno;
	return 0;
}

/* 'x': answer 'x'; 'p': call getppid() (the filter kills us) */
static void target(int in, int out)
{
	char c = install_filter() ? 'E' : 'r';

	if (write(out, &c, 1) != 1)
		_exit(2);
	while (read(in, &c, 1) == 1) {
		if (c == 'p')
			syscall(SYS_getppid);
		if (write(out, &c, 1) != 1)
			_exit(2);
	}
	_exit(0);
}

static int spawn(struct td_child *c)
{
	char r;
	int err = td_child_spawn(c, target);

	if (err)
		return err;
	if (read(c->from, &r, 1) != 1 || r != 'r')
		return -ENOSYS;
	usleep(10000);
	return 0;
}

/* 0 ok, else -errno; *ppid gets the injected getppid() */
static int inject_getppid(pid_t pid, long *ppid)
{
	struct sd_inject *in;
	int err = sd_inject_attach(&in, pid);

	if (err)
		return err;
	err = sd_inject_syscall(in, SYS_getppid, NULL, ppid);
	sd_inject_detach(in);
	return err;
}

struct res {
	int spawn, inject, alive;
	long ppid;
	pid_t me;
};

static void run(struct res *r, bool killcheck, bool *killed)
{
	struct td_child c = { 0 };
	int st = 0;

	r->me = getpid();
	r->spawn = spawn(&c);
	if (r->spawn)
		goto out;
	r->inject = inject_getppid(c.pid, &r->ppid);
	r->alive = td_child_responds(&c);
	if (killcheck) {
		char p = 'p';

		/* the filter must be in force again */
		if (write(c.to, &p, 1) == 1) {
			waitpid(c.pid, &st, 0);
			*killed = WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS;
			c.pid = 0;
		}
	}
out:
	td_child_reap(&c, NULL);
}

int main(int argc, char **argv)
{
	struct res r = { 0 };
	bool killed = false;
	int p[2];
	pid_t pid;

	(void)argc;
	tap_init(argv[0]);
	if (!td_inject_supported())
		return 77;
	signal(SIGPIPE, SIG_IGN);
	run(&r, true, &killed);
	if (r.spawn) {
		printf("1..0 # SKIP seccomp filters unavailable (%s)\n",
		       strerror(-r.spawn));
		return 77;
	}
	if (getuid() == 0) {
		tap_ok(r.inject == 0 && r.ppid == r.me,
		       "root: injected getppid() under a killing filter = %ld "
		       "(%s)", r.ppid, strerror(-r.inject));
		tap_ok(r.alive, "root: the target lives and answers");
		tap_ok(killed, "the filter is in force again after detach");
	} else {
		tap_ok(r.inject == -EPERM && r.alive,
		       "unprivileged: injection refused with -EPERM (%s), "
		       "target alive", strerror(-r.inject));
		return tap_done();
	}

	if (pipe(p))
		tap_bail("pipe");
	pid = fork();
	if (pid < 0)
		tap_bail("fork");
	if (pid == 0) {
		close(p[0]);
		memset(&r, 0, sizeof(r));
		if (setgroups(0, NULL) || setgid(65534) || setuid(65534) ||
		    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0))
			r.spawn = -errno;
		else
			run(&r, false, NULL);
		if (write(p[1], &r, sizeof(r)) != sizeof(r))
			_exit(2);
		_exit(0);
	}
	close(p[1]);
	memset(&r, 0, sizeof(r));
	r.spawn = -EIO;
	if (read(p[0], &r, sizeof(r)) != sizeof(r))
		r.spawn = -EIO;
	close(p[0]);
	waitpid(pid, NULL, 0);
	tap_ok(!r.spawn && r.inject == -EPERM && r.alive,
	       "uid 65534: injection refused with -EPERM (%s), target alive",
	       strerror(-r.inject));
	return tap_done();
}
