/* The C half of test_unwind.cpp (tests/unwind_jit.h). */
#include "unwind_jit.h"

#include "emit_frames.h"
#include "wxtest.h"

void unwind_jit_setup(void)
{
    wxtest_enter_wx_policy();
    CHECK_OK(wxjit_fault_handler_install());
    wxtest_print_backend();
}

wxjit_heap *unwind_jit_heap(unsigned flags)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    wxjit_heap *h;
    o.flags = flags;
    CHECK_OK(wxjit_heap_create(&o, &h));
    return h;
}

struct jit_pair unwind_jit_install(wxjit_heap *h, int (*callback)(void))
{
    struct jit_pair p;
    uint8_t buf[64];
    p.inner_size = emit_frame_call(buf, (uintptr_t)callback, 1);
    CHECK_OK(wxjit_install(h, buf, p.inner_size, 0, &p.inner));
    p.outer_size = emit_frame_call(buf, (uintptr_t)p.inner, 10);
    CHECK_OK(wxjit_install(h, buf, p.outer_size, 0, &p.outer));
    void *exec[2] = {p.outer, p.inner};
    wxjit_code_info info[2] = {WXJIT_CODE_INFO_INIT, WXJIT_CODE_INFO_INIT};
    info[0].name = "wxjit_unwind_outer";
    info[1].name = "wxjit_unwind_inner";
    info[0].flags = info[1].flags = WXJIT_DESCRIBE_FRAME_POINTER;
    CHECK_OK(wxjit_describe_batch(h, exec, info, 2));
    return p;
}
