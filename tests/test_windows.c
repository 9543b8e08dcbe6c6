/* Write windows on live code (wxjit_window_open / wxjit_window_close):
 * - basic: a constant rewritten through the window runs once it closes;
 *   the write view is where the function's reservation had it (toggle:
 *   exec; dualmap: the same distance as an in-place reservation's);
 * - refused: bad ranges (EINVAL, nothing changes), overlapping own
 *   windows (EBUSY), closing what is not open, freeing under one's own
 *   window (EDEADLK), dualmap with RW_ON_DEMAND (ENOTSUP);
 * - on_demand_auto: RW_ON_DEMAND asked of AUTO refuses windows only if
 *   AUTO chose dualmap;
 * - new code: the thread's next code goes to other pages while its window
 *   is open, and a commit onto the window's page is EDEADLK;
 * - free_waits: another thread's free of the function waits for the
 *   window to close;
 * - holders: a thread holding a window that would wait for another's gets
 *   EDEADLK (no cycle can form); one holding nothing waits;
 * - exit: a thread that exits with a window open closes it as written;
 * - threads: patchers rewrite the constants of functions that callers run
 *   non-stop, every result checked against the values ever written. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "emit.h"
#include "wxtest.h"

static wxjit_backend backend;

static void *install_constant(wxjit_heap *h, int32_t v)
{
    uint8_t buf[32];
    void *exec;
    CHECK_OK(wxjit_install(h, buf, emit_return_int_patchable(buf, v), 0,
                           &exec));
    return exec;
}

static uint8_t *imm_of(void *f)
{
    return (uint8_t *)f + EMIT_PATCHABLE_IMM_OFFSET;
}

/* Rewrites f's constant to v through a window. */
static int set_constant(wxjit_heap *h, void *f, int32_t v)
{
    void *w;
    int err = wxjit_window_open(h, imm_of(f), 4, &w);
    if (err)
        return err;
    __atomic_store_n((int32_t *)w, v, __ATOMIC_RELAXED);
    return wxjit_window_close(h, imm_of(f), 4);
}


static void test_basic(void)
{
    wxjit_heap *h = wxtest_heap_of(WXJIT_BACKEND_AUTO);
    void *f = install_constant(h, 10);
    CHECK_OK(set_constant(h, f, 11));
    CHECK_EQ(as_fn(f)(), 11);
    void *w;
    CHECK_OK(wxjit_window_open(h, f, 8, &w));
    wxjit_reservation r;
    CHECK_OK(wxjit_reserve(h, 64, 0, WXJIT_RESERVE_IN_PLACE, &r));
    ptrdiff_t res_off = (uint8_t *)r.write - (uint8_t *)r.exec;
    CHECK(wxtest_page_of(r.exec) != wxtest_page_of(f) ||
              (uint8_t *)w - (uint8_t *)f == res_off,
          "window offset %td, reservation offset %td",
          (uint8_t *)w - (uint8_t *)f, res_off);
    CHECK(backend != WXJIT_BACKEND_TOGGLE || w == f, "toggle: view %p, exec %p",
          w, f);
    void *back;
    CHECK_OK(wxjit_exec_of(h, w, &back));
    CHECK(back == f, "wxjit_exec_of(view) %p, exec %p", back, f);
    CHECK_OK(wxjit_exec_of(h, f, &back));
    CHECK(back == f, "wxjit_exec_of(exec) %p, exec %p", back, f);
    CHECK(!memcmp(w, f, 8), "the view does not show the current bytes");
    CHECK_OK(wxjit_abort(h, &r));
    CHECK_OK(wxjit_window_close(h, f, 8));
    CHECK_EQ(as_fn(f)(), 11);
    CHECK_OK(wxjit_free(h, f));
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  basic: constant rewritten through the window; the view is at "
           "the reservation's distance\n");
}

/* With a window open, the thread's new code goes to another page and runs
 * at once; a reservation made before, on the window's page, is refused
 * (EDEADLK) until the window closes. */
