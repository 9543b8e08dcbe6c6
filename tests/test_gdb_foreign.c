/* Another library of the process defines gdb's JIT symbols too (LLVM's
 * ORC, wasmtime, V8 ...); this program plays that library, defining them
 * as gdb's manual declares. Linked with the static libwxjit, its strong
 * definitions win over wxjit's weak ones: wxjit must leave that list
 * alone (heap creation with WXJIT_HEAP_GDB, or WXJIT_GDB=1, fails with
 * ENOTSUP; other heaps work). Linked with the shared libwxjit
 * (test_gdb_foreign_shared), wxjit keeps its own list: its heaps register
 * there and this program's list stays as the program left it. Run once,
 * under the W^X policy. */
#include <stdbool.h>

#include "emit_frames.h"
#include "foreign_jit.h" /* its definitions: foreign_jit.c */
#include "wxtest.h"

int main(int argc, char **argv)
{
    bool shared = argc == 2 && !strcmp(argv[1], "shared");
    wxtest_enter_wx_policy();
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    wxjit_heap *h;
    o.flags = WXJIT_HEAP_GDB;
    if (!shared) {
        CHECK_RET(wxjit_heap_create(&o, &h), ENOTSUP);
        setenv("WXJIT_GDB", "1", 1);
        CHECK_RET(wxjit_heap_create(NULL, &h), ENOTSUP);
        unsetenv("WXJIT_GDB");
        o.flags = WXJIT_HEAP_PERF_MAP;
        CHECK_OK(wxjit_heap_create(&o, &h));
        CHECK_OK(wxjit_heap_destroy(h));
        printf("  static link, the program's definitions won: "
               "WXJIT_HEAP_GDB and WXJIT_GDB=1 are ENOTSUP, other heaps "
               "work\n");
    } else {
        CHECK_OK(wxjit_heap_create(&o, &h));
        uint8_t buf[64];
        void *f;
        CHECK_OK(wxjit_install(h, buf, emit_frame_spin(buf, 1), 0, &f));
        wxjit_code_info info = WXJIT_CODE_INFO_INIT;
        info.name = "wxjit_foreign";
        CHECK_OK(wxjit_describe(h, f, &info));
        CHECK(__jit_debug_descriptor.first_entry == NULL &&
                  __jit_debug_descriptor.relevant_entry == NULL,
              "wxjit changed the program's own gdb JIT list");
        CHECK_OK(wxjit_heap_destroy(h));
        printf("  shared libwxjit: wxjit registers in its own list, the "
               "program's stays untouched\n");
    }
    printf("test_gdb_foreign: all passed\n");
    return 0;
}
