/* Test helpers that put small functions in a heap and call them. */
#ifndef WXTEST_CODE_H
#define WXTEST_CODE_H

#include "emit.h"
#include "wxtest_core.h"

/* A function returning v, installed in h, or a loud failure. */
static inline void *wxtest_install_int(wxjit_heap *h, int32_t v)
{
    uint8_t buf[16];
    void *exec;
    CHECK_OK(wxjit_install(h, buf, emit_return_int(buf, v), 0, &exec));
    return exec;
}

/* Calls f and fails loudly unless it returns v. */
static inline void wxtest_expect_returns(void *f, int32_t v)
{
    int got = as_fn(f)();
    CHECK(got == v, "function at %p returned %d, expected %d", f, got, v);
}

#endif /* WXTEST_CODE_H */
