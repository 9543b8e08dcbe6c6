/* perf itself reads what wxjit writes: `perf record` of a JIT-heavy
 * program (this one, as `test_perf workload`, under the W^X policy), then
 * `perf inject --jit` and `perf report`, must put the samples in JIT code
 * under the names the program gave them (none left as bare addresses), in
 * proportion to the time spent in each; the same with perf's map file
 * instead of jitdump. The workload
 * frees its functions at the end, so the "wxjit:freed" records that follow
 * must not take their samples. Skipped, with the reason, where perf cannot
 * run (not installed, perf_event_paranoid, no permission). Once per
 * backend. */
#include <sys/wait.h>

#include "emit_frames.h"
#include "wxtest.h"

#define FUNCTIONS 4
#define CALLERS 2
#define WORK_MS 1500

/* ---- the workload: functions named wxjit_hot_<k> spin k units each ------ */
struct work {
    void *fn[FUNCTIONS];
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void *caller(void *arg)
{
    const struct work *w = arg;
    uint64_t end = now_ms() + WORK_MS;
    while (now_ms() < end)
        for (int k = 0; k < FUNCTIONS; k++)
            wxtest_expect_returns(w->fn[k], 0);
    return NULL;
}

static int workload(void)
{
    wxtest_enter_wx_policy();
    CHECK_OK(wxjit_fault_handler_install());
    wxjit_heap *h;
    CHECK_OK(wxjit_heap_create(NULL, &h)); /* tools from WXJIT_PERF */
    struct work w;
    for (int k = 0; k < FUNCTIONS; k++) {
        uint8_t buf[64];
        char name[32];
        /* 100,000 iterations per unit: a call of tens of microseconds, so
         * samples land in the loops, not in the calling. */
        size_t n = emit_frame_spin(buf, 100000u * (uint32_t)(k + 1));
        CHECK_OK(wxjit_install(h, buf, n, 0, &w.fn[k]));
        snprintf(name, sizeof(name), "wxjit_hot_%d", k + 1);
        wxjit_code_info info = WXJIT_CODE_INFO_INIT;
        info.name = name;
        info.flags = WXJIT_DESCRIBE_FRAME_POINTER;
        CHECK_OK(wxjit_describe(h, w.fn[k], &info));
    }
    pthread_t t[CALLERS];
    for (int i = 0; i < CALLERS; i++)
        t[i] = wxtest_spawn(caller, &w);
    for (int i = 0; i < CALLERS; i++)
        wxtest_join(t[i]);
    for (int k = 0; k < FUNCTIONS; k++)
        CHECK_OK(wxjit_free(h, w.fn[k]));
    CHECK_OK(wxjit_heap_destroy(h));
    printf("workload pid %d\n", (int)getpid()); /* its perf map's name */
    return 0;
}

/* ---- the driver ------------------------------------------------------------- */
static char dir[] = "/tmp/wxjit-perf-XXXXXX";

/* Runs a shell command with its output in dir/name; its exit status. */
static int run(const char *name, const char *fmt, const char *arg)
{
    char cmd[2048], inner[1536];
    snprintf(inner, sizeof(inner), fmt, arg);
    snprintf(cmd, sizeof(cmd), "cd %s && (%s) > %s 2>&1", dir, inner, name);
    int status = system(cmd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static char *output(const char *name)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    CHECK(f, "%s: %s", path, strerror(errno));
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

/* Where perf cannot sample this system, the reason; NULL if it can. */
static const char *perf_unusable(void)
{
    static char why[512];
    if (run("version.txt", "perf version%s", "") != 0) {
        snprintf(why, sizeof(why), "perf does not run: %.400s",
                 output("version.txt"));
        return why;
    }
    if (run("probe.txt",
            "perf record -e cpu-clock -k mono -o probe.data -- true%s",
            "") != 0) {
        int paranoid = -1;
        FILE *f = fopen("/proc/sys/kernel/perf_event_paranoid", "r");
        if (f) {
            if (fscanf(f, "%d", &paranoid) != 1)
                paranoid = -1;
            fclose(f);
        }
        snprintf(why, sizeof(why),
                 "perf record fails (perf_event_paranoid %d, uid %d): %.300s",
                 paranoid, (int)getuid(), output("probe.txt"));
        return why;
    }
    return NULL;
}

/* The share of samples perf report gives each wxjit_hot_<k>, in percent,
 * and to user-space addresses it has no name for ("[.] 0x...": JIT code
 * perf could not name). */
static double shares(const char *report, double share[FUNCTIONS])
{
    double unnamed = 0;
    memset(share, 0, sizeof(double) * FUNCTIONS);
    for (const char *p = report; *p;) {
        char line[512];
        size_t n = strcspn(p, "\n");
        snprintf(line, sizeof(line), "%.*s", (int)n, p);
        p += n + (p[n] == '\n');
        double pct;
        int k;
        const char *sym = strstr(line, "wxjit_hot_");
        if (sscanf(line, " %lf%%", &pct) != 1)
            continue;
        if (sym && sscanf(sym, "wxjit_hot_%d", &k) == 1 && k >= 1 &&
            k <= FUNCTIONS)
            share[k - 1] += pct;
        else if (strstr(line, "[.] 0x"))
            unnamed += pct;
    }
    return unnamed;
}

/* The samples in JIT code carry the right names: the named ones are most
 * samples (the kernel's share, which a loaded machine inflates, aside),
 * JIT code left unnamed is noise, and each function has its share of the
 * work (1:2:3:4 of 10 units: 10%, 20%, 30%, 40% of the named samples)
 * within a margin that sampling noise does not reach. */
static void check_shares(const char *how, const char *report)
{
    double share[FUNCTIONS], total = 0;
    double unnamed = shares(report, share);
    for (int k = 0; k < FUNCTIONS; k++)
        total += share[k];
    CHECK(total >= 50 && unnamed <= 2,
          "%s: %.1f%% of samples named wxjit_hot_*, %.1f%% in user code "
          "perf could not name; perf report:\n%.3000s",
          how, total, unnamed, report);
    for (int k = 0; k < FUNCTIONS; k++) {
        double want = total * (k + 1) / 10.0;
        CHECK(share[k] > want * 0.6 && share[k] < want * 1.4,
              "%s: wxjit_hot_%d has %.1f%% of samples, expected about "
              "%.1f%%; perf report:\n%.3000s",
              how, k + 1, share[k], want, report);
    }
    printf("  %s: %.1f%% of samples in JIT code by name (1..4: %.1f%% "
           "%.1f%% %.1f%% %.1f%%), %.1f%% unnamed\n",
           how, total, share[0], share[1], share[2], share[3], unnamed);
}

static void profile(const char *self, const char *sink)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "JITDUMPDIR=%s WXJIT_PERF=%s perf --buildid-dir buildid record "
             "-e cpu-clock -k mono -o %s.data -- %%s workload",
             dir, sink, sink);
    CHECK(run("record.txt", cmd, self) == 0, "perf record: %s",
          output("record.txt"));
    const char *data = "map.data";
    if (!strcmp(sink, "jitdump")) {
        CHECK(run("inject.txt",
                  "perf --buildid-dir buildid inject --jit -i jitdump.data "
                  "-o injected.data%s",
                  "") == 0,
              "perf inject --jit: %s", output("inject.txt"));
        data = "injected.data";
    }
    CHECK(run("report.txt",
              "perf --buildid-dir buildid report -i %s --stdio --sort sym "
              "--percent-limit 0.5",
              data) == 0,
          "perf report: %s", output("report.txt"));
    check_shares(sink, output("report.txt"));
    const char *pid = strstr(output("record.txt"), "workload pid ");
    char map[64];
    if (pid && snprintf(map, sizeof(map), "/tmp/perf-%d.map",
                        atoi(pid + 13)) > 0)
        unlink(map);
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "workload"))
        return workload();
    if (wxtest_valgrind() || wxtest_emulator())
        wxtest_skip_all("test_perf", "perf does not sample an emulated "
                                     "program's JIT code as such");
    if (access("/bin/sh", X_OK) != 0) /* an initramfs of test programs */
        wxtest_skip_all("test_perf", "no /bin/sh to run perf with");
    CHECK(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
    const char *why = perf_unusable();
    char cleanup[128];
    snprintf(cleanup, sizeof(cleanup), "rm -rf %s", dir);
    if (why) {
        CHECK(system(cleanup) == 0, "%s", cleanup);
        printf("test_perf: SKIPPED: %s\n", why);
        return WXTEST_SKIPPED;
    }
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    CHECK(n > 0, "readlink /proc/self/exe: %s", strerror(errno));
    self[n] = 0; /* absolute: perf runs it from the temporary directory */
    wxtest_print_backend();
    profile(self, "jitdump");
    wxjit_heap *h;
    wxjit_backend b;
    CHECK_OK(wxjit_heap_create(NULL, &h));
    CHECK_OK(wxjit_heap_backend(h, &b));
    CHECK_OK(wxjit_heap_destroy(h));
    if (b == WXJIT_BACKEND_DUALMAP)
        printf("  map: SKIPPED: perf reads its map file for anonymous "
               "mappings only, and dualmap's code is a shared memory "
               "object's (samples go to the object: use jitdump)\n");
    else
        profile(self, "map");
    CHECK(system(cleanup) == 0, "%s", cleanup);
    printf("test_perf: all passed\n");
    return 0;
}
