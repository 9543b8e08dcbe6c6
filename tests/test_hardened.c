/* Backend choice under the hardening policies of Linux systems
 * (tools/wx_hardening.h), each scenario in a child process that enters its
 * policies and then the W^X filter every test runs under. Asserted per
 * scenario: which backends work (a heap of each is created explicitly and
 * installs, calls, patches and frees code) and, for each that does not,
 * that wxjit_backend_probe and wxjit_heap_create fail with the same errno
 * and the probe names the documented check; what AUTO gets, with and
 * without WXJIT_HEAP_NO_WRITABLE_ALIAS; that procmem's patch_atomic is
 * ENOTSUP exactly where toggle is refused. Then the demo and wxjit-probe
 * run under the same policies (through wx-run) and must exit as expected.
 * README's "Hardened systems" table is this file's table.
 *
 * usage: test_hardened WX-RUN WXJIT-PROBE WXJIT-DEMO|none [SCENARIO]... */
#include "emit.h"
#include "wx_hardening.h"
#include "wxtest.h"

#define WHY_MPROTECT "mprotect adding PROT_EXEC refused"
#define WHY_MMAP_WX "mmap with write+exec refused"
#define WHY_MEM_WRITE "/proc/self/mem not writable"
#define WHY_MEM_OPEN "/proc/self/mem cannot be opened"
#define WHY_SHM_EXEC "shared memory object cannot be mapped executable"
#define WHY_NONE "no backend works here"

#define BACKENDS 5 /* indexed by wxjit_backend; [AUTO] unused */
#define NO_BACKEND WXJIT_BACKEND_AUTO /* in `gets`: a heap is refused */

struct refusal {
    int err; /* 0: the backend works */
    const char *reason;
};

struct scenario {
    const char *name;
    const char *policies[3];    /* wx_hardening names, then the W^X filter */
    const char *dualmap_object; /* WXJIT_DUALMAP_OBJECT, or NULL */
    struct refusal refused[BACKENDS];
    /* What AUTO gets without and with NO_WRITABLE_ALIAS (NO_BACKEND: the
     * heap is refused with auto_err / no_alias_err). */
    wxjit_backend auto_gets, no_alias_gets;
    int auto_err, no_alias_err;
};

/* The W^X filter refuses rwx in every scenario, before MDWE could. */
#define RWX_REFUSED [WXJIT_BACKEND_RWX] = {EACCES, WHY_MMAP_WX}

/* One scenario per entry, as in README's table (clang-format would put
 * each field on a line of its own). */
/* clang-format off */
static const struct scenario scenarios[] = {
    {"wx", {NULL}, NULL, {RWX_REFUSED}, WXJIT_BACKEND_DUALMAP,
     WXJIT_BACKEND_PROCMEM, 0, 0},
    {"mdwe", {"mdwe"}, NULL,
     {[WXJIT_BACKEND_TOGGLE] = {EACCES, WHY_MPROTECT}, RWX_REFUSED},
     WXJIT_BACKEND_DUALMAP, WXJIT_BACKEND_PROCMEM, 0, 0},
    {"systemd-mdwe", {"systemd-mdwe"}, NULL,
     {[WXJIT_BACKEND_TOGGLE] = {EPERM, WHY_MPROTECT}, RWX_REFUSED},
     WXJIT_BACKEND_DUALMAP, WXJIT_BACKEND_PROCMEM, 0, 0},
    {"no-mem-write", {"no-mem-write"}, NULL,
     {[WXJIT_BACKEND_PROCMEM] = {EPERM, WHY_MEM_WRITE}, RWX_REFUSED},
     WXJIT_BACKEND_DUALMAP, WXJIT_BACKEND_TOGGLE, 0, 0},
    {"no-proc", {"no-proc"}, NULL,
     {[WXJIT_BACKEND_PROCMEM] = {ENOENT, WHY_MEM_OPEN}, RWX_REFUSED},
     WXJIT_BACKEND_DUALMAP, WXJIT_BACKEND_TOGGLE, 0, 0},
    /* memfd objects are executable all the same. */
    {"noexec-shm", {"noexec-shm"}, NULL, {RWX_REFUSED},
     WXJIT_BACKEND_DUALMAP, WXJIT_BACKEND_PROCMEM, 0, 0},
    /* Where dualmap is told to start at shm_open (regression: its probe
     * used memfd regardless, passed, and the heap's first install then
     * failed with EPERM; AUTO picked it). */
    {"noexec-shm,object=shm", {"noexec-shm"}, "shm",
     {[WXJIT_BACKEND_DUALMAP] = {EPERM, WHY_SHM_EXEC}, RWX_REFUSED},
     WXJIT_BACKEND_PROCMEM, WXJIT_BACKEND_PROCMEM, 0, 0},
    {"no-shm-exec", {"no-shm-exec"}, NULL,
     {[WXJIT_BACKEND_DUALMAP] = {EPERM, WHY_SHM_EXEC}, RWX_REFUSED},
     WXJIT_BACKEND_PROCMEM, WXJIT_BACKEND_PROCMEM, 0, 0},
    /* Combined: NO_WRITABLE_ALIAS has nothing left (the errno of toggle,
     * the last backend tried). */
    {"mdwe+no-mem-write", {"mdwe", "no-mem-write"}, NULL,
     {[WXJIT_BACKEND_TOGGLE] = {EACCES, WHY_MPROTECT},
      [WXJIT_BACKEND_PROCMEM] = {EPERM, WHY_MEM_WRITE}, RWX_REFUSED},
     WXJIT_BACKEND_DUALMAP, NO_BACKEND, 0, EACCES},
    /* Nothing works: AUTO fails too, with toggle's errno. */
    {"mdwe+no-mem-write+no-shm-exec",
     {"mdwe", "no-mem-write", "no-shm-exec"},
     NULL,
     {[WXJIT_BACKEND_TOGGLE] = {EACCES, WHY_MPROTECT},
      [WXJIT_BACKEND_DUALMAP] = {EPERM, WHY_SHM_EXEC},
      [WXJIT_BACKEND_PROCMEM] = {EPERM, WHY_MEM_WRITE}, RWX_REFUSED},
     NO_BACKEND, NO_BACKEND, EACCES, EACCES},
};
/* clang-format on */
#define SCENARIOS (sizeof(scenarios) / sizeof(scenarios[0]))

