/* Code bytes that change at an address that has already run: freed code
 * replaced by new code at the same address (installed, or written through
 * an in-place reservation) and patched code. Every function runs before
 * its bytes change, so a binary translator that caches translated code
 * runs the old code unless wxjit tells it the bytes changed
 * (src/code_changed.h). Under Valgrind with the dualmap backend, whose
 * writes through the RW view Valgrind cannot see, this test fails without
 * that hook (a reused address returns the old value); natively it checks
 * the same results. */
#include <pthread.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../src/code_changed.h" /* the changes noted for the core sync */
#include "../src/internal.h"     /* the failure-injection seam */
#include "emit.h"
#include "wxtest.h"

static size_t page;
static wxjit_heap *heap;

static void *install_int(int32_t v)
{
    uint8_t buf[32];
    void *exec;
    CHECK_OK(wxjit_install(heap, buf, emit_return_int(buf, v), 0, &exec));
    return exec;
}

/* A function returning v, written through an in-place reservation: at
 * its executable address (toggle) or the RW alias (dualmap). */
static void *commit_in_place(int32_t v)
{
    wxjit_reservation r;
    CHECK_OK(wxjit_reserve(heap, EMIT_RETURN_INT_SIZE, 0,
                           WXJIT_RESERVE_IN_PLACE, &r));
    void *exec = r.exec;
    CHECK_OK(wxjit_commit(heap, &r, emit_return_int(r.write, v)));
    return exec;
}

static void expect_returns(const char *what, void *f, int32_t v)
{
    int got = as_fn(f)();
    CHECK(got == v, "%s: the function at %p returned %d, expected %d", what, f,
          got, v);
}

/* Puts a function returning v at `at`, freed just before: the thread's
 * tail runs on first, the freed space comes back once it is used up.
 * Functions placed elsewhere meanwhile are freed again afterwards. */
static void place_at(void *at, int32_t v, bool in_place)
{
    size_t limit = 2 * (page / EMIT_RETURN_INT_SIZE) + 2, n = 0;
    void **others = malloc(limit * sizeof(*others));
    CHECK(others, "malloc");
    void *got = NULL;
    while (n < limit) {
        got = in_place ? commit_in_place(v) : install_int(v);
        if (got == at)
            break;
        others[n++] = got;
    }
    CHECK(got == at,
          "the freed function's space %p was not reused in %zu "
          "placements",
          at, n);
    for (size_t i = 0; i < n; i++)
        CHECK_OK(wxjit_free(heap, others[i]));
    free(others);
}

static void call_freed(void *f)
{
    as_fn(f)();
}

static void test_reuse(void)
{
    void *f = install_int(1);
    expect_returns("before free", f, 1);
    CHECK_OK(wxjit_free(heap, f));
    wxtest_expect_signal("calling the freed function (it ran before)",
                         wxtest_in_child(call_freed, f), SIGTRAP);

    place_at(f, 2, false);
    expect_returns("installed over freed code", f, 2);
    printf("  reuse: %p returned 1, was freed (a call traps), and the "
           "function installed at the same address returns 2\n",
           f);

    CHECK_OK(wxjit_free(heap, f));
    place_at(f, 3, true);
    expect_returns("reserved in place over freed code", f, 3);
    printf("  reuse: freed again, and an in-place reservation committed "
           "at the same address returns 3\n");
    CHECK_OK(wxjit_free(heap, f));
}

static void test_patch(void)
{
    uint8_t buf[32];
    void *f;
    CHECK_OK(
        wxjit_install(heap, buf, emit_return_int_patchable(buf, 10), 0, &f));
    uint8_t *imm = (uint8_t *)f + EMIT_PATCHABLE_IMM_OFFSET;
    int32_t v = 11;
    expect_returns("before patching", f, 10);
    CHECK_OK(wxjit_patch(heap, imm, &v, sizeof(v)));
    expect_returns("wxjit_patch of the immediate", f, 11);
    CHECK_OK(wxjit_patch_atomic(heap, imm, 12, 4));
    expect_returns("wxjit_patch_atomic of the immediate", f, 12);
    size_t n = emit_return_int_patchable(buf, 13);
    CHECK_OK(wxjit_patch(heap, f, buf, n));
    expect_returns("wxjit_patch of the whole function", f, 13);
    printf("  patch: %p returned 10, then 11, 12 and 13 after each patch\n",
           f);
    CHECK_OK(wxjit_free(heap, f));
}

/* Which operations must sync the other cores (stats.core_syncs, one
 * membarrier each), per CPU, from the manuals' rules as src/arch/ reads
 * them: aarch64 every change to code, x86_64 rewrites of live code,
 * riscv64 none (its icache flush already reaches every hart). */
