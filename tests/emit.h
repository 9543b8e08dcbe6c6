/* A tiny emitter for the functions the tests JIT, one section per CPU, so
 * no test carries hand-copied byte tables. Every emit_* writes at p and
 * returns the number of bytes written. Emitted functions take no argument
 * and return an int (or never return); they are position-independent and
 * expect to start at a 16-byte boundary, as wxjit places every function.
 *
 * Each section also says what the CPU's trap fill looks like (tests check
 * freed and unused code bytes against it) and whether an instruction can
 * straddle a page boundary at all. */
#ifndef WXTEST_EMIT_H
#define WXTEST_EMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline size_t put(uint8_t *p, const void *bytes, size_t n)
{
    memcpy(p, bytes, n);
    return n;
}

/* Fixed-width CPUs: instruction words, stored little-endian. */
static inline size_t put32(uint8_t *p, uint32_t insn)
{
    p[0] = (uint8_t)insn;
    p[1] = (uint8_t)(insn >> 8);
    p[2] = (uint8_t)(insn >> 16);
    p[3] = (uint8_t)(insn >> 24);
    return 4;
}

#if defined(__x86_64__)

#define EMIT_ARCH "x86_64"
#define EMIT_INSN_ALIGN 1      /* instructions start at any byte */
#define EMIT_RETURN_INT_SIZE 6 /* what emit_return_int writes */
/* Bytes of padding that emit_return_int_patchable puts before the
 * immediate so that it is 4-byte aligned for wxjit_patch_atomic. */
#define EMIT_PATCHABLE_IMM_OFFSET 4
/* The longest instruction emit_return_int uses, for straddling tests. */
#define EMIT_RETURN_INT_FIRST_INSN 5
/* Started this many bytes before a page boundary, the first instruction
 * of emit_return_int straddles it (0 where no instruction can). */
#define EMIT_STRADDLE_AT 3
#define EMIT_TRAP_NAME "int3"

static inline uint8_t emit_trap_byte(const void *at)
{
    (void)at;
    return 0xcc; /* int3: one byte, so every offset traps */
}

/* n bytes of nops (n a multiple of EMIT_INSN_ALIGN). */
static inline size_t emit_nops(uint8_t *p, size_t n)
{
    memset(p, 0x90, n);
    return n;
}

/* mov eax, imm32; ret */
static inline size_t emit_return_int(uint8_t *p, int32_t v)
{
    p[0] = 0xb8;
    memcpy(p + 1, &v, 4);
    p[5] = 0xc3;
    return 6;
}

/* Like emit_return_int, with the immediate at EMIT_PATCHABLE_IMM_OFFSET. */
static inline size_t emit_return_int_patchable(uint8_t *p, int32_t v)
{
    size_t n = emit_nops(p, 3);
    return n + emit_return_int(p + n, v);
}

/* movabs rax, addr */
static inline size_t emit_addr_to_scratch(uint8_t *p, uintptr_t addr)
{
    p[0] = 0x48;
    p[1] = 0xb8;
    memcpy(p + 2, &addr, 8);
    return 10;
}

/* return *(int *)addr */
static inline size_t emit_load(uint8_t *p, uintptr_t addr)
{
    size_t n = emit_addr_to_scratch(p, addr);
    return n + put(p + n, "\x8b\x00\xc3", 3); /* mov eax,[rax]; ret */
}

/* *(char *)addr = 0; return 0 */
static inline size_t emit_store(uint8_t *p, uintptr_t addr)
{
    size_t n = emit_addr_to_scratch(p, addr);
    /* mov byte [rax], 0; xor eax, eax; ret */
    return n + put(p + n, "\xc6\x00\x00\x31\xc0\xc3", 6);
}

/* goto addr */
static inline size_t emit_jump(uint8_t *p, uintptr_t addr)
{
    size_t n = emit_addr_to_scratch(p, addr);
    return n + put(p + n, "\xff\xe0", 2); /* jmp rax */
}

