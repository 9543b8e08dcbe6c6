/* WXJIT_HEAP_DEFER_TRAP_FILL: which backends take the flag; a free makes
 * no system call and its code runs on: on toggle until the page's next
 * write window, which trap-fills it; on procmem until that space is
 * written again. Space freed that way is reused correctly (the new code,
 * then traps to the end of its last granule; on toggle the rest of the
 * page's freed code trapped too); many threads install, call and free
 * (each other's code) with every result checked; a fork child inherits
 * pending fills; a heap with pending fills is destroyed cleanly. On
 * dualmap (AUTO picks it) the flag is accepted and changes nothing: frees
 * trap at once. */
#include "emit.h"
#include "wxtest.h"

static size_t page;
enum { GRANULE = 16 }; /* wxjit's unit of allocation (WXJ_GRANULE) */
/* What the heaps here (AUTO: WXJIT_BACKEND's) do with the flag. */
static enum {
    AT_FREE,     /* dualmap: frees trap at once */
    PAGE_WINDOW, /* toggle: the page's next window fills */
    ON_REUSE,    /* procmem: the next write into that space fills */
} mode;

static wxjit_heap *defer_heap(size_t chunk_pages)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    wxjit_heap *h;
    o.chunk_size = chunk_pages * page;
    o.flags = WXJIT_HEAP_DEFER_TRAP_FILL;
    CHECK_OK(wxjit_heap_create(&o, &h));
    return h;
}

/* A function of size bytes returning v: the return first, nops after. */
static void emit_fn(uint8_t *buf, size_t size, int32_t v)
{
    size_t n = emit_return_int(buf, v);
    emit_nops(buf + n, size - n);
}

static uint8_t *install_fn(wxjit_heap *h, size_t size, int32_t v)
{
    uint8_t *buf = malloc(size);
    void *exec;
    CHECK(buf, "malloc");
    emit_fn(buf, size, v);
    CHECK_OK(wxjit_install(h, buf, size, 0, &exec));
    free(buf);
    return exec;
}

static void expect_returns(const char *what, const void *f, int32_t v)
{
    int got = as_fn((void *)f)();
    CHECK(got == v, "%s: the function at %p returned %d, expected %d", what, f,
          got, v);
}

static bool all_traps(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != emit_trap_byte(p + i))
            return false;
    return true;
}

/* p holds bytes [off, off + len) of the function emit_fn(size, v). */
static bool holds_part(const uint8_t *p, size_t size, int32_t v, size_t off,
                       size_t len)
{
    uint8_t *want = malloc(size);
    CHECK(want, "malloc");
    emit_fn(want, size, v);
    bool same = !memcmp(p, want + off, len);
    free(want);
    return same;
}

static bool holds_fn(const uint8_t *p, size_t size, int32_t v)
{
    return holds_part(p, size, v, 0, size);
}

static void call_it(void *f)
{
    as_fn(f)();
}

static void expect_trap(const char *what, void *f)
{
    wxtest_expect_signal(what, wxtest_in_child(call_it, f), SIGTRAP);
}

/* After a free, old code (deferring) or traps (not) at f. */
static void expect_freed(const char *what, uint8_t *f, size_t size, int32_t v)
{
    if (mode != AT_FREE) {
        CHECK(holds_fn(f, size, v),
              "%s: freed code at %p changed before its fill", what,
              (void *)f);
        expect_returns(what, f, v);
    } else {
        CHECK(all_traps(f, size), "%s: freed code at %p is not traps", what,
              (void *)f);
        expect_trap(what, f);
    }
}

/* Explicit toggle and procmem and AUTO take the flag; dualmap and rwx
 * refuse it. */