#if defined(__aarch64__)
#define SYNC_NEW 1
#define SYNC_LIVE 1
#elif defined(__x86_64__)
#define SYNC_NEW 0
#define SYNC_LIVE 1
#else
#define SYNC_NEW 0
#define SYNC_LIVE 0
#endif

static uint64_t core_syncs(void)
{
    return wxtest_stats_of(heap).core_syncs;
}

static void expect_syncs(const char *op, uint64_t before, int want)
{
    uint64_t made = core_syncs() - before;
    CHECK(made == (uint64_t)want, "%s made %llu core syncs, expected %d",
          op, (unsigned long long)made, want);
    printf("    %s: %d core sync(s)\n", op, want);
}

static void test_core_sync(void)
{
    if (syscall(SYS_membarrier, 0 /* MEMBARRIER_CMD_QUERY */, 0, 0) < 0) {
        wxtest_skip("core syncs counted per operation",
                    "this kernel has no membarrier (before Linux 4.3)");
        return;
    }
    uint8_t buf[32];
    void *f;
    CHECK_OK(
        wxjit_install(heap, buf, emit_return_int_patchable(buf, 20), 0, &f));
    uint8_t *imm = (uint8_t *)f + EMIT_PATCHABLE_IMM_OFFSET;
    /* The first sync registers the process (up to 3 calls): done here. */
    CHECK_OK(wxjit_patch_atomic(heap, imm, 21, 4));
    uint64_t s = core_syncs();
    void *g = install_int(22);
    expect_syncs("install", s, SYNC_NEW);
    s = core_syncs();
    int32_t v = 23;
    CHECK_OK(wxjit_patch(heap, imm, &v, sizeof(v)));
    expect_syncs("patch", s, SYNC_LIVE);
    s = core_syncs();
    CHECK_OK(wxjit_patch_atomic(heap, imm, 24, 4));
    expect_syncs("patch_atomic", s, SYNC_LIVE);
    void *w;
    s = core_syncs();
    CHECK_OK(wxjit_window_open(heap, imm, 4, &w));
    expect_syncs("window open", s, 0);
    v = 25;
    memcpy(w, &v, sizeof(v));
    s = core_syncs();
    CHECK_OK(wxjit_window_close(heap, imm, 4));
    expect_syncs("window close", s, SYNC_LIVE);
    expect_returns("after the window", f, 25);
    s = core_syncs();
    CHECK_OK(wxjit_free(heap, g));
    expect_syncs("free", s, SYNC_NEW);
    CHECK_OK(wxjit_free(heap, f));
}

/* Kernels without SYNC_CORE (before 4.16: EINVAL) get GLOBAL; without
 * membarrier at all (ENOSYS), nothing more is tried. A policy that
 * refuses membarrier (seccomp, with whatever errno: EACCES here) is as
 * lasting: GLOBAL is tried once, then nothing. A failure of the moment
 * (ENOMEM, which the kernel may return) makes that one sync GLOBAL and
 * changes nothing after. Each in a child: the choice is made once per
 * process. */
struct fallback {
    const char *what;
    int err;
    uint64_t calls;    /* membarrier calls that fail with err */
    int first, next;   /* calls made by the first patch and the next */
    const char *first_is, *next_is;
};

static const struct fallback fallbacks[] = {
    {"no SYNC_CORE: GLOBAL instead", EINVAL, 1, 2, 1,
     "first patch, SYNC_CORE refused", "next patch (GLOBAL)"},
    {"no membarrier: no core sync", ENOSYS, 2, 2, 0,
     "first patch, membarrier refused", "next patch (none tried)"},
    {"membarrier refused by a policy (EACCES): asked no more", EACCES,
     1000, 2, 0, "first patch, SYNC_CORE and GLOBAL refused",
     "next patch (none tried)"},
    {"SYNC_CORE out of memory once: GLOBAL that time", ENOMEM, 1, 2, 1,
     "first patch, SYNC_CORE failed, GLOBAL made",
     "next patch (SYNC_CORE again)"},
};

