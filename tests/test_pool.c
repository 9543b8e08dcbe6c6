/* Per-thread pools: threads install on pages of their own, a thread's pool
 * is retired at exit without leaking its page, a thread may use more heaps
 * than it caches pools for, a thread may outlive its heap, and code can be
 * freed by a thread other than the one that installed it while a third
 * thread runs its neighbours. */
#include <pthread.h>
#include <stdatomic.h>

#include "emit.h"
#include "wxtest.h"

static size_t page;

static wxjit_heap *heap_new(void)
{
    wxjit_heap *h;
    CHECK_OK(wxjit_heap_create(NULL, &h));
    return h;
}

static pthread_barrier_t barrier;

static void barrier_init(unsigned n)
{
    int err = pthread_barrier_init(&barrier, NULL, n);
    CHECK(err == 0, "pthread_barrier_init: %s", strerror(err));
}

/* ---- retirement at thread exit -------------------------------------------
 */
struct one {
    wxjit_heap *heap;
    int32_t v;
    void *f;
};

static void *install_one(void *arg)
{
    struct one *o = arg;
    o->f = wxtest_install_int(o->heap, o->v);
    return NULL;
}

static void *in_thread(wxjit_heap *h, int32_t v)
{
    struct one o = {h, v, NULL};
    wxtest_join(wxtest_spawn(install_one, &o));
    return o.f;
}

/* ---- two threads, two sets of pages --------------------------------------
 */
enum { PER_THREAD = 50 };

struct installer {
    wxjit_heap *heap;
    int id;
    void *f[PER_THREAD];
};

static int32_t value_of(int id, int i)
{
    return id * 1000 + i;
}

static void *install_many(void *arg)
{
    struct installer *in = arg;
    /* One install each first, in turn (so the outcome does not depend on
     * whether one thread's write is still under way when the other looks
     * for space): both threads hold a tail before either refills. */
    for (int turn = 1; turn <= 2; turn++) {
        if (turn == in->id)
            in->f[0] = wxtest_install_int(in->heap, value_of(in->id, 0));
        pthread_barrier_wait(&barrier);
    }
    for (int i = 1; i < PER_THREAD; i++)
        in->f[i] = wxtest_install_int(in->heap, value_of(in->id, i));
    /* Stay alive until both are done: a tail retired early could be
     * reused by the other thread, legitimately. */
    pthread_barrier_wait(&barrier);
    return NULL;
}

/* Two threads install PER_THREAD functions each, concurrently; their pages
 * must be disjoint. */
static void two_threads_round(wxjit_heap *h, const char *what)
{
    struct installer in[2];
    barrier_init(2);
    for (int t = 0; t < 2; t++) {
        in[t].heap = h;
        in[t].id = t + 1;
    }
    pthread_t th[2] = {wxtest_spawn(install_many, &in[0]),
                       wxtest_spawn(install_many, &in[1])};
    wxtest_join(th[0]);
    wxtest_join(th[1]);
    pthread_barrier_destroy(&barrier);
    for (int i = 0; i < PER_THREAD; i++)
        for (int j = 0; j < PER_THREAD; j++)
            CHECK(wxtest_page_of(in[0].f[i]) != wxtest_page_of(in[1].f[j]),
                  "%s: page %#lx holds function %d of thread 1 (%p) and "
                  "function %d of thread 2 (%p)",
                  what, (unsigned long)wxtest_page_of(in[0].f[i]), i, in[0].f[i], j,
                  in[1].f[j]);
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < PER_THREAD; i++)
            wxtest_expect_returns(in[t].f[i], value_of(in[t].id, i));
    printf("  per-thread pools: %s: thread 1 on %zu page(s), thread 2 on %zu, "
           "disjoint; all %d run from the main thread\n",
           what, wxtest_distinct_pages(in[0].f, PER_THREAD),
           wxtest_distinct_pages(in[1].f, PER_THREAD), 2 * PER_THREAD);
}

