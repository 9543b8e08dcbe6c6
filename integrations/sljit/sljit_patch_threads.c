/* sljit_patch_threads: threads rewrite the jump targets and constants of
 * sljit functions (sljit_set_jump_addr, sljit_set_const, i.e. wxjit
 * windows on live code) while other threads run functions on the same
 * pages, every result checked (tools/check-sljit.sh runs it per backend
 * under the W^X policy).
 *
 * Each function f_i returns c_i + 2^40 * t_i, where c_i is a
 * constant (sljit_emit_const) and t_i which of two targets its rewritable
 * jump goes to (0 or 1). Patchers raise c_i (never lower it) and flip the
 * jump. Callers check every result against the values written so far.
 *
 * Which functions the callers run: with toggle, the patched ones (their
 * pages are not executable while a window is open: executors wait, as
 * for an install). With dualmap and procmem, executors are not stopped
 * and sljit's stores (an unaligned 8-byte immediate on x86-64) are not
 * atomic, as with sljit's own dual-mapped allocator: the callers run
 * other functions on the same pages, never one being rewritten.
 * Exit status 0 when every check held. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sljitLir.h"
#include <wxjit.h>

#define FUNCS 16 /* even ones patched; odd ones only called */
#define PATCHES 3000
#define JUMP_BIAS ((sljit_sw)1 << 40) /* above every constant written */

struct fn {
    sljit_sw (*call)(void);
    sljit_uw jump_addr, const_addr, targets[2];
    sljit_sw exec_offset;
    _Atomic sljit_sw max_const;
    sljit_sw base;
};

static struct fn fns[FUNCS];
static pthread_mutex_t patch_lock[FUNCS];
static _Atomic bool calling, done;
static _Atomic unsigned long calls, bad;
static bool call_patched;

static int build(struct fn *f, sljit_sw c)
{
    struct sljit_compiler *comp = sljit_create_compiler(NULL);
    if (!comp)
        return -1;
    sljit_emit_enter(comp, 0, SLJIT_ARGS0(W), 2, 0, 0);
    struct sljit_const *k = sljit_emit_const(comp, SLJIT_MOV, SLJIT_R0, 0, c);
    struct sljit_jump *j = sljit_emit_jump(comp, SLJIT_JUMP | SLJIT_REWRITABLE_JUMP);
    struct sljit_label *t0 = sljit_emit_label(comp);
    sljit_emit_return(comp, SLJIT_MOV, SLJIT_R0, 0);
    struct sljit_label *t1 = sljit_emit_label(comp);
    sljit_emit_op2(comp, SLJIT_ADD, SLJIT_R0, 0, SLJIT_R0, 0, SLJIT_IMM,
                   JUMP_BIAS);
    sljit_emit_return(comp, SLJIT_MOV, SLJIT_R0, 0);
    sljit_set_label(j, t0);
    void *code = sljit_generate_code(comp, 0, NULL);
    if (!code) {
        sljit_free_compiler(comp);
        return -1;
    }
    f->call = (sljit_sw(*)(void))code;
    f->jump_addr = sljit_get_jump_addr(j);
    f->const_addr = sljit_get_const_addr(k);
    f->targets[0] = sljit_get_label_addr(t0);
    f->targets[1] = sljit_get_label_addr(t1);
    f->exec_offset = sljit_get_executable_offset(comp);
    f->base = c;
    atomic_store(&f->max_const, c);
    sljit_free_compiler(comp);
    return 0;
}

static bool plausible(struct fn *f, sljit_sw got)
{
    sljit_sw c = got >= JUMP_BIAS ? got - JUMP_BIAS : got;
    return c >= f->base && c <= atomic_load(&f->max_const);
}

static void *caller(void *arg)
{
    (void)arg;
    atomic_store(&calling, true);
    while (!atomic_load(&done))
        for (int i = call_patched ? 0 : 1; i < FUNCS; i += call_patched ? 1 : 2) {
            if (!plausible(&fns[i], fns[i].call()))
                atomic_fetch_add(&bad, 1);
            atomic_fetch_add(&calls, 1);
        }
    return NULL;
}

static void *patcher(void *arg)
{
    unsigned rng = (unsigned)(uintptr_t)arg * 2654435761u + 1;
    while (!atomic_load(&calling))
        sched_yield();
    for (int k = 0; k < PATCHES; k++) {
        rng = rng * 1103515245u + 12345u;
        int i = (int)(rng >> 8) % (FUNCS / 2) * 2;
        struct fn *f = &fns[i];
        /* Raised under a lock of the test's: the check above needs the
         * maximum published before the code can return it. */
        pthread_mutex_lock(&patch_lock[i]);
        sljit_sw c = atomic_load(&f->max_const) + 0x01010101;
        atomic_store(&f->max_const, c);
        sljit_set_const(f->const_addr, SLJIT_MOV, c, f->exec_offset);
        sljit_set_jump_addr(f->jump_addr, f->targets[(rng >> 20) & 1],
                            f->exec_offset);
        pthread_mutex_unlock(&patch_lock[i]);
    }
    return NULL;
}

int main(void)
{
    const char *b = getenv("WXJIT_BACKEND");
    call_patched = b && !strcmp(b, "toggle");
    for (int i = 0; i < FUNCS; i++) {
        pthread_mutex_init(&patch_lock[i], NULL);
        if (build(&fns[i], 1000 + i)) {
            fprintf(stderr, "sljit_patch_threads: code generation failed\n");
            return 1;
        }
    }
    pthread_t c, p[2];
    pthread_create(&c, NULL, caller, NULL);
    for (uintptr_t i = 0; i < 2; i++)
        pthread_create(&p[i], NULL, patcher, (void *)(i + 1));
    for (int i = 0; i < 2; i++)
        pthread_join(p[i], NULL);
    atomic_store(&done, true);
    pthread_join(c, NULL);
    unsigned long wrong = atomic_load(&bad);
    for (int i = 0; i < FUNCS; i++) {
        sljit_sw got = fns[i].call();
        sljit_sw c0 = got >= JUMP_BIAS ? got - JUMP_BIAS : got;
        if (c0 != atomic_load(&fns[i].max_const))
            wrong++;
        sljit_free_code((void *)fns[i].call, NULL);
    }
    printf("sljit_patch_threads: %d patches x 2 threads (constant and jump "
           "each), %lu calls of %s functions checked, %lu wrong: %s\n",
           PATCHES, (unsigned long)atomic_load(&calls),
           call_patched ? "the patched" : "neighbouring", wrong,
           wrong ? "FAILED" : "ok");
    return wrong != 0;
}
