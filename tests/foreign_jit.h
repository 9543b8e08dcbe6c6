/* gdb's JIT interface as gdb's manual declares it, as another JIT library
 * (LLVM's ORC, wasmtime, V8 ...) defines it: foreign_jit.c holds the
 * definitions, linked into test_gdb_foreign's programs and built as the
 * shared library test_gdb_two loads before libwxjit. */
#ifndef FOREIGN_JIT_H
#define FOREIGN_JIT_H

#include <stdint.h>

struct jit_code_entry {
    struct jit_code_entry *next_entry, *prev_entry;
    const char *symfile_addr;
    uint64_t symfile_size;
};

struct jit_descriptor {
    uint32_t version, action_flag;
    struct jit_code_entry *relevant_entry, *first_entry;
};

extern struct jit_descriptor __jit_debug_descriptor;
__attribute__((noinline)) void __jit_debug_register_code(void);

#endif
