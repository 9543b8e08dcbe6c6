/* The patch-window workload (workload_windows.c). */
#ifndef BENCH_WORKLOAD_WINDOWS_H
#define BENCH_WORKLOAD_WINDOWS_H

#include <stdint.h>

/* Prints the table: each wxjit backend, reps runs of ops windows. */
void run_windows(int reps, uint64_t ops);

#endif
