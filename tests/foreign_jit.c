/* Another JIT library's definitions of gdb's JIT symbols (foreign_jit.h):
 * as a shared library loaded before libwxjit (test_gdb_two), its
 * definitions are the ones the dynamic linker hands out; linked into
 * test_gdb_foreign, the program's own. */
#include "foreign_jit.h"

void __jit_debug_register_code(void)
{
    __asm__ __volatile__("" ::: "memory");
}

struct jit_descriptor __jit_debug_descriptor = {1, 0, 0, 0};