static void test_backends(void)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    wxjit_heap *h = NULL;
    o.flags = WXJIT_HEAP_DEFER_TRAP_FILL;
    o.backend = WXJIT_BACKEND_DUALMAP;
    CHECK_RET(wxjit_heap_create(&o, &h), EINVAL);
    o.backend = WXJIT_BACKEND_RWX;
    o.flags |= WXJIT_HEAP_ALLOW_RWX;
    CHECK_RET(wxjit_heap_create(&o, &h), EINVAL);
    CHECK(h == NULL, "a refused create wrote its out-parameter");
    o.flags = WXJIT_HEAP_DEFER_TRAP_FILL;
    o.backend = WXJIT_BACKEND_TOGGLE;
    CHECK_OK(wxjit_heap_create(&o, &h));
    CHECK_OK(wxjit_heap_destroy(h));
    o.backend = WXJIT_BACKEND_AUTO;
    CHECK_OK(wxjit_heap_create(&o, &h));
    CHECK_OK(wxjit_heap_destroy(h));
    const char *why = NULL;
    if (wxjit_backend_probe(WXJIT_BACKEND_PROCMEM, &why) == 0) {
        o.backend = WXJIT_BACKEND_PROCMEM;
        CHECK_OK(wxjit_heap_create(&o, &h));
        CHECK_OK(wxjit_heap_destroy(h));
    } else {
        wxtest_skip("the flag with an explicit procmem", why);
    }
    printf("  flag: taken by toggle, procmem and AUTO, EINVAL with dualmap "
           "and rwx\n");
}

/* A free costs no system call; its code runs until the page's next window
 * (an install on the same page), then traps; on procmem that install
 * leaves it, as it lands elsewhere. */
static void test_stale_call(void)
{
    wxjit_heap *h = defer_heap(4);
    uint8_t *a = install_fn(h, 64, 1), *b = install_fn(h, 64, 2);
    wxjit_stats s0 = wxtest_stats_of(h);
    CHECK_OK(wxjit_free(h, a));
    wxjit_stats s1 = wxtest_stats_of(h);
    CHECK(s1.frees == s0.frees + 1 && s1.bytes_live == s0.bytes_live - 64,
          "free counted frees %llu->%llu bytes_live %llu->%llu",
          (unsigned long long)s0.frees, (unsigned long long)s1.frees,
          (unsigned long long)s0.bytes_live,
          (unsigned long long)s1.bytes_live);
    if (mode != AT_FREE)
        CHECK(s1.syscalls == s0.syscalls,
              "a deferred free made %llu system "
              "calls",
              (unsigned long long)(s1.syscalls - s0.syscalls));
    expect_freed("stale call before the page's next window", a, 64, 1);
    uint8_t *c = install_fn(h, 64, 3);
    CHECK(wxtest_page_of(c) == wxtest_page_of(a), "c at %p, a at %p",
          (void *)c, (void *)a);
    if (mode == ON_REUSE) {
        expect_freed("stale call after an install elsewhere on its page", a,
                     64, 1);
    } else {
        CHECK(all_traps(a, 64), "freed code at %p survived its page's "
                                "window", (void *)a);
        expect_trap("stale call after the page's next window", a);
    }
    expect_returns("neighbour", b, 2);
    expect_returns("new function", c, 3);
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  stale call: %s\n",
           mode == ON_REUSE ? "old code, also after an install elsewhere"
                            : "old code until the page's next window, then "
                              "SIGTRAP");
}

/* A one-page chunk filled with 16 functions; two freed; a smaller one
 * installed lands in the first's space: traps follow it to the end of its
 * last granule; the rest of the first's space and all of the second (same
 * page, same window) are traps on toggle, old code still on procmem; the
 * neighbours run. */
