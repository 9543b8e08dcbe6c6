/* The procmem backend's own promises: no page of its chunks is ever
 * writable (read off /proc/self/maps after every kind of write), one
 * system call per write and no fault for executors running code on the
 * pages being written; one close-on-exec descriptor of /proc/self/mem per
 * process, a fork child's own; parent and child writes stay apart with
 * no copying by wxjit; in-place reservations are copies at a constant
 * offset; wxjit_patch_atomic is atomic for concurrent executors, and
 * refused (ENOTSUP) where no page may regain PROT_EXEC. */
#include <sched.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "../src/internal.h"
#include "emit.h"
#include "wxtest.h"

#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#define PR_MDWE_REFUSE_EXEC_GAIN 1
#endif

static wxjit_heap *procmem_heap(void)
{
    return wxtest_heap_of(WXJIT_BACKEND_PROCMEM);
}

/* Every mapping over h's chunks is r-xp (pages handed out and the rest of
 * their step) or ---p (reserved), never writable. */
static void check_never_writable(wxjit_heap *h, const char *after)
{
    char line[512], perms[8];
    unsigned long lo, hi;
    for (struct wxj_chunk *c = h->chunks; c; c = c->next) {
        uintptr_t base = (uintptr_t)c->base, top = base + c->size;
        FILE *f = fopen("/proc/self/maps", "r");
        CHECK(f, "maps: %s", strerror(errno));
        while (fgets(line, sizeof(line), f))
            if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 &&
                hi > base && lo < top)
                CHECK(!strcmp(perms, "r-xp") || !strcmp(perms, "---p"),
                      "after %s: chunk mapping %lx-%lx is %s", after, lo, hi,
                      perms);
        fclose(f);
    }
}

/* Writes of every kind, the chunk's mappings checked after each; the
 * steady state costs one system call per write and no mprotect. */
static void test_never_writable(void)
{
    wxjit_heap *h = procmem_heap();
    uint8_t buf[64];
    void *f[64];
    size_t n = emit_return_int_patchable(buf, 1);
    for (int i = 0; i < 64; i++) {
        CHECK_OK(wxjit_install(h, buf, n, 0, &f[i]));
        CHECK_EQ(as_fn(f[i])(), 1);
    }
    check_never_writable(h, "installs");
    wxjit_stats s0 = wxtest_stats_of(h), s1;
    for (int i = 0; i < 64; i += 2) {
        CHECK_OK(wxjit_free(h, f[i]));
        CHECK_OK(wxjit_install(h, buf, n, 0, &f[i]));
        int32_t v = 100 + i;
        CHECK_OK(wxjit_patch(h, (uint8_t *)f[i] + EMIT_PATCHABLE_IMM_OFFSET,
                             &v, 4));
        CHECK_EQ(as_fn(f[i])(), v);
    }
    s1 = wxtest_stats_of(h);
    /* free, install, patch; and the membarriers that make patches reach
     * every core where the CPU needs them (test_code_change counts
     * those). */
    CHECK_EQ(s1.syscalls - s0.syscalls - (s1.core_syncs - s0.core_syncs),
             3 * 32);
    CHECK_EQ(s1.mprotect_calls, 0);
    check_never_writable(h, "frees, reuse and patches");

    wxjit_reservation r;
    CHECK_OK(wxjit_reserve(h, 64, 0, WXJIT_RESERVE_IN_PLACE, &r));
    check_never_writable(h, "an in-place reserve");
    void *exec = r.exec;
    CHECK_OK(wxjit_commit(h, &r, emit_return_int(r.write, 7)));
    CHECK_EQ(as_fn(exec)(), 7);
    check_never_writable(h, "its commit");
    CHECK_EQ(wxtest_stats_of(h).mprotect_calls, 0);
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  chunks never writable (installs, frees, reuse, patches, "
           "in-place); one system call per write, no mprotect\n");
}

/* ---- executors on the pages being written ------------------------------- */
struct executor {
    void *fn;
    int want;
    _Atomic bool stop;
    _Atomic uint64_t calls;
};

static void *execute(void *arg)
{
    struct executor *e = arg;
    while (!atomic_load_explicit(&e->stop, memory_order_relaxed)) {
        CHECK_EQ(as_fn(e->fn)(), e->want);
        atomic_fetch_add_explicit(&e->calls, 1, memory_order_relaxed);
    }
    return NULL;
}

