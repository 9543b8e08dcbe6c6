/* A way to get code into executable memory, as the benchmark drives it:
 * wxjit's backends and the baselines a JIT would otherwise use. */
#ifndef BENCH_STRATEGY_H
#define BENCH_STRATEGY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct counts {
    uint64_t syscalls;     /* system calls made so far */
    uint64_t mapped_bytes; /* code memory in use (pages touched) */
    uint64_t faults_retried;
    uint64_t shared_locks; /* wxjit's statistic; baselines have no such
                              locks of their own (0) */
};

struct strategy {
    const char *name;
    /* Threads may call code while another thread installs on the same
     * pages; false for designs that crash then (one area flipped RW). */
    bool concurrent;
    /* Functions become callable only at flush (batched commits); such a
     * strategy runs the pure install workloads only. */
    bool deferred;
    /* Runs a tenth of the operations when each costs milliseconds. */
    bool slow;
    void *(*create)(void);
    void (*destroy)(void *s);
    void *(*install)(void *s, const void *code, size_t size);
    void (*release)(void *s, void *exec, size_t size);
    void (*flush)(void *s); /* make deferred installs callable; may be NULL */
    struct counts (*counts)(void *s);
};

extern const struct strategy *const strategies[];
extern const size_t strategy_count;
extern const struct strategy *const threaded_strategies[];
extern const size_t threaded_strategy_count;

#endif
