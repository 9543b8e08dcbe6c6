/* aarch64: instruction fetch is not coherent with data stores; new code
 * needs dc cvau / ic ivau / isb, which __builtin___clear_cache emits. */
#ifndef WXJ_ARCH_AARCH64_H
#define WXJ_ARCH_AARCH64_H

#include <stdint.h>
#include <ucontext.h>

#define WXJ_ARCH_NAME "aarch64"
#define WXJ_ARCH_MAX_INSN 4 /* fixed-width A64 */

static inline uintptr_t wxj_arch_pc(const ucontext_t *uc)
{
    return (uintptr_t)uc->uc_mcontext.pc;
}

static inline void wxj_arch_trap_fill(void *dst, size_t n)
{
    uint32_t *w = (uint32_t *)dst;
    for (size_t i = 0; i < n / 4; i++)
        w[i] = 0xd4200000u; /* brk #0 */
}

static inline void wxj_arch_flush_icache(const void *p, size_t n)
{
    __builtin___clear_cache((char *)p, (char *)p + n);
}

#endif