static void test_new_code(void)
{
    wxjit_heap *h = wxtest_heap_of(WXJIT_BACKEND_AUTO);
    wxjit_reservation r;
    CHECK_OK(wxjit_reserve(h, 64, 0, 0, &r));
    size_t n = emit_return_int(r.write, 72);
    void *f = install_constant(h, 70), *w;
    CHECK(wxtest_page_of(f) == wxtest_page_of(r.exec), "setup: %p and %p",
          f, r.exec);
    CHECK_OK(wxjit_window_open(h, imm_of(f), 4, &w));
    void *g = install_constant(h, 71);
    CHECK(wxtest_page_of(g) != wxtest_page_of(f),
          "new code at %p on the page of the open window at %p", g, f);
    CHECK_EQ(as_fn(g)(), 71);
    void *rx = r.exec;
    CHECK_RET(wxjit_commit(h, &r, n), EDEADLK);
    CHECK_OK(wxjit_window_close(h, imm_of(f), 4));
    CHECK_OK(wxjit_commit(h, &r, n));
    CHECK_EQ(as_fn(rx)(), 72);
    CHECK_EQ(as_fn(f)(), 70);
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  new code: elsewhere while a window is open; a commit onto its "
           "page EDEADLK until it closes\n");
}

static void test_refused(void)
{
    wxjit_heap *h = wxtest_heap_of(WXJIT_BACKEND_AUTO);
    void *f = install_constant(h, 20), *w = NULL;
    int local;
    CHECK_RET(wxjit_window_open(NULL, f, 4, &w), EINVAL);
    CHECK_RET(wxjit_window_open(h, NULL, 4, &w), EINVAL);
    CHECK_RET(wxjit_window_open(h, f, 0, &w), EINVAL);
    CHECK_RET(wxjit_window_open(h, f, 4, NULL), EINVAL);
    CHECK_RET(wxjit_window_open(h, &local, 4, &w), EINVAL);
    CHECK_RET(wxjit_window_open(h, f, 64, &w), EINVAL); /* past its end */
    /* Past the address space: compared without forming exec + size. */
    CHECK_RET(wxjit_window_open(h, f, SIZE_MAX, &w), EINVAL);
    CHECK(w == NULL, "a refused open wrote its out-parameter");
    CHECK_RET(wxjit_window_close(h, f, 4), EINVAL); /* nothing open */
    CHECK_OK(wxjit_window_open(h, f, EMIT_PATCHABLE_IMM_OFFSET + 2, &w));
    CHECK_RET(wxjit_window_open(h, imm_of(f), 4, &w), EBUSY);
    CHECK_RET(wxjit_free(h, f), EDEADLK);
    CHECK_RET(wxjit_window_close(h, f, 3), EINVAL); /* not as opened */
    CHECK_OK(wxjit_window_close(h, f, EMIT_PATCHABLE_IMM_OFFSET + 2));
    CHECK_EQ(as_fn(f)(), 20);
    CHECK_OK(wxjit_free(h, f));
    CHECK_RET(wxjit_window_open(h, f, 4, &w), EINVAL); /* freed */
    CHECK_OK(wxjit_heap_destroy(h));
    CHECK_RET(wxjit_window_open(h, f, 4, &w), EINVAL); /* destroyed */
    printf("  refused: bad ranges, own overlap (EBUSY), free under own "
           "window (EDEADLK), close of nothing\n");
}

/* ---- two threads ---------------------------------------------------------- */
struct pair {
    wxjit_heap *h;
    void *f, *g;
    pthread_barrier_t step;
    _Atomic int freed, result;
};

