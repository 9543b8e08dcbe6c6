/* The multi-threaded workload: N installer threads (N = 1, 2, 4) install
 * and free PCRE2-sized functions non-stop for a fixed time while one more
 * thread, the caller, calls functions the installers keep live, so it
 * runs code on the very pages the installers write. Per strategy and N:
 * installs per second (all installers together) and per second of the
 * installers' CPU time (what an install+free costs, whatever share of the
 * CPUs the run got on a shared machine), system calls per install (each
 * install is paired with the free of the function it replaces; the
 * strategy's own count: wxjit's stats.syscalls, every system call made
 * inside the heap's operations), faults retried (executor faults wxjit's
 * handler held and retried), and the caller's ns per call, next to its ns
 * per call alone (installers parked) measured in the same run.
 *
 * Each installer keeps a ring of RING live functions and replaces them in
 * turn: install a new one, publish it in the ring, free the one it
 * replaced. The caller picks an installer and a slot at random. So that
 * nothing it runs is freed under it, the caller (one thread) publishes a
 * hazard pointer and re-reads the slot before each call; an installer
 * whose old function is the hazard frees it one replacement later.
 *
 * Sizes: pcre2_size() (measure.c), the sizes PCRE2's JIT really emits
 * (median 1.3 KiB, p90 2.2 KiB, p99 3.9 KiB, up to 21 KiB), rather than
 * a uniform 1-8 KiB: small functions dominate in practice, and those are
 * the ones where a per-install cost (a system call, a fault) shows most.
 * Functions are nop sleds ending in "return 1"; the caller runs each from
 * its first byte to its last, over every page it spans.
 *
 * On a machine with fewer CPUs than N + 1 threads, the caller is also
 * descheduled: its wall-clock ns per call then counts time it did not
 * run. Its CPU-time ns per call does not, but hides time spent waiting
 * in wxjit's fault handler (faults retried shows those). Both are given. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "emit.h"
#include "measure.h"
#include "strategy.h"
#include "workload_threads.h"

#define RING 8          /* live functions per installer */
#define MAX_N 4         /* most installer threads */
#define CHECK_EVERY 256 /* calls between two looks at the clock */
#define CACHE_LINE 64   /* apart, so installers do not share theirs */
/* The largest pcre2_size(), rounded up to the 16-byte granule. */
#define MAX_CODE 21504

static const int thread_counts[] = {1, 2, MAX_N};
#define N_COUNTS (sizeof(thread_counts) / sizeof(thread_counts[0]))

/* A nop sled ending in "return 1": its last `size` bytes are a function
 * of that size. */
static uint8_t sled[MAX_CODE];

struct installer {
    _Alignas(CACHE_LINE) _Atomic(void *) ring[RING];
    size_t sizes[RING];
    void *pending; /* replaced while the caller held it: freed later */
    size_t pending_size;
    uint64_t installs;
    double cpu_ns; /* CPU time of the timed loop */
    uint32_t rng;
    pthread_t thread;
    struct run *run;
};

struct run {
    const struct strategy *st;
    void *s;
    int n;
    _Alignas(CACHE_LINE) _Atomic(void *) hazard; /* what the caller runs */
    _Alignas(CACHE_LINE) atomic_bool stop;
    pthread_barrier_t filled, go;
    struct installer inst[MAX_N];
};

static size_t draw_size(uint32_t *rng)
{
    size_t n = pcre2_size(rng) & ~(size_t)15;
    return n < 16 ? 16 : n > MAX_CODE ? MAX_CODE : n;
}

static void *install(struct installer *in, size_t size)
{
    return in->run->st->install(in->run->s, sled + MAX_CODE - size, size);
}

/* Replaces the function in slot k; frees the old one unless the caller
 * holds it (then the previous such one, which it no longer can hold: a
 * function out of the ring cannot become the hazard again). */
static void replace(struct installer *in, int k)
{
    struct run *r = in->run;
    size_t size = draw_size(&in->rng);
    void *old = atomic_exchange(&in->ring[k], install(in, size));
    size_t old_size = in->sizes[k];
    in->sizes[k] = size;
    void *held = atomic_load(&r->hazard);
    if (in->pending && in->pending != held) {
        r->st->release(r->s, in->pending, in->pending_size);
        in->pending = NULL;
    }
    if (old == held) {
        in->pending = old;
        in->pending_size = old_size;
    } else {
        r->st->release(r->s, old, old_size);
    }
}

static void *installer_main(void *arg)
{
    struct installer *in = arg;
    struct run *r = in->run;
    /* Filled by this thread: its functions lie on its own pool's pages. */
    for (int k = 0; k < RING; k++) {
        in->sizes[k] = draw_size(&in->rng);
        atomic_store(&in->ring[k], install(in, in->sizes[k]));
    }
    pthread_barrier_wait(&r->filled);
    pthread_barrier_wait(&r->go);
    double c0 = thread_cpu_ns();
    for (int k = 0; !atomic_load_explicit(&r->stop, memory_order_relaxed);
         k = (k + 1) % RING) {
        replace(in, k);
        in->installs++;
    }
    in->cpu_ns = thread_cpu_ns() - c0;
    return NULL;
}