/* Installs and frees on the page an executor runs: nobody faults. */
static void test_no_fault_for_executors(void)
{
    wxjit_heap *h = procmem_heap();
    uint8_t buf[64];
    struct executor e = {.want = 5};
    CHECK_OK(wxjit_install(h, buf, emit_return_int(buf, 5), 0, &e.fn));
    uint64_t retried0;
    CHECK_OK(wxjit_fault_counts(&retried0, NULL));
    pthread_t t = wxtest_spawn(execute, &e);
    /* Beside an executor that runs: on a loaded machine its thread may
     * otherwise first run after all 20,000 pairs. */
    while (atomic_load(&e.calls) == 0)
        sched_yield();
    size_t n = emit_return_int(buf, 9);
    for (int i = 0; i < 20000; i++) {
        void *g;
        CHECK_OK(wxjit_install(h, buf, n, 0, &g));
        CHECK_EQ(as_fn(g)(), 9);
        CHECK_OK(wxjit_free(h, g));
    }
    atomic_store(&e.stop, true);
    wxtest_join(t);
    uint64_t retried1;
    CHECK_OK(wxjit_fault_counts(&retried1, NULL));
    CHECK_EQ(retried1 - retried0, 0);
    CHECK_EQ(wxtest_stats_of(h).faults_retried, 0);
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  20,000 install+free pairs beside an executor on the same page "
           "(%llu calls): no fault\n",
           (unsigned long long)atomic_load(&e.calls));
}

/* ---- the descriptor -------------------------------------------------- */
static int mem_fds(void)
{
    bool cloexec;
    int n = wxtest_fds_naming("/mem", &cloexec);
    CHECK(cloexec, "a descriptor of /proc/self/mem lacks FD_CLOEXEC");
    return n;
}

static void child_uses_own_descriptor(void *arg)
{
    wxjit_heap *h = arg;
    char own[64], target[64];
    uint8_t buf[16];
    void *f;
    CHECK_OK(wxjit_install(h, buf, emit_return_int(buf, 4), 0, &f));
    CHECK_EQ(as_fn(f)(), 4);
    CHECK_EQ(mem_fds(), 1);
    /* The one left is this process's: the parent's was closed. */
    snprintf(own, sizeof(own), "/proc/%d/mem", (int)getpid());
    bool found = false;
    for (int fd = 0; fd < 1024 && !found; fd++) {
        char link[64];
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        ssize_t len = readlink(link, target, sizeof(target) - 1);
        if (len > 0) {
            target[len] = 0;
            found = !strcmp(target, own);
        }
    }
    CHECK(found, "the child writes through a descriptor of another process");
}

static void test_one_descriptor(void)
{
    wxjit_heap *h[3];
    uint8_t buf[16];
    void *f;
    for (int i = 0; i < 3; i++) {
        h[i] = procmem_heap();
        CHECK_OK(wxjit_install(h[i], buf, emit_return_int(buf, i), 0, &f));
    }
    CHECK_EQ(mem_fds(), 1);
    wxtest_expect_exit("child's own descriptor",
                       wxtest_in_child(child_uses_own_descriptor, h[0]), 0);
    for (int i = 0; i < 3; i++)
        CHECK_OK(wxjit_heap_destroy(h[i]));
    CHECK_EQ(mem_fds(), 1); /* per process, not per heap */
    printf("  one close-on-exec descriptor of /proc/self/mem for three "
           "heaps; a fork child opens its own\n");
}

/* A fork() while another thread has just opened the process's descriptor
 * and not yet kept it: the child must not inherit it (it writes into the
 * parent). The seam pauses the opening thread right after open() while a
 * second thread forks. (Such a child once kept the parent's descriptor:
 * the fork handler found none to close.) */
static pthread_mutex_t fork_step = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fork_cond = PTHREAD_COND_INITIALIZER;
static bool opened, forked;

static void pause_after_open(void)
{
    pthread_mutex_lock(&fork_step);
    opened = true;
    pthread_cond_broadcast(&fork_cond);
    pthread_mutex_unlock(&fork_step);
    usleep(100000); /* the fork waits, or happens now */
}

static void *fork_when_opened(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&fork_step);
    while (!opened)
        pthread_cond_wait(&fork_cond, &fork_step);
    pthread_mutex_unlock(&fork_step);
    char parent[64];
    snprintf(parent, sizeof(parent), "/proc/%d/mem", (int)getpid());
    pid_t pid = fork();
    CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        bool cloexec;
        _exit(wxtest_fds_naming(parent, &cloexec) == 0 ? 0 : 1);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    wxtest_expect_exit("child forked while the descriptor was opened",
                       status, 0);
    forked = true;
    return NULL;
}