static void *free_it(void *arg)
{
    struct pair *p = arg;
    pthread_barrier_wait(&p->step); /* the window is open */
    CHECK_OK(wxjit_free(p->h, p->f));
    atomic_store(&p->freed, 1);
    return NULL;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* A function returning v, a window over its constant that stores *store
 * (none if NULL), and beside it another thread running fn (which sets
 * p->freed when its call returned): when must_wait, fn's call must not
 * return before the window closes. The caller destroys p->h after. */
static void beside_window(int32_t v, const int32_t *store,
                          void *(*fn)(void *), bool must_wait, struct pair *p)
{
    p->h = wxtest_heap_of(WXJIT_BACKEND_AUTO);
    p->f = install_constant(p->h, v);
    pthread_barrier_init(&p->step, NULL, 2);
    void *w;
    CHECK_OK(wxjit_window_open(p->h, imm_of(p->f), 4, &w));
    pthread_t t = wxtest_spawn(fn, p);
    pthread_barrier_wait(&p->step);
    sleep_ms(100);
    CHECK(!must_wait || !atomic_load(&p->freed),
          "the other thread's call did not wait for the window");
    if (store) {
        __atomic_store_n((int32_t *)w, *store, __ATOMIC_RELAXED);
        /* dualmap: executors see stores as they are made (toggle: the
         * page is not executable until close, not even for this thread;
         * procmem: the code changes at close). */
        if (backend == WXJIT_BACKEND_DUALMAP && !atomic_load(&p->freed))
            CHECK_EQ(as_fn(p->f)(), *store);
    }
    CHECK_OK(wxjit_window_close(p->h, imm_of(p->f), 4));
    wxtest_join(t);
    CHECK(atomic_load(&p->freed), "the other thread's call did not finish");
    pthread_barrier_destroy(&p->step);
}

static void test_free_waits(void)
{
    struct pair p = {0};
    beside_window(30, &(int32_t){31}, free_it, true, &p);
    CHECK_OK(wxjit_heap_destroy(p.h));
    printf("  free_waits: another thread's free waited for the window\n");
}

/* Another thread's patch of bytes under a window lands (after the window,
 * on toggle and procmem): the window's close does not write back what it
 * saw over it (procmem did, found by review). */
static void *patch_f(void *arg)
{
    struct pair *p = arg;
    int32_t v = 33;
    pthread_barrier_wait(&p->step);
    CHECK_OK(wxjit_patch(p->h, imm_of(p->f), &v, sizeof(v)));
    atomic_store(&p->freed, 1); /* patched */
    return NULL;
}

static void test_patch_under_window(void)
{
    struct pair p = {0};
    /* The window stores nothing: only a close that writes back what it
     * saw over the patch could bring 32 back. */
    beside_window(32, NULL, patch_f, backend != WXJIT_BACKEND_DUALMAP, &p);
    CHECK_EQ(as_fn(p.f)(), 33);
    CHECK_OK(wxjit_heap_destroy(p.h));
    printf("  patch under a window: the other thread's patch stands after "
           "the close\n");
}

/* A thread holding a window that would wait for another's gets EDEADLK
 * (so no cycle can form); one holding nothing waits. */
static void *holder_wants_f(void *arg)
{
    struct pair *p = arg;
    void *w;
    CHECK_OK(wxjit_window_open(p->h, p->g, 4, &w));
    atomic_store(&p->result, wxjit_window_open(p->h, p->f, 4, &w));
    CHECK_OK(wxjit_window_close(p->h, p->g, 4));
    return NULL;
}

static void *waiter_wants_f(void *arg)
{
    struct pair *p = arg;
    void *w;
    pthread_barrier_wait(&p->step);
    CHECK_OK(wxjit_window_open(p->h, p->f, 4, &w));
    atomic_store(&p->freed, 1); /* opened */
    CHECK_OK(wxjit_window_close(p->h, p->f, 4));
    return NULL;
}

static void test_holders(void)
{
    struct pair p = {.h = wxtest_heap_of(WXJIT_BACKEND_AUTO)};
    p.f = install_constant(p.h, 40);
    /* Another page: toggle windows exclude by page. */
    uint8_t ret[16], *pad = NULL;
    CHECK_OK(wxjit_install(p.h, ret, emit_return_int(ret, 0),
                           (size_t)sysconf(_SC_PAGESIZE), (void **)&pad));
    p.g = install_constant(p.h, 41);
    pthread_barrier_init(&p.step, NULL, 2);
    atomic_store(&p.result, -1);
    void *w;
    CHECK_OK(wxjit_window_open(p.h, p.f, 4, &w));
    wxtest_join(wxtest_spawn(holder_wants_f, &p));
    CHECK_EQ(atomic_load(&p.result), EDEADLK);
    pthread_t t = wxtest_spawn(waiter_wants_f, &p);
    pthread_barrier_wait(&p.step);
    sleep_ms(100);
    CHECK(!atomic_load(&p.freed), "a thread holding nothing did not wait");
    CHECK_OK(wxjit_window_close(p.h, p.f, 4));
    wxtest_join(t);
    CHECK(atomic_load(&p.freed), "the waiting thread never opened");
    pthread_barrier_destroy(&p.step);
    CHECK_OK(wxjit_heap_destroy(p.h));
    printf("  holders: a window holder that would wait gets EDEADLK; a thread "
           "holding nothing waits\n");
}

/* ---- a thread exits with a window open ------------------------------------ */
static void *exit_open(void *arg)
{
    struct pair *p = arg;
    void *w;
    CHECK_OK(wxjit_window_open(p->h, imm_of(p->f), 4, &w));
    __atomic_store_n((int32_t *)w, 51, __ATOMIC_RELAXED);
    return NULL; /* no close */
}

static void test_exit(void)
{
    struct pair p = {.h = wxtest_heap_of(WXJIT_BACKEND_AUTO)};
    p.f = install_constant(p.h, 50);
    wxtest_join(wxtest_spawn(exit_open, &p));
    CHECK_EQ(as_fn(p.f)(), 51);
    CHECK_OK(wxjit_free(p.h, p.f)); /* no window left over it */
    CHECK_OK(wxjit_heap_destroy(p.h));
    printf("  exit: the window of a thread that exited closed as written\n");
}

/* ---- patchers and callers ------------------------------------------------- */
#define FUNCS 8
#define PATCHES 2000
static wxjit_heap *mt_heap;
static void *mt_fn[FUNCS];
static _Atomic int32_t mt_max[FUNCS]; /* values written: 1000f .. max */
static _Atomic bool mt_done;
static _Atomic uint64_t mt_calls, mt_bad;

static _Atomic bool mt_calling;

static void *caller(void *arg)
{
    (void)arg;
    for (int i = 0; i < FUNCS; i++)
        as_fn(mt_fn[i])();
    atomic_store(&mt_calling, true);
    while (!atomic_load(&mt_done))
        for (int i = 0; i < FUNCS; i++) {
            int32_t got = as_fn(mt_fn[i])();
            if (got < 1000 * (i + 1) || got > atomic_load(&mt_max[i]))
                atomic_fetch_add(&mt_bad, 1);
            atomic_fetch_add(&mt_calls, 1);
        }
    return NULL;
}

static void *patcher(void *arg)
{
    uint32_t rng = (uint32_t)(uintptr_t)arg * 2654435761u + 1;
    while (!atomic_load(&mt_calling))
        sched_yield();
    for (int k = 0; k < PATCHES; k++) {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        int i = (int)(rng % FUNCS);
        void *w;
        CHECK_OK(wxjit_window_open(mt_heap, imm_of(mt_fn[i]), 4, &w));
        /* The window is exclusive: read, increment, write. */
        int32_t v = __atomic_load_n((int32_t *)w, __ATOMIC_RELAXED) + 1;
        atomic_store(&mt_max[i], v);
        __atomic_store_n((int32_t *)w, v, __ATOMIC_RELAXED);
        CHECK_OK(wxjit_window_close(mt_heap, imm_of(mt_fn[i]), 4));
    }
    return NULL;
}

static void test_threads(void)
{
    mt_heap = wxtest_heap_of(WXJIT_BACKEND_AUTO);
    for (int i = 0; i < FUNCS; i++) {
        mt_fn[i] = install_constant(mt_heap, 1000 * (i + 1));
        atomic_store(&mt_max[i], 1000 * (i + 1));
    }
    pthread_t c = wxtest_spawn(caller, NULL);
    pthread_t t[2] = {wxtest_spawn(patcher, (void *)1),
                      wxtest_spawn(patcher, (void *)2)};
    wxtest_join(t[0]);
    wxtest_join(t[1]);
    atomic_store(&mt_done, true);
    wxtest_join(c);
    int64_t total = 0;
    for (int i = 0; i < FUNCS; i++) {
        int32_t got = as_fn(mt_fn[i])();
        CHECK_EQ(got, atomic_load(&mt_max[i]));
        total += got - 1000 * (i + 1);
    }
    CHECK(total == 2 * PATCHES, "%lld increments landed of %d: windows "
                                "were not exclusive",
          (long long)total, 2 * PATCHES);
    CHECK(atomic_load(&mt_bad) == 0, "%llu of %llu calls returned a value "
                                     "never written",
          (unsigned long long)mt_bad, (unsigned long long)mt_calls);
    CHECK_OK(wxjit_heap_destroy(mt_heap));
    printf("  threads: 2 patchers x %d windows, every increment landed; "
           "%llu calls checked\n",
           PATCHES, (unsigned long long)mt_calls);
}

/* dualmap with RW_ON_DEMAND keeps no stable write view: refused, and
 * nothing else changes. */
static void test_on_demand(void)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    wxjit_heap *h;
    o.backend = WXJIT_BACKEND_DUALMAP;
    o.flags = WXJIT_HEAP_RW_ON_DEMAND;
    CHECK_OK(wxjit_heap_create(&o, &h));
    void *f = install_constant(h, 60), *w = NULL;
    CHECK_RET(wxjit_window_open(h, f, 4, &w), ENOTSUP);
    CHECK(w == NULL, "a refused open wrote its out-parameter");
    CHECK_EQ(as_fn(f)(), 60);
    CHECK_OK(wxjit_free(h, f));
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  dualmap with RW_ON_DEMAND: ENOTSUP\n");
}