static void test_two_threads(void)
{
    wxjit_heap *h = heap_new();
    two_threads_round(h, "fresh heap");
    /* Free space split by live code: short-lived threads append 20
     * functions after the used part of a page, the first 10 are freed, so
     * that page has a 10-granule hole, live code, then free space. */
    void *f[20];
    for (int i = 0; i < 20; i++)
        f[i] = in_thread(h, i);
    for (int i = 0; i < 10; i++)
        CHECK_OK(wxjit_free(h, f[i]));
    two_threads_round(h, "heap with a hole before live code");
    for (int i = 10; i < 20; i++)
        wxtest_expect_returns(f[i], i);
    CHECK_OK(wxjit_heap_destroy(h));
}

static void test_retirement(void)
{
    wxjit_heap *h = heap_new();
    void *a = in_thread(h, 1);
    void *b = in_thread(h, 2);
    CHECK(wxtest_page_of(a) == wxtest_page_of(b),
          "the first exited thread's tail page %#lx was not reused: the next "
          "thread installed at %p",
          (unsigned long)wxtest_page_of(a), b);
    wxtest_expect_returns(a, 1);
    wxtest_expect_returns(b, 2);
    printf("  retirement: the next thread's install (%p) landed on the exited "
           "thread's page (%p)\n",
           b, a);

    enum { THREADS = 200, PAGE_BOUND = 8 };
    void *f[THREADS];
    for (int i = 0; i < THREADS; i++)
        f[i] = in_thread(h, 100 + i);
    for (int i = 0; i < THREADS; i++)
        wxtest_expect_returns(f[i], 100 + i);
    wxjit_stats s = wxtest_stats_of(h);
    CHECK(s.pages <= PAGE_BOUND,
          "%d short-lived threads with one function each took %llu pages, "
          "expected at most %d",
          THREADS + 2, (unsigned long long)s.pages, PAGE_BOUND);
    CHECK_EQ(s.bytes_live, (THREADS + 2) * 16);
    printf("  retirement: %d short-lived threads, one function each: "
           "stats.pages %llu (bound %d), %zu distinct pages, all run\n",
           THREADS + 2, (unsigned long long)s.pages, PAGE_BOUND,
           wxtest_distinct_pages(f, THREADS));
    CHECK_OK(wxjit_heap_destroy(h));
}

/* ---- more heaps than cached pools ----------------------------------------
 */
enum { HEAPS = 20, ROUNDS = 5 };

static void *many_heaps(void *unused)
{
    (void)unused;
    wxjit_heap *h[HEAPS];
    void *f[HEAPS][ROUNDS];
    for (int k = 0; k < HEAPS; k++)
        h[k] = heap_new();
    for (int r = 0; r < ROUNDS; r++)
        for (int k = 0; k < HEAPS; k++) {
            f[k][r] = wxtest_install_int(h[k], k * 100 + r);
            for (int i = 0; i <= r; i++)
                wxtest_expect_returns(f[k][i], k * 100 + i);
        }
    uint64_t most = 0;
    for (int k = 0; k < HEAPS; k++) {
        wxjit_stats s = wxtest_stats_of(h[k]);
        CHECK_EQ(s.installs, ROUNDS);
        /* An evicted pool's tail is free space again, not a lost page. */
        CHECK(s.pages <= 2,
              "heap %d: %d installs across evictions took %llu pages", k,
              ROUNDS, (unsigned long long)s.pages);
        most = s.pages > most ? s.pages : most;
    }
    for (int k = 0; k < HEAPS; k++)
        CHECK_OK(wxjit_heap_destroy(h[k]));
    printf("  many heaps: one thread used %d heaps round-robin %d times (8 "
           "cached pools), all ran; at most %llu page(s) per heap; destroyed, "
           "thread exited\n",
           HEAPS, ROUNDS, (unsigned long long)most);
    return NULL;
}

