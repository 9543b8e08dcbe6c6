/* x86_64: the CPU keeps instruction fetch coherent with stores, so the only
 * flush needed is a compiler barrier that keeps the copy before the
 * publication. */
#ifndef WXJ_ARCH_X86_64_H
#define WXJ_ARCH_X86_64_H

#include <stdint.h>
#include <string.h>
#include <ucontext.h>

#define WXJ_ARCH_NAME "x86_64"
#define WXJ_ARCH_MAX_INSN 15 /* Intel SDM vol. 2, 2.3.11 */

static inline uintptr_t wxj_arch_pc(const ucontext_t *uc)
{
    return (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
}

static inline uintptr_t wxj_arch_sp(const ucontext_t *uc)
{
    return (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
}

static inline void wxj_arch_trap_fill(void *dst, size_t n)
{
    memset(dst, 0xcc, n); /* int3: one byte, so every offset traps */
}

/* Intel SDM vol. 3A, "Handling Self- and Cross-Modifying Code": a
 * processor that executes code another processor modified must execute a
 * serialising instruction between the modification and the execution.
 * New code needs none in practice: a thread reaches it only through a
 * branch to an address it learnt after the install, and stores invalidate
 * the cached and prefetched lines of their physical address ("Self-
 * Modifying Code", in the chapter on caches); Linux
 * and every x86 JIT rely on that. That goes beyond the manual's letter,
 * whose protocol for cross-modifying code keeps the serialising
 * instruction even after the flag handshake; following the letter would
 * cost a membarrier per install (about 1.7 us here) where dualmap
 * otherwise makes no system call. The traps a free writes are new code
 * in this sense (a call to freed code is the caller's bug; it traps
 * deterministically once the stale instructions are gone from the
 * running core, which any interrupt or system call ensures). Code rewritten while another thread may
 * be running it is the cross-modifying case proper: the processor running
 * it may hold already decoded instructions, so patches and windows on live
 * code sync every core (membarrier SYNC_CORE, as Linux's text_poke does
 * with its sync_core IPIs for kernel text). */
#define WXJ_ARCH_CORE_SYNC WXJ_CHANGE_LIVE

static inline void wxj_arch_flush_icache(const void *p, size_t n)
{
    (void)p;
    (void)n;
    __asm__ __volatile__("" ::: "memory");
}

/* A function returning v (0 <= v < 2048): mov eax, v; ret. For the
 * dualmap probe, which checks that code written through the alias runs. */
static inline size_t wxj_arch_emit_return(uint8_t *p, uint32_t v)
{
    p[0] = 0xb8;
    memcpy(p + 1, &v, 4);
    p[5] = 0xc3;
    return 6;
}

/* ---- unwind information (observe/eh_frame.c) ----------------------------
 * The ELF machine (EM_X86_64) for perf's jitdump header, and DWARF CFI for
 * a function that starts with push %rbp; mov %rsp,%rbp (the System V
 * psABI's DWARF register numbers: rsp 7, rbp 6, return address 16). */
#define WXJ_ARCH_ELF_MACHINE 62
#define WXJ_CFI_CODE_ALIGN 1
#define WXJ_CFI_DATA_ALIGN (-8)
#define WXJ_CFI_RA_REG 16
/* At entry: CFA = rsp + 8, return address at CFA - 8. */
#define WXJ_CFI_CIE_INSNS 0x0c, 0x07, 0x08, 0x90, 0x01
/* After the push (1 byte): CFA = rsp + 16, rbp saved at CFA - 16; after
 * the mov (3 bytes): CFA = rbp + 16. */
#define WXJ_CFI_FP_INSNS 0x41, 0x0e, 0x10, 0x86, 0x02, 0x43, 0x0d, 0x06
#define WXJ_CFI_FP_PROLOGUE 0x55, 0x48, 0x89, 0xe5

#endif
