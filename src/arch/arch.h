/* Selects the CPU layer. Each <cpu>.h defines, for that CPU only:
 *   WXJ_ARCH_NAME            a name for messages
 *   WXJ_ARCH_MAX_INSN        longest instruction in bytes: a fetch fault
 *                            lands in [pc, pc + WXJ_ARCH_MAX_INSN)
 *   wxj_arch_pc(uc)          the faulting PC from a signal's ucontext
 *   wxj_arch_trap_fill(p, n) fill n bytes with trapping instructions; p and
 *                            n may be unaligned (the tail of a commit), and
 *                            every instruction slot wholly inside traps
 *   wxj_arch_flush_icache(p, n)  make new code at p visible to fetch
 *   wxj_arch_emit_return(p, v)   a function returning v (< 2048) at p;
 *                            returns its size
 *   WXJ_ARCH_CORE_SYNC       which changes to code need every other core
 *                            to synchronise its instruction stream before
 *                            the operation returns (WXJ_CHANGE_* bits,
 *                            core_sync.c): the reasoning is in each file
 *   WXJ_ARCH_ELF_MACHINE     e_machine of this CPU's ELF files
 *   WXJ_CFI_CODE_ALIGN, WXJ_CFI_DATA_ALIGN, WXJ_CFI_RA_REG
 *                            a CIE's factors and return-address column
 *   WXJ_CFI_CIE_INSNS        the CIE's initial instructions (CFA at entry)
 *   WXJ_CFI_FP_INSNS         an FDE's instructions for the frame-pointer
 *                            prologue WXJ_CFI_FP_PROLOGUE (its bytes) */
#ifndef WXJ_ARCH_H
#define WXJ_ARCH_H

#define WXJ_CHANGE_NEW 1u  /* code or traps written where threads may
                              have fetched before (installs, fills) */
#define WXJ_CHANGE_LIVE 2u /* live code rewritten in place (patches,
                              windows) while threads may be running it */

#if defined(__x86_64__)
#include "x86_64.h"
#elif defined(__aarch64__)
#include "aarch64.h"
#elif defined(__riscv) && __riscv_xlen == 64
#include "riscv64.h"
#else
#error "wxjit: unsupported CPU (x86_64, aarch64 and riscv64 are supported)"
#endif

#endif /* WXJ_ARCH_H */
