/* riscv64: fence.i only orders the local hart; Linux's riscv_flush_icache
 * syscall, reached through __builtin___clear_cache, covers every hart. */
#ifndef WXJ_ARCH_RISCV64_H
#define WXJ_ARCH_RISCV64_H

#include <stdint.h>
#include <ucontext.h>

#define WXJ_ARCH_NAME "riscv64"
#define WXJ_ARCH_MAX_INSN 4 /* base ISA; compressed ones are shorter */

static inline uintptr_t wxj_arch_pc(const ucontext_t *uc)
{
    return (uintptr_t)uc->uc_mcontext.__gregs[0]; /* REG_PC */
}

static inline void wxj_arch_trap_fill(void *dst, size_t n)
{
    uint32_t *w = (uint32_t *)dst;
    for (size_t i = 0; i < n / 4; i++)
        w[i] = 0x00100073u; /* ebreak */
}

static inline void wxj_arch_flush_icache(const void *p, size_t n)
{
    __builtin___clear_cache((char *)p, (char *)p + n);
}

#endif
