/* What naming code costs: install + wxjit_describe, and the free that
 * retracts it, per tool (off, no tool, perf map, jitdump, gdb one by one
 * and in batches, unwind registration), side by side in one run, medians
 * of reps runs on the backend AUTO picks; and how long gdb takes to start
 * a program that describes 100,000 functions in one batch, against 2,000
 * described one by one (each registration stops the program in gdb). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "emit_frames.h"
#include "measure.h"
#include "workload_describe.h"
#include "wxjit.h"

struct tool {
    const char *label;
    unsigned flags;
    bool describe, batch;
};

static const struct tool tools[] = {
    {"off (no describe)", 0, false, false},
    {"describe, no tool", 0, true, false},
    {"perf map", WXJIT_HEAP_PERF_MAP, true, false},
    {"jitdump", WXJIT_HEAP_JITDUMP, true, false},
    {"gdb, one by one", WXJIT_HEAP_GDB, true, false},
    {"gdb, batches of 256", WXJIT_HEAP_GDB, true, true},
    {"unwind registration", WXJIT_HEAP_UNWIND, true, false},
};
#define TOOLS (sizeof(tools) / sizeof(*tools))
#define BATCH 256

/* One run: ns per install + describe, and per free; false if the tool is
 * not available here. */
static bool run_once(const struct tool *t, int n, void **exec,
                     wxjit_code_info *info, double *install_ns,
                     double *free_ns)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    wxjit_heap *h;
    uint8_t code[64];
    size_t size = emit_frame_spin(code, 1);
    o.flags = t->flags;
    if (wxjit_heap_create(&o, &h))
        return false;
    double t0 = now_ns();
    for (int i = 0; i < n; i++) {
        if (wxjit_install(h, code, size, 0, &exec[i]))
            abort();
        if (!t->describe)
            continue;
        if (!t->batch && wxjit_describe(h, exec[i], &info[i]))
            abort();
        if (t->batch && (i + 1 == n || (i + 1) % BATCH == 0) &&
            wxjit_describe_batch(h, exec + i / BATCH * BATCH,
                                 info + i / BATCH * BATCH,
                                 (size_t)(i % BATCH + 1)))
            abort();
    }
    double t1 = now_ns();
    for (int i = 0; i < n; i++)
        if (wxjit_free(h, exec[i]))
            abort();
    *install_ns = (t1 - t0) / n;
    *free_ns = (now_ns() - t1) / n;
    wxjit_heap_destroy(h);
    return true;
}

void run_describe(int reps, int n)
{
    char dir[] = "/tmp/wxjit-bench-XXXXXX", map[64];
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return;
    }
    setenv("JITDUMPDIR", dir, 1);
    /* The unwinder a C++ program would have loaded (this one is C). */
    dlopen("libgcc_s.so.1", RTLD_NOW | RTLD_GLOBAL);
    void **exec = malloc((size_t)n * sizeof(*exec));
    wxjit_code_info *info = malloc((size_t)n * sizeof(*info));
    char(*names)[32] = malloc((size_t)n * 32);
    for (int i = 0; i < n; i++) {
        snprintf(names[i], 32, "bench_fn_%d", i);
        info[i] = (wxjit_code_info)WXJIT_CODE_INFO_INIT;
        info[i].name = names[i];
        info[i].flags = WXJIT_DESCRIBE_FRAME_POINTER;
    }
    static double ins[TOOLS][64], fre[TOOLS][64];
    bool ok[TOOLS];
    /* Side by side: every tool once per round, so that the machine's
     * changing load falls on all of them alike. */
    for (int r = 0; r < reps; r++)
        for (size_t t = 0; t < TOOLS; t++)
            ok[t] = run_once(&tools[t], n, exec, info, &ins[t][r],
                             &fre[t][r]);
    wxjit_heap *h;
    wxjit_backend b;
    const char *name = "?";
    if (!wxjit_heap_create(NULL, &h)) {
        wxjit_heap_backend(h, &b);
        wxjit_backend_name(b, &name);
        wxjit_heap_destroy(h);
    }
    printf("\ndescribe: %d functions of %zu bytes (frame-pointer prologue, "
           "described with its unwind information), backend %s, median of "
           "%d runs side by side\n",
           n, emit_frame_spin((uint8_t[64]){0}, 1), name, reps);
    printf("  %-22s %18s %8s %12s %8s\n", "tool", "install+describe",
           "x off", "free", "x off");
    double off_i = median(ins[0], reps), off_f = median(fre[0], reps);
    for (size_t t = 0; t < TOOLS; t++) {
        if (!ok[t]) {
            printf("  %-22s %18s\n", tools[t].label, "n/a (refused here)");
            continue;
        }
        double i = median(ins[t], reps), f = median(fre[t], reps);
        printf("  %-22s %15.0f ns %8.2f %9.0f ns %8.2f\n", tools[t].label, i,
               i / off_i, f, f / off_f);
    }
    snprintf(map, sizeof(map), "/tmp/perf-%d.map", getpid());
    unlink(map);
    char cmd[96];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "wxjit-bench: %s failed\n", cmd);
    free(exec);
    free(info);
    free(names);
}

