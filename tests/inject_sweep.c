/* The failure-injection sweep itself: for each scenario and variant, each
 * point (which call fails, once or from then on) runs in a child of its
 * own with a timeout; a crash, a hang or a failed check there is reported
 * and the sweep goes on. */
#include <signal.h>
#include <sys/mman.h>

#include "inject_harness.h"

#define PERSISTENT 1000000u /* "every call from the n-th on" */
#define POINT_TIMEOUT 10    /* seconds: a point that takes longer hangs */
#define FIRST_VALUE 100

size_t page;
wxjit_backend backend;

/* The kinds a test can make fail, with the errno a real failure of that
 * call would most plausibly give; K_* index the first three. */
enum { K_MMAP, K_MUNMAP, K_MPROTECT };
static const struct {
    enum wxj_os_call kind;
    const char *name;
    int err;
} kinds[] = {
    {WXJ_CALL_MMAP, "mmap", ENOMEM},
    {WXJ_CALL_MUNMAP, "munmap", EINVAL},
    {WXJ_CALL_MPROTECT, "mprotect", ENOMEM},
    {WXJ_CALL_OBJECT, "object", EMFILE},
    {WXJ_CALL_FTRUNCATE, "ftruncate", ENOSPC},
    {WXJ_CALL_PWRITE, "pwrite", EIO},
};
#define NKINDS (sizeof(kinds) / sizeof(kinds[0]))

/* What a point's child reports to the parent (shared memory). */
struct outcome {
    int done; /* the child reached the end of its checks */
    int ret;
    int deferred; /* live pages not r-x right after a failure */
    uint64_t calls[NKINDS];
    char stage[96]; /* the last step the child began, for a crash */
};

static struct outcome *outcome;

static void stage(const char *what)
{
    snprintf(outcome->stage, sizeof(outcome->stage), "%s", what);
}

/* ---- one point, in a child ----------------------------------------------
 * A variant: heap flags, and (dualmap) the first way to get a shared
 * memory object, whose fallbacks are swept with the calls that map a new
 * chunk; for one backend only, or (AUTO) for every backend. */
struct variant {
    unsigned flags;
    const char *object; /* WXJIT_DUALMAP_OBJECT; NULL: the default */
    const char *label;
    wxjit_backend only;
    /* Scenarios (by name) refused by design under these flags, where
     * test_windows checks the refusal: not swept. */
    const char *refuses;
};

static const struct variant variants[] = {
    {0, NULL, "", WXJIT_BACKEND_AUTO, NULL},
    /* No stable write address for a window: ENOTSUP. */
    {WXJIT_HEAP_RW_ON_DEMAND, NULL, " [RW_ON_DEMAND]", WXJIT_BACKEND_DUALMAP,
     "window"},
    {0, "shm", " [object shm]", WXJIT_BACKEND_DUALMAP, NULL},
    {0, "tmpfile", " [object tmpfile]", WXJIT_BACKEND_DUALMAP, NULL},
    /* setup also frees a function next to the executor's, whose trap fill
     * is then pending on the page the call writes (defer_a_free). */
    {WXJIT_HEAP_DEFER_TRAP_FILL, NULL, " [DEFER_TRAP_FILL]",
     WXJIT_BACKEND_TOGGLE, NULL},
    {WXJIT_HEAP_DEFER_TRAP_FILL, NULL, " [DEFER_TRAP_FILL]",
     WXJIT_BACKEND_PROCMEM, NULL},
};

struct point {
    const struct scenario *s;
    const struct variant *v;
    int kind; /* index into kinds[], -1: unarmed */
    uint64_t nth, count;
    struct outcome *out;
};

