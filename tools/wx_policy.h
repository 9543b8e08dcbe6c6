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
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The seccomp_data.arch of this program's system calls, and the name the
 * kernel gives its CPU (/proc/sys/kernel/arch, uname -m). */
#if defined(__x86_64__)
#define WX_POLICY_AUDIT_ARCH AUDIT_ARCH_X86_64
#define WX_POLICY_ARCH_NAME "x86_64"
#elif defined(__aarch64__)
#define WX_POLICY_AUDIT_ARCH AUDIT_ARCH_AARCH64
#define WX_POLICY_ARCH_NAME "aarch64"
#elif defined(__riscv) && __riscv_xlen == 64
#define WX_POLICY_AUDIT_ARCH AUDIT_ARCH_RISCV64
#define WX_POLICY_ARCH_NAME "riscv64"
#else
#error "wx_policy.h: unknown CPU"
#endif
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
#define WX_POLICY_FILTER_MAX 16

/* Writes the filter program to out (WX_POLICY_FILTER_MAX entries) and
 * returns its length; tests evaluate it for this CPU's numbers. */
static inline size_t wx_policy_filter(struct sock_filter *out)
{
    const struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        /* Another syscall ABI in this process (i386 int 0x80): deny all. */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, WX_POLICY_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, WX_POLICY_DENY),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#if defined(__x86_64__)
        /* x32 numbers alias the x86_64 ones with bit 30 set. */
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, WX_POLICY_DENY),
#endif
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mmap, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mprotect, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_pkey_mprotect, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        /* prot is the third argument of all three (low word: LE targets). */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                 offsetof(struct seccomp_data, args[2])),
        BPF_STMT(BPF_ALU | BPF_AND | BPF_K, PROT_WRITE | PROT_EXEC),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PROT_WRITE | PROT_EXEC, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, WX_POLICY_DENY),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    _Static_assert(sizeof(filter) / sizeof(filter[0]) <= WX_POLICY_FILTER_MAX,
                   "WX_POLICY_FILTER_MAX too small");
    memcpy(out, filter, sizeof(filter));
    return sizeof(filter) / sizeof(filter[0]);
}

/* Returns 0, the errno of the prctl/seccomp call that failed, or
 * WX_POLICY_EMULATED (then nothing is attempted; see the top). */
static inline int wx_policy_enter(void)
{
    if (wx_policy_emulated(NULL, 0))
        return WX_POLICY_EMULATED;
    struct sock_filter filter[WX_POLICY_FILTER_MAX];
    struct sock_fprog prog = {(unsigned short)wx_policy_filter(filter),
                              filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return errno;
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                SECCOMP_FILTER_FLAG_TSYNC, &prog) != 0)
        return errno;
    return 0;
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
