/* A tiny emitter for the functions the tests JIT, one section per CPU, so
 * no test carries hand-copied byte tables. Every emit_* writes at p and
 * returns the number of bytes written. Emitted functions take no argument
 * and return an int (or never return). */
#ifndef WXTEST_EMIT_H
#define WXTEST_EMIT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline size_t put(uint8_t *p, const void *bytes, size_t n)
{
    memcpy(p, bytes, n);
    return n;
}

#if defined(__x86_64__)

/* Bytes of padding that emit_return_int_patchable puts before the
 * immediate so that it is 4-byte aligned for wxjit_patch_atomic. */
#define EMIT_PATCHABLE_IMM_OFFSET 4

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

/* The longest instruction emit_return_int uses, for straddling tests. */
#define EMIT_RETURN_INT_FIRST_INSN 5

#else
#error "tests/emit.h: no emitter for this CPU yet"
#endif

#endif /* WXTEST_EMIT_H */