/* return ((int (*)(void))addr)() + add */
static inline size_t emit_call_add(uint8_t *p, uintptr_t addr, int32_t add)
{
    size_t n = put(p, "\x48\x83\xec\x08", 4); /* sub rsp, 8 (alignment) */
    n += emit_addr_to_scratch(p + n, addr);
    n += put(p + n, "\xff\xd0\x05", 3);       /* call rax; add eax, imm32 */
    memcpy(p + n, &add, 4);
    n += 4;
    return n + put(p + n, "\x48\x83\xc4\x08\xc3", 5); /* add rsp, 8; ret */
}

/* return ((int (*)(void))fn)() run with the stack pointer at stack_top
 * (16-aligned), then the caller's stack again. */
static inline size_t emit_call_on_stack(uint8_t *p, uintptr_t stack_top,
                                        uintptr_t fn)
{
    size_t n = put(p, "\x49\x89\xe3", 3);   /* mov r11, rsp */
    n += put(p + n, "\x48\xbc", 2);         /* movabs rsp, stack_top */
    memcpy(p + n, &stack_top, 8);
    n += 8;
    n += emit_addr_to_scratch(p + n, fn);   /* movabs rax, fn */
    n += put(p + n, "\xff\xd0", 2);         /* call rax */
    return n + put(p + n, "\x4c\x89\xdc\xc3", 4); /* mov rsp, r11; ret */
}

#elif defined(__aarch64__)

/* A64 encodings: Arm ARM C6 (MOVZ/MOVK, LDR literal, LDR/STRB unsigned
 * offset, BR/BLR/RET, STP/LDP pre/post-index, ADD shifted register). The
 * scratch register is x16 (IP0), free to clobber between calls. */
#define EMIT_ARCH "aarch64"
#define EMIT_INSN_ALIGN 4
#define EMIT_RETURN_INT_SIZE 12
/* ldr w0, =value; ret; .word value: the value is a literal in the code,
 * patched as data (as ARM JITs patch literal pools), 4-byte aligned. */
#define EMIT_PATCHABLE_IMM_OFFSET 8
#define EMIT_RETURN_INT_FIRST_INSN 4
/* A64 instructions are 4 bytes, 4-byte aligned: none straddles a page. */
#define EMIT_STRADDLE_AT 0
#define EMIT_TRAP_NAME "brk #0"

enum { A64_X0 = 0, A64_X1 = 1, A64_X16 = 16 };

static inline uint8_t emit_trap_byte(const void *at)
{
    static const uint8_t brk[4] = {0x00, 0x00, 0x20, 0xd4}; /* d4200000 */
    return brk[(uintptr_t)at & 3];
}

static inline size_t emit_nops(uint8_t *p, size_t n)
{
    for (size_t i = 0; i + 4 <= n; i += 4)
        put32(p + i, 0xd503201fu); /* nop */
    return n;
}

/* movz (sf: 64-bit) rd, #imm16, lsl #(16 * hw) */
static inline uint32_t a64_movz(bool sf, unsigned rd, uint16_t imm,
                                unsigned hw)
{
    return (sf ? 0xd2800000u : 0x52800000u) | hw << 21 | (uint32_t)imm << 5 |
           rd;
}

static inline uint32_t a64_movk(bool sf, unsigned rd, uint16_t imm,
                                unsigned hw)
{
    return (sf ? 0xf2800000u : 0x72800000u) | hw << 21 | (uint32_t)imm << 5 |
           rd;
}

/* wd = v: movz, movk lsl 16 */
static inline size_t a64_mov_w(uint8_t *p, unsigned rd, int32_t v)
{
    uint32_t u = (uint32_t)v;
    size_t n = put32(p, a64_movz(false, rd, (uint16_t)u, 0));
    return n + put32(p + n, a64_movk(false, rd, (uint16_t)(u >> 16), 1));
}

/* mov w0, v; ret */
static inline size_t emit_return_int(uint8_t *p, int32_t v)
{
    size_t n = a64_mov_w(p, A64_X0, v);
    return n + put32(p + n, 0xd65f03c0u); /* ret */
}