typedef int (*int_fn)(void);

/* One call of a live function of some installer. */
static int call_one(struct run *r, uint32_t *rng)
{
    uint32_t x = next_random(rng);
    _Atomic(void *) *slot = &r->inst[x % (uint32_t)r->n].ring[(x >> 8) % RING];
    void *code;
    do {
        code = atomic_load(slot);
        atomic_store(&r->hazard, code);
    } while (atomic_load(slot) != code);
    int_fn fn;
    memcpy(&fn, &code, sizeof(fn));
    int v = fn();
    atomic_store_explicit(&r->hazard, NULL, memory_order_release);
    return v;
}

struct calls {
    double wall_ns, cpu_ns; /* per call */
    uint64_t wrong;
};

/* The caller: calls for `seconds`, then raises stop. */
static struct calls call_for(struct run *r, double seconds)
{
    uint32_t rng = 99;
    uint64_t n = 0, right = 0;
    double t0 = now_ns(), c0 = thread_cpu_ns(), end = t0 + seconds * 1e9, t;
    do {
        for (int i = 0; i < CHECK_EVERY; i++)
            right += call_one(r, &rng) == 1;
        n += CHECK_EVERY;
    } while ((t = now_ns()) < end);
    atomic_store(&r->stop, true);
    return (struct calls){(t - t0) / (double)n,
                          (thread_cpu_ns() - c0) / (double)n, n - right};
}

struct sample {
    double installs_per_s, installs_per_cpu_s, syscalls_per_install, faults;
    double alone_wall_ns, alone_cpu_ns, wall_ns, cpu_ns;
};

static void release_everything(struct run *r)
{
    for (int i = 0; i < r->n; i++) {
        struct installer *in = &r->inst[i];
        for (int k = 0; k < RING; k++)
            r->st->release(r->s, atomic_load(&in->ring[k]), in->sizes[k]);
        if (in->pending)
            r->st->release(r->s, in->pending, in->pending_size);
    }
}

static struct sample run_once(const struct strategy *st, int n, double seconds,
                              uint64_t *wrong)
{
    struct run *r = aligned_alloc(CACHE_LINE, sizeof(*r));
    memset(r, 0, sizeof(*r));
    r->st = st;
    r->s = st->create();
    r->n = n;
    pthread_barrier_init(&r->filled, NULL, (unsigned)n + 1);
    pthread_barrier_init(&r->go, NULL, (unsigned)n + 1);
    for (int i = 0; i < n; i++) {
        r->inst[i].run = r;
        r->inst[i].rng = 12345u + 7919u * (uint32_t)i;
        pthread_create(&r->inst[i].thread, NULL, installer_main, &r->inst[i]);
    }
    pthread_barrier_wait(&r->filled);
    /* Installers parked on `go` (blocked, not spinning): the caller alone,
     * on the same functions, for a quarter of the time. */
    struct calls alone = call_for(r, seconds / 4);
    atomic_store(&r->stop, false);
    struct counts c0 = st->counts(r->s);
    double t0 = now_ns();
    pthread_barrier_wait(&r->go);
    struct calls with = call_for(r, seconds);
    uint64_t installs = 0;
    double cpu_ns = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(r->inst[i].thread, NULL);
        installs += r->inst[i].installs;
        cpu_ns += r->inst[i].cpu_ns;
    }
    double elapsed = now_ns() - t0;
    struct counts c1 = st->counts(r->s);
    *wrong += alone.wrong + with.wrong;
    release_everything(r);
    st->destroy(r->s);
    pthread_barrier_destroy(&r->filled);
    pthread_barrier_destroy(&r->go);
    free(r);
    return (struct sample){(double)installs / elapsed * 1e9,
                           (double)installs / cpu_ns * 1e9,
                           (double)(c1.syscalls - c0.syscalls) /
                               (double)installs,
                           (double)(c1.faults_retried - c0.faults_retried),
                           alone.wall_ns,
                           alone.cpu_ns,
                           with.wall_ns,
                           with.cpu_ns};
}

/* Medians over the runs of one strategy at one N (faults: the total). */
struct row {
    const char *strategy;
    int n;
    struct sample med;
};

#define MEDIAN_OF(field)                                                      \
    do {                                                                      \
        for (int i = 0; i < reps; i++)                                        \
            v[i] = s[i].field;                                                \
        m.field = median(v, reps);                                            \
    } while (0)

static struct sample medians(const struct sample *s, int reps)
{
    double v[64];
    struct sample m = {0};
    MEDIAN_OF(installs_per_s);
    MEDIAN_OF(installs_per_cpu_s);
    MEDIAN_OF(syscalls_per_install);
    MEDIAN_OF(alone_wall_ns);
    MEDIAN_OF(alone_cpu_ns);
    MEDIAN_OF(wall_ns);
    MEDIAN_OF(cpu_ns);
    for (int i = 0; i < reps; i++)
        m.faults += s[i].faults;
    return m;
}

