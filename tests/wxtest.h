/* Shared test helpers: loud assertions, the kernel-enforced W^X policy,
 * death tests in child processes, /proc/self/maps checks. */
#ifndef WXTEST_H
#define WXTEST_H


#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "wxjit.h"

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, \
                    #cond);                                                  \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

#define CHECK_EQ(a, b)                                                       \
    do {                                                                     \
        long long a_ = (long long)(a), b_ = (long long)(b);                  \
        CHECK(a_ == b_, "%s is %lld, expected %lld", #a, a_, b_);            \
    } while (0)

/* An API call that must return err (0 for success). */
#define CHECK_RET(call, err)                                                 \
    do {                                                                     \
        int got_ = (call), want_ = (err);                                    \
        CHECK(got_ == want_, "returned %d (%s), expected %d (%s)", got_,     \
              strerror(got_), want_, strerror(want_));                       \
    } while (0)

#define CHECK_OK(call) CHECK_RET(call, 0)

typedef int (*int_fn)(void);

static inline int_fn as_fn(void *code)
{
    int_fn fn;
    memcpy(&fn, &code, sizeof(fn));
    return fn;
}

/* ---- the W^X policy ------------------------------------------------------
 * A seccomp filter that fails (EACCES, as SELinux's execmem denial does)
 * every mmap, mprotect and pkey_mprotect asking for PROT_WRITE|PROT_EXEC.
 * Inherited by every thread and child created afterwards. */
#if defined(__x86_64__)
#define WXTEST_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define WXTEST_AUDIT_ARCH AUDIT_ARCH_AARCH64
#elif defined(__riscv)
#define WXTEST_AUDIT_ARCH AUDIT_ARCH_RISCV64
#endif
#ifndef __NR_pkey_mprotect
#define __NR_pkey_mprotect 288 /* generic table: aarch64, riscv64 */
#endif

static inline void wxtest_enter_wx_policy(void)
{
#define WXTEST_DENY (SECCOMP_RET_ERRNO | (EACCES & SECCOMP_RET_DATA))
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        /* Another syscall ABI in this process (i386 int 0x80): deny all. */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, WXTEST_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, WXTEST_DENY),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#if defined(__x86_64__)
        /* x32 numbers alias the x86_64 ones with bit 30 set. */
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, WXTEST_DENY),
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
        BPF_STMT(BPF_RET | BPF_K, WXTEST_DENY),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
#undef WXTEST_DENY
    struct sock_fprog prog = {sizeof(filter) / sizeof(filter[0]), filter};
    CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "no_new_privs: %s",
          strerror(errno));
    CHECK(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                  SECCOMP_FILTER_FLAG_TSYNC, &prog) == 0,
          "seccomp: %s", strerror(errno));
}

/* Mappings in /proc/self/maps that are both writable and executable. */
static inline int wxtest_wx_mappings(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    CHECK(f, "open maps: %s", strerror(errno));
    char line[512], perms[8];
    int n = 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "%*x-%*x %7s", perms) == 1 && perms[1] == 'w' &&
            perms[2] == 'x')
            n++;
    fclose(f);
    return n;
}

static inline int wxtest_mapping_count(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    CHECK(f, "open maps: %s", strerror(errno));
    int n = 0, c;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

/* ---- death tests --------------------------------------------------------- */

/* Runs fn(arg) in a child without core dumps; returns its wait status. */
static inline int wxtest_in_child(void (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        fn(arg);
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
    return status;
}

static inline const char *wxtest_describe(int status, char *buf, size_t len)
{
    if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    return buf;
}

static inline void wxtest_expect_signal(const char *what, int status, int sig)
{
    char buf[96];
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == sig,
          "%s: child %s, expected signal %d (%s)", what,
          wxtest_describe(status, buf, sizeof(buf)), sig, strsignal(sig));
    printf("  %s: killed by %s, as expected\n", what, strsignal(sig));
}

static inline void wxtest_expect_exit(const char *what, int status, int code)
{
    char buf[96];
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == code,
          "%s: child %s, expected exit %d", what,
          wxtest_describe(status, buf, sizeof(buf)), code);
    printf("  %s: exited %d, as expected\n", what, code);
}

#endif /* WXTEST_H */