static void test_reuse(void)
{
    enum { N = 16 };
    size_t size = page / N;
    wxjit_heap *h = defer_heap(1);
    uint8_t *f[N];
    for (int i = 0; i < N; i++)
        f[i] = install_fn(h, size, i);
    CHECK(f[N - 1] == f[0] + (N - 1) * size, "layout: %p .. %p", (void *)f[0],
          (void *)f[N - 1]);
    CHECK_OK(wxjit_free(h, f[5]));
    CHECK_OK(wxjit_free(h, f[9]));
    expect_freed("freed, before reuse", f[5], size, 5);
    /* Not a whole number of granules: its last one has slack. */
    size_t gsize = size / 2 - 3, mine = (gsize + GRANULE - 1) / GRANULE * GRANULE;
    uint8_t *g = install_fn(h, gsize, 100);
    CHECK(g == f[5], "the new function went to %p, not the freed space %p",
          (void *)g, (void *)f[5]);
    expect_returns("the new function in reused space", g, 100);
    CHECK(holds_fn(g, gsize, 100) && all_traps(g + gsize, mine - gsize),
          "reused space: not the new code then traps to its granules' end");
    if (mode == ON_REUSE) {
        CHECK(holds_part(f[5] + mine, size, 5, mine, size - mine),
              "the freed function's rest changed though not reused");
        expect_freed("the other freed function, not reused", f[9], size, 9);
    } else {
        CHECK(all_traps(g + mine, size - mine),
              "the freed function's rest is not traps");
        CHECK(all_traps(f[9], size), "the other freed function on the page "
                                     "was not filled by the reusing window");
        expect_trap("stale call to the other freed function", f[9]);
    }
    for (int i = 0; i < N; i++)
        if (i != 5 && i != 9)
            expect_returns("neighbour", f[i], i);

    /* A freed function across two pages, reused at its start: on toggle
     * the window covers the first page only, which it fills; the part on
     * the second page waits for that page's window (a patch there). On
     * procmem all of the rest stays, patch or not. */
    wxjit_heap *h2 = defer_heap(2);
    uint8_t *big = install_fn(h2, page + page / 2, 7);
    uint8_t *filler = install_fn(h2, page / 2, 8);
    CHECK(big + page + page / 2 == filler, "layout: %p, %p", (void *)big,
          (void *)filler);
    CHECK_OK(wxjit_free(h2, big));
    uint8_t *s = install_fn(h2, 64, 9);
    CHECK(s == big, "the new function went to %p, not %p", (void *)s,
          (void *)big);
    expect_returns("new function over a freed two-page one", s, 9);
    size_t big_size = page + page / 2;
    CHECK(mode == ON_REUSE
              ? holds_part(big + 64, big_size, 7, 64, page - 64)
              : all_traps(big + 64, page - 64),
          "the freed function's rest on the reused page is not %s",
          mode == ON_REUSE ? "its old code" : "traps");
    CHECK(mode == AT_FREE || holds_part(big + page, big_size, 7, page, page / 2),
          "the freed function's part on the other page changed before that "
          "page's window");
    uint8_t ret10[16];
    CHECK_OK(wxjit_patch(h2, filler, ret10, emit_return_int(ret10, 10)));
    expect_returns("patched neighbour", filler, 10);
    CHECK(mode == ON_REUSE
              ? holds_part(big + page, big_size, 7, page, page / 2)
              : all_traps(big + page, page / 2),
          "the freed function's part on the patched page is not %s",
          mode == ON_REUSE ? "its old code" : "traps");
    CHECK_OK(wxjit_heap_destroy(h2));
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  reuse: new code and traps to its granules' end; %s\n",
           mode == ON_REUSE ? "the rest of freed code stays until reused"
                            : "the page's freed code trapped by its window");
}

/* ---- threads: install, call and free each other's code ----------------- */
#define SLOTS 64
#define THREADS 4
#define STEPS 20000
enum { EMPTY, BUSY, LIVE };

struct slot {
    _Atomic int state;
    uint8_t *exec;
    int32_t value;
};

static struct slot slots[SLOTS];
static wxjit_heap *mt_heap;
static _Atomic int32_t next_value = 1000;
static _Atomic uint64_t calls, bad;

