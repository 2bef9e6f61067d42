/* SPDX-License-Identifier: MIT */
/*
 * Running system calls inside another process under ptrace: used to create
 * a userfaultfd in the target (the uffd backend drives it from outside).
 *
 * The target is stopped as a whole (every thread), one thread runs the
 * injected calls, and detach leaves every thread exactly as it was: same
 * registers, interrupted system calls restarted by the kernel's own logic,
 * and the signals that arrived meanwhile delivered with their siginfo.
 *
 * Tracker death: no PTRACE_O_EXITKILL, so when the caller dies the kernel
 * detaches and the target runs on.  Between calls the chosen thread holds
 * its own registers (safe).  Residual risk: a death inside an injected
 * call, from just before the syscall-entry stop to the restore at the
 * syscall-exit stop (~30 us of the ~50 us a call costs), leaves the thread
 * with the injected registers; it returns into the vDSO with garbage and
 * most likely crashes.  A fix would push a signal frame holding the saved
 * context and run the call from a "syscall; ret" gadget returning into
 * rt_sigreturn (needs the xsave area and the altstack in the frame).
 *
 * Other limits: x86-64 tracker and 64-bit targets only (-EOPNOTSUPP on
 * other architectures, -EIO for a 32-bit target); attach waits for every
 * thread to stop, so it blocks while one is in uninterruptible sleep or
 * frozen; a target that execs while attached is not handled specially.
 */
#ifndef SOFTDIRTY_INJECT_H
#define SOFTDIRTY_INJECT_H

#include <sys/types.h>

#include "internal.h"

struct sd_inject;

/* Architectures where injection is implemented (else -EOPNOTSUPP). */
#if defined(__x86_64__)
#define SD_INJECT_ARCH 1
#endif

/*
 * Seize and stop every thread of @pid.  -ESRCH: no such process; -EPERM:
 * not allowed to ptrace it (credentials, YAMA, no CAP_SYS_PTRACE, or it
 * is ourselves); -EBUSY: already traced by someone else.  Nothing is left
 * attached on failure.
 */
MUST_CHECK int sd_inject_attach(struct sd_inject **out, pid_t pid);
/*
 * Run system call @nr with @args (may be NULL: all zero) in the target's
 * chosen thread; *ret gets the raw result (-errno as the target saw it).
 * Returns 0 or -errno of the injection itself: -EPERM when the thread runs
 * under seccomp and we may not suspend it (PTRACE_O_SUSPEND_SECCOMP needs
 * CAP_SYS_ADMIN), as a filter could kill the target for our call.
 */
MUST_CHECK int sd_inject_syscall(struct sd_inject *in, long nr,
				 const long args[6], long *ret);
/* Restore everything and let every thread run on; frees @in (NULL ok). */
void sd_inject_detach(struct sd_inject *in);

/*
 * userfaultfd(@flags) inside @pid (retried with UFFD_USER_MODE_ONLY when it
 * fails with EPERM), copied out with pidfd_getfd (close-on-exec here) and
 * closed in the target.  @held: the caller's attachment to @pid, or NULL to
 * attach and detach here.  Returns the local fd or -errno.
 */
MUST_CHECK int sd_inject_userfaultfd(pid_t pid, struct sd_inject *held,
				     int flags);

#endif
