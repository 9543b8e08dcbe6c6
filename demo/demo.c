/* wxjit demo (`make demo`): a small expression JIT under a kernel-enforced
 * W^X policy. Four threads compile thousands of random expressions to
 * native code, naming each for profilers (wxjit_describe), while two
 * threads call them and check every result against an interpreter, once
 * per backend this system allows (the others are named with the reason:
 * README "Hardened systems"), then a summary table. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "expr.h"
#include "wx_policy.h"
#include "wxjit.h"

#define COMPILERS 4
#define CALLERS 2

/* How much work: `wxjit-demo --quick` does a tenth of the compiling and a
 * twentieth of the calling, for tests/test_hardened.c, which runs the demo
 * under each hardening policy. */
static struct {
    int per_compiler;
    unsigned long min_calls; /* per caller, after compiling is done */
} size = {2500, 2000000};
#define FUNCTIONS (COMPILERS * size.per_compiler)

struct compiled {
    _Atomic(expr_fn) fn;
    struct expr e;
    int root;
};

struct run {
    wxjit_backend backend;
    wxjit_heap *heap;
    struct compiled *table;
    atomic_int compilers_done;
    atomic_ulong calls, wrong;
    double seconds;
    wxjit_stats stats;
    int wx_mappings;
};

static void fail(const char *what, int err)
{
    fprintf(stderr, "demo: %s: %s\n", what, strerror(err));
    exit(1);
}

struct worker {
    struct run *run;
    int index;
};

static void *compiler_main(void *arg)
{
    struct worker *w = arg;
    struct run *run = w->run;
    unsigned seed = 1000u + (unsigned)w->index;
    uint8_t code[EXPR_MAX_CODE];
    for (int i = w->index * size.per_compiler;
         i < (w->index + 1) * size.per_compiler; i++) {
        struct compiled *c = &run->table[i];
        c->root = expr_random(&c->e, &seed);
        void *exec;
        int err = wxjit_install(run->heap, code,
                                expr_compile(&c->e, c->root, code), 0, &exec);
        if (err)
            fail("wxjit_install", err);
        /* Named for profilers and debuggers: `make profile` runs the demo
         * under perf with WXJIT_PERF=jitdump (README "Profiling and
         * debugging"); without it this only checks the arguments. */
        char name[300];
        int len = snprintf(name, sizeof(name), "expr#%d ", i);
        expr_format(&c->e, c->root, name + len, sizeof(name) - (size_t)len);
        wxjit_code_info info = WXJIT_CODE_INFO_INIT;
        info.name = name;
        if ((err = wxjit_describe(run->heap, exec, &info)))
            fail("wxjit_describe", err);
        expr_fn fn;
        memcpy(&fn, &exec, sizeof(fn));
        /* release: a caller that sees fn sees c->e too. */
        atomic_store_explicit(&c->fn, fn, memory_order_release);
    }
    atomic_fetch_add(&run->compilers_done, 1);
    return NULL;
}

/* Calls the newest functions while they are being compiled (their pages
 * are the ones being written), then random ones. */
static void *caller_main(void *arg)
{
    struct worker *w = arg;
    struct run *run = w->run;
    unsigned seed = 77u + (unsigned)w->index;
    unsigned long n = 0, bad = 0, after = 0;
    while (after < size.min_calls) {
        bool done = atomic_load(&run->compilers_done) == COMPILERS;
        int i = rand_r(&seed) % FUNCTIONS;
        struct compiled *c = &run->table[i];
        expr_fn fn = atomic_load_explicit(&c->fn, memory_order_acquire);
        if (!fn)
            continue;
        int32_t x = rand_r(&seed) % 2001 - 1000;
        bad += fn(x) != expr_eval(&c->e, c->root, x);
        n++;
        after += done;
    }
    atomic_fetch_add(&run->calls, n);
    atomic_fetch_add(&run->wrong, bad);
    return NULL;
}

