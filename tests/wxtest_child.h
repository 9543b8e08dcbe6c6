/* Test helpers that run code in a child process and check how it ended:
 * death tests (the exact signal or exit status) and hangs turned into
 * failures. */
#ifndef WXTEST_CHILD_H
#define WXTEST_CHILD_H

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "wxtest_core.h"

/* ---- death tests -------------------------------------------------------- */

/* Forks a child without core dumps that runs fn(arg) and exits 0. */
static inline pid_t wxtest_fork_running(void (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        fn(arg);
        fflush(NULL);
        _exit(0);
    }
    return pid;
}

/* Runs fn(arg) in a child without core dumps; returns its wait status. */
static inline int wxtest_in_child(void (*fn)(void *), void *arg)
{
    pid_t pid = wxtest_fork_running(fn, arg);
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

/* ---- hangs become failures ---------------------------------------------
 * A deadlock must fail the test, not stall ctest: the parent polls the
 * child and kills it with SIGKILL once `seconds` have passed. Not alarm():
 * the child may run SIGALRM timers of its own. */
static inline int wxtest_in_child_within(void (*fn)(void *), void *arg,
                                         unsigned seconds, bool *hung)
{
    pid_t pid = wxtest_fork_running(fn, arg);
    struct timespec now, deadline, tick = {0, 1000000}; /* 1 ms */
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += seconds;
    int status;
    *hung = false;
    for (;;) {
        pid_t got = waitpid(pid, &status, WNOHANG);
        CHECK(got >= 0, "waitpid: %s", strerror(errno));
        if (got == pid)
            return status;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > deadline.tv_sec ||
            (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec))
            break;
        nanosleep(&tick, NULL);
    }
    *hung = true;
    kill(pid, SIGKILL);
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
    return status;
}

/* fn(arg) in a child must exit with code within `seconds`; a child still
 * running then is reported as hung. */
static inline void wxtest_expect_exit_within(const char *what,
                                             void (*fn)(void *), void *arg,
                                             unsigned seconds, int code)
{
    bool hung;
    int status = wxtest_in_child_within(fn, arg, seconds, &hung);
    CHECK(!hung, "%s: hung (child still running after %u s, killed)", what,
          seconds);
    wxtest_expect_exit(what, status, code);
}

#endif /* WXTEST_CHILD_H */