static void run_point(void *arg)
{
    const struct point *pt = arg;
    alarm(POINT_TIMEOUT);
    stage("setup");
    C.flags = pt->v->flags;
    if (pt->v->object)
        setenv("WXJIT_DUALMAP_OBJECT", pt->v->object, 1);
    C.next_value = FIRST_VALUE;
    pt->s->setup();
    if (C.h && (C.flags & WXJIT_HEAP_DEFER_TRAP_FILL))
        defer_a_free();
    wxjit_stats before = {0}, after;
    if (C.h)
        before = wxtest_stats_of(C.h);
    uint64_t calls[NKINDS], all = wxj_os_calls();
    for (size_t k = 0; k < NKINDS; k++)
        calls[k] = wxj_os_calls_of(kinds[k].kind);
    enum wxj_os_call kind = pt->kind >= 0 ? kinds[pt->kind].kind : 0;
    if (pt->kind >= 0)
        wxj_os_inject(kind, pt->nth, pt->count, kinds[pt->kind].err);
    bool had_heap = C.h != NULL;
    stage("the call");
    int err = pt->s->op();
    if (pt->kind >= 0)
        wxj_os_inject(kind, 1, 0, 0);
    for (size_t k = 0; k < NKINDS; k++)
        pt->out->calls[k] = wxj_os_calls_of(kinds[k].kind) - calls[k];
    all = wxj_os_calls() - all;
    pt->out->ret = err;
    CHECK(err == 0 ||
              (pt->kind >= 0 && (err == kinds[pt->kind].err || err == ENOMEM)),
          "returned %d (%s)%s", err, strerror(err),
          pt->kind >= 0 ? ", neither the injected errno nor ENOMEM"
                        : " with nothing injected");

    snprintf(outcome->stage, sizeof(outcome->stage),
             "checks after the call returned %d", err);
    pt->s->done(err);
    if (had_heap) {
        after = wxtest_stats_of(C.h);
        check_stats(&before, &after, err != 0, all, pt->out->calls[K_MPROTECT],
                    pt->out->calls[K_MMAP] + pt->out->calls[K_MUNMAP]);
    }
    check_bytes();
    check_traps();
    /* Right after a failure a page of live code may still be waiting for
     * its RX flip (executors wait meanwhile); after success never. */
    pt->out->deferred = check_pages(err == 0, err ? "right after the "
                                                    "failed call"
                                                  : "right after the call "
                                                    "returned 0");
    if (pt->out->deferred) {
        /* Executors of that code must wait, not crash: give the
         * executor time to run into the page. */
        stage("executor waiting on a page left unexecutable");
        usleep(20000);
    }
    call_fns(true);

    stage("closing open reservations and windows");
    close_open_reservations();
    close_open_window();
    stage("install, call, free after the call");
    check_usable();
    stage("final checks");
    check_pages(true, "after closing reservations and one more install");
    check_bytes();
    check_traps();
    call_fns(false);
    stage("calls from another thread");
    call_all_from_another_thread();
    stage("stopping the executor");
    executor_stop();
    stage("heap destroy");
    CHECK_OK(wxjit_heap_destroy(C.h));
    pt->out->done = 1;
}

/* A fault that wxjit did not retry reaches this handler (installed before
 * wxjit's, which forwards to it): a thread crashed on wxjit code. Says
 * where, then the child exits with CRASHED. Async-signal-safe. */
#define CRASHED 70

static void put_hex(char *p, uintptr_t v)
{
    for (int i = 15; i >= 0; i--, v >>= 4)
        p[i] = "0123456789abcdef"[v & 15];
}

static void on_crash(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    char msg[] = "  crash: signal xx at address 0x................ (a "
                 "thread was not held by the fault handler)\n";
    msg[16] = (char)('0' + sig / 10);
    msg[17] = (char)('0' + sig % 10);
    put_hex(msg + 32, (uintptr_t)si->si_addr);
    if (write(2, msg, sizeof(msg) - 1) < 0)
        _exit(CRASHED);
    _exit(CRASHED);
}

static void catch_crashes(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_crash;
    sa.sa_flags = SA_SIGINFO;
    CHECK(sigaction(SIGSEGV, &sa, NULL) == 0, "sigaction");
}

/* ---- the sweep (parent) ------------------------------------------------- */
struct tally {
    unsigned points, ok, failed_clean, deferred, bad;
};

static unsigned total_points, total_bad;

static const char *describe(const struct point *pt, char *buf, size_t len)
{
    if (pt->kind < 0)
        snprintf(buf, len, "%s%s, nothing injected", pt->s->name,
                 pt->v->label);
    else
        snprintf(buf, len, "%s%s, %s call #%llu %s (%s)", pt->s->name,
                 pt->v->label, kinds[pt->kind].name,
                 (unsigned long long)pt->nth,
                 pt->count == 1 ? "fails" : "and all later fail",
                 strerror(kinds[pt->kind].err));
    return buf;
}

