/* wxjit_sljit: sljit's executable memory on one process-wide wxjit heap.
 *
 * sljit emits the second pass of its code straight into the block that
 * SLJIT_MALLOC_EXEC returns, asks for the block's executable address with
 * SLJIT_EXEC_OFFSET, seals the bytes it used with SLJIT_UPDATE_WX_FLAGS and
 * frees by executable address with SLJIT_FREE_EXEC. sljitConfigPre.h beside
 * this file maps those four macros onto the functions below; each block is
 * a wxjit in-place reservation (WXJIT_RESERVE_IN_PLACE) from malloc to
 * seal, and a committed function after it. The heap is created on first
 * use, backend from WXJIT_BACKEND (default: wxjit's AUTO);
 * with toggle, wxjit's fault handler is installed at the same time.
 *
 * Environment, read once when the heap is created:
 *   WXJIT_BACKEND=toggle|dualmap|procmem|auto  as for wxjit_heap_create;
 *   WXJIT_SLJIT_DEFER_TRAP_FILL=1  create the heap with
 *       WXJIT_HEAP_DEFER_TRAP_FILL (toggle, procmem: frees make no system
 *       call; freed code stays runnable for a while, as with sljit's own
 *       allocator);
 *   WXJIT_SLJIT_STATS=1  print the heap's counters to stderr at exit.
 *
 * All functions are thread-safe; none is async-signal-safe. The thread that
 * allocated a block must seal or free it (sljit always does: both happen
 * inside one sljit_generate_code call, or in PCRE2's allocator probe). */
#ifndef WXJIT_SLJIT_H
#define WXJIT_SLJIT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* SLJIT_MALLOC_EXEC: an in-place reservation of size bytes; returns its
 * write address, or NULL when no heap can be created, memory is short
 * (a block larger than wxjit's chunk size, max_bytes reached), or the
 * calling thread already holds WXJIT_SLJIT_OPEN_MAX unsealed blocks:
 * sljit_generate_code then returns NULL and sljit_get_compiler_error
 * says SLJIT_ERR_EX_ALLOC_FAILED (PCRE2 falls back to its interpreter). */
void *wxjit_sljit_malloc_exec(size_t size);

/* SLJIT_EXEC_OFFSET: executable minus write address of the calling
 * thread's unsealed block whose write address is ptr (0 with toggle);
 * 0 for NULL, which sljit asks about before it checks an allocation. */
ptrdiff_t wxjit_sljit_exec_offset(void *ptr);

/* SLJIT_UPDATE_WX_FLAGS(from, to, 1) right after code generation: commits
 * [from, to) of the calling thread's unsealed block that starts at the
 * executable address from; the rest of the block returns to the heap.
 * On sealed code (sljit_set_jump_addr, sljit_set_const, read-only
 * buffers), (from, to, 0) opens a wxjit write window over [from, to) and
 * the matching (from, to, 1) closes it (from may be the write address
 * sljit kept or the executable one). Backends without a stable write view
 * (procmem, RW_ON_DEMAND) cannot: the hook aborts with the reason, as it
 * does for any refusal (it cannot return an error). */
void wxjit_sljit_update_wx_flags(void *from, void *to, int enable_exec);

/* SLJIT_FREE_EXEC: frees a sealed block by its executable address, or
 * gives back an unsealed one of the calling thread (PCRE2's allocator probe
 * frees a 32-byte block that never became executable). */
void wxjit_sljit_free_exec(void *exec);

/* Unsealed blocks one thread may hold at once: sljit holds one, from the
 * malloc to the seal at the end of sljit_generate_code (its own test
 * program three). One more fails as an allocation (see above). */
#define WXJIT_SLJIT_OPEN_MAX 8

/* Windows on sealed code one thread may hold at once (sljit nests none:
 * one read-only buffer at a time, set_jump_addr and set_const close their
 * own at once). */
#define WXJIT_SLJIT_WINDOWS_MAX 4

/* The process-wide heap (created on first use), for wxjit_stats_get or
 * wxjit_heap_backend; NULL if it cannot be created, *err (may be NULL)
 * then says why (an errno value). Declared without <wxjit.h> so that a
 * host compiling sljit needs only this directory on its include path. */
struct wxjit_heap;
struct wxjit_heap *wxjit_sljit_heap(int *err);

/* Called after each seal with the executable address and the bytes
 * sealed, from the sealing thread (e.g. to write a perf map). NULL turns
 * it off. */
typedef void wxjit_sljit_seal_hook(void *exec, size_t size);
void wxjit_sljit_set_seal_hook(wxjit_sljit_seal_hook *hook);

/* sljit's call to release cached executable memory (regex_src calls it
 * unconditionally): nothing to do, wxjit's heap reuses freed space. */
void sljit_free_unused_memory_exec(void);

#ifdef __cplusplus
}
#endif

#endif /* WXJIT_SLJIT_H */