static void fallback_child(void *arg)
{
    const struct fallback *fb = arg;
    uint8_t buf[32];
    void *f;
    CHECK_OK(
        wxjit_install(heap, buf, emit_return_int_patchable(buf, 30), 0, &f));
    uint8_t *imm = (uint8_t *)f + EMIT_PATCHABLE_IMM_OFFSET;
    wxj_os_inject(WXJ_CALL_MEMBARRIER, 1, fb->calls, fb->err);
    uint64_t s = core_syncs();
    CHECK_OK(wxjit_patch_atomic(heap, imm, 31, 4));
    expect_syncs(fb->first_is, s, SYNC_LIVE ? fb->first : 0);
    s = core_syncs();
    CHECK_OK(wxjit_patch_atomic(heap, imm, 32, 4));
    expect_syncs(fb->next_is, s, SYNC_LIVE ? fb->next : 0);
    wxj_os_inject(WXJ_CALL_MEMBARRIER, 1, 0, 0);
    expect_returns("patched", f, 32);
}

static void test_core_sync_fallback(void)
{
    for (size_t i = 0; i < sizeof(fallbacks) / sizeof(fallbacks[0]); i++)
        wxtest_expect_exit_within(fallbacks[i].what, fallback_child,
                                  (void *)&fallbacks[i], 30, 0);
}

/* A thread that exits with a window on live code open has it closed for
 * it ("as they are"): from then on every thread runs what it wrote, so
 * that close syncs the cores as wxjit_window_close does. Seen through the
 * seam: the exiting thread's membarrier calls fail with ENOSYS, after
 * which the process tries no more (the fallback ladder), so the next
 * patch makes no core sync; had the exit made none, that patch makes
 * one. In a child: the ladder's choice is the process's. */
static void *exit_with_window(void *imm)
{
    void *w;
    int32_t v = 41;
    CHECK_OK(wxjit_window_open(heap, imm, sizeof(v), &w));
    wxj_os_inject(WXJ_CALL_MEMBARRIER, 1, 2, ENOSYS);
    memcpy(w, &v, sizeof(v));
    return NULL; /* the window is still open */
}

static void exit_child(void *unused)
{
    (void)unused;
    uint8_t buf[32];
    void *f;
    pthread_t t;
    CHECK_OK(
        wxjit_install(heap, buf, emit_return_int_patchable(buf, 40), 0, &f));
    uint8_t *imm = (uint8_t *)f + EMIT_PATCHABLE_IMM_OFFSET;
    CHECK_OK(pthread_create(&t, NULL, exit_with_window, imm));
    CHECK_OK(pthread_join(t, NULL));
    expect_returns("closed at its thread's exit", f, 41);
    uint64_t s = core_syncs();
    CHECK_OK(wxjit_patch_atomic(heap, imm, 42, 4));
    /* SYNC_LIVE or not: 0 (riscv64 never syncs). */
    expect_syncs("patch after the exit's core sync gave up on membarrier", s,
                 0);
    expect_returns("patched", f, 42);
}

static void test_exit_syncs(void)
{
    if (!SYNC_LIVE) {
        wxtest_skip("a window closed at thread exit syncs the cores",
                    "this CPU needs no core sync for live code");
        return;
    }
    wxtest_expect_exit_within("a window closed at thread exit syncs the cores",
                              exit_child, NULL, 30, 0);
}

/* Code changes made outside an operation (code run by a backend probe in
 * a private page; a fork child's closes and aborts for threads it does not
 * have) need no core sync: no other thread runs that code. They must not
 * stay noted either, or the thread's next operation, in any heap, makes a
 * membarrier for them (aarch64) and counts it. */
static void expect_no_changes_noted(const char *after)
{
    CHECK(wxj_code_changes == 0, "changes noted after %s: %#x", after,
          wxj_code_changes);
    printf("    no code change noted after %s\n", after);
}

static wxjit_reservation held;
static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t held_changed = PTHREAD_COND_INITIALIZER;
static int held_state;

static void set_held_state(int v)
{
    pthread_mutex_lock(&held_lock);
    held_state = v;
    pthread_cond_broadcast(&held_changed);
    pthread_mutex_unlock(&held_lock);
}

static void wait_held_state(int v)
{
    pthread_mutex_lock(&held_lock);
    while (held_state != v)
        pthread_cond_wait(&held_changed, &held_lock);
    pthread_mutex_unlock(&held_lock);
}

/* Holds an in-place reservation and a window on live code across a fork. */
static void *hold_across_fork(void *imm)
{
    void *w;
    CHECK_OK(wxjit_reserve(heap, 64, 0, WXJIT_RESERVE_IN_PLACE, &held));
    CHECK_OK(wxjit_window_open(heap, imm, 4, &w));
    set_held_state(1);
    wait_held_state(2);
    CHECK_OK(wxjit_window_close(heap, imm, 4));
    CHECK_OK(wxjit_abort(heap, &held));
    return NULL;
}

