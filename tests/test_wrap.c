/* Counters that wrap, started near the wrap through wxjit's internals
 * (src/internal.h: this test links the static library and reads the
 * heap's chunk list and page words, which no API exposes).
 *
 * The toggle protocol word of a page: WRITING, WAITERS and a sequence
 * bumped at each take and release of the page. 0 means "never held
 * code", which the fault handler declines. Issue 11, defect 6: after 2^29
 * windows the sequence wrapped to exactly 0. Here the word of a page with
 * live code is set just below the wrap, every ROUNDS_PER_WRAP rounds of
 * three windows, while the main
 * thread patches code on that page and an executor calls other code
 * there: after every window the word must not read 0, no fault may be
 * forwarded, and the executor must live. */
#include <pthread.h>
#include <stdatomic.h>

#include "../src/internal.h"
#include "emit.h"
#include "wxtest.h"

#define ROUNDS 3000
#define ROUNDS_PER_WRAP 500
/* The sequence's top value with WRITING and WAITERS clear, less two
 * windows: the second window's release wraps it. */
#define NEAR_WRAP (0u - 2 * 2 * WXJ_PAGE_SEQ_ONE)

struct exec {
    void *f;
    atomic_bool stop;
    unsigned long calls, wrong;
};

static void *executor(void *arg)
{
    struct exec *e = arg;
    while (!atomic_load(&e->stop)) {
        e->wrong += as_fn(e->f)() != 5;
        e->calls++;
    }
    return NULL;
}

static struct wxj_page *page_word_of(wxjit_heap *h, const void *p)
{
    for (struct wxj_chunk *c = atomic_load(&h->chunks); c;
         c = atomic_load(&c->next))
        if ((const uint8_t *)p >= c->base &&
            (const uint8_t *)p < c->base + c->size)
            return &c->pages[((const uint8_t *)p - c->base) / h->page_size];
    CHECK(0, "no chunk holds %p", p);
    return NULL;
}

static void wrap_child(void *unused)
{
    (void)unused;
    wxjit_heap *h = wxtest_heap_of(WXJIT_BACKEND_TOGGLE);
    uint8_t buf[32];
    void *f, *g;
    CHECK_OK(wxjit_install(h, buf, emit_return_int(buf, 5), 0, &f));
    CHECK_OK(
        wxjit_install(h, buf, emit_return_int_patchable(buf, 100), 0, &g));
    CHECK(wxtest_page_of(f) == wxtest_page_of(g), "setup: f and g on one "
                                                  "page");
    struct wxj_page *pg = page_word_of(h, g);
    uint8_t *imm = (uint8_t *)g + EMIT_PATCHABLE_IMM_OFFSET;
    struct exec e = {.f = f};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, executor, &e) == 0, "thread");
    unsigned long windows = 0;
    for (int round = 0; round < ROUNDS; round++) {
        /* Between windows: nobody holds the page, nobody waits on it. */
        uint32_t s = atomic_load(&pg->state);
        CHECK(!(s & (WXJ_PAGE_WRITING | WXJ_PAGE_WAITERS)),
              "page word %#x between windows", s);
        /* Every ROUNDS_PER_WRAP rounds: set to the same word every
         * round, the words would repeat, and an executor's second fault
         * at one of them would be its first retried fault all over again
         * (I3 declines that: in a real heap it takes 2^29 windows). */
        if (round % ROUNDS_PER_WRAP == 0)
            atomic_store(&pg->state, NEAR_WRAP);
        for (int k = 0; k < 3; k++) {
            CHECK_OK(wxjit_patch_atomic(h, imm, 100 + (uint32_t)k, 4));
            windows++;
            s = atomic_load(&pg->state);
            CHECK(s != 0,
                  "round %d: after window %d, set to %#x at round %d, the "
                  "page word of a page with live code reads 0",
                  round, k + 1, NEAR_WRAP,
                  round / ROUNDS_PER_WRAP * ROUNDS_PER_WRAP);
        }
        CHECK_EQ(as_fn(g)(), 102);
    }
    atomic_store(&e.stop, true);
    pthread_join(t, NULL);
    wxjit_stats st = wxtest_stats_of(h);
    CHECK_EQ(e.wrong, 0);
    CHECK_EQ(st.faults_forwarded, 0);
    printf("  %d rounds, %lu windows across the sequence wrap: the page "
           "word never read 0; executor made %lu calls, %llu faults "
           "retried, none forwarded\n",
           ROUNDS, windows, e.calls, (unsigned long long)st.faults_retried);
    fflush(stdout);
    CHECK_OK(wxjit_heap_destroy(h));
}

/* Reservation serials (a pool's count above its index, 64 bits in all,
 * src/reservations.c) started just below the wrap: reservations across
 * it commit and abort as usual, and copies of consumed ones from either
 * side of it, or forged words, are refused. */
static void serials_across_wrap(void)
{
    wxjit_heap *h = wxtest_heap_of(WXJIT_BACKEND_AUTO);
    wxjit_reservation r[5], stale[5];
    uint8_t buf[16];
    size_t n = emit_return_int(buf, 9);
    CHECK_OK(wxjit_reserve(h, 64, 0, 0, &r[0])); /* creates the pool */
    CHECK_OK(wxjit_abort(h, &r[0]));
    CHECK_EQ(h->pools->index, 0);
    h->pools->open.serial = (UINT64_MAX >> WXJ_POOL_INDEX_BITS) - 2;
    for (int i = 0; i < 5; i++) {
        CHECK_OK(wxjit_reserve(h, 64, 0, 0, &r[i]));
        memcpy(r[i].write, buf, n);
        stale[i] = r[i];
    }
    CHECK_EQ(r[2].internal[0], 0); /* counts 2^42 - 2, 2^42 - 1, 0, ... */
    wxjit_reservation forged = r[2];
    forged.internal[1] ^= 1;
    CHECK_RET(wxjit_commit(h, &forged, n), EINVAL);
    for (int i = 0; i < 5; i++) {
        void *exec = r[i].exec;
        if (i % 2)
            CHECK_OK(wxjit_abort(h, &r[i]));
        else {
            CHECK_OK(wxjit_commit(h, &r[i], n));
            CHECK_EQ(as_fn(exec)(), 9);
        }
    }
    for (int i = 0; i < 5; i++) {
        CHECK_RET(wxjit_commit(h, &stale[i], n), EINVAL);
        CHECK_RET(wxjit_abort(h, &stale[i]), EINVAL);
    }
    printf("  reservation serials across the 64-bit wrap: 5 reservations "
           "committed or aborted, stale and forged copies refused\n");
    CHECK_OK(wxjit_heap_destroy(h));
}

int main(void)
{
    wxtest_enter_wx_policy();
    CHECK_OK(wxjit_fault_handler_install());
    printf("test_wrap: page sequence words started near the wrap (toggle)\n");
    if (wxtest_emulator())
        wxtest_skip("patches across the sequence wrap while an executor "
                    "runs other code on the page",
                    "qemu-user 7.2 aborts itself under this fault load "
                    "(cpu_exec: assertion cpu == current_cpu), with or "
                    "without wxjit's SA_NODEFER");
    else
        wxtest_expect_exit_within("patches across the sequence wrap while "
                                  "an executor runs other code on the page",
                                  wrap_child, NULL, 60, 0);
    serials_across_wrap();
    CHECK_OK(wxjit_fault_handler_uninstall());
    printf("test_wrap: ok\n");
    return 0;
}
