/* wxjit-bench: every workload on every strategy, side by side in one run.
 *
 *   wxjit-bench [--csv | --csv-file FILE] [--quick] [--reps N]
 *               [--threads-seconds S] [--threads-reps R]
 *               [--threads-csv FILE] [--only-threads | --no-threads]
 *               [--only-windows | --only-describe]
 *
 * Prints a table with ratios to the rwx baseline, or CSV (to stdout, or to
 * FILE next to the table) with the columns
 * strategy,workload,size,threads,ops,ns_per_op,syscalls_per_op,
 * density_pct,faults_retried,shared_locks_per_op. ns_per_op is the median
 * of N runs (default 5); syscalls are counted (wxjit's stats, the
 * baselines' own counts), and so are wxjit's acquisitions of locks shared
 * between threads (stats shared_locks: 0 per install on the steady path);
 * density is live code bytes / code bytes mapped (pages touched). It runs
 * outside any W^X policy because the rwx baselines need RWX memory.
 *
 * The patch-window workload (workload_windows.c: one window of 8 bytes on
 * live code, per wxjit backend, alone and beside a caller on the same
 * page) prints a table of its own after the others (not in the CSV).
 *
 * The multi-threaded workload (workload_threads.c) has a table and CSV of
 * its own (--threads-csv): R runs (default 5) of S seconds (default 0.5)
 * per strategy and thread count, about 40 s in all at the defaults.
 *
 * --only-describe: what naming code costs per tool (perf map, jitdump,
 * gdb, unwind registration) against describing nothing, side by side, and
 * gdb's start-up with 100,000 functions described in one batch
 * (workload_describe.c; --gdb-target is the program gdb runs there). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emit.h"
#include "measure.h"
#include "strategy.h"
#include "workload_describe.h"
#include "workload_threads.h"
#include "workload_windows.h"
#include "wxjit.h"

typedef int (*int_fn)(void);

static int_fn as_fn(void *code)
{
    int_fn fn;
    memcpy(&fn, &code, sizeof(fn));
    return fn;
}

struct result {
    const char *strategy, *workload;
    size_t size;
    int threads;
    uint64_t ops;
    double ns_per_op, syscalls_per_op, density_pct;
    uint64_t faults;
    double shared_locks_per_op;
};

static int reps = 5;
static uint64_t scale = 1; /* --quick divides operation counts by 10 */

/* A callable function of exactly size bytes (>= 6) returning v. */
static void make_code(uint8_t *buf, size_t size, int32_t v)
{
    emit_nops(buf, size - 6);
    emit_return_int(buf + size - 6, v);
}

static uint8_t code_buf[32768];

/* Closes one timed run of r->ops operations started at t0 with counts
 * c0: fills r's system calls per operation and density, returns ns/op. */
static double end_run(const struct strategy *st, void *s,
                      const struct counts *c0, double t0, uint64_t live,
                      struct result *r)
{
    double ns = (now_ns() - t0) / (double)r->ops;
    struct counts c1 = st->counts(s);
    r->syscalls_per_op =
        (double)(c1.syscalls - c0->syscalls) / (double)r->ops;
    r->shared_locks_per_op =
        (double)(c1.shared_locks - c0->shared_locks) / (double)r->ops;
    r->density_pct = 100.0 * (double)live / (double)c1.mapped_bytes;
    return ns;
}

/* Frees everything a run installed (untimed) and drops the strategy. */
static void release_all(const struct strategy *st, void *s, void **execs,
                        const size_t *sizes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        st->release(s, execs[i], sizes[i]);
    st->destroy(s);
}

/* ---- install workloads: fixed sizes, or PCRE2's distribution (size 0) -- */
static struct result run_install(const struct strategy *st, size_t size,
                                 const char *workload)
{
    uint64_t ops = 20000 / scale / (st->slow ? 10 : 1);
    void **execs = malloc(ops * sizeof(*execs));
    size_t *sizes = malloc(ops * sizeof(*sizes));
    uint32_t rng = 12345;
    uint64_t live = 0;
    for (uint64_t i = 0; i < ops; i++) {
        sizes[i] = size ? size : pcre2_size(&rng);
        live += sizes[i];
    }
    emit_nops(code_buf, sizeof(code_buf));
    double ns[64];
    struct result r = {st->name, workload, size, 1, ops, 0, 0, 0, 0, 0};
    for (int rep = 0; rep < reps; rep++) {
        void *s = st->create();
        struct counts c0 = st->counts(s);
        double t0 = now_ns();
        /* The code is generated once: the JIT's work is not measured. */
        for (uint64_t i = 0; i < ops; i++)
            execs[i] = st->install(s, code_buf, sizes[i]);
        if (st->flush)
            st->flush(s);
        ns[rep] = end_run(st, s, &c0, t0, live, &r);
        release_all(st, s, execs, sizes, ops);
    }
    r.ns_per_op = median(ns, reps);
    free(execs);
    free(sizes);
    return r;
}

