/* Test helpers every test uses: loud assertions, the checking tools a test
 * may run under (and skipping what they make impossible), the
 * kernel-enforced W^X policy, heaps and their statistics, choosing
 * scenarios. */
#ifndef WXTEST_CORE_H
#define WXTEST_CORE_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wx_policy.h"
#include "wxjit.h"
#include "wxtest_check.h"

typedef int (*int_fn)(void);

static inline int_fn as_fn(void *code)
{
    int_fn fn;
    memcpy(&fn, &code, sizeof(fn));
    return fn;
}

/* ---- checking tools -------------------------------------------------------
 * The same tests run natively and under ASan+UBSan, TSan and Valgrind
 * memcheck (make check-asan, check-tsan, check-valgrind). A check that a
 * tool makes impossible is skipped with its reason printed (wxtest_skip),
 * a whole test with exit status WXTEST_SKIPPED, which ctest reports as
 * "Skipped": never a silent pass. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WXTEST_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define WXTEST_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(WXTEST_ASAN)
#define WXTEST_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__) && !defined(WXTEST_TSAN)
#define WXTEST_TSAN 1
#endif
#ifdef WXJIT_HAVE_VALGRIND_H
#include <valgrind/memcheck.h>
#endif

#define WXTEST_SKIPPED 77 /* SKIP_RETURN_CODE in tests/CMakeLists.txt */

static inline bool wxtest_valgrind(void)
{
#ifdef WXJIT_HAVE_VALGRIND_H
    return RUNNING_ON_VALGRIND;
#else
    return false; /* the build has no client requests: see CMakeLists */
#endif
}

/* Under a user-mode emulator (qemu-user running a cross build, see
 * tools/wx_policy.h): what runs on what, for messages; NULL natively. */
static inline const char *wxtest_emulator(void)
{
    static char what[96];
    char kernel[32];
    if (!what[0] && wx_policy_emulated(kernel, sizeof(kernel)))
        snprintf(what, sizeof(what),
                 "user-mode emulation (%s program, %s "
                 "kernel)",
                 WX_POLICY_ARCH_NAME, kernel);
    return what[0] ? what : NULL;
}

/* The tool the test runs under, for messages; NULL natively. */
static inline const char *wxtest_tool(void)
{
#if defined(WXTEST_ASAN)
    return "ASan";
#elif defined(WXTEST_TSAN)
    return "TSan";
#else
    return wxtest_valgrind() ? "Valgrind" : wxtest_emulator();
#endif
}

/* How many times slower than a native run each round of a test's loops is
 * here. Loops that race threads, or repeat work until something rare
 * happens, run wxtest_rounds(N) times instead of N, so that a slow tool
 * spends about as long on them as a native run does rather than a hundred
 * times longer. Valgrind (one thread at a time, each call ~100x slower):
 * 50. A run under full-system emulation (make check-arm64-system) sets
 * WXTEST_SLOWDOWN; a value that is not a whole number >= 1 fails the
 * test rather than silently running the native counts. */
static inline long wxtest_slowdown(void)
{
    const char *env = getenv("WXTEST_SLOWDOWN");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        CHECK(*end == 0 && v >= 1,
              "WXTEST_SLOWDOWN=%s: not a whole number >= 1", env);
        return v;
    }
    return wxtest_valgrind() ? 50 : 1;
}

/* N rounds scaled by wxtest_slowdown(), at least 1. */
static inline int wxtest_rounds(int native)
{
    long n = native / wxtest_slowdown();
    return n > 0 ? (int)n : 1;
}

/* ASan and TSan install a SIGSEGV handler and an alternate signal stack
 * for every thread before main: a fault wxjit forwards reaches their
 * report, not the default action, and no thread is without an alternate
 * stack. */
static inline bool wxtest_sanitizer_signals(void)
{
#if defined(WXTEST_ASAN) || defined(WXTEST_TSAN)
    return true;
#else
    return false;
#endif
}

/* "SKIPPED under TOOL: " or, natively (a kernel without a feature),
 * "SKIPPED: ". */
static inline void wxtest_print_skipped(void)
{
    const char *tool = wxtest_tool();
    if (tool)
        printf("SKIPPED under %s: ", tool);
    else
        printf("SKIPPED: ");
}

static inline void wxtest_skip(const char *what, const char *why)
{
    printf("  ");
    wxtest_print_skipped();
    printf("%s: %s\n", what, why);
}

static inline void wxtest_skip_all(const char *test, const char *why)
{
    printf("%s: ", test);
    wxtest_print_skipped();
    printf("%s\n", why);
    exit(WXTEST_SKIPPED);
}

/* What the calling thread does next is an invalid access on purpose (a
 * death test's NULL dereference or jump to unmapped memory): memcheck is
 * told not to count it, or --error-exitcode would replace the exit status
 * the test checks. Only for the rest of the thread's life: call it just
 * before the access, in the child that is to die of it. */
static inline void wxtest_invalid_access_follows(void)
{
#ifdef WXJIT_HAVE_VALGRIND_H
    VALGRIND_DISABLE_ERROR_REPORTING;
#endif
}

/* ---- the W^X policy ----------------------------------------------------- */

/* Whether wxtest_enter_wx_policy puts the kernel-enforced policy in
 * place: everywhere but under Valgrind and user-mode emulation. */
static inline bool wxtest_policy_enforced(void)
{
    return !wxtest_valgrind() && !wxtest_emulator();
}

/* Under an emulator, the backend WXJIT_BACKEND names (ctest runs every
 * heap test once per backend that way) may refuse to create heaps at all:
 * procmem's probe finds that code written through /proc/self/mem does not
 * run when the emulator keeps its translation. The test then skips whole,
 * with the probe's reason. (dualmap is taken as given when asked for by
 * name; tests that run rewritten code skip on their own.) Natively a
 * backend that does not work is a failure. */
