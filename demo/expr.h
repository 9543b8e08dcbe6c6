/* A tiny expression JIT for the demo: random integer expressions over x
 * (+, -, * on wrapping 32-bit ints), an interpreter that says what they
 * must return, and a compiler to native x86_64 or aarch64 code. */
#ifndef DEMO_EXPR_H
#define DEMO_EXPR_H

#include <stddef.h>
#include <stdint.h>

#define EXPR_MAX_NODES 31 /* depth 4: 15 operators and 16 leaves at most */
#define EXPR_MAX_CODE 512 /* native bytes for EXPR_MAX_NODES, generously */

struct expr {
    int count;
    struct node {
        char op; /* '+', '-', '*', 'x' (the argument) or 'k' (constant) */
        int32_t k;
        int left, right; /* child indexes for operators */
    } nodes[EXPR_MAX_NODES];
};

typedef int32_t (*expr_fn)(int32_t x);

/* A random expression from *seed; returns the root's index. */
int expr_random(struct expr *e, unsigned *seed);
int32_t expr_eval(const struct expr *e, int root, int32_t x);
/* Native code for the function x -> expression; returns its size. */
size_t expr_compile(const struct expr *e, int root, uint8_t *out);
/* Prints the expression (for the demo's sample lines). */
int expr_format(const struct expr *e, int root, char *buf, size_t len);

#endif