/* Runs one point; false (and says why) if it failed. */
static bool sweep_point(const struct point *pt, struct tally *t)
{
    memset(pt->out, 0, sizeof(*pt->out));
    int status = wxtest_in_child(run_point, (void *)pt);
    char what[256], how[96];
    total_points++;
    if (t)
        t->points++;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && pt->out->done) {
        if (t) {
            t->ok += pt->out->ret == 0;
            t->failed_clean += pt->out->ret != 0;
            t->deferred += pt->out->deferred != 0;
        }
        return true;
    }
    total_bad++;
    if (t)
        t->bad++;
    bool crashed = WIFEXITED(status) && WEXITSTATUS(status) == CRASHED;
    fprintf(stderr, "  FAILED: %s: child %s%s during %s\n",
            describe(pt, what, sizeof(what)),
            crashed ? "crashed (SIGSEGV)"
                    : wxtest_describe(status, how, sizeof(how)),
            WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM
                ? " (hung: timed out)"
                : "",
            pt->out->stage);
    return false;
}

static void sweep(const struct scenario *s, const struct variant *v,
                  struct outcome *out)
{
    struct point pt = {s, v, -1, 0, 0, out};
    char what[256];
    if (!sweep_point(&pt, NULL)) {
        printf("  %s: fails with nothing injected; not swept\n",
               describe(&pt, what, sizeof(what)));
        return;
    }
    uint64_t n[NKINDS];
    memcpy(n, out->calls, sizeof(n));
    printf("  %s%s:", s->name, v->label);
    for (size_t k = 0; k < NKINDS; k++)
        if (n[k])
            printf(" %s %llu", kinds[k].name, (unsigned long long)n[k]);
    printf("%s\n", n[0] + n[1] + n[2] + n[3] + n[4] + n[5]
                       ? ""
                       : " no system call that can fail");
    fflush(stdout);
    for (size_t k = 0; k < NKINDS; k++) {
        if (!n[k])
            continue;
        struct tally t = {0};
        for (uint64_t i = 1; i <= n[k]; i++)
            for (int persistent = 0; persistent < 2; persistent++) {
                pt.kind = (int)k;
                pt.nth = i;
                pt.count = persistent ? PERSISTENT : 1;
                sweep_point(&pt, &t);
            }
        printf("    %-9s %3u points: %u returned 0, %u failed cleanly "
               "(%u of them left live code unexecutable until the next "
               "call), %u FAILED\n",
               kinds[k].name, t.points, t.ok, t.failed_clean, t.deferred,
               t.bad);
        fflush(stdout);
    }
}

int inject_main(const struct scenario *scenarios, size_t nscenarios, int argc,
                char **argv)
{
    wxtest_enter_wx_policy();
    wxtest_require_alias_writes_run("test_inject");
    page = (size_t)sysconf(_SC_PAGESIZE);
    catch_crashes();
    CHECK_OK(wxjit_fault_handler_install());
    wxjit_heap *h;
    CHECK_OK(wxjit_heap_create(NULL, &h));
    CHECK_OK(wxjit_heap_backend(h, &backend));
    CHECK_OK(wxjit_heap_destroy(h));
    const char *name;
    CHECK_OK(wxjit_backend_name(backend, &name));
    printf("test_inject (%s)\n", name);
    struct outcome *out = outcome =
        mmap(NULL, sizeof(*out), PROT_READ | PROT_WRITE,
             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(out != MAP_FAILED, "mmap: %s", strerror(errno));

    /* dualmap: every operation also with RW views on demand; the other
     * objects only where a chunk is mapped. toggle: also with deferred
     * trap fills. */
    for (size_t v = 0; v < sizeof(variants) / sizeof(variants[0]); v++)
        for (size_t i = 0; i < nscenarios; i++)
            if ((!variants[v].only || variants[v].only == backend) &&
                (argc < 2 || strstr(scenarios[i].name, argv[1])) &&
                (!variants[v].object || strstr(scenarios[i].name, "create") ||
                 strstr(scenarios[i].name, "chunk")) &&
                (!variants[v].refuses ||
                 !strstr(scenarios[i].name, variants[v].refuses)))
                sweep(&scenarios[i], &variants[v], out);
    CHECK_EQ(wxtest_wx_mappings(), 0);
    printf("test_inject: %u points, %u failed\n", total_points, total_bad);
    CHECK(total_bad == 0, "%u of %u points failed (listed above)", total_bad,
          total_points);
    printf("test_inject: ok\n");
    return 0;
}
