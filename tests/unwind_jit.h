/* The C half of test_unwind.cpp: the W^X policy, heaps and JIT code come
 * from the C test helpers (tests/wxtest.h, emit_frames.h), which are not
 * C++; the C++ half throws and catches. */
#ifndef WXTEST_UNWIND_JIT_H
#define WXTEST_UNWIND_JIT_H

#include <stddef.h>

#include "wxjit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Two frame-pointer functions: outer calls inner, inner calls callback;
 * described in one batch as wxjit_unwind_outer and wxjit_unwind_inner. */
struct jit_pair {
    void *outer, *inner;
    size_t outer_size, inner_size;
};

/* Enters the W^X policy (as every test: tests/wxtest_core.h), installs
 * the fault handler, prints the backend. */
void unwind_jit_setup(void);
/* A heap with these flags, or a loud failure. */
wxjit_heap *unwind_jit_heap(unsigned flags);
struct jit_pair unwind_jit_install(wxjit_heap *h, int (*callback)(void));

#ifdef __cplusplus
}
#endif

#endif /* WXTEST_UNWIND_JIT_H */