static void test_changes_outside_operations(void)
{
    const char *reason;
    wxj_core_sync_changes();
    (void)wxjit_backend_probe(WXJIT_BACKEND_DUALMAP, &reason);
    expect_no_changes_noted("probing dualmap");
    (void)wxjit_backend_probe(WXJIT_BACKEND_PROCMEM, &reason);
    expect_no_changes_noted("probing procmem");
    wxjit_heap *other;
    CHECK_OK(wxjit_heap_create(NULL, &other));
    expect_no_changes_noted("creating an AUTO heap");
    CHECK_OK(wxjit_heap_destroy(other));

    uint8_t buf[32];
    void *f;
    pthread_t t;
    CHECK_OK(
        wxjit_install(heap, buf, emit_return_int_patchable(buf, 50), 0, &f));
    held_state = 0;
    CHECK_OK(pthread_create(&t, NULL, hold_across_fork,
                            (uint8_t *)f + EMIT_PATCHABLE_IMM_OFFSET));
    wait_held_state(1);
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        /* The holder's window was closed and its reservation aborted. */
        if (wxj_code_changes != 0) {
            printf("changes noted in a fork child: %#x\n", wxj_code_changes);
            fflush(stdout);
            _exit(1);
        }
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    set_held_state(2);
    CHECK_OK(pthread_join(t, NULL));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "a fork child kept the changes of its closes and aborts noted");
    printf("    no code change noted in a fork child that closed another "
           "thread's window and aborted its in-place reservation\n");
    CHECK_OK(wxjit_free(heap, f));
}

/* A patch that fails before it writes anything (toggle: the flip to RW
 * refused) changed no code and syncs no core. Its membarrier calls are
 * counted on the thread: a failed operation adds nothing to the stats. */
static void test_failed_patch(void)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    o.backend = WXJIT_BACKEND_TOGGLE;
    wxjit_heap *t;
    if (wxjit_heap_create(&o, &t)) {
        wxtest_skip("a patch that wrote nothing syncs no core",
                    "no toggle heap here");
        return;
    }
    uint8_t buf[32];
    void *f;
    CHECK_OK(wxjit_install(t, buf, emit_return_int_patchable(buf, 60), 0, &f));
    uint8_t *imm = (uint8_t *)f + EMIT_PATCHABLE_IMM_OFFSET;
    int32_t v = 61;
    uint64_t m = wxj_os_calls_of(WXJ_CALL_MEMBARRIER);
    wxj_os_inject(WXJ_CALL_MPROTECT, 1, 1, ENOMEM);
    CHECK_EQ(wxjit_patch(t, imm, &v, sizeof(v)), ENOMEM);
    wxj_os_inject(WXJ_CALL_MPROTECT, 1, 0, 0);
    CHECK(wxj_os_calls_of(WXJ_CALL_MEMBARRIER) == m,
          "a patch that failed before writing made %llu membarrier calls",
          (unsigned long long)(wxj_os_calls_of(WXJ_CALL_MEMBARRIER) - m));
    expect_returns("after the failed patch", f, 60);
    CHECK_OK(wxjit_patch(t, imm, &v, sizeof(v)));
    CHECK(wxj_os_calls_of(WXJ_CALL_MEMBARRIER) - m == (SYNC_LIVE ? 1u : 0u),
          "the patch retried made %llu membarrier calls",
          (unsigned long long)(wxj_os_calls_of(WXJ_CALL_MEMBARRIER) - m));
    expect_returns("after the patch", f, 61);
    printf("    patch refused before writing (mprotect ENOMEM): 0 "
           "membarrier calls; retried: %d\n", SYNC_LIVE);
    CHECK_OK(wxjit_heap_destroy(t));
}

int main(void)
{
    wxtest_enter_wx_policy();
    wxtest_require_alias_writes_run("test_code_change");
    page = (size_t)sysconf(_SC_PAGESIZE);
    CHECK_OK(wxjit_heap_create(NULL, &heap));
    wxjit_backend b;
    const char *name;
    CHECK_OK(wxjit_heap_backend(heap, &b));
    CHECK_OK(wxjit_backend_name(b, &name));
    printf("test_code_change (%s%s):\n", name,
           wxtest_valgrind() ? ", under Valgrind" : "");
    test_reuse();
    test_patch();
    test_core_sync();
    test_core_sync_fallback();
    test_exit_syncs();
    test_failed_patch();
    test_changes_outside_operations();
    CHECK_EQ(wxtest_wx_mappings(), 0);
    CHECK_OK(wxjit_heap_destroy(heap));
    printf("test_code_change: ok\n");
    return 0;
}
