/* sljitConfigPre.h for sljit hosts (PCRE2's JIT among them) that want
 * their executable memory from wxjit, under strict W^X.
 *
 * sljitLir.h includes this file first when the host is compiled with
 *     -DSLJIT_HAVE_CONFIG_PRE=1 -I<this directory>
 * and the host is linked with wxjit_sljit.c (libwxjit_sljit.a) and libwxjit.
 * Nothing in the host or in sljit changes.
 *
 * SLJIT_EXECUTABLE_ALLOCATOR 0 turns sljit's own allocators off; sljit then
 * calls the four macros below. SLJIT_PROT_EXECUTABLE_ALLOCATOR 1 tells sljit
 * that the address it writes at and the address the code runs at may
 * differ: it emits code for exec = write + SLJIT_EXEC_OFFSET(write). The
 * backend is chosen at run time (WXJIT_BACKEND), so it is always on: the
 * offset is 0 with toggle, which writes at the executable address itself,
 * and the distance to the RW alias with dualmap. */
#ifndef WXJIT_SLJIT_CONFIG_PRE_H
#define WXJIT_SLJIT_CONFIG_PRE_H

#include "wxjit_sljit.h"

#define SLJIT_EXECUTABLE_ALLOCATOR 0
#define SLJIT_PROT_EXECUTABLE_ALLOCATOR 1

/* PCRE2 passes no allocator context (exec_allocator_data is NULL): one
 * process-wide heap serves every caller. */
#define SLJIT_MALLOC_EXEC(size, exec_allocator_data)                          \
    wxjit_sljit_malloc_exec((size))
#define SLJIT_FREE_EXEC(ptr, exec_allocator_data) wxjit_sljit_free_exec((ptr))
#define SLJIT_EXEC_OFFSET(ptr) wxjit_sljit_exec_offset((ptr))
#define SLJIT_UPDATE_WX_FLAGS(from, to, enable_exec)                          \
    wxjit_sljit_update_wx_flags((from), (to), (enable_exec))

/* sljit's test program allocates through its built-in allocator's names,
 * which exist only with SLJIT_EXECUTABLE_ALLOCATOR 1: here they are
 * wxjit's. */
#define SLJIT_BUILTIN_MALLOC_EXEC(size, exec_allocator_data)                  \
    wxjit_sljit_malloc_exec((size))
#define SLJIT_BUILTIN_FREE_EXEC(ptr, exec_allocator_data)                     \
    wxjit_sljit_free_exec((ptr))

#endif /* WXJIT_SLJIT_CONFIG_PRE_H */
