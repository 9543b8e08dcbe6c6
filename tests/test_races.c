/* Two calls racing on the same function, as a JIT with a use-after-free
 * bug makes them: whatever the order, the outcome must be one that some
 * order of the two calls gives. Here: wxjit_patch (and
 * wxjit_patch_atomic) against wxjit_free. Either the patch lands before
 * the free (and is trapped over with the rest), or it fails with EINVAL;
 * freed space holds traps, never the patch's bytes. (The patch once wrote
 * after the free's trap fill: a stale call ran it, and the bytes outlived
 * the function into the next one's slack.) And another thread's commit of
 * an in-place reservation (EPERM, nothing changed) against its owner's
 * commit, which must succeed. (The refused commit once took the record
 * out of the table for a moment: the owner's commit failed with EINVAL,
 * or its exit missed the reservation, left open forever.) */
#include <stdatomic.h>

#include "emit.h"
#include "wxtest.h"

#define ROUNDS 100000
#define FN_BYTES 64

struct patcher {
    wxjit_heap *heap;
    void *_Atomic target;
    _Atomic bool stop;
    _Atomic uint64_t landed, refused;
};

static void *patch_target(void *arg)
{
    struct patcher *p = arg;
    uint8_t bytes[32];
    emit_nops(bytes, sizeof(bytes));
    for (uint64_t i = 0; !atomic_load(&p->stop); i++) {
        uint8_t *t = atomic_load(&p->target);
        if (!t)
            continue;
        int err = i % 2 ? wxjit_patch(p->heap, t, bytes, sizeof(bytes))
                        : wxjit_patch_atomic(p->heap, t + 8,
                                             0x9090909090909090ull, 8);
        CHECK(err == 0 || err == EINVAL || err == ENOTSUP,
              "patch racing a free: %s", strerror(err));
        atomic_fetch_add(err ? &p->refused : &p->landed, 1);
    }
    return NULL;
}

static void check_traps(const uint8_t *p, size_t n, int round)
{
    for (size_t i = 0; i < n; i++)
        CHECK(p[i] == emit_trap_byte(p + i),
              "round %d: freed byte %zu is %#x, not a trap", round, i, p[i]);
}

static void test_patch_vs_free(void)
{
    struct patcher p = {.heap = wxtest_heap_of(WXJIT_BACKEND_AUTO)};
    uint8_t code[FN_BYTES];
    emit_nops(code, sizeof(code) - EMIT_RETURN_INT_SIZE);
    emit_return_int(code + sizeof(code) - EMIT_RETURN_INT_SIZE, 1);
    pthread_t t = wxtest_spawn(patch_target, &p);
    for (int i = 0; i < wxtest_rounds(ROUNDS); i++) {
        uint8_t *f;
        CHECK_OK(wxjit_install(p.heap, code, sizeof(code), 0, (void **)&f));
        atomic_store(&p.target, f);
        /* From no delay to longer than a toggle patch's two mprotect
         * calls, so that both orders happen on every backend. */
        for (volatile int spin = 0; spin < i % 97 * i % 8192; spin++)
            ;
        CHECK_OK(wxjit_free(p.heap, f));
        atomic_store(&p.target, NULL);
        /* A patch that loaded the address before it was cleared may still
         * be on its way: it must fail, or have landed before the free. */
        for (volatile int spin = 0; spin < 2000; spin++)
            ;
        check_traps(f, sizeof(code), i);
    }
    atomic_store(&p.stop, true);
    wxtest_join(t);
    printf("  %d frees racing patches of the same function: freed space "
           "always traps (%llu patches landed first, %llu refused)\n",
           wxtest_rounds(ROUNDS), (unsigned long long)atomic_load(&p.landed),
           (unsigned long long)atomic_load(&p.refused));
    CHECK_OK(wxjit_heap_destroy(p.heap));
}

/* ---- a foreign commit against the owner's -------------------------------- */
#define FOREIGN_ROUNDS 3000

struct intruder {
    wxjit_heap *heap;
    pthread_mutex_t lock; /* guards copy */
    wxjit_reservation copy;
    bool published;
    _Atomic bool stop;
    _Atomic uint64_t refused, attempts;
};

static void *commit_foreign(void *arg)
{
    struct intruder *in = arg;
    while (!atomic_load(&in->stop)) {
        pthread_mutex_lock(&in->lock);
        wxjit_reservation mine = in->copy;
        bool published = in->published;
        pthread_mutex_unlock(&in->lock);
        if (!published)
            continue;
        int err = wxjit_commit(in->heap, &mine, 8);
        CHECK(err == EPERM || err == EINVAL,
              "another thread's in-place commit returned %d (%s)", err,
              strerror(err));
        atomic_fetch_add(&in->refused, err == EPERM);
        atomic_fetch_add(&in->attempts, 1);
    }
    return NULL;
}

static void test_foreign_commit(void)
{
    struct intruder in = {.heap = wxtest_heap_of(WXJIT_BACKEND_AUTO),
                          .lock = PTHREAD_MUTEX_INITIALIZER};
    pthread_t t = wxtest_spawn(commit_foreign, &in);
    for (int i = 0; i < wxtest_rounds(FOREIGN_ROUNDS); i++) {
        wxjit_reservation r;
        CHECK_OK(wxjit_reserve(in.heap, 64, 0, WXJIT_RESERVE_IN_PLACE, &r));
        size_t used = emit_return_int(r.write, i);
        uint64_t tried = atomic_load(&in.attempts);
        pthread_mutex_lock(&in.lock);
        in.copy = r;
        in.published = true;
        pthread_mutex_unlock(&in.lock);
        /* The intruder at work on this copy (for up to a second: a loaded
         * machine), then the owner's commit at a varying moment. */
        for (int wait = 0; atomic_load(&in.attempts) < tried + 2 &&
                           wait < 100000;
             wait++)
            usleep(10);
        for (volatile int spin = 0; spin < i % 61 * 37; spin++)
            ;
        void *f = r.exec;
        CHECK_OK(wxjit_commit(in.heap, &r, used));
        pthread_mutex_lock(&in.lock);
        in.published = false;
        pthread_mutex_unlock(&in.lock);
        CHECK_EQ(as_fn(f)(), i);
        CHECK_OK(wxjit_free(in.heap, f));
    }
    atomic_store(&in.stop, true);
    wxtest_join(t);
    CHECK(atomic_load(&in.refused) >= (uint64_t)wxtest_rounds(FOREIGN_ROUNDS),
          "the race did not happen: %llu foreign commits refused",
          (unsigned long long)atomic_load(&in.refused));
    printf("  %d in-place commits by their owner while another thread's "
           "commits of them were refused (%llu EPERM): every owner's "
           "commit succeeded\n",
           wxtest_rounds(FOREIGN_ROUNDS),
           (unsigned long long)atomic_load(&in.refused));
    CHECK_OK(wxjit_heap_destroy(in.heap));
}

int main(int argc, char **argv)
{
    wxtest_enter_wx_policy();
    /* Runs code installed where freed code was (a freed block's space is
     * reused at once): not under an emulator that misses dualmap's
     * writes. */
    wxtest_require_alias_writes_run("test_races");
    CHECK_OK(wxjit_fault_handler_install());
    printf("test_races:\n");
    wxtest_print_backend();
    if (wxtest_selected(argc, argv, "patch_vs_free"))
        test_patch_vs_free();
    if (wxtest_selected(argc, argv, "foreign_commit"))
        test_foreign_commit();
    CHECK_EQ(wxtest_wx_mappings(), 0);
    printf("test_races: ok\n");
    return 0;
}
