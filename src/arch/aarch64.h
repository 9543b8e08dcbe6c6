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

/* Arm ARM (DDI 0487), "Concurrent modification and execution of
 * instructions" and "Instruction cache maintenance": after the
 * writer's dc cvau / dsb ish / ic ivau / dsb ish (the clear_cache below,
 * broadcast to the inner shareable domain), a PE other than the writer
 * may still execute instructions it fetched before, until it takes a
 * context synchronisation event (an isb, or an exception return). That
 * holds for any instruction memory, new code where freed code was as well
 * as code being patched, and no user-space instruction reaches another
 * PE. Linux itself IPIs every CPU after writing kernel code
 * (flush_icache_range: kick_all_cpus_sync), but leaves user mappings to
 * user space (sync_icache_aliases: "Don't issue kick_all_cpus_sync() after
 * I-cache invalidation for user mappings"); membarrier's
 * MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE is that IPI for the
 * process's own threads (wasmtime and SpiderMonkey use it for the same
 * reason). So every operation that changes code syncs every core, after
 * its local maintenance and before it returns. */
#define WXJ_ARCH_CORE_SYNC (WXJ_CHANGE_NEW | WXJ_CHANGE_LIVE)

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

/* ---- unwind information (observe/eh_frame.c) ----------------------------
 * The ELF machine (EM_AARCH64) for perf's jitdump header, and DWARF CFI
 * for a function that starts with stp x29, x30, [sp, #-16]!; mov x29, sp
 * (AAPCS64 DWARF numbers: sp 31, x29 the frame pointer, x30 the link
 * register; instructions are 4 bytes, the code alignment factor). */
#define WXJ_ARCH_ELF_MACHINE 183
#define WXJ_CFI_CODE_ALIGN 4
#define WXJ_CFI_DATA_ALIGN (-8)
#define WXJ_CFI_RA_REG 30
/* At entry: CFA = sp, the return address in x30 itself. */
#define WXJ_CFI_CIE_INSNS 0x0c, 0x1f, 0x00
/* After the stp: CFA = sp + 16, x29 at CFA - 16, x30 at CFA - 8; after
 * the mov: CFA = x29 + 16. */
#define WXJ_CFI_FP_INSNS 0x41, 0x0e, 0x10, 0x9d, 0x02, 0x9e, 0x01, 0x41, 0x0d, 0x1d
#define WXJ_CFI_FP_PROLOGUE 0xfd, 0x7b, 0xbf, 0xa9, 0xfd, 0x03, 0x00, 0x91

#endif
