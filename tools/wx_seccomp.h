/* Seccomp filters from a list of rules, so that each policy the tests
 * enter (tools/wx_policy.h, tools/wx_hardening.h) states only which calls
 * it refuses, and the BPF is written once. A rule names a system call and
 * when to fail it: always, when an argument has all of some bits set, or
 * when it has any of them. Calls from another system call ABI of this CPU
 * (i386's int 0x80, x32 on x86_64) fail with the filter's foreign_errno:
 * a rule keyed on this ABI's numbers would judge them wrongly. Needs
 * _GNU_SOURCE. */
#ifndef WX_SECCOMP_H
#define WX_SECCOMP_H

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdint.h>
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
#error "wx_seccomp.h: unknown CPU"
#endif

enum wx_rule_when {
    WX_RULE_ALWAYS,   /* every call fails */
    WX_RULE_ALL_BITS, /* fails when (arg & bits) == bits */
    WX_RULE_ANY_BIT,  /* fails when (arg & bits) != 0 */
};

/* One system call per rule: the first rule naming a call decides it. */
struct wx_rule {
    long nr;
    enum wx_rule_when when;
    unsigned arg;  /* index into seccomp_data.args */
    uint32_t bits; /* compared with the argument's low word (LE targets) */
    int err;       /* the errno the call fails with */
};

/* Instructions per rule at most, and in the prologue. */
#define WX_SECCOMP_RULE_LEN 6
#define WX_SECCOMP_PROLOGUE_LEN 6
#define WX_SECCOMP_LEN(rules)                                                 \
    (WX_SECCOMP_PROLOGUE_LEN + WX_SECCOMP_RULE_LEN * (rules) + 1)

static inline uint32_t wx_seccomp_deny(int err)
{
    return SECCOMP_RET_ERRNO | ((uint32_t)err & SECCOMP_RET_DATA);
}

/* Writes the program for n rules to out (WX_SECCOMP_LEN(n) entries) and
 * returns its length. Uses only loads, AND, JEQ, JGE and RET, the opcodes
 * tests/test_policy.c evaluates. */
static inline size_t wx_seccomp_build(const struct wx_rule *rules, size_t n,
                                      int foreign_errno,
                                      struct sock_filter *out)
{
    size_t len = 0;
#define WX_EMIT(insn) (out[len++] = (struct sock_filter)insn)
    WX_EMIT(BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                     offsetof(struct seccomp_data, arch)));
    WX_EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, WX_POLICY_AUDIT_ARCH, 1, 0));
    WX_EMIT(BPF_STMT(BPF_RET | BPF_K, wx_seccomp_deny(foreign_errno)));
    WX_EMIT(
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
#if defined(__x86_64__)
    /* x32 numbers alias the x86_64 ones with bit 30 set. */
    WX_EMIT(BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1));
    WX_EMIT(BPF_STMT(BPF_RET | BPF_K, wx_seccomp_deny(foreign_errno)));
#endif
    for (size_t i = 0; i < n; i++) {
        const struct wx_rule *r = &rules[i];
        uint32_t deny = wx_seccomp_deny(r->err);
        /* The accumulator holds nr again when the rule does not apply. */
        uint8_t body = r->when == WX_RULE_ALWAYS ? 1 : 5;
        WX_EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)r->nr, 0, body));
        if (r->when == WX_RULE_ALWAYS) {
            WX_EMIT(BPF_STMT(BPF_RET | BPF_K, deny));
            continue;
        }
        WX_EMIT(BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                         offsetof(struct seccomp_data, args[r->arg])));
        WX_EMIT(BPF_STMT(BPF_ALU | BPF_AND | BPF_K, r->bits));
        if (r->when == WX_RULE_ALL_BITS)
            WX_EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, r->bits, 0, 1));
        else
            WX_EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0));
        WX_EMIT(BPF_STMT(BPF_RET | BPF_K, deny));
        WX_EMIT(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    }
    WX_EMIT(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
#undef WX_EMIT
    return len;
}

/* Installs the filter for every thread of the process (and everything it
 * starts afterwards, across execve: no_new_privs is set first). Returns 0
 * or the errno of the prctl/seccomp call that failed. */
static inline int wx_seccomp_install(const struct wx_rule *rules, size_t n,
                                     int foreign_errno)
{
    struct sock_filter filter[WX_SECCOMP_LEN(n)];
    struct sock_fprog prog = {
        (unsigned short)wx_seccomp_build(rules, n, foreign_errno, filter),
        filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return errno;
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                SECCOMP_FILTER_FLAG_TSYNC, &prog) != 0)
        return errno;
    return 0;
}

#endif /* WX_SECCOMP_H */
