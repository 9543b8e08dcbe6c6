/* Two calls racing on the same function, as a JIT with a use-after-free
 * bug makes them: whatever the order, the outcome must be one that some
 * order of the two calls gives. Here: wxjit_patch (and
 * wxjit_patch_atomic) against wxjit_free. Either the patch lands before
 * the free (and is trapped over with the rest), or it fails with EINVAL;
 * freed space holds traps, never the patch's bytes. (The patch once wrote
 * after the free's trap fill: a stale call ran it, and the bytes outlived
 * the function into the next one's slack.) */
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

int main(void)
{
    wxtest_enter_wx_policy();
    CHECK_OK(wxjit_fault_handler_install());
    printf("test_races:\n");
    wxtest_print_backend();
    struct patcher p = {.heap = wxtest_heap_of(WXJIT_BACKEND_AUTO)};
    uint8_t code[FN_BYTES];
    emit_nops(code, sizeof(code) - EMIT_RETURN_INT_SIZE);
    emit_return_int(code + sizeof(code) - EMIT_RETURN_INT_SIZE, 1);
    pthread_t t = wxtest_spawn(patch_target, &p);
    for (int i = 0; i < ROUNDS; i++) {
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
           ROUNDS, (unsigned long long)atomic_load(&p.landed),
           (unsigned long long)atomic_load(&p.refused));
    CHECK_OK(wxjit_heap_destroy(p.heap));
    CHECK_EQ(wxtest_wx_mappings(), 0);
    printf("test_races: ok\n");
    return 0;
}