static double ratio(double x, double base)
{
    return base > 0 ? x / base : 0;
}

/* The medians of strategy at `threads` installers (zeros if absent). */
static struct sample sample_of(const struct row *rows, size_t n, int threads,
                               const char *strategy)
{
    for (size_t i = 0; i < n; i++)
        if (rows[i].n == threads && !strcmp(rows[i].strategy, strategy))
            return rows[i].med;
    return (struct sample){0};
}

static void print_table(FILE *f, const struct threads_options *o,
                        const struct row *rows, size_t n)
{
    fprintf(f,
            "\nthreads (PCRE2 sizes): N installer threads install+free, "
            "1 caller calls their code; median of %d runs of %.2f s\n",
            o->reps, o->seconds);
    fprintf(f,
            "  %-10s %2s %11s %8s %9s %10s %8s %11s %7s %18s %7s %18s "
            "%7s\n",
            "strategy", "N", "installs/s", "x toggle", "x dualmap",
            "per cpu-s", "x dualmap", "syscalls/in", "faults",
            "wall ns alone/with", "x", "cpu ns alone/with", "x");
    for (size_t i = 0; i < n; i++) {
        const struct sample *m = &rows[i].med;
        struct sample tg = sample_of(rows, n, rows[i].n, "toggle");
        struct sample dm = sample_of(rows, n, rows[i].n, "dualmap");
        fprintf(f,
                "  %-10s %2d %11.0f %7.2fx %8.2fx %10.0f %7.2fx %11.3f %7.0f "
                "%8.1f /%8.1f %6.2fx %8.1f /%8.1f %6.2fx\n",
                rows[i].strategy, rows[i].n, m->installs_per_s,
                ratio(m->installs_per_s, tg.installs_per_s),
                ratio(m->installs_per_s, dm.installs_per_s),
                m->installs_per_cpu_s,
                ratio(m->installs_per_cpu_s, dm.installs_per_cpu_s),
                m->syscalls_per_install, m->faults, m->alone_wall_ns,
                m->wall_ns, m->wall_ns / m->alone_wall_ns, m->alone_cpu_ns,
                m->cpu_ns, m->cpu_ns / m->alone_cpu_ns);
    }
    fprintf(
        f, "per cpu-s: installs per second of the installers' CPU "
           "time; syscalls/in: system calls per install, each paired "
           "with a free; faults: retried, all runs together; ns: the caller's "
           "per call, alone (installers parked, same run) and with the "
           "installers; x: with / alone.\n");
}

static void print_csv(FILE *f, const struct threads_options *o,
                      const struct row *rows, size_t n)
{
    fprintf(f, "strategy,installers,runs,seconds,installs_per_s,"
               "installs_per_cpu_s,syscalls_per_install,faults_retried,caller_"
               "wall_ns_alone,"
               "caller_wall_ns,caller_cpu_ns_alone,caller_cpu_ns\n");
    for (size_t i = 0; i < n; i++) {
        const struct sample *m = &rows[i].med;
        fprintf(f, "%s,%d,%d,%.2f,%.0f,%.0f,%.3f,%.0f,%.1f,%.1f,%.1f,%.1f\n",
                rows[i].strategy, rows[i].n, o->reps, o->seconds,
                m->installs_per_s, m->installs_per_cpu_s,
                m->syscalls_per_install, m->faults, m->alone_wall_ns,
                m->wall_ns, m->alone_cpu_ns, m->cpu_ns);
    }
}

void run_threads_workload(const struct threads_options *o)
{
    emit_nops(sled, MAX_CODE - EMIT_RETURN_INT_SIZE);
    emit_return_int(sled + MAX_CODE - EMIT_RETURN_INT_SIZE, 1);
    size_t ns = threaded_strategy_count, nrows = N_COUNTS * ns;
    struct row *rows = calloc(nrows, sizeof(*rows));
    struct sample *samples = calloc(nrows * (size_t)o->reps, sizeof(*samples));
    uint64_t wrong = 0;
    /* Runs interleaved (each repetition goes through every strategy) so
     * that a disturbance of the machine spreads over all of them. */
    for (size_t c = 0; c < N_COUNTS; c++)
        for (int rep = 0; rep < o->reps; rep++)
            for (size_t i = 0; i < ns; i++)
                samples[(c * ns + i) * (size_t)o->reps + (size_t)rep] =
                    run_once(threaded_strategies[i], thread_counts[c],
                             o->seconds, &wrong);
    for (size_t c = 0; c < N_COUNTS; c++)
        for (size_t i = 0; i < ns; i++)
            rows[c * ns + i] = (struct row){
                threaded_strategies[i]->name, thread_counts[c],
                medians(&samples[(c * ns + i) * (size_t)o->reps], o->reps)};
    if (wrong)
        fprintf(stderr,
                "wxjit-bench: threads: %llu calls returned a wrong "
                "value\n",
                (unsigned long long)wrong);
    if (o->table)
        print_table(o->table, o, rows, nrows);
    if (o->csv)
        print_csv(o->csv, o, rows, nrows);
    free(samples);
    free(rows);
}