static void test_many_heaps(void)
{
    wxtest_join(wxtest_spawn(many_heaps, NULL));
}

/* ---- a thread outliving its heap -----------------------------------------
 */
struct outlive {
    wxjit_heap *old, *recycled;
    void *f, *g;
};

static void *outlive_thread(void *arg)
{
    struct outlive *o = arg;
    o->f = wxtest_install_int(o->old, 5);
    pthread_barrier_wait(&barrier); /* main destroys the heap */
    pthread_barrier_wait(&barrier); /* and creates another */
    if (o->recycled)
        o->g = wxtest_install_int(o->recycled, 6);
    return NULL; /* exits with a pool of the destroyed heap cached */
}

static void outlive_case(bool use_recycled)
{
    struct outlive o = {heap_new(), NULL, NULL, NULL};
    barrier_init(2);
    pthread_t t = wxtest_spawn(outlive_thread, &o);
    pthread_barrier_wait(&barrier);
    wxtest_expect_returns(o.f, 5);
    CHECK_OK(wxjit_heap_destroy(o.old));
    wxjit_heap *next = heap_new(); /* may reuse the old handle's memory */
    if (use_recycled)
        o.recycled = next;
    pthread_barrier_wait(&barrier);
    wxtest_join(t);
    pthread_barrier_destroy(&barrier);
    /* Another thread first: the main thread's tail would take the page. */
    void *other = in_thread(next, 8);
    void *mine = wxtest_install_int(next, 7);
    wxtest_expect_returns(mine, 7);
    wxtest_expect_returns(other, 8);
    if (use_recycled) {
        wxtest_expect_returns(o.g, 6);
        CHECK(wxtest_page_of(other) == wxtest_page_of(o.g),
              "the exited thread's page in the new heap was not reused (%p vs "
              "%p)",
              o.g, other);
    }
    printf("  outliving: thread exited after its heap was destroyed%s; new "
           "heap %s the old handle and works\n",
           use_recycled ? " (having installed into the new heap)" : "",
           next == o.old ? "reuses" : "does not reuse");
    CHECK_OK(wxjit_heap_destroy(next));
}

static void outlive_child(void *unused)
{
    (void)unused;
    outlive_case(false);
    outlive_case(true);
    fflush(stdout);
}

static void test_outlive(void)
{
    wxtest_expect_exit("thread exits after its heap is destroyed",
                       wxtest_in_child(outlive_child, NULL), 0);
}

/* ---- free from another thread while a third calls neighbours --------------
 */
/* 128 + 64 granules of 16 bytes: one 4 KiB page. */
enum { SHARED = 128, EXTRA = 64, MIN_CALL_ROUNDS = 200, REPEATS = 20 };

struct cross {
    wxjit_heap *heap;
    void *f[SHARED], *extra[EXTRA];
    atomic_bool frees_done;
    long call_rounds;
};

static int32_t shared_value(int i)
{
    return 500 + i;
}

static void *cross_installer(void *arg)
{
    struct cross *c = arg;
    for (int i = 0; i < SHARED; i++)
        c->f[i] = wxtest_install_int(c->heap, shared_value(i));
    pthread_barrier_wait(&barrier); /* published */
    pthread_barrier_wait(&barrier); /* freer and caller start */
    /* Keeps appending to its tail, on the same page, meanwhile. */
    for (int i = 0; i < EXTRA; i++) {
        c->extra[i] = wxtest_install_int(c->heap, 900 + i);
        wxtest_expect_returns(c->extra[i], 900 + i);
    }
    return NULL;
}

static void *cross_freer(void *arg)
{
    struct cross *c = arg;
    pthread_barrier_wait(&barrier);
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < SHARED; i += 2)
        CHECK_OK(wxjit_free(c->heap, c->f[i]));
    atomic_store(&c->frees_done, true);
    return NULL;
}

