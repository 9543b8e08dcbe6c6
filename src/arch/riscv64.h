/* riscv64: fence.i only orders the local hart (the unprivileged spec's
 * "Zifencei" chapter); Linux's riscv_flush_icache syscall, reached through
 * __builtin___clear_cache and glibc's __riscv_flush_icache, covers them
 * all. With flags 0, riscv_flush_icache (arch/riscv/mm/
 * cacheflush.c, flush_icache_mm) sends a remote fence.i to every hart
 * running the process's threads now and marks the others stale, so they
 * fence.i before they run them again; procmem's kernel copy goes through
 * the same flush_icache_mm (flush_icache_user_page). That is already what
 * membarrier's SYNC_CORE would add (Linux 6.10's
 * PR_RISCV_SET_ICACHE_FLUSH_CTX only makes the flush lazier for processes
 * that ask), so no change needs a core sync of its own. */
#ifndef WXJ_ARCH_RISCV64_H
#define WXJ_ARCH_RISCV64_H

#include <stdint.h>
#include <ucontext.h>

#define WXJ_ARCH_NAME "riscv64"
/* Longest standard instruction. With the C extension (every Linux riscv64
 * ABI, RV64GC) instructions are 2-byte aligned, so a 4-byte one can
 * straddle a page boundary and fault on the second page, 2 bytes past
 * the PC. */
#define WXJ_ARCH_MAX_INSN 4

static inline uintptr_t wxj_arch_pc(const ucontext_t *uc)
{
    return (uintptr_t)uc->uc_mcontext.__gregs[0]; /* REG_PC */
}

static inline uintptr_t wxj_arch_sp(const ucontext_t *uc)
{
    return (uintptr_t)uc->uc_mcontext.__gregs[2]; /* REG_SP */
}

/* c.ebreak (0x9002): SIGTRAP (TRAP_BRKPT) at every 2-byte boundary, where
 * a C-extension fetch may land; a 4-byte ebreak entered at its middle
 * decodes as something else. A hart without C takes SIGILL instead, still
 * at once. Bytes are chosen by address as in aarch64.h. */
static inline void wxj_arch_trap_fill(void *dst, size_t n)
{
    static const uint8_t c_ebreak[2] = {0x02, 0x90}; /* LE 9002 */
    uint8_t *p = dst;
    for (size_t i = 0; i < n; i++)
        p[i] = c_ebreak[((uintptr_t)p + i) & 1];
}

#define WXJ_ARCH_CORE_SYNC 0u

static inline void wxj_arch_flush_icache(const void *p, size_t n)
{
    __builtin___clear_cache((char *)p, (char *)p + n);
}

/* A function returning v (0 <= v < 2048): addi a0, zero, v; ret. */
static inline size_t wxj_arch_emit_return(uint8_t *p, uint32_t v)
{
    uint32_t insn[2] = {0x00000513u | v << 20, 0x00008067u};
    __builtin_memcpy(p, insn, sizeof(insn));
    return sizeof(insn);
}

/* ---- unwind information (observe/eh_frame.c) ----------------------------
 * The ELF machine (EM_RISCV) for perf's jitdump header, and DWARF CFI for
 * a function that starts with addi sp,sp,-16; sd ra,8(sp); sd s0,0(sp);
 * addi s0,sp,16, uncompressed (psABI DWARF numbers: ra 1, sp 2, s0 8;
 * code alignment 1, as GCC emits, so advances count bytes). */
#define WXJ_ARCH_ELF_MACHINE 243
#define WXJ_CFI_CODE_ALIGN 1
#define WXJ_CFI_DATA_ALIGN (-8)
#define WXJ_CFI_RA_REG 1
/* At entry: CFA = sp, the return address in ra itself. */
#define WXJ_CFI_CIE_INSNS 0x0c, 0x02, 0x00
/* Each 4 bytes on: CFA = sp + 16; ra at CFA - 8; s0 at CFA - 16;
 * CFA = s0 + 0. */
#define WXJ_CFI_FP_INSNS 0x44, 0x0e, 0x10, 0x44, 0x81, 0x01, 0x44, 0x88, 0x02, 0x44, 0x0c, 0x08, 0x00
#define WXJ_CFI_FP_PROLOGUE 0x13, 0x01, 0x01, 0xff, 0x23, 0x34, 0x11, 0x00, 0x23, 0x30, 0x81, 0x00, 0x13, 0x04, 0x01, 0x01

#endif
