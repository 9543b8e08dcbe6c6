/* The kernel-enforced W^X policy that the tests, the demo and the
 * benchmarks run under: a seccomp filter that fails (EACCES, as SELinux's
 * execmem denial does) every mmap, mprotect and pkey_mprotect asking for
 * PROT_WRITE|PROT_EXEC. Inherited by every thread and child created
 * afterwards; it cannot be lifted. Needs _GNU_SOURCE. */
#ifndef WX_POLICY_H
#define WX_POLICY_H

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define WX_POLICY_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define WX_POLICY_AUDIT_ARCH AUDIT_ARCH_AARCH64
#elif defined(__riscv) && __riscv_xlen == 64
#define WX_POLICY_AUDIT_ARCH AUDIT_ARCH_RISCV64
#else
#error "wx_policy.h: unknown CPU"
#endif
#ifndef __NR_pkey_mprotect
#define __NR_pkey_mprotect 288 /* generic syscall table: aarch64, riscv64 */
#endif

/* Returns 0, or the errno of the prctl/seccomp call that failed. */
static inline int wx_policy_enter(void)
{
#define WX_POLICY_DENY (SECCOMP_RET_ERRNO | (EACCES & SECCOMP_RET_DATA))
    struct sock_filter filter[] = {
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
#undef WX_POLICY_DENY
    struct sock_fprog prog = {sizeof(filter) / sizeof(filter[0]), filter};
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