static const char *name_of(wxjit_backend b)
{
    const char *name = "?";
    wxjit_backend_name(b, &name);
    return name;
}

/* Install, call, patch, patch_atomic, free: each result checked. */
static void exercise(wxjit_heap *heap, const struct scenario *sc)
{
    wxjit_backend b;
    uint8_t buf[32];
    void *f;
    CHECK_OK(wxjit_heap_backend(heap, &b));
    CHECK_OK(
        wxjit_install(heap, buf, emit_return_int_patchable(buf, 10), 0, &f));
    CHECK_EQ(as_fn(f)(), 10);
    uint8_t *imm = (uint8_t *)f + EMIT_PATCHABLE_IMM_OFFSET;
    int32_t v = 11;
    CHECK_OK(wxjit_patch(heap, imm, &v, sizeof(v)));
    CHECK_EQ(as_fn(f)(), 11);
    /* procmem's atomic store is a toggle window: none where toggle is
     * refused (pages cannot regain PROT_EXEC), and nothing changes. */
    bool no_atomic =
        b == WXJIT_BACKEND_PROCMEM && sc->refused[WXJIT_BACKEND_TOGGLE].err;
    CHECK_RET(wxjit_patch_atomic(heap, imm, 12, 4), no_atomic ? ENOTSUP : 0);
    CHECK_EQ(as_fn(f)(), no_atomic ? 11 : 12);
    CHECK_OK(wxjit_free(heap, f));
    CHECK_OK(wxjit_install(heap, buf, emit_return_int(buf, 13), 0, &f));
    CHECK_EQ(as_fn(f)(), 13);
    printf("    %s: install, call, patch, patch_atomic (%s), free: ok\n",
           name_of(b), no_atomic ? "ENOTSUP, as documented" : "ok");
}

static void check_backend(const struct scenario *sc, wxjit_backend b)
{
    const struct refusal *want = &sc->refused[b];
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    wxjit_heap *heap = NULL;
    const char *why = "untouched";
    int probed = wxjit_backend_probe(b, &why);
    o.backend = b;
    o.flags = b == WXJIT_BACKEND_RWX ? WXJIT_HEAP_ALLOW_RWX : 0;
    int created = wxjit_heap_create(&o, &heap);
    if (want->err == 0) {
        CHECK(probed == 0 && why == NULL, "%s: probe %d (%s): %s", name_of(b),
              probed, strerror(probed), why ? why : "");
        CHECK(created == 0, "%s: heap refused: %s", name_of(b),
              strerror(created));
        exercise(heap, sc);
        CHECK_OK(wxjit_heap_destroy(heap));
        return;
    }
    CHECK(probed == want->err && why && !strcmp(why, want->reason),
          "%s: probe %d (%s) \"%s\", expected %d (%s) \"%s\"", name_of(b),
          probed, strerror(probed), why ? why : "(null)", want->err,
          strerror(want->err), want->reason);
    CHECK(created == want->err, "%s: heap_create %d (%s), probe %d (%s)",
          name_of(b), created, strerror(created), probed, strerror(probed));
    printf("    %s: refused, %s (%s), by probe and heap_create alike\n",
           name_of(b), why, strerror(probed));
}

