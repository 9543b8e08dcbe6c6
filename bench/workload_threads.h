/* The multi-threaded workload of wxjit-bench (workload_threads.c). */
#ifndef BENCH_WORKLOAD_THREADS_H
#define BENCH_WORKLOAD_THREADS_H

#include <stdbool.h>
#include <stdio.h>

struct threads_options {
    bool wanted;    /* false: --no-threads */
    double seconds; /* installers run this long per run */
    int reps;       /* runs per strategy and thread count; medians */
    FILE *table;    /* the table goes here (NULL: none) */
    FILE *csv;      /* CSV rows go here (NULL: none) */
};

/* Every threaded strategy at 1, 2 and 4 installer threads. */
void run_threads_workload(const struct threads_options *o);

#endif
