/* What every workload of wxjit-bench measures with: a clock, a seedable
 * random sequence, PCRE2's code sizes and medians. */
#ifndef BENCH_MEASURE_H
#define BENCH_MEASURE_H

#include <stddef.h>
#include <stdint.h>

double now_ns(void);        /* CLOCK_MONOTONIC */
double thread_cpu_ns(void); /* CPU time of the calling thread */
uint32_t next_random(uint32_t *s);
/* A size drawn from PCRE2's JIT code sizes (see measure.c). */
size_t pcre2_size(uint32_t *rng);
/* Sorts v in place. */
double median(double *v, int n);

#endif
