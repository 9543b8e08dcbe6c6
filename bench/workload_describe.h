/* What naming code costs (workload_describe.c). */
#ifndef BENCH_WORKLOAD_DESCRIBE_H
#define BENCH_WORKLOAD_DESCRIBE_H

/* The table of install + describe and free costs per tool, side by
 * side: reps runs of n functions each. */
void run_describe(int reps, int n);
/* gdb's start-up with n functions described in one batch, and with
 * n_single described one by one (self: this program's path). */
void run_gdb_startup(const char *self, int reps, int n, int n_single);
/* The program gdb runs for run_gdb_startup: n functions, batch or not. */
int gdb_target(int n, bool batch);

#endif