static void fork_during_open(void *unused)
{
    (void)unused;
    const char *reason;
    pthread_t t = wxtest_spawn(fork_when_opened, NULL);
    wxj_os_after(WXJ_CALL_OBJECT, pause_after_open);
    CHECK_OK(wxjit_backend_probe(WXJIT_BACKEND_PROCMEM, &reason));
    wxtest_join(t);
    CHECK(forked, "no fork happened");
}

static void test_fork_during_open(void)
{
    /* A child of this test: its first procmem write opens afresh. */
    wxtest_expect_exit("fork during the first open",
                       wxtest_in_child(fork_during_open, NULL), 0);
    printf("  a fork while another thread opens /proc/self/mem: the child "
           "gets no descriptor of its parent\n");
}

/* ---- fork: private pages, written apart ---------------------------------- */
struct apart {
    wxjit_heap *h;
    void *f;
    int to_child[2], to_parent[2];
};

static void patch_imm(wxjit_heap *h, void *f, int32_t v)
{
    CHECK_OK(wxjit_patch(h, (uint8_t *)f + EMIT_PATCHABLE_IMM_OFFSET, &v, 4));
}

static void say(int fd)
{
    CHECK(write(fd, "x", 1) == 1, "pipe write: %s", strerror(errno));
}

static void hear(int fd)
{
    char c;
    CHECK(read(fd, &c, 1) == 1, "pipe read: %s", strerror(errno));
}

static void child_patches(void *arg)
{
    struct apart *a = arg;
    patch_imm(a->h, a->f, 2);
    CHECK_EQ(as_fn(a->f)(), 2);
    say(a->to_parent[1]);
    hear(a->to_child[0]); /* the parent patched its copy meanwhile */
    CHECK_EQ(as_fn(a->f)(), 2);
}

static void test_fork_apart(void)
{
    struct apart a = {.h = procmem_heap()};
    uint8_t buf[64];
    CHECK(pipe(a.to_child) == 0 && pipe(a.to_parent) == 0, "pipe");
    CHECK_OK(wxjit_install(a.h, buf, emit_return_int_patchable(buf, 1), 0,
                           &a.f));
    wxjit_stats s0 = wxtest_stats_of(a.h);
    pid_t pid = wxtest_fork_running(child_patches, &a);
    /* Nothing was copied for the child: the fork cost no call here. */
    CHECK_EQ(wxtest_stats_of(a.h).syscalls, s0.syscalls);
    hear(a.to_parent[0]);
    CHECK_EQ(as_fn(a.f)(), 1); /* the child's patch stayed in the child */
    patch_imm(a.h, a.f, 3);
    CHECK_EQ(as_fn(a.f)(), 3);
    say(a.to_child[1]);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    wxtest_expect_exit("child patching its copy", status, 0);
    CHECK_EQ(as_fn(a.f)(), 3);
    CHECK_OK(wxjit_heap_destroy(a.h));
    for (int i = 0; i < 2; i++) {
        close(a.to_child[i]);
        close(a.to_parent[i]);
    }
    printf("  fork: parent and child patch the same function apart (the "
           "kernel copies the page on write; wxjit copies nothing)\n");
}

/* ---- in place: a copy at a constant offset ------------------------------ */
static void test_in_place_is_a_copy(void)
{
    wxjit_heap *h = procmem_heap();
    wxjit_reservation r;
    CHECK_OK(wxjit_reserve(h, 256, 0, WXJIT_RESERVE_IN_PLACE, &r));
    CHECK(r.write != r.exec, "in-place write view is the code page");
    uint8_t *w = r.write, *x = r.exec;
    size_t n = emit_return_int(w, 8);
    w[n] = 0x5a;
    CHECK_EQ(x[0], emit_trap_byte(x)); /* nothing lands before commit */
    /* The same distance for every byte: a copy at a constant offset. */
    CHECK((uintptr_t)(w + 200) - (uintptr_t)(x + 200) ==
              (uintptr_t)w - (uintptr_t)x,
          "offset not constant");
    void *exec = r.exec;
    CHECK_OK(wxjit_commit(h, &r, n));
    CHECK_EQ(as_fn(exec)(), 8);
    CHECK_EQ(x[n], emit_trap_byte(x + n)); /* past `used`: traps */
    CHECK_OK(wxjit_reserve(h, 64, 0, WXJIT_RESERVE_IN_PLACE, &r));
    x = r.exec;
    emit_return_int(r.write, 9);
    CHECK_OK(wxjit_abort(h, &r));
    CHECK_EQ(x[0], emit_trap_byte(x));
    /* Bytes the emitter skips are traps, as in the space on any backend. */
    CHECK_OK(wxjit_reserve(h, 64, 0, WXJIT_RESERVE_IN_PLACE, &r));
    x = r.exec;
    n = emit_return_int(r.write, 10);
    CHECK_OK(wxjit_commit(h, &r, n + 8));
    for (size_t i = n; i < n + 8; i++)
        CHECK_EQ(x[i], emit_trap_byte(x + i));
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  in place: a scratch copy at a constant offset, traps until "
           "commit, after abort and where the emitter wrote nothing\n");
}

