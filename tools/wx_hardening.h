/* The hardening policies of Linux systems that wxjit's backend choice is
 * tested under (tests/test_hardened.c, README "Hardened systems"), each
 * entered in the calling process for good: wx-run --policy NAME puts one
 * in place before it runs a program. Each is entered on top of whatever is
 * in place already; the tests add the W^X filter of wx_policy.h to each.
 * The mount policies need root (a private mount namespace, so the host's
 * mounts never change) and a single-threaded caller (unshare). Needs
 * _GNU_SOURCE. */
#ifndef WX_HARDENING_H
#define WX_HARDENING_H

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/stat.h>

#include "wx_seccomp.h"

#ifndef __NR_pkey_mprotect
#define __NR_pkey_mprotect 288 /* generic syscall table: aarch64, riscv64 */
#endif
/* <linux/prctl.h> of Linux 6.3 (memory-deny-write-execute). */
#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#define PR_GET_MDWE 66
#endif
#ifndef PR_MDWE_REFUSE_EXEC_GAIN
#define PR_MDWE_REFUSE_EXEC_GAIN 1
#endif

/* A policy's enter result when this system cannot have it (too old a
 * kernel, not root): not an errno. */
#define WX_HARDENING_UNAVAILABLE (-1)

struct wx_hardening {
    const char *name; /* wx-run --policy NAME */
    const char *what;
    /* 0, an errno (with *why naming the call that failed), or
     * WX_HARDENING_UNAVAILABLE (with *why saying why). */
    int (*enter)(const char **why);
};

/* Linux 6.3's per-process memory-deny-write-execute: no mapping may be
 * W+X and no mapping may gain PROT_EXEC it did not have (mm/mmap.c
 * map_deny_write_exec). Inherited across fork and execve. */
static inline int wx_hardening_mdwe(const char **why)
{
    if (prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) == 0)
        return 0;
    *why = errno == EINVAL ? "PR_SET_MDWE unknown (Linux before 6.3)"
                           : "prctl(PR_SET_MDWE)";
    return errno == EINVAL ? WX_HARDENING_UNAVAILABLE : errno;
}

/* systemd's MemoryDenyWriteExecute=yes (systemd.exec(5),
 * seccomp_memory_deny_write_execute in src/shared/seccomp-util.c): mmap
 * with PROT_WRITE|PROT_EXEC, mprotect and pkey_mprotect with PROT_EXEC
 * (at all, even to a page that has it) and shmat with SHM_EXEC fail with
 * EPERM. */
static inline int wx_hardening_systemd_mdwe(const char **why)
{
    const struct wx_rule rules[] = {
        {__NR_mmap, WX_RULE_ALL_BITS, 2, PROT_WRITE | PROT_EXEC, EPERM},
        {__NR_mprotect, WX_RULE_ANY_BIT, 2, PROT_EXEC, EPERM},
        {__NR_pkey_mprotect, WX_RULE_ANY_BIT, 2, PROT_EXEC, EPERM},
        {__NR_shmat, WX_RULE_ANY_BIT, 2, SHM_EXEC, EPERM},
    };
    *why = "seccomp";
    return wx_seccomp_install(rules, sizeof(rules) / sizeof(rules[0]), EPERM);
}

/* Writes through /proc/self/mem refused as a seccomp filter can: every
 * positional write fails (EPERM), which is what a descriptor of
 * /proc/self/mem is written with. */
static inline int wx_hardening_no_mem_write(const char **why)
{
    const struct wx_rule rules[] = {
        {__NR_pwrite64, WX_RULE_ALWAYS, 0, 0, EPERM},
        {__NR_pwritev, WX_RULE_ALWAYS, 0, 0, EPERM},
        {__NR_pwritev2, WX_RULE_ALWAYS, 0, 0, EPERM},
    };
    *why = "seccomp";
    return wx_seccomp_install(rules, sizeof(rules) / sizeof(rules[0]), EPERM);
}

/* A mount namespace of this process's own whose mounts do not propagate
 * back to the host. */