/* ---- install-free churn: 10,000 live functions, replace one at random -- */
static struct result run_churn(const struct strategy *st)
{
    enum { LIVE = 10000 };
    uint64_t ops = 10000 / scale / (st->slow ? 10 : 1);
    static void *execs[LIVE];
    static size_t sizes[LIVE];
    double ns[64];
    struct result r = {st->name, "install-free", 0, 1, ops, 0, 0, 0, 0, 0};
    for (int rep = 0; rep < reps; rep++) {
        uint32_t rng = 777;
        void *s = st->create();
        uint64_t live = 0;
        emit_nops(code_buf, sizeof(code_buf));
        for (int i = 0; i < LIVE; i++) {
            sizes[i] = pcre2_size(&rng);
            execs[i] = st->install(s, code_buf, sizes[i]);
            live += sizes[i];
        }
        struct counts c0 = st->counts(s);
        double t0 = now_ns();
        for (uint64_t i = 0; i < ops; i++) {
            uint32_t k = next_random(&rng) % LIVE;
            st->release(s, execs[k], sizes[k]);
            live -= sizes[k];
            sizes[k] = pcre2_size(&rng);
            live += sizes[k];
            execs[k] = st->install(s, code_buf, sizes[k]);
        }
        ns[rep] = end_run(st, s, &c0, t0, live, &r);
        release_all(st, s, execs, sizes, LIVE);
    }
    r.ns_per_op = median(ns, reps);
    return r;
}

/* ---- concurrent: one thread installs, another calls the newest code ---- */
#define RING 64
struct shared {
    const struct strategy *st;
    void *s;
    _Atomic(int_fn) ring[RING];
    atomic_bool stop;
    void **installed; /* everything the installer made, released after */
    uint64_t installs;
};

static void *installer_main(void *arg)
{
    struct shared *sh = arg;
    uint8_t code[64];
    make_code(code, sizeof(code), 1);
    /* Bounded so page-per-block stays under vm.max_map_count. */
    uint64_t max = 20000 / scale;
    for (uint64_t i = 0; !atomic_load(&sh->stop) && i < max; i++) {
        sh->installed[i] = sh->st->install(sh->s, code, sizeof(code));
        atomic_store(&sh->ring[i % RING], as_fn(sh->installed[i]));
        sh->installs++;
    }
    return NULL;
}

/* Calls per nanosecond... as ns per call over a fixed number of calls. */
static double caller_ns_per_call(struct shared *sh, uint64_t calls)
{
    uint32_t rng = 99;
    double t0 = now_ns();
    for (uint64_t i = 0; i < calls; i++)
        atomic_load_explicit(&sh->ring[next_random(&rng) % RING],
                             memory_order_relaxed)();
    return (now_ns() - t0) / (double)calls;
}

static void run_concurrent(const struct strategy *st, struct result *alone,
                           struct result *with)
{
    uint64_t calls = 2000000 / scale;
    double ns_alone[64], ns_with[64];
    uint64_t faults = 0;
    uint8_t code[64];
    void **installed = malloc(20000 * sizeof(void *));
    make_code(code, sizeof(code), 1);
    for (int rep = 0; rep < reps; rep++) {
        struct shared sh = {.st = st, .s = st->create(),
                            .installed = installed};
        void *prefill[RING];
        for (int i = 0; i < RING; i++) {
            prefill[i] = st->install(sh.s, code, sizeof(code));
            atomic_store(&sh.ring[i], as_fn(prefill[i]));
        }
        ns_alone[rep] = caller_ns_per_call(&sh, calls);
        struct counts c0 = st->counts(sh.s);
        pthread_t t;
        pthread_create(&t, NULL, installer_main, &sh);
        ns_with[rep] = caller_ns_per_call(&sh, calls);
        atomic_store(&sh.stop, true);
        pthread_join(t, NULL);
        faults = st->counts(sh.s).faults_retried - c0.faults_retried;
        for (int i = 0; i < RING; i++)
            st->release(sh.s, prefill[i], sizeof(code));
        for (uint64_t i = 0; i < sh.installs; i++)
            st->release(sh.s, installed[i], sizeof(code));
        st->destroy(sh.s);
    }
    free(installed);
    *alone = (struct result){st->name, "concurrent-alone", 64, 1, calls,
                             median(ns_alone, reps), 0, 0, 0, 0};
    *with = (struct result){st->name, "concurrent", 64, 2, calls,
                            median(ns_with, reps), 0, 0, faults, 0};
}