static inline size_t emit_return_int_patchable(uint8_t *p, int32_t v)
{
    size_t n = put32(p, 0x18000040u); /* ldr w0, .+8 */
    n += put32(p + n, 0xd65f03c0u);   /* ret */
    memcpy(p + n, &v, 4);
    return n + 4;
}

/* x16 = addr: movz, movk x3 */
static inline size_t emit_addr_to_scratch(uint8_t *p, uintptr_t addr)
{
    size_t n = 0;
    for (unsigned hw = 0; hw < 4; hw++) {
        uint16_t part = (uint16_t)(addr >> (16 * hw));
        n += put32(p + n, hw == 0 ? a64_movz(true, A64_X16, part, 0)
                                  : a64_movk(true, A64_X16, part, hw));
    }
    return n;
}

static inline size_t emit_load(uint8_t *p, uintptr_t addr)
{
    size_t n = emit_addr_to_scratch(p, addr);
    n += put32(p + n, 0xb9400200u);     /* ldr w0, [x16] */
    return n + put32(p + n, 0xd65f03c0u); /* ret */
}

static inline size_t emit_store(uint8_t *p, uintptr_t addr)
{
    size_t n = emit_addr_to_scratch(p, addr);
    n += put32(p + n, 0x3900021fu);     /* strb wzr, [x16] */
    n += a64_mov_w(p + n, A64_X0, 0);
    return n + put32(p + n, 0xd65f03c0u); /* ret */
}

static inline size_t emit_jump(uint8_t *p, uintptr_t addr)
{
    size_t n = emit_addr_to_scratch(p, addr);
    return n + put32(p + n, 0xd61f0200u); /* br x16 */
}

static inline size_t emit_call_add(uint8_t *p, uintptr_t addr, int32_t add)
{
    size_t n = put32(p, 0xa9bf7bfdu);   /* stp x29, x30, [sp, #-16]! */
    n += emit_addr_to_scratch(p + n, addr);
    n += put32(p + n, 0xd63f0200u);     /* blr x16 */
    n += a64_mov_w(p + n, A64_X1, add);
    n += put32(p + n, 0x0b010000u);     /* add w0, w0, w1 */
    n += put32(p + n, 0xa8c17bfdu);     /* ldp x29, x30, [sp], #16 */
    return n + put32(p + n, 0xd65f03c0u); /* ret */
}

/* x17 keeps the caller's sp; it and the link register are saved on the
 * new stack across the call. */
static inline size_t emit_call_on_stack(uint8_t *p, uintptr_t stack_top,
                                        uintptr_t fn)
{
    size_t n = put32(p, 0x910003f1u);   /* mov x17, sp */
    n += emit_addr_to_scratch(p + n, stack_top);
    n += put32(p + n, 0x9100021fu);     /* mov sp, x16 */
    n += put32(p + n, 0xa9bf7bf1u);     /* stp x17, x30, [sp, #-16]! */
    n += emit_addr_to_scratch(p + n, fn);
    n += put32(p + n, 0xd63f0200u);     /* blr x16 */
    n += put32(p + n, 0xa8c17bf1u);     /* ldp x17, x30, [sp], #16 */
    n += put32(p + n, 0x9100023fu);     /* mov sp, x17 */
    return n + put32(p + n, 0xd65f03c0u); /* ret */
}

#elif defined(__riscv) && __riscv_xlen == 64

/* RV64GC encodings: the RISC-V unprivileged ISA, chapters 2 (RV32I), 4
 * (RV64I) and 16 (C). The scratch register is t0 (x5); t1 (x6) is also
 * caller-saved. */
#define EMIT_ARCH "riscv64"
#define EMIT_INSN_ALIGN 2 /* C extension: 2-byte instruction alignment */
#define EMIT_RETURN_INT_SIZE 12
/* auipc t0, 0; lw a0, 12(t0); ret; .word value: the value is data in the
 * code, 4-byte aligned, patched as data. */