static void *cross_caller(void *arg)
{
    struct cross *c = arg;
    pthread_barrier_wait(&barrier);
    pthread_barrier_wait(&barrier);
    long rounds = 0;
    /* A count, not a time: at least MIN_CALL_ROUNDS, and on until every
     * free is done so the calls overlap all of them. */
    while (rounds < MIN_CALL_ROUNDS || !atomic_load(&c->frees_done)) {
        for (int i = 1; i < SHARED; i += 2)
            wxtest_expect_returns(c->f[i], shared_value(i));
        rounds++;
    }
    c->call_rounds = rounds;
    return NULL;
}

/* One round on a fresh heap; returns the faults retried in it. */
static uint64_t cross_round(struct cross *c, long *call_rounds)
{
    c->heap = heap_new();
    atomic_store(&c->frees_done, false);
    barrier_init(3);
    pthread_t a = wxtest_spawn(cross_installer, c);
    pthread_t b = wxtest_spawn(cross_freer, c);
    pthread_t d = wxtest_spawn(cross_caller, c);
    wxtest_join(a);
    wxtest_join(b);
    wxtest_join(d);
    pthread_barrier_destroy(&barrier);

    /* The premise: freed code and called code share a page. */
    size_t pages = wxtest_distinct_pages(c->f, SHARED);
    CHECK(pages == 1, "%d small functions of one thread on %zu pages", SHARED,
          pages);
    for (int i = 0; i < SHARED; i++) {
        if (i % 2) {
            wxtest_expect_returns(c->f[i], shared_value(i));
            continue;
        }
        const uint8_t *p = c->f[i];
        for (int j = 0; j < 16; j++)
            CHECK(p[j] == emit_trap_byte(p + j),
                  "function %d freed by another thread: byte %d is %#x, "
                  "expected %#x (%s)",
                  i, j, p[j], emit_trap_byte(p + j), EMIT_TRAP_NAME);
        CHECK_RET(wxjit_free(c->heap, c->f[i]), EINVAL); /* already freed */
    }
    for (int i = 0; i < EXTRA; i++)
        wxtest_expect_returns(c->extra[i], 900 + i);
    wxjit_stats s = wxtest_stats_of(c->heap);
    CHECK_EQ(s.frees, SHARED / 2);
    CHECK_EQ(s.bytes_live, (SHARED / 2 + EXTRA) * 16);
    CHECK_OK(wxjit_heap_destroy(c->heap));
    *call_rounds += c->call_rounds;
    return s.faults_retried;
}

static void test_cross_thread_free(void)
{
    static struct cross c;
    uint64_t retried = 0;
    long call_rounds = 0;
    atomic_init(&c.frees_done, false);
    for (int r = 0; r < REPEATS; r++)
        retried += cross_round(&c, &call_rounds);
    printf("  cross-thread free: %d times, thread B freed %d of thread A's "
           "functions while A installed %d more on the same page and thread C "
           "called the other %d (%ld rounds in all): all correct, freed bytes "
           "traps, double free EINVAL (%llu faults retried)\n",
           REPEATS, SHARED / 2, EXTRA, SHARED / 2, call_rounds,
           (unsigned long long)retried);
}

/* ---- an adopted pool gives back a block of an older tail -----------------
 * Issue 11, defect 1. Thread A reserves 4112 bytes (257 granules, two
 * pages) and exits: the rest of its tail becomes free space. Thread B
 * adopts A's pool, reserves 64 bytes and aborts them (its cursor is back
 * at the start of its tail), then ends A's reservation: commits it with
 * used = 16, giving back the other 256 granules, or aborts it. That space
 * lies before B's tail. Thread C then installs, and B installs again:
 * every live function must have a range of its own and return its own
 * value. */
struct rewind {
    wxjit_heap *heap;
    bool abort_a;
    wxjit_reservation a;
    void *fa, *fb, *fc;
    pthread_barrier_t c_done;
};