/* ---- gdb start-up ---------------------------------------------------------- */
int gdb_target(int n, bool batch)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    wxjit_heap *h;
    o.flags = WXJIT_HEAP_GDB;
    if (wxjit_heap_create(&o, &h))
        return 1;
    void **exec = malloc((size_t)n * sizeof(*exec));
    wxjit_code_info *info = malloc((size_t)n * sizeof(*info));
    char(*names)[32] = malloc((size_t)n * 32);
    uint8_t code[64];
    size_t size = emit_frame_spin(code, 1);
    for (int i = 0; i < n; i++) {
        if (wxjit_install(h, code, size, 0, &exec[i]))
            return 1;
        snprintf(names[i], 32, "bench_fn_%d", i);
        info[i] = (wxjit_code_info)WXJIT_CODE_INFO_INIT;
        info[i].name = names[i];
        info[i].flags = WXJIT_DESCRIBE_FRAME_POINTER;
    }
    if (batch ? wxjit_describe_batch(h, exec, info, (size_t)n) != 0 : false)
        return 1;
    for (int i = 0; !batch && i < n; i++)
        if (wxjit_describe(h, exec[i], &info[i]))
            return 1;
    return 0; /* the heap stays: gdb's list is full at exit */
}

/* Seconds from starting cmd to its end. */
static double timed(const char *cmd)
{
    double t0 = now_ns();
    int status = system(cmd);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "wxjit-bench: \"%s\" failed (%#x)\n", cmd, status);
    return (now_ns() - t0) / 1e9;
}

void run_gdb_startup(const char *self, int reps, int n, int n_single)
{
    if (system("gdb --version > /dev/null 2>&1") != 0) {
        printf("\ngdb start-up: SKIPPED (gdb is not installed)\n");
        return;
    }
    const struct {
        const char *what;
        int n;
        bool batch, gdb;
    } runs[] = {{"one batch, no gdb", n, true, false},
                {"one batch, under gdb", n, true, true},
                {"one by one, no gdb", n_single, false, false},
                {"one by one, under gdb", n_single, false, true}};
    double s[4][16];
    for (int r = 0; r < reps && r < 16; r++)
        for (int k = 0; k < 4; k++) {
            char cmd[4200];
            snprintf(cmd, sizeof(cmd),
                     "%s%s --gdb-target %d %s > /dev/null 2>&1",
                     runs[k].gdb ? "gdb -batch -nx -q -ex run --args " : "",
                     self, runs[k].n, runs[k].batch ? "batch" : "single");
            s[k][r] = timed(cmd);
        }
    printf("\ngdb start-up: a program installs and describes N functions "
           "(WXJIT_HEAP_GDB) and exits; wall time from start to exit, "
           "median of %d\n",
           reps);
    for (int k = 0; k < 4; k++)
        printf("  %-24s N = %6d %8.2f s\n", runs[k].what, runs[k].n,
               median(s[k], reps));
}