#define EMIT_PATCHABLE_IMM_OFFSET 12
#define EMIT_RETURN_INT_FIRST_INSN 4
/* lui (4 bytes) 2 bytes before the boundary, 2 after: allowed with C. */
#define EMIT_STRADDLE_AT 2
#define EMIT_TRAP_NAME "c.ebreak"

enum { RV_ZERO = 0, RV_RA = 1, RV_SP = 2, RV_T0 = 5, RV_T1 = 6, RV_A0 = 10 };

static inline uint8_t emit_trap_byte(const void *at)
{
    static const uint8_t c_ebreak[2] = {0x02, 0x90}; /* 9002 */
    return c_ebreak[(uintptr_t)at & 1];
}

static inline uint32_t rv_i(uint32_t opcode, unsigned funct3, unsigned rd,
                            unsigned rs1, int32_t imm12)
{
    return ((uint32_t)imm12 & 0xfffu) << 20 | rs1 << 15 | funct3 << 12 |
           rd << 7 | opcode;
}

static inline uint32_t rv_s(unsigned funct3, unsigned rs1, unsigned rs2,
                            int32_t imm12)
{
    uint32_t imm = (uint32_t)imm12 & 0xfffu;
    return (imm >> 5) << 25 | rs2 << 20 | rs1 << 15 | funct3 << 12 |
           (imm & 31) << 7 | 0x23u;
}

#define RV_ADDI(rd, rs1, imm) rv_i(0x13u, 0, rd, rs1, imm)
#define RV_ADDIW(rd, rs1, imm) rv_i(0x1bu, 0, rd, rs1, imm)
#define RV_LW(rd, rs1, imm) rv_i(0x03u, 2, rd, rs1, imm)
#define RV_LD(rd, rs1, imm) rv_i(0x03u, 3, rd, rs1, imm)
#define RV_JALR(rd, rs1) rv_i(0x67u, 0, rd, rs1, 0)
#define RV_RET RV_JALR(RV_ZERO, RV_RA)

/* n bytes of nops: 4-byte nops, and a c.nop if n is 2 more than a
 * multiple of 4 (last, so the rest keeps 4-byte alignment). */
static inline size_t emit_nops(uint8_t *p, size_t n)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        put32(p + i, RV_ADDI(RV_ZERO, RV_ZERO, 0));
    if (i + 2 <= n)
        put(p + i, "\x01\x00", 2); /* c.nop */
    return n;
}

/* rd = v: lui, addiw (sign-extends the 32-bit sum, so any int32 works) */
static inline size_t rv_li32(uint8_t *p, unsigned rd, int32_t v)
{
    uint32_t u = (uint32_t)v, hi = (u + 0x800u) >> 12;
    size_t n = put32(p, (hi & 0xfffffu) << 12 | rd << 7 | 0x37u); /* lui */
    return n + put32(p + n, RV_ADDIW(rd, rd, (int32_t)(u & 0xfffu)));
}

static inline size_t emit_return_int(uint8_t *p, int32_t v)
{
    size_t n = rv_li32(p, RV_A0, v);
    return n + put32(p + n, RV_RET);
}

static inline size_t emit_return_int_patchable(uint8_t *p, int32_t v)
{
    size_t n = put32(p, 0x00000297u); /* auipc t0, 0 */
    n += put32(p + n, RV_LW(RV_A0, RV_T0, 12));
    n += put32(p + n, RV_RET);
    memcpy(p + n, &v, 4);
    return n + 4;
}

/* t0 = addr from an 8-byte literal jumped over: auipc t0, 0; j .+12;
 * .dword addr; ld t0, 8(t0). The literal is 8-aligned when the sequence
 * starts 8-aligned (as it does in every function below). */
static inline size_t emit_addr_to_scratch(uint8_t *p, uintptr_t addr)
{
    uint64_t a = addr;
    size_t n = put32(p, 0x00000297u);   /* auipc t0, 0 */
    n += put32(p + n, 0x00c0006fu);     /* jal zero, .+12 */
    memcpy(p + n, &a, 8);
    n += 8;
    return n + put32(p + n, RV_LD(RV_T0, RV_T0, 8));
}

