/* aarch64: instruction fetch is not coherent with data stores; new code
 * needs dc cvau / ic ivau / isb (Arm ARM B2.4.4), which
 * __builtin___clear_cache emits through libgcc's cache-line loop. */
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

static inline uintptr_t wxj_arch_sp(const ucontext_t *uc)
{
    return (uintptr_t)uc->uc_mcontext.sp;
}

/* brk #0: SIGTRAP (TRAP_BRKPT) wherever an aligned fetch lands. Each byte
 * gets the byte of that encoding its address selects, so a range that
 * starts or ends inside a word (the tail after `used` bytes of an in-place
 * reservation) still leaves every whole word in it a brk. Byte stores
 * also keep the fill free of misaligned word accesses. */
static inline void wxj_arch_trap_fill(void *dst, size_t n)
{
    static const uint8_t brk[4] = {0x00, 0x00, 0x20, 0xd4}; /* LE d4200000 */
    uint8_t *p = dst;
    for (size_t i = 0; i < n; i++)
        p[i] = brk[((uintptr_t)p + i) & 3];
}

static inline void wxj_arch_flush_icache(const void *p, size_t n)
{
    __builtin___clear_cache((char *)p, (char *)p + n);
}

/* A function returning v (0 <= v < 2048): movz w0, #v; ret. */
static inline size_t wxj_arch_emit_return(uint8_t *p, uint32_t v)
{
    uint32_t insn[2] = {0x52800000u | v << 5, 0xd65f03c0u};
    __builtin_memcpy(p, insn, sizeof(insn));
    return sizeof(insn);
}

#endif