static inline void wxtest_require_env_backend(void)
{
    const char *env = getenv("WXJIT_BACKEND"), *name, *reason = "";
    wxjit_heap *h;
    if (!env || !*env)
        return;
    int err = wxjit_heap_create(NULL, &h);
    if (err == 0) {
        wxjit_heap_destroy(h);
        return;
    }
    for (int b = 1; wxjit_backend_name((wxjit_backend)b, &name) == 0; b++)
        if (!strcmp(env, name))
            wxjit_backend_probe((wxjit_backend)b, &reason);
    if (wxtest_emulator()) {
        char why[256];
        snprintf(why, sizeof(why), "backend %s does not work here: %s", env,
                 reason ? reason : "");
        wxtest_skip_all(program_invocation_short_name, why);
    }
    CHECK(0, "backend %s does not work here: %s (%s)", env,
          reason ? reason : "", strerror(err));
}

/* The W^X policy (tools/wx_policy.h) or a loud failure, then the backend
 * check above. Not under
 * Valgrind, which (3.19) does not implement seccomp(2) and, were it to,
 * would be stopped by the filter: its own translation cache and heap are
 * RWX mappings that it adds as the program runs. There the W+X checks
 * (wxtest_wx_mappings) still read /proc/self/maps. */
static inline void wxtest_enter_wx_policy(void)
{
    if (wxtest_valgrind()) {
        printf("  W^X seccomp policy NOT entered under Valgrind (no "
               "seccomp(2); Valgrind maps its own code cache RWX): W+X "
               "checks count the program's own mappings only\n");
        wxtest_require_env_backend();
        return;
    }
    int err = wx_policy_enter();
    if (err == WX_POLICY_EMULATED)
        printf("  W^X seccomp policy NOT entered under %s: qemu-user "
               "refuses seccomp, and a filter for this ABI would judge the "
               "emulator's own system calls; W+X checks read the emulated "
               "/proc/self/maps\n",
               wxtest_emulator());
    else
        CHECK(err == 0, "entering the W^X policy: %s", strerror(err));
    wxtest_require_env_backend();
}

/* ---- heaps and their statistics ----------------------------------------- */

/* pthread_create and pthread_join, failing loudly. */
static inline pthread_t wxtest_spawn(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    int err = pthread_create(&t, NULL, fn, arg);
    CHECK(err == 0, "pthread_create: %s", strerror(err));
    return t;
}

static inline void wxtest_join(pthread_t t)
{
    int err = pthread_join(t, NULL);
    CHECK(err == 0, "pthread_join: %s", strerror(err));
}

static inline wxjit_heap *wxtest_heap_of(wxjit_backend backend)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    wxjit_heap *h;
    o.backend = backend;
    CHECK_OK(wxjit_heap_create(&o, &h));
    return h;
}

static inline wxjit_stats wxtest_stats_of(wxjit_heap *h)
{
    wxjit_stats s;
    CHECK_OK(wxjit_stats_get(h, &s));
    return s;
}

/* Fails naming every counter that differs between a and b, optionally
 * leaving out the ones a new chunk moves (bytes_mapped, chunks, pages). */
static inline void wxtest_check_stats_same(const char *what,
                                           const wxjit_stats *a,
                                           const wxjit_stats *b,
                                           bool except_mapping)
{
#define WXTEST_STAT(f)                                                        \
    {                                                                         \
#f, a->f, b->f, false                                                 \
    }
#define WXTEST_MAPSTAT(f)                                                     \
    {                                                                         \
#f, a->f, b->f, true                                                  \
    }
    const struct {
        const char *name;
        uint64_t was, now;
        bool mapping;
    } fields[] = {WXTEST_STAT(installs),        WXTEST_STAT(frees),
                  WXTEST_STAT(bytes_live),      WXTEST_MAPSTAT(bytes_mapped),
                  WXTEST_MAPSTAT(pages),        WXTEST_MAPSTAT(chunks),
                  WXTEST_STAT(mprotect_calls),  WXTEST_STAT(map_calls),
                  WXTEST_STAT(syscalls),        WXTEST_STAT(faults_retried),
                  WXTEST_STAT(faults_forwarded), WXTEST_STAT(shared_locks)};
#undef WXTEST_STAT
#undef WXTEST_MAPSTAT
    bool same = true;
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        if (fields[i].was != fields[i].now &&
            !(except_mapping && fields[i].mapping)) {
            fprintf(stderr, "  %s: stats.%s %llu -> %llu\n", what,
                    fields[i].name, (unsigned long long)fields[i].was,
                    (unsigned long long)fields[i].now);
            same = false;
        }
    CHECK(same, "%s changed statistics (listed above)", what);
}

/* Which backend AUTO (and the WXJIT_BACKEND environment variable) picks,
 * for the log. */
static inline void wxtest_print_backend(void)
{
    wxjit_heap *h;
    wxjit_backend b;
    const char *name;
    CHECK_OK(wxjit_heap_create(NULL, &h));
    CHECK_OK(wxjit_heap_backend(h, &b));
    CHECK_OK(wxjit_heap_destroy(h));
    CHECK_OK(wxjit_backend_name(b, &name));
    printf("  backend: %s\n", name);
}

/* ---- choosing scenarios --------------------------------------------------
 * `test_x name...` runs only the named scenarios of a test program (to
 * see each one fail or pass on its own); with no argument, all of them. */
static inline bool wxtest_selected(int argc, char **argv, const char *name)
{
    if (argc < 2)
        return true;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], name))
            return true;
    return false;
}

#endif /* WXTEST_CORE_H */