static inline int wx_hardening_private_mounts(const char **why)
{
    static char no_namespace[96];
    if (unshare(CLONE_NEWNS) != 0) {
        snprintf(no_namespace, sizeof(no_namespace),
                 "unshare(CLONE_NEWNS): %s (needs root and one thread)",
                 strerror(errno));
        *why = no_namespace;
        return WX_HARDENING_UNAVAILABLE;
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        *why = "mount --make-rprivate /";
        return errno;
    }
    return 0;
}

/* No /proc at all: an empty tmpfs over it (as in a container that mounts
 * none), so /proc/self/mem cannot be opened. */
static inline int wx_hardening_no_proc(const char **why)
{
    int err = wx_hardening_private_mounts(why);
    if (err)
        return err;
    if (mount("none", "/proc", "tmpfs", MS_NOSUID | MS_NODEV, "size=4k")) {
        *why = "mount tmpfs on /proc";
        return errno;
    }
    return 0;
}

/* tmpfs mounted noexec over each of dirs that is a directory (NULL
 * entries are skipped), in a private mount namespace. */
static inline int wx_hardening_noexec(const char *const *dirs, size_t n,
                                      const char **why)
{
    struct stat st;
    int err = wx_hardening_private_mounts(why);
    for (size_t i = 0; err == 0 && i < n; i++) {
        /* $TMPDIR below /tmp is gone already: that is as good. */
        if (!dirs[i] || stat(dirs[i], &st) != 0 || !S_ISDIR(st.st_mode))
            continue;
        if (mount("none", dirs[i], "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  "mode=1777")) {
            *why = "mount noexec tmpfs";
            err = errno;
        }
    }
    return err;
}

/* /dev/shm mounted noexec, as hardening guides ask (CIS benchmarks):
 * shm_open's objects cannot be mapped executable; memfd's still can. */
static inline int wx_hardening_noexec_shm(const char **why)
{
    const char *const dirs[] = {"/dev/shm"};
    return wx_hardening_noexec(dirs, 1, why);
}

/* No executable shared memory object at all: memfd_create fails (ENOSYS,
 * as in a sandbox that allows only the calls it knows), and the
 * directories of shm_open and O_TMPFILE ($TMPDIR, /dev/shm, /tmp) are
 * noexec. */
static inline int wx_hardening_no_shm_exec(const char **why)
{
    const struct wx_rule no_memfd[] = {
        {__NR_memfd_create, WX_RULE_ALWAYS, 0, 0, ENOSYS}};
    const char *const dirs[] = {"/dev/shm", "/tmp", getenv("TMPDIR")};
    int err = wx_hardening_noexec(dirs, 3, why);
    if (err == 0 && (err = wx_seccomp_install(no_memfd, 1, ENOSYS)))
        *why = "seccomp";
    return err;
}

static const struct wx_hardening wx_hardenings[] = {
    {"mdwe", "prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN)",
     wx_hardening_mdwe},
    {"systemd-mdwe", "systemd MemoryDenyWriteExecute=yes (seccomp)",
     wx_hardening_systemd_mdwe},
    {"no-mem-write", "pwrite64, pwritev, pwritev2 fail (seccomp, EPERM)",
     wx_hardening_no_mem_write},
    {"no-proc", "no /proc (tmpfs over it, private mount namespace)",
     wx_hardening_no_proc},
    {"noexec-shm", "/dev/shm noexec (private mount namespace)",
     wx_hardening_noexec_shm},
    {"no-shm-exec",
     "memfd_create fails (ENOSYS); /dev/shm, /tmp, $TMPDIR "
     "noexec (private mount namespace)",
     wx_hardening_no_shm_exec},
};
#define WX_HARDENINGS (sizeof(wx_hardenings) / sizeof(wx_hardenings[0]))

static inline const struct wx_hardening *wx_hardening_named(const char *name)
{
    for (size_t i = 0; i < WX_HARDENINGS; i++)
        if (!strcmp(wx_hardenings[i].name, name))
            return &wx_hardenings[i];
    return NULL;
}

#endif /* WX_HARDENING_H */
