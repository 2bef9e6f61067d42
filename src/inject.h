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
 * Tracker death: no PTRACE_O_EXITKILL, so when the tracer dies the kernel
 * detaches and the target runs on.  Between calls the chosen thread holds
 * its own registers (safe).  A death inside an injected call, from just
 * before the syscall-entry stop to the restore at the syscall-exit stop
 * (~30 us of the ~50 us a call costs), would leave the thread with the
 * injected registers: it returns into the vDSO with garbage and most
 * likely crashes.  A death between the userfaultfd() and the close() would
 * leave the target a userfaultfd.
 *
 * sd_inject_userfaultfd() without a held attachment therefore runs its
 * whole sequence in a guardian: a task cloned with CLONE_VM | CLONE_FILES
 * | CLONE_VFORK, on a stack of its own, in a thread group and process
 * group of its own, all signals blocked, no exit signal.  A SIGKILL of the
 * caller's process or process group does not reach it (the caller's
 * vfork wait is killable; the guardian is reparented and finishes); it is
 * the tracer, detaches, and the copied descriptor lands in the shared
 * table, closed with its last user.  This code takes no lock a killed
 * thread of the caller may hold: no malloc, no stdio (mmap, read(2) into
 * stack buffers).  Still exposed: the injections of a held attachment
 * (ptrace requests must come from the tracer, the caller: only a restart
 * after an exec while softdirty_freeze() holds the target), the fallback
 * to the caller's thread when YAMA's ptrace_scope 1 refuses the guardian
 * (the target is a descendant of the caller, not of the guardian), and a
 * kill of the guardian itself (by its PID, or the OOM killer, which kills
 * every process sharing the memory).  A complete fix for those would push
 * a signal frame holding the saved context and run the call from a
 * "syscall; ret" gadget returning into rt_sigreturn (needs the xsave area
 * and the altstack in the frame).
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
 * closed in the target.  @held: the caller's attachment to @pid (injected
 * from this thread), or NULL to attach, inject and detach in a guardian
 * (see above; the calling thread sleeps meanwhile and takes only fatal
 * signals).  Returns the local fd or -errno (-EIO: the guardian was
 * killed).
 */
MUST_CHECK int sd_inject_userfaultfd(pid_t pid, struct sd_inject *held,
				     int flags);

#endif
