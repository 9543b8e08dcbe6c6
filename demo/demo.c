/* wxjit demo: several threads JIT-compile small native functions
 * f(x) = a*x + b while other threads call them, all under a
 * kernel-enforced W^X policy (seccomp). Run it with `make demo`. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wx_policy.h"
#include "wxjit.h"

#define COMPILERS 4
#define CALLERS 2
#define PER_COMPILER 2000
#define FUNCTIONS (COMPILERS * PER_COMPILER)

typedef int32_t (*linear_fn)(int32_t x);

struct compiled {
    _Atomic(linear_fn) fn;
    int32_t a, b;
};

static wxjit_heap *heap;
static struct compiled table[FUNCTIONS];
static atomic_int compilers_done;
static atomic_ulong calls, wrong;

/* Native code for f(x) = a*x + b, for the CPU this runs on. */
static size_t compile_linear(uint8_t *p, int32_t a, int32_t b)
{
#if defined(__x86_64__)
    p[0] = 0x69, p[1] = 0xc7; /* imul eax, edi, imm32 */
    memcpy(p + 2, &a, 4);
    p[6] = 0x05; /* add eax, imm32 */
    memcpy(p + 7, &b, 4);
    p[11] = 0xc3; /* ret */
    return 12;
#elif defined(__aarch64__)
    uint32_t ua = (uint32_t)a, ub = (uint32_t)b, insn[] = {
        0x52800001u | (ua & 0xffff) << 5, /* movz w1, #lo(a) */
        0x72a00001u | (ua >> 16) << 5,    /* movk w1, #hi(a), lsl 16 */
        0x1b017c00u,                      /* mul w0, w0, w1 */
        0x52800001u | (ub & 0xffff) << 5, /* movz w1, #lo(b) */
        0x72a00001u | (ub >> 16) << 5,    /* movk w1, #hi(b), lsl 16 */
        0x0b010000u,                      /* add w0, w0, w1 */
        0xd65f03c0u,                      /* ret */
    };
    memcpy(p, insn, sizeof(insn));
    return sizeof(insn);
#else
#error "demo: no code generator for this CPU"
#endif
}

static int32_t expected(const struct compiled *c, int32_t x)
{
    return (int32_t)((uint32_t)c->a * (uint32_t)x + (uint32_t)c->b);
}

static void *compiler_main(void *arg)
{
    int first = (int)(intptr_t)arg * PER_COMPILER;
    uint8_t code[64];
    for (int i = first; i < first + PER_COMPILER; i++) {
        struct compiled *c = &table[i];
        c->a = rand_r(&(unsigned){(unsigned)i}) % 1000 - 500;
        c->b = i;
        void *exec;
        int err = wxjit_install(heap, code, compile_linear(code, c->a, c->b),
                                0, &exec);
        if (err) {
            fprintf(stderr, "install failed: %s\n", strerror(err));
            exit(1);
        }
        linear_fn fn;
        memcpy(&fn, &exec, sizeof(fn));
        atomic_store_explicit(&c->fn, fn, memory_order_release);
    }
    atomic_fetch_add(&compilers_done, 1);
    return NULL;
}

static void *caller_main(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg + 1;
    unsigned long n = 0, bad = 0;
    /* Keep calling while compilers write to the very pages being called. */
    while (atomic_load(&compilers_done) < COMPILERS || n < 1000000) {
        struct compiled *c = &table[rand_r(&seed) % FUNCTIONS];
        linear_fn fn = atomic_load_explicit(&c->fn, memory_order_acquire);
        if (!fn)
            continue;
        int32_t x = (int32_t)(rand_r(&seed) % 10000);
        bad += fn(x) != expected(c, x);
        n++;
    }
    atomic_fetch_add(&calls, n);
    atomic_fetch_add(&wrong, bad);
    return NULL;
}

int main(void)
{
    int err = wx_policy_enter();
    if (err) {
        fprintf(stderr, "cannot enter the W^X policy: %s\n", strerror(err));
        return 1;
    }
    void *rwx = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("W^X policy active: an RWX mapping, as a plain JIT would ask for, "
           "is %s\n", rwx == MAP_FAILED ? "refused by the kernel" : "ALLOWED");
    if (rwx != MAP_FAILED)
        return 1;

    wxjit_backend backend;
    if ((err = wxjit_fault_handler_install()) ||
        (err = wxjit_heap_create(NULL, &heap)) ||
        (err = wxjit_heap_backend(heap, &backend))) {
        fprintf(stderr, "wxjit: %s\n", strerror(err));
        return 1;
    }
    printf("wxjit heap backend: %s; %d compiler threads x %d functions, "
           "%d caller threads\n",
           backend == WXJIT_BACKEND_TOGGLE ? "toggle" : "other", COMPILERS,
           PER_COMPILER, CALLERS);

    pthread_t t[COMPILERS + CALLERS];
    for (int i = 0; i < COMPILERS; i++)
        pthread_create(&t[i], NULL, compiler_main, (void *)(intptr_t)i);
    for (int i = 0; i < CALLERS; i++)
        pthread_create(&t[COMPILERS + i], NULL, caller_main,
                       (void *)(intptr_t)i);
    for (int i = 0; i < COMPILERS + CALLERS; i++)
        pthread_join(t[i], NULL);

    wxjit_stats s;
    wxjit_stats_get(heap, &s);
    int wx = wx_policy_wx_mappings();
    printf("\n  %-28s %12d\n", "functions compiled", FUNCTIONS);
    printf("  %-28s %12lu\n", "calls", atomic_load(&calls));
    printf("  %-28s %12lu\n", "wrong results", atomic_load(&wrong));
    printf("  %-28s %12llu\n", "faults retried",
           (unsigned long long)s.faults_retried);
    printf("  %-28s %12llu\n", "mprotect calls",
           (unsigned long long)s.mprotect_calls);
    printf("  %-28s %12llu\n", "code bytes live",
           (unsigned long long)s.bytes_live);
    printf("  %-28s %12llu\n", "code pages used",
           (unsigned long long)s.pages);
    printf("  %-28s %12d\n", "W+X mappings seen", wx);
    wxjit_heap_destroy(heap);
    bool ok = atomic_load(&wrong) == 0 && wx == 0;
    printf("\n%s\n", ok ? "demo: ok" : "demo: FAILED");
    return ok ? 0 : 1;
}
