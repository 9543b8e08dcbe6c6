/* sljit_alloc_fail: a failed allocation reaches sljit as its own error,
 * never an abort, on the sljit wxjit is tested with (tools/check-sljit.sh
 * builds this file with that sljit and libwxjit_sljit).
 *
 *   1. A function larger than wxjit's chunk (4 MiB): sljit_generate_code
 *      returns NULL, sljit_get_compiler_error says
 *      SLJIT_ERR_EX_ALLOC_FAILED (sljit since 40eff81 asks for the
 *      offset of the NULL block before checking it).
 *   2. One unsealed block more than WXJIT_SLJIT_OPEN_MAX: NULL, offset 0.
 *   3. Then a small function still compiles and returns its value.
 * Exit status 0 when all hold; each failure is printed. */
#include <stdio.h>
#include <stdlib.h>

#include "sljitLir.h"

static int failures;

static void expect(int ok, const char *what)
{
    printf("  %s: %s\n", ok ? "ok" : "FAILED", what);
    failures += !ok;
}

/* Returns v + 0 + 1 + ... + (n - 1) after n additions: about 7 bytes of
 * x86-64 code each, so n = 1,000,000 asks for several MiB. */
static struct sljit_compiler *sum_function(sljit_sw v, long n)
{
    struct sljit_compiler *c = sljit_create_compiler(NULL);
    if (!c)
        return NULL;
    sljit_emit_enter(c, 0, SLJIT_ARGS0(W), 1, 0, 0);
    sljit_emit_op1(c, SLJIT_MOV, SLJIT_R0, 0, SLJIT_IMM, v);
    for (long i = 0; i < n; i++)
        sljit_emit_op2(c, SLJIT_ADD, SLJIT_R0, 0, SLJIT_R0, 0, SLJIT_IMM,
                       (sljit_sw)i);
    sljit_emit_return(c, SLJIT_MOV, SLJIT_R0, 0);
    return c;
}

int main(void)
{
    printf("sljit_alloc_fail\n");
    struct sljit_compiler *c = sum_function(1, 1000000);
    expect(c && sljit_get_compiler_error(c) == SLJIT_SUCCESS,
           "a 1,000,000-instruction function emitted");
    void *code = c ? sljit_generate_code(c, 0, NULL) : NULL;
    expect(!code && c && sljit_get_compiler_error(c) ==
                             SLJIT_ERR_EX_ALLOC_FAILED,
           "its code, larger than a wxjit chunk: sljit_generate_code "
           "returned NULL with SLJIT_ERR_EX_ALLOC_FAILED");
    if (code)
        sljit_free_code(code, NULL);
    if (c)
        sljit_free_compiler(c);

    void *blocks[WXJIT_SLJIT_OPEN_MAX + 1];
    int got = 0;
    for (int i = 0; i < WXJIT_SLJIT_OPEN_MAX; i++)
        got += (blocks[i] = wxjit_sljit_malloc_exec(64)) != NULL;
    expect(got == WXJIT_SLJIT_OPEN_MAX, "WXJIT_SLJIT_OPEN_MAX blocks open");
    blocks[WXJIT_SLJIT_OPEN_MAX] = wxjit_sljit_malloc_exec(64);
    expect(!blocks[WXJIT_SLJIT_OPEN_MAX] &&
               wxjit_sljit_exec_offset(NULL) == 0,
           "one more: NULL, and its offset 0 (no abort)");
    for (int i = 0; i < WXJIT_SLJIT_OPEN_MAX; i++)
        if (blocks[i])
            wxjit_sljit_free_exec((char *)blocks[i] +
                                  wxjit_sljit_exec_offset(blocks[i]));

    c = sum_function(40, 3); /* 40 + 0 + 1 + 2 */
    code = c ? sljit_generate_code(c, 0, NULL) : NULL;
    sljit_sw (*fn)(void) = code ? (sljit_sw(*)(void))code : NULL;
    expect(fn && fn() == 43, "a small function afterwards returns 43");
    if (code)
        sljit_free_code(code, NULL);
    if (c)
        sljit_free_compiler(c);
    printf("sljit_alloc_fail: %s\n", failures ? "FAILED" : "ok");
    return failures != 0;
}
