/* Helpers of the signal tests (test_signals.c, test_nested_signals.c):
 * code to call, a function on a page held writable (so that any other
 * thread calling it sleeps in wxjit's fault handler), and a thread that
 * calls one function and publishes its thread id for wxtest_wait_in_futex.
 */
#ifndef HELD_PAGE_H
#define HELD_PAGE_H

#include <stdatomic.h>

#include "emit.h"
#include "wxtest.h"

static inline void *install_int(wxjit_heap *h, int32_t v)
{
    uint8_t buf[32];
    void *exec;
    CHECK_OK(
        wxjit_install(h, buf, emit_return_int_patchable(buf, v), 0, &exec));
    return exec;
}

/* A function on a page the caller holds writable (toggle in place): any
 * other thread calling it sleeps in the handler until *r is committed. */
struct held {
    wxjit_heap *h;
    void *fn;
    wxjit_reservation r;
};

static inline void hold(struct held *x, int32_t v)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    x->h = wxtest_heap_of(WXJIT_BACKEND_TOGGLE);
    x->fn = install_int(x->h, v);
    CHECK_OK(wxjit_reserve(x->h, 64, 0, WXJIT_RESERVE_IN_PLACE, &x->r));
    CHECK(((uintptr_t)x->r.exec & ~(page - 1)) ==
              ((uintptr_t)x->fn & ~(page - 1)),
          "the reservation is on the function's page");
}

static inline void release(struct held *x)
{
    CHECK_OK(wxjit_commit(x->h, &x->r, emit_return_int(x->r.write, 1)));
}

struct plain_exec {
    void *fn;
    _Atomic pid_t tid;
    int result;
};

static inline void *plain_executor(void *arg)
{
    struct plain_exec *e = arg;
    atomic_store(&e->tid, (pid_t)syscall(SYS_gettid));
    e->result = as_fn(e->fn)();
    return NULL;
}

#endif /* HELD_PAGE_H */
