/* Shared test helpers: loud assertions, the kernel-enforced W^X policy,
 * death tests in child processes, /proc/self/maps checks. */
#ifndef WXTEST_H
#define WXTEST_H


#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "wx_policy.h"
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

/* The W^X policy (tools/wx_policy.h) or a loud failure. */
static inline void wxtest_enter_wx_policy(void)
{
    int err = wx_policy_enter();
    CHECK(err == 0, "entering the W^X policy: %s", strerror(err));
}

static inline int wxtest_wx_mappings(void)
{
    int n = wx_policy_wx_mappings();
    CHECK(n >= 0, "cannot read /proc/self/maps");
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