/* ---- call: steady-state cost of calling installed code ----------------- */
static struct result run_call(const struct strategy *st)
{
    uint64_t calls = 20000000 / scale;
    double ns[64];
    for (int rep = 0; rep < reps; rep++) {
        void *s = st->create();
        uint8_t code[16];
        make_code(code, sizeof(code), 42);
        void *exec = st->install(s, code, sizeof(code));
        if (st->flush)
            st->flush(s);
        int_fn volatile fn = as_fn(exec);
        int sum = 0;
        double t0 = now_ns();
        for (uint64_t i = 0; i < calls; i++)
            sum += fn();
        ns[rep] = (now_ns() - t0) / (double)calls;
        if (sum != (int)(42 * calls))
            fprintf(stderr, "wxjit-bench: %s: wrong results\n", st->name);
        st->release(s, exec, sizeof(code));
        st->destroy(s);
    }
    return (struct result){st->name, "call", 16, 1, calls, median(ns, reps),
                           0, 0, 0, 0};
}

/* ---- output -------------------------------------------------------------- */
static void print_csv(FILE *out, const struct result *r, size_t n)
{
    fprintf(out, "strategy,workload,size,threads,ops,ns_per_op,"
                 "syscalls_per_op,density_pct,faults_retried,"
                 "shared_locks_per_op\n");
    for (size_t i = 0; i < n; i++)
        fprintf(out, "%s,%s,%zu,%d,%llu,%.2f,%.3f,%.1f,%llu,%.3f\n",
                r[i].strategy, r[i].workload, r[i].size, r[i].threads,
                (unsigned long long)r[i].ops, r[i].ns_per_op,
                r[i].syscalls_per_op, r[i].density_pct,
                (unsigned long long)r[i].faults, r[i].shared_locks_per_op);
}

static bool same_case(const struct result *a, const struct result *b)
{
    return !strcmp(a->workload, b->workload) && a->size == b->size;
}

static void print_table(const struct result *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || !same_case(&r[i], &r[i - 1])) {
            const char *size = r[i].size ? "" : " (PCRE2 sizes)";
            printf("\n%s%s", r[i].workload, size);
            if (r[i].size)
                printf(", %zu B", r[i].size);
            printf(", median of %d runs\n", reps);
            printf("  %-18s %9s %12s %9s %12s %16s %9s %8s\n", "strategy",
                   "ops", "ns/op", "x rwx", "syscalls/op", "shared locks/op",
                   "density", "faults");
        }
        double base = 0;
        for (size_t j = 0; j < n; j++)
            if (same_case(&r[j], &r[i]) && !strcmp(r[j].strategy, "rwx"))
                base = r[j].ns_per_op;
        printf("  %-18s %9llu %12.1f %8.2fx %12.3f %16.3f %8.1f%% %8llu\n",
               r[i].strategy, (unsigned long long)r[i].ops, r[i].ns_per_op,
               base > 0 ? r[i].ns_per_op / base : 0,
               r[i].syscalls_per_op, r[i].shared_locks_per_op,
               r[i].density_pct, (unsigned long long)r[i].faults);
    }
}

/* The multi-threaded workload: its table with the others (not with
 * --csv, which keeps stdout one CSV), its CSV to csv_file. */
static int run_threads(struct threads_options *o, bool csv,
                       const char *csv_file)
{
    if (!o->wanted)
        return 0;
    o->table = csv ? NULL : stdout;
    if (csv_file && !(o->csv = fopen(csv_file, "w"))) {
        perror(csv_file);
        return 1;
    }
    run_threads_workload(o);
    if (o->csv)
        fclose(o->csv);
    return 0;
}