static void *rewind_a(void *arg)
{
    struct rewind *w = arg;
    CHECK_OK(wxjit_reserve(w->heap, 4112, 0, 0, &w->a));
    emit_return_int_sized(w->a.write, 16, 1);
    return NULL; /* exits with the reservation open */
}

static void *rewind_b(void *arg)
{
    struct rewind *w = arg;
    wxjit_reservation r;
    CHECK_OK(wxjit_reserve(w->heap, 64, 0, 0, &r));
    CHECK_OK(wxjit_abort(w->heap, &r));
    w->fa = w->a.exec;
    if (w->abort_a) {
        CHECK_OK(wxjit_abort(w->heap, &w->a));
        w->fa = NULL;
    } else {
        CHECK_OK(wxjit_commit(w->heap, &w->a, 16));
    }
    pthread_barrier_wait(&w->c_done); /* B lives on while C installs */
    pthread_barrier_wait(&w->c_done);
    w->fb = wxtest_install_int(w->heap, 2);
    return NULL;
}

static void *rewind_c(void *arg)
{
    struct rewind *w = arg;
    w->fc = wxtest_install_int(w->heap, 3);
    return NULL;
}

static bool ranges_overlap(const void *p, const void *q)
{
    uintptr_t a = (uintptr_t)p, b = (uintptr_t)q;
    return p && q && a < b + 16 && b < a + 16;
}

static void rewind_case(bool abort_a)
{
    struct rewind w = {.heap = heap_new(), .abort_a = abort_a};
    pthread_barrier_init(&w.c_done, NULL, 2);
    wxtest_join(wxtest_spawn(rewind_a, &w));
    pthread_t b = wxtest_spawn(rewind_b, &w);
    pthread_barrier_wait(&w.c_done); /* B has ended A's reservation */
    wxtest_join(wxtest_spawn(rewind_c, &w));
    pthread_barrier_wait(&w.c_done);
    wxtest_join(b);
    pthread_barrier_destroy(&w.c_done);
    const char *what = abort_a ? "A's reservation aborted by B"
                               : "A's reservation committed by B, used 16";
    void *f[3] = {w.fa, w.fb, w.fc};
    for (int i = 0; i < 3; i++)
        for (int j = i + 1; j < 3; j++)
            CHECK(!ranges_overlap(f[i], f[j]),
                  "%s: live functions %c (%p) and %c (%p) overlap: two "
                  "installs at one address",
                  what, "ABC"[i], f[i], "ABC"[j], f[j]);
    if (w.fa)
        wxtest_expect_returns(w.fa, 1);
    wxtest_expect_returns(w.fb, 2);
    wxtest_expect_returns(w.fc, 3);
    printf("  adopted pool, %s: A at %p, C at %p, B at %p: distinct, each "
           "returns its own value\n",
           what, w.fa, w.fc, w.fb);
    CHECK_OK(wxjit_heap_destroy(w.heap));
}

int main(int argc, char **argv)
{
    wxtest_enter_wx_policy();
    page = (size_t)sysconf(_SC_PAGESIZE);
    /* Threads run code on pages other threads are writing. */
    CHECK_OK(wxjit_fault_handler_install());
    printf("test_pool:\n");
    wxtest_print_backend();
    if (wxtest_selected(argc, argv, "two_threads"))
        test_two_threads();
    if (wxtest_selected(argc, argv, "retirement"))
        test_retirement();
    if (wxtest_selected(argc, argv, "many_heaps"))
        test_many_heaps();
    if (wxtest_selected(argc, argv, "outlive"))
        test_outlive();
    if (wxtest_selected(argc, argv, "cross_thread_free"))
        test_cross_thread_free();
    if (wxtest_selected(argc, argv, "rewind_commit"))
        rewind_case(false);
    if (wxtest_selected(argc, argv, "rewind_abort"))
        rewind_case(true);
    CHECK_OK(wxjit_fault_handler_uninstall());
    CHECK_EQ(wxtest_wx_mappings(), 0);
    printf("test_pool: ok\n");
    return 0;
}