static inline size_t emit_load(uint8_t *p, uintptr_t addr)
{
    size_t n = emit_addr_to_scratch(p, addr);
    n += put32(p + n, RV_LW(RV_A0, RV_T0, 0));
    return n + put32(p + n, RV_RET);
}

static inline size_t emit_store(uint8_t *p, uintptr_t addr)
{
    size_t n = emit_addr_to_scratch(p, addr);
    n += put32(p + n, rv_s(0, RV_T0, RV_ZERO, 0)); /* sb zero, 0(t0) */
    n += put32(p + n, RV_ADDI(RV_A0, RV_ZERO, 0));
    return n + put32(p + n, RV_RET);
}

static inline size_t emit_jump(uint8_t *p, uintptr_t addr)
{
    size_t n = emit_addr_to_scratch(p, addr);
    return n + put32(p + n, RV_JALR(RV_ZERO, RV_T0));
}

static inline size_t emit_call_add(uint8_t *p, uintptr_t addr, int32_t add)
{
    size_t n = put32(p, RV_ADDI(RV_SP, RV_SP, -16));
    n += put32(p + n, rv_s(3, RV_SP, RV_RA, 8)); /* sd ra, 8(sp) */
    n += emit_addr_to_scratch(p + n, addr);
    n += put32(p + n, RV_JALR(RV_RA, RV_T0));
    n += rv_li32(p + n, RV_T1, add);
    n += put32(p + n, 0x0065053bu); /* addw a0, a0, t1 */
    n += put32(p + n, RV_LD(RV_RA, RV_SP, 8));
    n += put32(p + n, RV_ADDI(RV_SP, RV_SP, 16));
    return n + put32(p + n, RV_RET);
}

/* t1 keeps the caller's sp; it and ra are saved on the new stack across
 * the call. Both literals land 8-aligned (at 8 and 48). */
static inline size_t emit_call_on_stack(uint8_t *p, uintptr_t stack_top,
                                        uintptr_t fn)
{
    size_t n = emit_addr_to_scratch(p, stack_top);
    n += put32(p + n, RV_ADDI(RV_T1, RV_SP, 0));
    n += put32(p + n, RV_ADDI(RV_SP, RV_T0, 0));
    n += put32(p + n, RV_ADDI(RV_SP, RV_SP, -16));
    n += put32(p + n, rv_s(3, RV_SP, RV_T1, 0)); /* sd t1, 0(sp) */
    n += put32(p + n, rv_s(3, RV_SP, RV_RA, 8)); /* sd ra, 8(sp) */
    n += emit_addr_to_scratch(p + n, fn);
    n += put32(p + n, RV_JALR(RV_RA, RV_T0));
    n += put32(p + n, RV_LD(RV_RA, RV_SP, 8));
    n += put32(p + n, RV_LD(RV_T1, RV_SP, 0));
    n += put32(p + n, RV_ADDI(RV_SP, RV_T1, 0));
    return n + put32(p + n, RV_RET);
}

#else
#error "tests/emit.h: no emitter for this CPU yet"
#endif

/* ---- common to every CPU ----------------------------------------------- */

/* A function of exactly size bytes (size >= EMIT_RETURN_INT_SIZE) that
 * returns v: nops, then the return; where the padding is not a whole
 * number of instructions, its odd bytes go after the return, never
 * executed. */
static inline size_t emit_return_int_sized(uint8_t *p, size_t size,
                                           int32_t v)
{
    size_t pad = size - EMIT_RETURN_INT_SIZE, odd = pad % EMIT_INSN_ALIGN;
    size_t n = emit_nops(p, pad - odd);
    n += emit_return_int(p + n, v);
    memset(p + n, 0, odd);
    return n + odd;
}

/* Whether [p, p + n) holds wxjit's trap fill for this CPU (freed code,
 * unused reserved bytes). */
static inline bool emit_is_trap_fill(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != emit_trap_byte(b + i))
            return false;
    return true;
}

#endif /* WXTEST_EMIT_H */