int main(int argc, char **argv)
{
    bool csv = false, main_workloads = true, only_windows = false,
         only_describe = false;
    if (argc == 4 && !strcmp(argv[1], "--gdb-target"))
        return gdb_target(atoi(argv[2]), !strcmp(argv[3], "batch"));
    const char *csv_file = NULL, *threads_csv = NULL;
    struct threads_options threads = {true, 0.5, 5, stdout, NULL};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--csv"))
            csv = true;
        else if (!strcmp(argv[i], "--csv-file") && i + 1 < argc)
            csv_file = argv[++i];
        else if (!strcmp(argv[i], "--quick"))
            scale = 10, reps = 3, threads.seconds = 0.1, threads.reps = 3;
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads-seconds") && i + 1 < argc)
            threads.seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--threads-reps") && i + 1 < argc)
            threads.reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads-csv") && i + 1 < argc)
            threads_csv = argv[++i];
        else if (!strcmp(argv[i], "--only-threads"))
            main_workloads = false;
        else if (!strcmp(argv[i], "--only-windows"))
            only_windows = true;
        else if (!strcmp(argv[i], "--only-describe"))
            only_describe = true;
        else if (!strcmp(argv[i], "--no-threads"))
            threads.wanted = false;
        else {
            fprintf(stderr, "usage: wxjit-bench [--csv | --csv-file FILE] "
                            "[--quick] [--reps N] [--threads-seconds S] "
                            "[--threads-reps R] [--threads-csv FILE] "
                            "[--only-threads | --no-threads] "
                            "[--only-windows | --only-describe]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 64)
        reps = 5;
    if (threads.reps < 1 || threads.reps > 64 || threads.seconds <= 0) {
        fprintf(stderr, "wxjit-bench: --threads-reps 1-64, "
                        "--threads-seconds above 0\n");
        return 2;
    }
    int err = wxjit_fault_handler_install();
    if (err) {
        fprintf(stderr, "wxjit-bench: fault handler: %s\n", strerror(err));
        return 1;
    }
    if (only_windows) {
        run_windows(reps, 20000 / scale);
        return 0;
    }
    if (only_describe) {
        run_describe(reps, (int)(20000 / scale));
        run_gdb_startup(argv[0], reps > 3 ? 3 : reps, 100000, 2000);
        return 0;
    }
    if (!main_workloads)
        return run_threads(&threads, csv, threads_csv);
    static const size_t sizes[] = {64, 256, 1024, 4096};
    struct result *res = calloc(256, sizeof(*res));
    size_t n = 0;
    for (size_t w = 0; w < 4; w++)
        for (size_t i = 0; i < strategy_count; i++)
            res[n++] = run_install(strategies[i], sizes[w], "install");
    for (size_t i = 0; i < strategy_count; i++)
        res[n++] = run_install(strategies[i], 0, "install-pcre2");
    for (size_t i = 0; i < strategy_count; i++)
        if (!strategies[i]->deferred)
            res[n++] = run_churn(strategies[i]);
    struct result alone[16], with[16];
    size_t nc = 0;
    for (size_t i = 0; i < strategy_count; i++)
        if (strategies[i]->concurrent && !strategies[i]->deferred)
            run_concurrent(strategies[i], &alone[nc], &with[nc]), nc++;
    for (size_t i = 0; i < nc; i++)
        res[n++] = alone[i];
    for (size_t i = 0; i < nc; i++)
        res[n++] = with[i];
    for (size_t i = 0; i < strategy_count; i++)
        if (!strategies[i]->deferred)
            res[n++] = run_call(strategies[i]);
    if (csv_file) {
        FILE *f = fopen(csv_file, "w");
        if (!f) {
            perror(csv_file);
            return 1;
        }
        print_csv(f, res, n);
        fclose(f);
    }
    if (csv) {
        print_csv(stdout, res, n);
    } else {
        printf("wxjit-bench: %zu strategies side by side; ratios are to the "
               "rwx baseline\n", strategy_count);
        print_table(res, n);
        printf("\nconcurrent: the caller's ns per call while another thread "
               "installs on the same pages; concurrent-alone: the same "
               "caller with no installer.\nwhole-area-toggle is absent "
               "there: its callers would crash while the area is RW.\n");
        run_windows(reps, 20000 / scale);
    }
    free(res);
    return run_threads(&threads, csv, threads_csv);
}
