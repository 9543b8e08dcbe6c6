// C++ exceptions and backtrace() through JIT frames: C++ calls JIT code
// (two frame-pointer functions described in one batch) that calls back
// into C++, which throws; the C++ caller above the JIT frames must catch
// it, and backtrace() taken in the callback must list both JIT frames and
// go on to the caller. With WXJIT_HEAP_UNWIND the process's unwinder
// (libgcc_s, loaded with libstdc++) knows the JIT frames; without it the
// same throw ends in std::terminate (checked in a child: the test must
// fail without registration). Freed functions are deregistered: new code
// at the same addresses, described again, unwinds as well (under ASan, a
// frame left registered over freed memory would be read after its free).
// Under the W^X policy, once per backend.
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <execinfo.h>
#include <sys/wait.h>
#include <unistd.h>

#include "unwind_jit.h"
#include "wxtest_check.h"

static void *frames[64];
static int depth;

extern "C" __attribute__((noinline)) int throwing_callback(void)
{
    depth = backtrace(frames, 64);
    throw 42;
}

// C++ with a handler above the JIT frames.
__attribute__((noinline)) static int call_through_jit(void *fn)
{
    int (*f)(void);
    memcpy(&f, &fn, sizeof(f));
    try {
        f();
    } catch (int e) {
        return e;
    }
    return -1;
}

static bool in(void *pc, void *start, size_t size)
{
    uintptr_t a = (uintptr_t)pc, s = (uintptr_t)start;
    return a > s && a <= s + size; // return addresses: after the call
}

// The throw is caught above the JIT frames, and backtrace() listed
// callback, inner, outer, then the C++ caller.
static void check_unwinds(const jit_pair &p, const char *when)
{
    CHECK(call_through_jit(p.outer) == 42, "%s: exception not caught", when);
    int inner = -1, outer = -1, after = -1;
    for (int i = 0; i < depth; i++) {
        if (in(frames[i], p.inner, p.inner_size))
            inner = i;
        else if (in(frames[i], p.outer, p.outer_size))
            outer = i;
        else if (outer >= 0 && after < 0)
            after = i;
    }
    CHECK(inner >= 1 && outer == inner + 1 && after == outer + 1,
          "%s: backtrace() of %d frames: inner at %d, outer at %d, the "
          "caller at %d",
          when, depth, inner, outer, after);
    printf("  %s: exception caught above 2 JIT frames; backtrace() lists "
           "%d frames, the JIT ones at %d and %d\n",
           when, depth, inner, outer);
}

int main()
{
    unwind_jit_setup();
    wxjit_heap *h = unwind_jit_heap(0);

    // Without registration the unwinder finds no frame for JIT code.
    jit_pair bare = unwind_jit_install(h, throwing_callback);
    fflush(stdout);
    pid_t child = fork();
    CHECK(child >= 0, "fork: %s", strerror(errno));
    if (child == 0) {
        // std::terminate's message is expected: keep it out of the log.
        if (!freopen("/dev/null", "w", stderr))
            _exit(2);
        call_through_jit(bare.outer);
        _exit(0);
    }
    int status;
    CHECK(waitpid(child, &status, 0) == child, "waitpid");
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
          "without registration: status %#x, expected std::terminate's "
          "SIGABRT",
          status);
    printf("  without WXJIT_HEAP_UNWIND: std::terminate (SIGABRT), as "
           "expected\n");
    CHECK_OK(wxjit_heap_destroy(h));

    h = unwind_jit_heap(WXJIT_HEAP_UNWIND);
    jit_pair p = unwind_jit_install(h, throwing_callback);
    check_unwinds(p, "registered");
    CHECK_OK(wxjit_free(h, p.outer));
    CHECK_OK(wxjit_free(h, p.inner));
    jit_pair again = unwind_jit_install(h, throwing_callback);
    CHECK(again.inner == p.inner || again.outer == p.outer ||
              again.inner == p.outer,
          "no address reused: the reuse case is not tested");
    check_unwinds(again, "registered again at reused addresses");
    CHECK_OK(wxjit_heap_destroy(h));
    printf("test_unwind: all passed\n");
    return 0;
}