static void run_backend(struct run *run)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    o.backend = run->backend;
    int err = wxjit_heap_create(&o, &run->heap);
    if (err)
        fail("wxjit_heap_create", err);
    run->table = calloc(FUNCTIONS, sizeof(*run->table));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_t t[COMPILERS + CALLERS];
    struct worker w[COMPILERS + CALLERS];
    for (int i = 0; i < COMPILERS + CALLERS; i++) {
        w[i] = (struct worker){run, i < COMPILERS ? i : i - COMPILERS};
        pthread_create(&t[i], NULL, i < COMPILERS ? compiler_main : caller_main,
                       &w[i]);
    }
    for (int i = 0; i < COMPILERS + CALLERS; i++)
        pthread_join(t[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    run->seconds = (double)(t1.tv_sec - t0.tv_sec) +
                   (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    wxjit_stats_get(run->heap, &run->stats);
    run->wx_mappings = wx_policy_wx_mappings();

    char text[256];
    expr_format(&run->table[0].e, run->table[0].root, text, sizeof(text));
    printf("  e.g. f(x) = %s; f(7) = %d\n", text,
           (int)run->table[0].fn(7));
    wxjit_heap_destroy(run->heap);
    free(run->table);
}

static void print_row(const char *label, const struct run *runs, int n,
                      long long (*value)(const struct run *))
{
    printf("  %-26s", label);
    for (int i = 0; i < n; i++) {
        long long v = value(&runs[i]);
        if (v < 0)
            printf(" %14s", "n/a");
        else
            printf(" %14lld", v);
    }
    printf("\n");
}

static long long functions(const struct run *r)
{
    return r->stats.installs;
}
static long long calls(const struct run *r) { return r->calls; }
static long long wrong(const struct run *r) { return r->wrong; }
static long long faults(const struct run *r)
{
    return r->stats.faults_retried;
}
static long long syscalls(const struct run *r)
{
    return r->stats.syscalls;
}
static long long code_kib(const struct run *r)
{
    return r->stats.bytes_live / 1024;
}
static long long pages(const struct run *r)
{
    return r->stats.pages;
}
static long long wx(const struct run *r)
{
    return r->wx_mappings; /* -1 (n/a): no /proc/self/maps to read */
}
static long long millis(const struct run *r)
{
    return (long long)(r->seconds * 1000);
}

int main(int argc, char **argv)
{
    if (argc > 2 || (argc == 2 && strcmp(argv[1], "--quick"))) {
        fprintf(stderr, "usage: wxjit-demo [--quick]\n");
        return 2;
    }
    if (argc == 2) {
        size.per_compiler /= 10;
        size.min_calls /= 20;
    }
    int err = wx_policy_enter();
    if (err)
        fail("entering the W^X policy (seccomp)", err);
    void *rwx = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int rwx_err = rwx == MAP_FAILED ? errno : 0;
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    wxjit_heap *h;
    o.backend = WXJIT_BACKEND_RWX;
    o.flags = WXJIT_HEAP_ALLOW_RWX;
    int rwx_heap = wxjit_heap_create(&o, &h);
    printf("Kernel-enforced W^X policy (seccomp) is active:\n"
           "  a plain JIT's RWX mapping: %s (%s)\n"
           "  wxjit's insecure rwx baseline: %s (%s)\n",
           rwx_err ? "refused" : "ALLOWED", strerror(rwx_err),
           rwx_heap ? "refused" : "ALLOWED", strerror(rwx_heap));
    if (!rwx_err || !rwx_heap)
        return 1;
    if ((err = wxjit_fault_handler_install()))
        fail("wxjit_fault_handler_install", err);

    /* Every W^X backend this system allows; a hardened one refuses some
     * (PR_SET_MDWE: toggle), and the demo shows the rest. */
    const wxjit_backend all[] = {WXJIT_BACKEND_TOGGLE, WXJIT_BACKEND_DUALMAP,
                                 WXJIT_BACKEND_PROCMEM};
    struct run runs[sizeof(all) / sizeof(all[0])];
    int n = 0;
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        const char *name, *why;
        wxjit_backend_name(all[i], &name);
        if ((err = wxjit_backend_probe(all[i], &why))) {
            printf("\n%s: not available here: %s (%s)\n", name, why,
                   strerror(err));
            continue;
        }
        runs[n] = (struct run){.backend = all[i]};
        printf("\n%s: %d threads compile %d expressions while %d threads "
               "call them\n", name, COMPILERS, FUNCTIONS, CALLERS);
        run_backend(&runs[n++]);
    }
    if (n == 0) {
        printf("\ndemo: FAILED (no backend works here)\n");
        return 1;
    }

    printf("\n  %-26s", "");
    for (int i = 0; i < n; i++) {
        const char *name;
        wxjit_backend_name(runs[i].backend, &name);
        printf(" %14s", name);
    }
    printf("\n");
    print_row("functions compiled", runs, n, functions);
    print_row("calls checked", runs, n, calls);
    print_row("wrong results", runs, n, wrong);
    print_row("faults retried", runs, n, faults);
    print_row("system calls", runs, n, syscalls);
    print_row("code live (KiB)", runs, n, code_kib);
    print_row("code pages used", runs, n, pages);
    print_row("W+X mappings seen", runs, n, wx);
    print_row("wall time (ms)", runs, n, millis);
    /* wx_mappings -1: no /proc/self/maps to count in (a system without
     * /proc); the seccomp filter refused every W+X request all the same. */
    bool ok = true;
    for (int i = 0; i < n; i++)
        ok &= runs[i].wrong == 0 && runs[i].wx_mappings <= 0;
    printf("\n%s\n", ok ? "demo: ok" : "demo: FAILED");
    return ok ? 0 : 1;
}