/* ---- atomic patches ---------------------------------------------------- */
struct flipper {
    struct executor e;
    int32_t a, b;
    _Atomic uint64_t odd;
};

static void *execute_either(void *arg)
{
    struct flipper *fl = arg;
    while (!atomic_load_explicit(&fl->e.stop, memory_order_relaxed)) {
        int v = as_fn(fl->e.fn)();
        if (v != fl->a && v != fl->b)
            atomic_fetch_add(&fl->odd, 1);
        atomic_fetch_add_explicit(&fl->e.calls, 1, memory_order_relaxed);
    }
    return NULL;
}

static void test_patch_atomic_concurrent(void)
{
    wxjit_heap *h = procmem_heap();
    uint8_t buf[64];
    /* Values that differ in every byte: a torn store shows. */
    struct flipper fl = {.a = 0x11223344, .b = 0x55667788};
    CHECK_OK(wxjit_install(h, buf, emit_return_int_patchable(buf, fl.a), 0,
                           &fl.e.fn));
    pthread_t t[2] = {wxtest_spawn(execute_either, &fl),
                      wxtest_spawn(execute_either, &fl)};
    uint8_t *imm = (uint8_t *)fl.e.fn + EMIT_PATCHABLE_IMM_OFFSET;
    for (int i = 0; i < 2000; i++)
        CHECK_OK(wxjit_patch_atomic(h, imm, (uint32_t)(i % 2 ? fl.a : fl.b),
                                    4));
    atomic_store(&fl.e.stop, true);
    wxtest_join(t[0]);
    wxtest_join(t[1]);
    CHECK_EQ(atomic_load(&fl.odd), 0);
    CHECK_EQ(as_fn(fl.e.fn)(), fl.a);
    check_never_writable(h, "atomic patches");
    wxjit_stats s = wxtest_stats_of(h);
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  2,000 atomic patches under 2 executors (%llu calls, %llu "
           "faults retried): never a torn value\n",
           (unsigned long long)atomic_load(&fl.e.calls),
           (unsigned long long)s.faults_retried);
}

/* An atomic store whose toggle window cannot make its page executable
 * again (ENOMEM at vm.max_map_count, through the test seam) leaves that
 * page writable for nobody. An install onto it fails with ENOMEM, as on
 * toggle, and changes nothing; once mprotect works again the next call
 * makes the page executable and installs there run. (An install once
 * returned 0 there, its code unexecutable: callers waited for good.) */
static void test_stuck_page(void)
{
    wxjit_heap *h = procmem_heap();
    uint8_t buf[64];
    void *f, *g;
    CHECK_OK(wxjit_install(h, buf, emit_return_int_patchable(buf, 1), 0, &f));
    uint8_t *imm = (uint8_t *)f + EMIT_PATCHABLE_IMM_OFFSET;
    wxj_os_inject(WXJ_CALL_MPROTECT, 2, 1000000, ENOMEM); /* RX fails */
    CHECK_EQ(wxjit_patch_atomic(h, imm, 2, 4), ENOMEM);
    wxjit_stats s0 = wxtest_stats_of(h);
    CHECK_EQ(wxjit_install(h, buf, emit_return_int(buf, 3), 0, &g), ENOMEM);
    wxjit_stats s1 = wxtest_stats_of(h);
    wxtest_check_stats_same("an install onto an abandoned page", &s0, &s1,
                            false);
    wxj_os_inject(WXJ_CALL_MPROTECT, 0, 0, 0);
    CHECK_OK(wxjit_install(h, buf, emit_return_int(buf, 3), 0, &g));
    CHECK_EQ(wxtest_page_of(g), wxtest_page_of(f));
    CHECK_EQ(as_fn(g)(), 3);
    CHECK_EQ(as_fn(f)(), 1);
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  an install onto a page an atomic store left writable fails "
           "with ENOMEM; once mprotect works, the page runs again\n");
}

/* Where a page may not regain PROT_EXEC (PR_SET_MDWE), procmem still
 * works but has no atomic store: ENOTSUP, and nothing changes. */
