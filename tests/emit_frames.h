/* Functions with the standard frame-pointer prologue that
 * WXJIT_DESCRIBE_FRAME_POINTER describes (include/wxjit.h lists it per
 * CPU), for the tests of profilers, debuggers and unwinders: one that
 * calls another function, one that spins. Each keeps its frame pointer
 * from the prologue's end to the epilogue. */
#ifndef WXTEST_EMIT_FRAMES_H
#define WXTEST_EMIT_FRAMES_H

#include "emit.h"

#if defined(__x86_64__)

#define FRAME_PROLOGUE "\x55\x48\x89\xe5" /* push rbp; mov rbp, rsp */
#define FRAME_EPILOGUE "\x5d\xc3"         /* pop rbp; ret */

/* return ((int (*)(void))addr)() + add; the call is 16-aligned (the push
 * realigned the stack). */
static inline size_t emit_frame_call(uint8_t *p, uintptr_t addr, int32_t add)
{
    size_t n = put(p, FRAME_PROLOGUE, 4);
    n += emit_addr_to_scratch(p + n, addr);
    n += put(p + n, "\xff\xd0\x05", 3); /* call rax; add eax, imm32 */
    memcpy(p + n, &add, 4);
    n += 4;
    return n + put(p + n, FRAME_EPILOGUE, 2);
}

/* Counts count down to 0, returns 0. */
static inline size_t emit_frame_spin(uint8_t *p, uint32_t count)
{
    size_t n = put(p, FRAME_PROLOGUE, 4);
    n += put(p + n, "\xb9", 1); /* mov ecx, count */
    memcpy(p + n, &count, 4);
    n += 4;
    n += put(p + n, "\xff\xc9\x75\xfc", 4); /* dec ecx; jnz .-2 */
    n += put(p + n, "\x31\xc0", 2);         /* xor eax, eax */
    return n + put(p + n, FRAME_EPILOGUE, 2);
}

#elif defined(__aarch64__)

static inline size_t a64_frame_prologue(uint8_t *p)
{
    size_t n = put32(p, 0xa9bf7bfdu);   /* stp x29, x30, [sp, #-16]! */
    return n + put32(p + n, 0x910003fdu); /* mov x29, sp */
}

static inline size_t a64_frame_epilogue(uint8_t *p)
{
    size_t n = put32(p, 0xa8c17bfdu);   /* ldp x29, x30, [sp], #16 */
    return n + put32(p + n, 0xd65f03c0u); /* ret */
}

static inline size_t emit_frame_call(uint8_t *p, uintptr_t addr, int32_t add)
{
    size_t n = a64_frame_prologue(p);
    n += emit_addr_to_scratch(p + n, addr);
    n += put32(p + n, 0xd63f0200u); /* blr x16 */
    n += a64_mov_w(p + n, A64_X1, add);
    n += put32(p + n, 0x0b010000u); /* add w0, w0, w1 */
    return n + a64_frame_epilogue(p + n);
}

static inline size_t emit_frame_spin(uint8_t *p, uint32_t count)
{
    size_t n = a64_frame_prologue(p);
    n += a64_mov_w(p + n, A64_X1, (int32_t)count);
    n += put32(p + n, 0x71000421u); /* subs w1, w1, #1 */
    n += put32(p + n, 0x54ffffe1u); /* b.ne .-4 */
    n += put32(p + n, 0x52800000u); /* mov w0, #0 */
    return n + a64_frame_epilogue(p + n);
}

#elif defined(__riscv) && __riscv_xlen == 64

enum { RV_S0 = 8 };

static inline size_t rv_frame_prologue(uint8_t *p)
{
    size_t n = put32(p, RV_ADDI(RV_SP, RV_SP, -16));
    n += put32(p + n, rv_s(3, RV_SP, RV_RA, 8)); /* sd ra, 8(sp) */
    n += put32(p + n, rv_s(3, RV_SP, RV_S0, 0)); /* sd s0, 0(sp) */
    return n + put32(p + n, RV_ADDI(RV_S0, RV_SP, 16));
}

static inline size_t rv_frame_epilogue(uint8_t *p)
{
    size_t n = put32(p, RV_LD(RV_RA, RV_SP, 8));
    n += put32(p + n, RV_LD(RV_S0, RV_SP, 0));
    n += put32(p + n, RV_ADDI(RV_SP, RV_SP, 16));
    return n + put32(p + n, RV_RET);
}

/* The prologue is 16 bytes: emit_addr_to_scratch's literal stays
 * 8-aligned. */
static inline size_t emit_frame_call(uint8_t *p, uintptr_t addr, int32_t add)
{
    size_t n = rv_frame_prologue(p);
    n += emit_addr_to_scratch(p + n, addr);
    n += put32(p + n, RV_JALR(RV_RA, RV_T0));
    n += rv_li32(p + n, RV_T1, add);
    n += put32(p + n, 0x0065053bu); /* addw a0, a0, t1 */
    return n + rv_frame_epilogue(p + n);
}

static inline size_t emit_frame_spin(uint8_t *p, uint32_t count)
{
    size_t n = rv_frame_prologue(p);
    n += rv_li32(p + n, RV_T1, (int32_t)count);
    n += put32(p + n, RV_ADDIW(RV_T1, RV_T1, -1));
    n += put32(p + n, 0xfe031ee3u); /* bnez t1, .-4 */
    n += put32(p + n, RV_ADDI(RV_A0, RV_ZERO, 0));
    return n + rv_frame_epilogue(p + n);
}

#endif

#endif /* WXTEST_EMIT_FRAMES_H */
