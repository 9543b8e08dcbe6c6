/* Random expressions, their interpreter and their compiler. The compiler
 * is a stack machine: each operator evaluates its left operand, pushes
 * it, evaluates its right operand, pops the left one and combines them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expr.h"

static int add_node(struct expr *e, char op, int32_t k, int l, int r)
{
    e->nodes[e->count] = (struct node){op, k, l, r};
    return e->count++;
}

static int random_node(struct expr *e, unsigned *seed, int depth)
{
    int pick = rand_r(seed) % 8;
    if (depth == 0 || pick < 2)
        return pick % 2 ? add_node(e, 'x', 0, 0, 0)
                        : add_node(e, 'k', rand_r(seed) % 200 - 100, 0, 0);
    int l = random_node(e, seed, depth - 1);
    int r = random_node(e, seed, depth - 1);
    return add_node(e, "+-*"[pick % 3], 0, l, r);
}

int expr_random(struct expr *e, unsigned *seed)
{
    e->count = 0;
    return random_node(e, seed, 4);
}

int32_t expr_eval(const struct expr *e, int root, int32_t x)
{
    const struct node *n = &e->nodes[root];
    if (n->op == 'x')
        return x;
    if (n->op == 'k')
        return n->k;
    /* Unsigned arithmetic: wraps like the machine code, no C overflow. */
    uint32_t l = (uint32_t)expr_eval(e, n->left, x);
    uint32_t r = (uint32_t)expr_eval(e, n->right, x);
    return (int32_t)(n->op == '+' ? l + r : n->op == '-' ? l - r : l * r);
}

int expr_format(const struct expr *e, int root, char *buf, size_t len)
{
    const struct node *n = &e->nodes[root];
    if (n->op == 'x')
        return snprintf(buf, len, "x");
    if (n->op == 'k')
        return snprintf(buf, len, "%d", (int)n->k);
    int used = snprintf(buf, len, "(");
    used += expr_format(e, n->left, buf + used, len - (size_t)used);
    used += snprintf(buf + used, len - (size_t)used, " %c ", n->op);
    used += expr_format(e, n->right, buf + used, len - (size_t)used);
    return used + snprintf(buf + used, len - (size_t)used, ")");
}

struct out {
    uint8_t *p;
    size_t n;
};

static void put(struct out *o, const void *bytes, size_t n)
{
    memcpy(o->p + o->n, bytes, n);
    o->n += n;
}

#if defined(__x86_64__)
/* The argument arrives in edi, the result leaves in eax. */
static void emit_prologue(struct out *o) { (void)o; }
static void emit_arg(struct out *o) { put(o, "\x89\xf8", 2); } /* mov eax,edi */

static void emit_const(struct out *o, int32_t k)
{
    put(o, "\xb8", 1); /* mov eax, imm32 */
    put(o, &k, 4);
}

static void emit_push(struct out *o) { put(o, "\x50", 1); } /* push rax */

/* Left operand on the stack, right one in eax. */
static void emit_combine(struct out *o, char op)
{
    put(o, "\x89\xc1\x58", 3); /* mov ecx, eax; pop rax */
    if (op == '+')
        put(o, "\x01\xc8", 2); /* add eax, ecx */
    else if (op == '-')
        put(o, "\x29\xc8", 2); /* sub eax, ecx */
    else
        put(o, "\x0f\xaf\xc1", 3); /* imul eax, ecx */
}

static void emit_return(struct out *o) { put(o, "\xc3", 1); }

#elif defined(__aarch64__)
static void insn(struct out *o, uint32_t i) { put(o, &i, 4); }

/* The argument arrives in w0 and is kept in w2; the result leaves in w0. */
static void emit_prologue(struct out *o) { insn(o, 0x2a0003e2); } /* mov w2,w0 */
static void emit_arg(struct out *o) { insn(o, 0x2a0203e0); }     /* mov w0,w2 */

static void emit_const(struct out *o, int32_t k)
{
    uint32_t u = (uint32_t)k;
    insn(o, 0x52800000u | (u & 0xffff) << 5); /* movz w0, #lo */
    insn(o, 0x72a00000u | (u >> 16) << 5);    /* movk w0, #hi, lsl 16 */
}

static void emit_push(struct out *o) { insn(o, 0xb81f0fe0); } /* str w0,[sp,#-16]! */

static void emit_combine(struct out *o, char op)
{
    insn(o, 0xb84107e1); /* ldr w1, [sp], #16 */
    insn(o, op == '+' ? 0x0b000020u   /* add w0, w1, w0 */
          : op == '-' ? 0x4b000020u   /* sub w0, w1, w0 */
                      : 0x1b007c20u); /* mul w0, w1, w0 */
}

static void emit_return(struct out *o) { insn(o, 0xd65f03c0); } /* ret */

#else
#error "demo: no code generator for this CPU (x86_64 and aarch64 only)"
#endif

static void compile_node(const struct expr *e, int i, struct out *o)
{
    const struct node *n = &e->nodes[i];
    if (n->op == 'x') {
        emit_arg(o);
    } else if (n->op == 'k') {
        emit_const(o, n->k);
    } else {
        compile_node(e, n->left, o);
        emit_push(o);
        compile_node(e, n->right, o);
        emit_combine(o, n->op);
    }
}

size_t expr_compile(const struct expr *e, int root, uint8_t *out)
{
    struct out o = {out, 0};
    emit_prologue(&o);
    compile_node(e, root, &o);
    emit_return(&o);
    return o.n;
}
