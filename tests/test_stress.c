/* Concurrency stress: installer threads keep installing and freeing small
 * functions on their tail pages while executor threads call the newest
 * ones, i.e. exactly the pages being toggled. Every call must return the
 * value its function was built with, and the fault-retry path must have
 * run (faults retried > 0).
 *
 *   test_stress [--seconds S] [--installers N] [--executors N]
 *
 * ctest runs it for 2 seconds; `make stress` for minutes. Functions are
 * freed only once no executor holds them (hazard pointers), so a failure
 * here is wxjit's, not the test's. */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "emit.h"
#include "wxtest.h"

#define SLOTS 64
#define MAX_THREADS 64

struct record {
    void *fn;
    int expect;
};

static wxjit_heap *heap;
static struct record *_Atomic slots[SLOTS];
static struct record *_Atomic hazard[MAX_THREADS];
static atomic_bool stop;
static atomic_ulong calls, wrong, installs;
static int installers = 2, executors = 2;

static uint32_t xorshift(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static void *executor_main(void *arg)
{
    int me = (int)(intptr_t)arg;
    uint32_t rng = 0x9e3779b9u * (uint32_t)(me + 1);
    unsigned long n = 0, bad = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        _Atomic(struct record *) *slot = &slots[xorshift(&rng) % SLOTS];
        struct record *r = atomic_load(slot);
        if (!r)
            continue;
        atomic_store(&hazard[me], r);
        if (atomic_load(slot) != r) /* replaced meanwhile: may be freed */
            continue;
        if (as_fn(r->fn)() != r->expect)
            bad++;
        n++;
    }
    atomic_store(&hazard[me], NULL);
    atomic_fetch_add(&calls, n);
    atomic_fetch_add(&wrong, bad);
    return NULL;
}

static void retire(struct record *old)
{
    for (int i = 0; i < executors; i++)
        while (atomic_load(&hazard[i]) == old)
            sched_yield();
    CHECK_OK(wxjit_free(heap, old->fn));
    free(old);
}

static void *installer_main(void *arg)
{
    int me = (int)(intptr_t)arg;
    uint32_t rng = 0x85ebca6bu * (uint32_t)(me + 1);
    uint8_t code[256];
    unsigned long n = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        struct record *r = malloc(sizeof(*r));
        CHECK(r, "malloc");
        /* Sizes from one return to ~200 bytes: several functions per
         * page. Padding in whole instructions. */
        size_t pad = xorshift(&rng) % 192;
        pad -= pad % EMIT_INSN_ALIGN;
        r->expect = (int)xorshift(&rng);
        size_t len = emit_nops(code, pad);
        len += emit_return_int(code + len, r->expect);
        CHECK_OK(wxjit_install(heap, code, len, 0, &r->fn));
        size_t slot = (size_t)me + (size_t)installers *
                                       (xorshift(&rng) % (SLOTS / installers));
        struct record *old = atomic_exchange(&slots[slot], r);
        if (old)
            retire(old);
        n++;
    }
    atomic_fetch_add(&installs, n);
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    double seconds = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--seconds"))
            seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--installers"))
            installers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--executors"))
            executors = atoi(argv[i + 1]);
    }
    CHECK(installers >= 1 && installers <= SLOTS && executors >= 1 &&
              executors <= MAX_THREADS && seconds > 0,
          "bad arguments");
    wxtest_enter_wx_policy();
    wxtest_require_alias_writes_run("test_stress");
    CHECK_OK(wxjit_fault_handler_install());
    CHECK_OK(wxjit_heap_create(NULL, &heap));

    pthread_t threads[2 * MAX_THREADS];
    double start = now_s();
    for (int i = 0; i < installers; i++)
        CHECK(pthread_create(&threads[i], NULL, installer_main,
                             (void *)(intptr_t)i) == 0, "thread");
    for (int i = 0; i < executors; i++)
        CHECK(pthread_create(&threads[installers + i], NULL, executor_main,
                             (void *)(intptr_t)i) == 0, "thread");
    struct timespec ts = {(time_t)seconds,
                          (long)((seconds - (double)(time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
    /* toggle must show the retry path ran: a one-thread-at-a-time
     * scheduler (Valgrind) may need longer to let an executor meet a page
     * mid-write; up to 5 times the time asked for. */
    wxjit_backend chosen;
    CHECK_OK(wxjit_heap_backend(heap, &chosen));
    while (chosen == WXJIT_BACKEND_TOGGLE &&
           wxtest_stats_of(heap).faults_retried == 0 &&
           now_s() - start < 5 * seconds)
        usleep(100 * 1000);
    atomic_store(&stop, true);
    for (int i = 0; i < installers + executors; i++)
        pthread_join(threads[i], NULL);
    double wall = now_s() - start;

    wxjit_stats s;
    wxjit_backend backend;
    const char *name;
    CHECK_OK(wxjit_stats_get(heap, &s));
    CHECK_OK(wxjit_heap_backend(heap, &backend));
    CHECK_OK(wxjit_backend_name(backend, &name));
    printf("test_stress (%s): %d installers, %d executors, %.1f s wall\n",
           name, installers, executors, wall);
    printf("  calls %lu (wrong %lu), installs %lu, frees %llu\n",
           atomic_load(&calls), atomic_load(&wrong), atomic_load(&installs),
           (unsigned long long)s.frees);
    printf("  faults retried %llu, forwarded %llu, mprotect calls %llu, "
           "map calls %llu, pages %llu, chunks %llu, W+X mappings %d\n",
           (unsigned long long)s.faults_retried,
           (unsigned long long)s.faults_forwarded,
           (unsigned long long)s.mprotect_calls,
           (unsigned long long)s.map_calls,
           (unsigned long long)s.pages, (unsigned long long)s.chunks,
           wxtest_wx_mappings());
    CHECK_EQ(atomic_load(&wrong), 0);
    CHECK(atomic_load(&calls) > 0 && atomic_load(&installs) > 0,
          "no progress: calls %lu installs %lu", atomic_load(&calls),
          atomic_load(&installs));
    /* toggle: executors must have met pages mid-write and been retried;
     * dualmap writes through the alias, so nobody ever faults. */
    if (backend == WXJIT_BACKEND_TOGGLE)
        CHECK(s.faults_retried > 0, "the retry path never ran (0 faults)");
    else
        CHECK_EQ(s.faults_retried, 0);
    CHECK_EQ(s.faults_forwarded, 0);
    CHECK_EQ(wxtest_wx_mappings(), 0);
    for (int i = 0; i < SLOTS; i++)
        free(atomic_load(&slots[i]));
    CHECK_OK(wxjit_heap_destroy(heap));
    printf("test_stress: ok\n");
    return 0;
}
