/* The kernel-enforced W^X policy that the tests, the demo and the
 * benchmarks run under: a seccomp filter that fails (EACCES, as SELinux's
 * execmem denial does) every mmap, mprotect and pkey_mprotect asking for
 * PROT_WRITE|PROT_EXEC. Inherited by every thread and child created
 * afterwards; it cannot be lifted. Needs _GNU_SOURCE.
 *
 * Under a user-mode emulator (qemu-user running a foreign-CPU build) the
 * policy cannot exist: qemu refuses seccomp(2) and PR_SET_SECCOMP (ENOSYS,
 * EINVAL), and rightly, since a filter written for this program's system
 * call ABI would judge the emulator's own host calls. wx_policy_enter then
 * returns WX_POLICY_EMULATED instead of an errno. */
#ifndef WX_POLICY_H
#define WX_POLICY_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "wx_seccomp.h"

#ifndef __NR_pkey_mprotect
#define __NR_pkey_mprotect 288 /* generic syscall table: aarch64, riscv64 */
#endif

/* wx_policy_enter's result under a user-mode emulator: not an errno. */
#define WX_POLICY_EMULATED (-1)

/* Whether this program runs under a user-mode emulator: the kernel's own
 * CPU (/proc/sys/kernel/arch, which qemu-user passes through while it
 * fakes uname) is not the one the program was built for. An older kernel
 * without that file counts as native: the policy is then required, never
 * skipped by mistake. The kernel's CPU name goes to kernel_arch (may be
 * NULL). */
static inline bool wx_policy_emulated(char *kernel_arch, size_t len)
{
    char name[32] = "";
    FILE *f = fopen("/proc/sys/kernel/arch", "r");
    if (!f)
        return false;
    if (!fgets(name, sizeof(name), f))
        name[0] = 0;
    fclose(f);
    name[strcspn(name, "\n")] = 0;
    if (kernel_arch && len > 0)
        snprintf(kernel_arch, len, "%s", name);
    return name[0] && strcmp(name, WX_POLICY_ARCH_NAME) != 0;
}

#define WX_POLICY_DENY (SECCOMP_RET_ERRNO | (EACCES & SECCOMP_RET_DATA))

/* mmap, mprotect and pkey_mprotect asking for PROT_WRITE|PROT_EXEC: prot
 * is the third argument of all three. */
#define WX_POLICY_RULES 3
#define WX_POLICY_FILTER_MAX WX_SECCOMP_LEN(WX_POLICY_RULES)

static inline const struct wx_rule *wx_policy_rules(void)
{
    static const struct wx_rule rules[WX_POLICY_RULES] = {
        {__NR_mmap, WX_RULE_ALL_BITS, 2, PROT_WRITE | PROT_EXEC, EACCES},
        {__NR_mprotect, WX_RULE_ALL_BITS, 2, PROT_WRITE | PROT_EXEC, EACCES},
        {__NR_pkey_mprotect, WX_RULE_ALL_BITS, 2, PROT_WRITE | PROT_EXEC,
         EACCES},
    };
    return rules;
}

/* Writes the filter program to out (WX_POLICY_FILTER_MAX entries) and
 * returns its length; tests evaluate it for this CPU's numbers. Another
 * syscall ABI in this process (i386 int 0x80, x32) is denied outright. */
static inline size_t wx_policy_filter(struct sock_filter *out)
{
    return wx_seccomp_build(wx_policy_rules(), WX_POLICY_RULES, EACCES, out);
}

/* Returns 0, the errno of the prctl/seccomp call that failed, or
 * WX_POLICY_EMULATED (then nothing is attempted; see the top). */
static inline int wx_policy_enter(void)
{
    if (wx_policy_emulated(NULL, 0))
        return WX_POLICY_EMULATED;
    return wx_seccomp_install(wx_policy_rules(), WX_POLICY_RULES, EACCES);
}

/* Mappings in /proc/self/maps that are both writable and executable, or
 * -1 if the file cannot be read. */
static inline int wx_policy_wx_mappings(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    char line[512], perms[8];
    int n = 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "%*x-%*x %7s", perms) == 1 && perms[1] == 'w' &&
            perms[2] == 'x')
            n++;
    fclose(f);
    return n;
}

#endif /* WX_POLICY_H */
