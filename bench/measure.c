/* Clocks, random sizes and medians shared by the workloads of wxjit-bench. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <time.h>

#include "measure.h"

static double clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

double now_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

double thread_cpu_ns(void)
{
    return clock_ns(CLOCK_THREAD_CPUTIME_ID);
}

uint32_t next_random(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* Sizes of real regex JIT code (PCRE2): p10 662 B, median 1293 B, p90
 * 2195 B, p99 3923 B, max 21 KiB; linear between those quantiles. */
size_t pcre2_size(uint32_t *rng)
{
    static const double q[] = {0, 0.10, 0.50, 0.90, 0.99, 1.0};
    static const double v[] = {200, 662, 1293, 2195, 3923, 21504};
    double u = (next_random(rng) % 1000000) / 1e6;
    int i = 0;
    while (u > q[i + 1])
        i++;
    return (size_t)(v[i] + (u - q[i]) / (q[i + 1] - q[i]) * (v[i + 1] - v[i]));
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), by_value);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}