static void atomic_refused(void *unused)
{
    (void)unused;
    CHECK(prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) == 0,
          "PR_SET_MDWE: %s", strerror(errno));
    wxjit_heap *h = procmem_heap();
    uint8_t buf[64];
    void *f;
    CHECK_OK(wxjit_install(h, buf, emit_return_int_patchable(buf, 1), 0, &f));
    wxjit_stats s0 = wxtest_stats_of(h);
    CHECK_EQ(wxjit_patch_atomic(h, (uint8_t *)f + EMIT_PATCHABLE_IMM_OFFSET,
                                2, 4),
             ENOTSUP);
    wxjit_stats s1 = wxtest_stats_of(h);
    wxtest_check_stats_same("a refused atomic patch", &s0, &s1, false);
    CHECK_EQ(as_fn(f)(), 1);
    patch_imm(h, f, 3);
    CHECK_EQ(as_fn(f)(), 3);
    CHECK_OK(wxjit_heap_destroy(h));
}

static void test_atomic_unavailable(void)
{
    if (wxtest_emulator() || wxtest_valgrind()) {
        wxtest_skip("atomic patches refused under PR_SET_MDWE",
                    wxtest_valgrind()
                        ? "Valgrind maps its own translations executable "
                          "as the program runs, which PR_SET_MDWE refuses"
                        : "the emulator does not pass prctl(PR_SET_MDWE) "
                          "on");
        return;
    }
    if (prctl(PR_SET_MDWE + 1, 0, 0, 0, 0) < 0 && errno == EINVAL) {
        wxtest_skip("atomic patches refused under PR_SET_MDWE",
                    "this kernel has no PR_SET_MDWE (Linux 6.3+)");
        return;
    }
    wxtest_expect_exit("procmem under PR_SET_MDWE",
                       wxtest_in_child(atomic_refused, NULL), 0);
    printf("  under PR_SET_MDWE: installs and patches work, atomic patches "
           "are refused with ENOTSUP\n");
}

/* The probe for atomic stores at creation (can a written page become
 * executable again?) tells a policy (EACCES: no atomic stores, for good)
 * from a failure of the moment (ENOMEM: the creation fails, nothing
 * made), which once left patch_atomic ENOTSUP for the heap's life. */
static wxjit_heap *create_probe_failing(int err, int *got)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    o.backend = WXJIT_BACKEND_PROCMEM;
    wxjit_heap *h = NULL;
    wxj_os_inject(WXJ_CALL_MPROTECT, 1, 1, err);
    *got = wxjit_heap_create(&o, &h);
    wxj_os_inject(WXJ_CALL_MPROTECT, 1, 0, 0);
    return h;
}

static void test_atomic_probe_failure(void)
{
    int got;
    wxjit_heap *h = create_probe_failing(ENOMEM, &got);
    CHECK(got == ENOMEM && !h,
          "creation with the probe's mprotect failing (ENOMEM): %s",
          strerror(got));
    h = create_probe_failing(EACCES, &got);
    CHECK_OK(got);
    uint8_t buf[64];
    void *f;
    CHECK_OK(wxjit_install(h, buf, emit_return_int_patchable(buf, 1), 0, &f));
    CHECK_EQ(wxjit_patch_atomic(h, (uint8_t *)f + EMIT_PATCHABLE_IMM_OFFSET,
                                2, 4),
             ENOTSUP);
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  probe for atomic stores: ENOMEM fails the creation, EACCES "
           "(a policy) leaves a heap without atomic stores\n");
}

int main(int argc, char **argv)
{
    wxtest_enter_wx_policy();
    printf("test_procmem:\n");
    const char *reason;
    int err = wxjit_backend_probe(WXJIT_BACKEND_PROCMEM, &reason);
    if (err)
        wxtest_skip_all("test_procmem", reason);
    CHECK_OK(wxjit_fault_handler_install());
    const struct {
        const char *name;
        void (*run)(void);
    } scenarios[] = {{"never_writable", test_never_writable},
                     {"no_fault", test_no_fault_for_executors},
                     {"one_descriptor", test_one_descriptor},
                     {"fork_during_open", test_fork_during_open},
                     {"fork_apart", test_fork_apart},
                     {"in_place", test_in_place_is_a_copy},
                     {"patch_atomic", test_patch_atomic_concurrent},
                     {"stuck_page", test_stuck_page},
                     {"atomic_unavailable", test_atomic_unavailable},
                     {"atomic_probe_failure", test_atomic_probe_failure}};
    for (size_t i = 0; i < sizeof(scenarios) / sizeof(*scenarios); i++)
        if (wxtest_selected(argc, argv, scenarios[i].name))
            scenarios[i].run();
    CHECK_EQ(wxtest_wx_mappings(), 0);
    printf("test_procmem: ok\n");
    return 0;
}