static uint32_t next_random(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* Each step claims a random slot: an empty one gets a new function (of
 * 16 to 1024 bytes, so reuse mixes sizes), a live one is called and
 * checked, or freed (by whichever thread comes, mostly not its
 * installer). A claimed slot is nobody else's, so no call is stale. */
static void *mt_main(void *arg)
{
    uint32_t rng = (uint32_t)(uintptr_t)arg * 2654435761u + 1;
    for (int step = 0; step < STEPS; step++) {
        struct slot *s = &slots[next_random(&rng) % SLOTS];
        int want = LIVE;
        if (!atomic_compare_exchange_strong(&s->state, &want, BUSY)) {
            want = EMPTY;
            if (!atomic_compare_exchange_strong(&s->state, &want, BUSY))
                continue;
            s->value = atomic_fetch_add(&next_value, 1);
            s->exec =
                install_fn(mt_heap, 16 << next_random(&rng) % 7, s->value);
            want = LIVE;
        }
        if (as_fn(s->exec)() != s->value)
            atomic_fetch_add(&bad, 1);
        atomic_fetch_add(&calls, 1);
        if (next_random(&rng) % 3 == 0) {
            CHECK_OK(wxjit_free(mt_heap, s->exec));
            atomic_store(&s->state, EMPTY);
        } else {
            atomic_store(&s->state, LIVE);
        }
    }
    return NULL;
}

static void test_threads(void)
{
    mt_heap = defer_heap(16);
    pthread_t t[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++)
        t[i] = wxtest_spawn(mt_main, (void *)(i + 1));
    for (int i = 0; i < THREADS; i++)
        wxtest_join(t[i]);
    CHECK(atomic_load(&bad) == 0, "%llu of %llu calls returned a wrong value",
          (unsigned long long)bad, (unsigned long long)calls);
    for (int i = 0; i < SLOTS; i++)
        if (slots[i].state == LIVE) {
            expect_returns("after the threads", slots[i].exec, slots[i].value);
            CHECK_OK(wxjit_free(mt_heap, slots[i].exec));
        }
    wxjit_stats s = wxtest_stats_of(mt_heap);
    CHECK(s.installs == s.frees && s.bytes_live == 0,
          "installs %llu frees %llu bytes_live %llu",
          (unsigned long long)s.installs, (unsigned long long)s.frees,
          (unsigned long long)s.bytes_live);
    CHECK_EQ(wxtest_wx_mappings(), 0);
    CHECK_OK(wxjit_heap_destroy(mt_heap));
    printf("  threads: %d threads, %llu calls checked, %llu installs and "
           "frees\n",
           THREADS, (unsigned long long)calls, (unsigned long long)s.frees);
}

/* ---- fork and destroy with fills pending -------------------------------- */
static wxjit_heap *fork_heap;
static uint8_t *fork_a;

static void fork_child(void *unused)
{
    (void)unused;
    expect_freed("in the child, before any window", fork_a, 64, 1);
    uint8_t *c = install_fn(fork_heap, 64, 3);
    expect_returns("installed in the child", c, 3);
    if (mode == ON_REUSE)
        expect_freed("in the child, after an install elsewhere", fork_a, 64,
                     1);
    else
        CHECK(all_traps(fork_a, 64), "the child's window left the freed "
                                     "code");
}

static void test_fork(void)
{
    fork_heap = defer_heap(4);
    fork_a = install_fn(fork_heap, 64, 1);
    uint8_t *b = install_fn(fork_heap, 64, 2);
    CHECK_OK(wxjit_free(fork_heap, fork_a));
    wxtest_expect_exit("child with a pending fill",
                       wxtest_in_child(fork_child, NULL), 0);
    expect_freed("in the parent after the child's window", fork_a, 64, 1);
    expect_returns("neighbour in the parent", b, 2);
    CHECK_OK(wxjit_heap_destroy(fork_heap));

    wxjit_heap *h = defer_heap(4);
    uint8_t *x = install_fn(h, 64, 4);
    CHECK_OK(wxjit_free(h, x));
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  fork: the child inherits the pending fill; destroy with one "
           "pending\n");
}

int main(int argc, char **argv)
{
    wxtest_enter_wx_policy();
    wxtest_require_alias_writes_run("test_defer");
    CHECK_OK(wxjit_fault_handler_install());
    page = (size_t)sysconf(_SC_PAGESIZE);
    wxjit_heap *h = defer_heap(1);
    wxjit_backend b;
    CHECK_OK(wxjit_heap_backend(h, &b));
    CHECK_OK(wxjit_heap_destroy(h));
    mode = b == WXJIT_BACKEND_TOGGLE    ? PAGE_WINDOW
           : b == WXJIT_BACKEND_PROCMEM ? ON_REUSE
                                        : AT_FREE;
    const char *name;
    CHECK_OK(wxjit_backend_name(b, &name));
    printf("test_defer (%s: %s)\n", name,
           mode == PAGE_WINDOW ? "frees filled by the page's next window"
           : mode == ON_REUSE  ? "frees left until their space is reused"
                               : "the flag changes nothing");
    if (wxtest_selected(argc, argv, "backends"))
        test_backends();
    if (wxtest_selected(argc, argv, "stale_call"))
        test_stale_call();
    if (wxtest_selected(argc, argv, "reuse"))
        test_reuse();
    if (wxtest_selected(argc, argv, "threads"))
        test_threads();
    if (wxtest_selected(argc, argv, "fork"))
        test_fork();
    CHECK_EQ(wxtest_wx_mappings(), 0);
    printf("test_defer: ok\n");
    return 0;
}