/* A heap created with AUTO and flags gets `gets`, or fails with err. */
static void check_auto(const struct scenario *sc, unsigned flags,
                       wxjit_backend gets, int err)
{
    const char *label = flags ? "AUTO, NO_WRITABLE_ALIAS" : "AUTO";
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    wxjit_heap *heap;
    wxjit_backend got;
    o.flags = flags;
    int created = wxjit_heap_create(&o, &heap);
    if (gets == NO_BACKEND) {
        CHECK(created == err, "%s: heap_create %d (%s), expected %d (%s)",
              label, created, strerror(created), err, strerror(err));
        printf("  %s: refused (%s), as expected\n", label, strerror(err));
        return;
    }
    CHECK(created == 0, "%s: heap refused: %s", label, strerror(created));
    CHECK_OK(wxjit_heap_backend(heap, &got));
    CHECK(got == gets, "%s got %s, expected %s", label, name_of(got),
          name_of(gets));
    printf("  %s: %s\n", label, name_of(got));
    exercise(heap, sc);
    CHECK_OK(wxjit_heap_destroy(heap));
}

/* Enters the scenario's policies, then the W^X filter; exits
 * WXTEST_SKIPPED with the reason if this system cannot have one. */
static void enter(const struct scenario *sc)
{
    for (size_t i = 0; i < 3 && sc->policies[i]; i++) {
        const struct wx_hardening *h = wx_hardening_named(sc->policies[i]);
        const char *why = "";
        CHECK(h, "no policy %s", sc->policies[i]);
        int err = h->enter(&why);
        if (err == WX_HARDENING_UNAVAILABLE) {
            printf("  SKIPPED: %s: %s\n", h->name, why);
            fflush(NULL);
            _exit(WXTEST_SKIPPED);
        }
        CHECK(err == 0, "entering %s: %s: %s", h->name, why, strerror(err));
    }
    wxtest_enter_wx_policy();
}

static void run_scenario(void *arg)
{
    const struct scenario *sc = arg;
    if (sc->dualmap_object)
        setenv("WXJIT_DUALMAP_OBJECT", sc->dualmap_object, 1);
    enter(sc);
    CHECK_OK(wxjit_fault_handler_install());
    printf("  each backend:\n");
    for (wxjit_backend b = WXJIT_BACKEND_TOGGLE; b < BACKENDS; b++)
        check_backend(sc, b);
    const char *why = "untouched";
    int probed = wxjit_backend_probe(WXJIT_BACKEND_AUTO, &why);
    if (sc->auto_gets == NO_BACKEND)
        CHECK(probed == sc->auto_err && why && !strcmp(why, WHY_NONE),
              "AUTO probe %d (%s) \"%s\"", probed, strerror(probed),
              why ? why : "(null)");
    else
        CHECK(probed == 0 && !why, "AUTO probe %d (%s)", probed,
              strerror(probed));
    check_auto(sc, 0, sc->auto_gets, sc->auto_err);
    check_auto(sc, WXJIT_HEAP_NO_WRITABLE_ALIAS, sc->no_alias_gets,
               sc->no_alias_err);
}

/* Runs wx-run --policy P... program [arg] with its output captured in
 * out; returns the wait status. */
static int run_under(const struct scenario *sc, const char *wx_run,
                     const char *program, const char *arg, char *out,
                     size_t len)
{
    const char *argv[2 + 2 * 3 + 3];
    int n = 0, fds[2];
    argv[n++] = wx_run;
    for (size_t i = 0; i < 3 && sc->policies[i]; i++) {
        argv[n++] = "--policy";
        argv[n++] = sc->policies[i];
    }
    argv[n++] = program;
    argv[n++] = arg;
    argv[n] = NULL;
    CHECK(pipe(fds) == 0, "pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        if (sc->dualmap_object)
            setenv("WXJIT_DUALMAP_OBJECT", sc->dualmap_object, 1);
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        execv(wx_run, (char **)argv);
        _exit(127);
    }
    close(fds[1]);
    size_t got = 0;
    ssize_t r;
    while ((r = read(fds[0], out + got, len - 1 - got)) > 0 ||
           (r < 0 && errno == EINTR))
        got += r > 0 ? (size_t)r : 0;
    out[got] = 0;
    close(fds[0]);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
    return status;
}

