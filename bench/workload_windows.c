/* The patch-window workload: one write window of 8 bytes on live code
 * (wxjit_window_open, two 4-byte stores, wxjit_window_close), on each
 * wxjit backend side by side, alone and while another thread calls a
 * function on the same page; then what the core sync each close makes on
 * x86_64 and aarch64 (one membarrier SYNC_CORE) costs by itself. */
#define _GNU_SOURCE /* syscall */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "emit.h"
#include "measure.h"
#include "workload_windows.h"
#include "wxjit.h"

struct caller {
    int (*fn)(void);
    atomic_bool stop;
    uint64_t calls;
};

static void *call_loop(void *arg)
{
    struct caller *c = arg;
    while (!atomic_load_explicit(&c->stop, memory_order_relaxed)) {
        c->fn();
        c->calls++;
    }
    return NULL;
}

static void *install(wxjit_heap *h, int32_t v)
{
    uint8_t buf[32];
    void *exec;
    size_t n = emit_return_int_patchable(buf, v);
    emit_nops(buf + n, 16 - n % 16);
    if (wxjit_install(h, buf, n + 16 - n % 16, 0, &exec))
        return NULL;
    return exec;
}

/* ns per window over ops windows; *sys, *syncs and *faults per window. */
static double windows(wxjit_heap *h, uint8_t *at, uint64_t ops, double *sys,
                      double *syncs, double *faults)
{
    wxjit_stats s0, s1;
    wxjit_stats_get(h, &s0);
    double t0 = now_ns();
    for (uint64_t i = 0; i < ops; i++) {
        void *w;
        if (wxjit_window_open(h, at, 8, &w))
            return -1;
        int32_t v = (int32_t)i;
        uint32_t next;
        memcpy(&next, (uint8_t *)w + 4, 4); /* the view shows the code */
        memcpy(w, &v, 4);
        memcpy((uint8_t *)w + 4, &next, 4);
        wxjit_window_close(h, at, 8);
    }
    double ns = (now_ns() - t0) / (double)ops;
    wxjit_stats_get(h, &s1);
    *sys = (double)(s1.syscalls - s0.syscalls) / (double)ops;
    *syncs = (double)(s1.core_syncs - s0.core_syncs) / (double)ops;
    *faults = (double)(s1.faults_retried - s0.faults_retried);
    return ns;
}

/* ns per system call cmd of membarrier (or getppid for cmd < 0). */
static double syscall_ns(long cmd, uint64_t ops)
{
    double t0 = now_ns();
    for (uint64_t i = 0; i < ops; i++)
        if (cmd < 0)
            syscall(SYS_getppid);
        else
            syscall(SYS_membarrier, cmd, 0, 0);
    return (now_ns() - t0) / (double)ops;
}

static int spin(void)
{
    return 0;
}

static void run_core_sync(int reps, uint64_t ops)
{
    enum { SYNC_CORE = 32, REGISTER_SYNC_CORE = 64 };
    if (syscall(SYS_membarrier, REGISTER_SYNC_CORE, 0, 0)) {
        printf("\ncore-sync: membarrier SYNC_CORE unavailable here\n");
        return;
    }
    printf("\ncore-sync: one membarrier SYNC_CORE (the core sync of a "
           "window's close), next to a null system call, median of %d runs "
           "of %llu\n", reps, (unsigned long long)ops);
    printf("  %-22s %12s %12s %8s\n", "call", "ns alone", "ns w/thread",
           "x");
    static const struct {
        const char *name;
        long cmd;
    } calls[] = {{"getppid", -1}, {"membarrier SYNC_CORE", SYNC_CORE}};
    for (size_t k = 0; k < 2; k++) {
        double alone[64], with[64];
        for (int r = 0; r < reps; r++) {
            alone[r] = syscall_ns(calls[k].cmd, ops);
            struct caller c = {.fn = spin};
            pthread_t t;
            pthread_create(&t, NULL, call_loop, &c);
            with[r] = syscall_ns(calls[k].cmd, ops);
            atomic_store(&c.stop, true);
            pthread_join(t, NULL);
        }
        double a = median(alone, reps), w = median(with, reps);
        printf("  %-22s %12.1f %12.1f %7.2fx\n", calls[k].name, a, w, w / a);
    }
    printf("w/thread: another thread of the process runs meanwhile (on "
           "another CPU if there is one): SYNC_CORE interrupts it.\n");
}

void run_windows(int reps, uint64_t ops)
{
    static const wxjit_backend backends[] = {
        WXJIT_BACKEND_TOGGLE, WXJIT_BACKEND_DUALMAP, WXJIT_BACKEND_PROCMEM};
    printf("\npatch-window: one 8-byte window on live code (open, store, "
           "close), median of %d runs of %llu\n", reps,
           (unsigned long long)ops);
    printf("  %-10s %12s %12s %8s %12s %14s %14s\n", "backend", "ns alone",
           "ns w/caller", "x", "syscalls/op", "core syncs/op",
           "caller faults");
    for (size_t b = 0; b < sizeof(backends) / sizeof(backends[0]); b++) {
        wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
        wxjit_heap *h;
        o.backend = backends[b];
        if (wxjit_heap_create(&o, &h))
            continue;
        uint8_t *f = install(h, 1), *g = install(h, 2);
        const char *name;
        wxjit_backend_name(backends[b], &name);
        double alone[64], with[64], sys = 0, syncs = 0, faults = 0, fsum = 0;
        for (int r = 0; r < reps; r++) {
            alone[r] = windows(h, f + EMIT_PATCHABLE_IMM_OFFSET, ops, &sys,
                               &syncs, &faults);
            struct caller c = {.fn = NULL};
            memcpy(&c.fn, &g, sizeof(g));
            pthread_t t;
            pthread_create(&t, NULL, call_loop, &c);
            with[r] = windows(h, f + EMIT_PATCHABLE_IMM_OFFSET, ops, &sys,
                              &syncs, &faults);
            atomic_store(&c.stop, true);
            pthread_join(t, NULL);
            fsum += faults;
        }
        double a = median(alone, reps), w = median(with, reps);
        printf("  %-10s %12.1f %12.1f %7.2fx %12.3f %14.3f %14.0f\n", name,
               a, w, w / a, sys, syncs, fsum);
        wxjit_free(h, f);
        wxjit_free(h, g);
        wxjit_heap_destroy(h);
    }
    printf("x: with a caller running a neighbouring function on the same "
           "page / alone; caller faults: retried (toggle: the page is not "
           "executable while a window is open), all runs.\n");
    run_core_sync(reps, ops);
}