/* RW_ON_DEMAND is dualmap's: a heap that asked AUTO for it and got
 * another backend has stable views, and windows work there (found by
 * the fuzzer: ENOTSUP on toggle and procmem). */
static void test_on_demand_auto(void)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    wxjit_heap *h;
    o.flags = WXJIT_HEAP_RW_ON_DEMAND;
    CHECK_OK(wxjit_heap_create(&o, &h));
    void *f = install_constant(h, 70), *w = NULL;
    if (backend == WXJIT_BACKEND_DUALMAP) {
        CHECK_RET(wxjit_window_open(h, f, 4, &w), ENOTSUP);
        CHECK_EQ(as_fn(f)(), 70);
    } else {
        CHECK_OK(set_constant(h, f, 71));
        CHECK_EQ(as_fn(f)(), 71);
    }
    CHECK_OK(wxjit_free(h, f));
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  AUTO with RW_ON_DEMAND: windows %s\n",
           backend == WXJIT_BACKEND_DUALMAP ? "ENOTSUP (dualmap)" : "work");
}

int main(int argc, char **argv)
{
    wxtest_enter_wx_policy();
    wxtest_require_alias_writes_run("test_windows");
    CHECK_OK(wxjit_fault_handler_install());
    wxjit_heap *h = wxtest_heap_of(WXJIT_BACKEND_AUTO);
    CHECK_OK(wxjit_heap_backend(h, &backend));
    CHECK_OK(wxjit_heap_destroy(h));
    wxtest_print_backend();
    if (wxtest_selected(argc, argv, "basic"))
        test_basic();
    if (wxtest_selected(argc, argv, "refused"))
        test_refused();
    if (wxtest_selected(argc, argv, "new_code"))
        test_new_code();
    if (wxtest_selected(argc, argv, "free_waits"))
        test_free_waits();
    if (wxtest_selected(argc, argv, "holders"))
        test_holders();
    if (wxtest_selected(argc, argv, "patch_under_window"))
        test_patch_under_window();
    if (wxtest_selected(argc, argv, "exit"))
        test_exit();
    if (wxtest_selected(argc, argv, "threads"))
        test_threads();
    if (backend == WXJIT_BACKEND_DUALMAP &&
        wxtest_selected(argc, argv, "on_demand"))
        test_on_demand();
    if (wxtest_selected(argc, argv, "on_demand_auto"))
        test_on_demand_auto();
    CHECK_EQ(wxtest_wx_mappings(), 0);
    CHECK_OK(wxjit_fault_handler_uninstall());
    printf("test_windows: ok\n");
    return 0;
}