/* The directory among /dev/shm, /tmp and $TMPDIR that sc's mount
 * policies cover with an empty noexec tmpfs and that holds path (the
 * programs of a build tree cloned there vanish under it); NULL if none. */
static const char *hidden_dir(const struct scenario *sc, const char *path)
{
    const char *const dirs[] = {"/dev/shm", "/tmp", getenv("TMPDIR")};
    char real[PATH_MAX], dir[PATH_MAX];
    if (!realpath(path, real))
        return NULL;
    for (size_t p = 0; p < 3 && sc->policies[p]; p++) {
        bool all = !strcmp(sc->policies[p], "no-shm-exec");
        if (!all && strcmp(sc->policies[p], "noexec-shm"))
            continue;
        for (size_t i = 0; i < (all ? 3 : 1); i++)
            if (dirs[i] && realpath(dirs[i], dir) &&
                !strncmp(real, dir, strlen(dir)) &&
                real[strlen(dir)] == '/')
                return dirs[i];
    }
    return NULL;
}

static void check_programs(const struct scenario *sc, char **tools)
{
    static char out[1 << 16];
    bool some = sc->auto_gets != NO_BACKEND;
    const char *hidden = hidden_dir(sc, tools[1]);
    if (hidden) {
        printf("  SKIPPED: wxjit-probe and the demo: the build tree lies "
               "under %s, which this policy covers with an empty tmpfs\n",
               hidden);
        return;
    }
    if (wxtest_sanitizer_signals() && sc->policies[0] &&
        !strcmp(sc->policies[0], "no-proc")) {
        /* Their options too: it reads them from /proc/self/environ. */
        wxtest_skip("wxjit-probe and the demo without /proc",
                    "the sanitizer runtime needs /proc (LeakSanitizer at "
                    "exit)");
        return;
    }
    int status = run_under(sc, tools[0], tools[1], NULL, out, sizeof(out));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == (some ? 0 : 1),
          "wxjit-probe: status %#x, expected exit %d; it printed:\n%s", status,
          some ? 0 : 1, out);
    for (wxjit_backend b = WXJIT_BACKEND_TOGGLE; b < BACKENDS; b++) {
        const struct refusal *want = &sc->refused[b];
        char line[160];
        snprintf(line, sizeof(line), "%-10s %s%s", name_of(b),
                 want->err ? "refused: " : "works",
                 want->err ? want->reason : "");
        CHECK(strstr(out, line),
              "wxjit-probe: no line \"%s\"; it printed:\n%s", line, out);
    }
    printf("  wxjit-probe: exit %d, every backend's line as expected\n",
           some ? 0 : 1);
    if (!strcmp(tools[2], "none")) {
        printf("  SKIPPED: the demo: not built (WXJIT_DEMO=OFF)\n");
        return;
    }
    status = run_under(sc, tools[0], tools[2], "--quick", out, sizeof(out));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == (some ? 0 : 1),
          "wxjit-demo --quick: status %#x, expected exit %d; it printed:\n%s",
          status, some ? 0 : 1, out);
    printf("  wxjit-demo --quick: exit %d, as expected\n", some ? 0 : 1);
}

int main(int argc, char **argv)
{
    CHECK(argc >= 4, "usage: test_hardened WX-RUN WXJIT-PROBE "
                     "WXJIT-DEMO|none [SCENARIO]...");
    printf("test_hardened:\n");
    if (!wxtest_policy_enforced())
        wxtest_skip_all("test_hardened",
                        "the policies are seccomp filters "
                        "and prctl()s that the checking tool or emulator "
                        "does not pass to the kernel");
    /* The backend a heap gets is the point here: no override. */
    unsetenv("WXJIT_BACKEND");
    int ran = 0, skipped = 0;
    for (size_t i = 0; i < SCENARIOS; i++) {
        const struct scenario *sc = &scenarios[i];
        if (!wxtest_selected(argc - 3, argv + 3, sc->name))
            continue;
        printf("%s (+ W^X filter):\n", sc->name);
        bool hung;
        int status =
            wxtest_in_child_within(run_scenario, (void *)sc, 60, &hung);
        CHECK(!hung, "%s: hung", sc->name);
        if (WIFEXITED(status) && WEXITSTATUS(status) == WXTEST_SKIPPED) {
            skipped++;
            continue;
        }
        wxtest_expect_exit(sc->name, status, 0);
        check_programs(sc, argv + 1);
        ran++;
    }
    printf("test_hardened: ok (%d scenarios, %d skipped)\n", ran, skipped);
    return 0;
}
