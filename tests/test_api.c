/* Every public function: what it does on good input, and that bad input
 * returns the documented error and changes nothing (same counters, the
 * existing code still runs). */
#include "../src/internal.h" /* the failure-injection seam */
#include "emit.h"
#include "wxtest.h"

static wxjit_heap *heap;
static wxjit_backend backend;
static void *known; /* a live function returning 42 */
static size_t page;

static void snapshot(wxjit_stats *s) { CHECK_OK(wxjit_stats_get(heap, s)); }

/* Nothing observable changed since before. */
static void unchanged(const char *what, const wxjit_stats *before)
{
    wxjit_stats now;
    snapshot(&now);
    CHECK(memcmp(&now, before, sizeof(now)) == 0,
          "%s changed the heap (installs %llu->%llu, live %llu->%llu, "
          "mprotect %llu->%llu)",
          what, (unsigned long long)before->installs,
          (unsigned long long)now.installs,
          (unsigned long long)before->bytes_live,
          (unsigned long long)now.bytes_live,
          (unsigned long long)before->mprotect_calls,
          (unsigned long long)now.mprotect_calls);
    CHECK_EQ(as_fn(known)(), 42);
}

#define BAD(call, err)                                                       \
    do {                                                                     \
        wxjit_stats before_;                                                 \
        snapshot(&before_);                                                  \
        CHECK_RET(call, err);                                                \
        unchanged(#call, &before_);                                          \
    } while (0)

static void test_create(void)
{
    wxjit_heap *h = NULL;
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    CHECK_RET(wxjit_heap_create(NULL, NULL), EINVAL);
    o.size = sizeof(o) - 1;
    CHECK_RET(wxjit_heap_create(&o, &h), EINVAL);
    o = (wxjit_heap_options)WXJIT_HEAP_OPTIONS_INIT;
    o.flags = 1u << 30;
    CHECK_RET(wxjit_heap_create(&o, &h), EINVAL);
    o = (wxjit_heap_options)WXJIT_HEAP_OPTIONS_INIT;
    o.chunk_size = ((size_t)1 << 30) + 1;
    CHECK_RET(wxjit_heap_create(&o, &h), EINVAL);
    o = (wxjit_heap_options)WXJIT_HEAP_OPTIONS_INIT;
    o.backend = (wxjit_backend)99;
    CHECK_RET(wxjit_heap_create(&o, &h), EINVAL);
    o.backend = WXJIT_BACKEND_RWX;
    CHECK_RET(wxjit_heap_create(&o, &h), EPERM); /* not without the flag */
    o.flags = WXJIT_HEAP_ALLOW_RWX;
    if (wxtest_policy_enforced())
        CHECK_RET(wxjit_heap_create(&o, &h), EACCES); /* the policy: no */
    else
        wxtest_skip("the rwx backend refused by the W^X policy",
                    "no kernel-enforced policy here");
    o.backend = WXJIT_BACKEND_TOGGLE;
    CHECK_RET(wxjit_heap_create(&o, &h), EINVAL); /* flag without rwx */
    o.flags = WXJIT_HEAP_RW_ON_DEMAND;
    CHECK_RET(wxjit_heap_create(&o, &h), EINVAL); /* dualmap-only flag */
    char *saved = getenv("WXJIT_BACKEND") ? strdup(getenv("WXJIT_BACKEND"))
                                          : NULL;
    setenv("WXJIT_BACKEND", "rwx", 1);
    CHECK_RET(wxjit_heap_create(NULL, &h), EINVAL);
    if (saved)
        setenv("WXJIT_BACKEND", saved, 1);
    else
        unsetenv("WXJIT_BACKEND");
    free(saved);
    setenv("WXJIT_DUALMAP_OBJECT", "floppy", 1);
    CHECK_RET(wxjit_heap_create(NULL, &h), EINVAL);
    unsetenv("WXJIT_DUALMAP_OBJECT");
    CHECK(h == NULL, "out-parameter written on failure");

    CHECK_OK(wxjit_heap_create(NULL, &heap));
    CHECK_RET(wxjit_heap_backend(NULL, &backend), EINVAL);
    CHECK_RET(wxjit_heap_backend(heap, NULL), EINVAL);
    CHECK_OK(wxjit_heap_backend(heap, &backend));
    const char *name, *env = getenv("WXJIT_BACKEND");
    CHECK_OK(wxjit_backend_name(backend, &name));
    CHECK_RET(wxjit_backend_name((wxjit_backend)9, &name), EINVAL);
    CHECK(!env || !strcmp(env, name), "WXJIT_BACKEND=%s gave %s", env, name);
    printf("  backend: %s\n", name);
    known = wxtest_install_int(heap, 42);
    printf("  create: defaults work, bad options refused\n");
}

static void test_install(void)
{
    uint8_t buf[16];
    size_t n = emit_return_int(buf, 7);
    void *exec = NULL;
    BAD(wxjit_install(NULL, buf, n, 0, &exec), EINVAL);
    BAD(wxjit_install(heap, NULL, n, 0, &exec), EINVAL);
    BAD(wxjit_install(heap, buf, n, 0, NULL), EINVAL);
    BAD(wxjit_install(heap, buf, 0, 0, &exec), EINVAL);
    BAD(wxjit_install(heap, buf, SIZE_MAX, 0, &exec), EINVAL);
    BAD(wxjit_install(heap, buf, ((size_t)4 << 20) + 1, 0, &exec), EINVAL);
    BAD(wxjit_install(heap, buf, n, 24, &exec), EINVAL);
    BAD(wxjit_install(heap, buf, n, page * 2, &exec), EINVAL);
    CHECK(exec == NULL, "out-parameter written on failure");

    wxjit_stats before, after;
    snapshot(&before);
    CHECK_OK(wxjit_install(heap, buf, n, 256, &exec));
    CHECK((uintptr_t)exec % 256 == 0, "align 256 gave %p", exec);
    CHECK_EQ(as_fn(exec)(), 7);
    snapshot(&after);
    CHECK_EQ(after.installs, before.installs + 1);
    CHECK_EQ(after.bytes_live, before.bytes_live + 16);
    printf("  install: runs, aligned, counted; bad input refused\n");
}

static void test_reserve_commit(void)
{
    wxjit_reservation r, r2;
    memset(&r, 0, sizeof(r));
    BAD(wxjit_reserve(NULL, 64, 0, 0, &r), EINVAL);
    BAD(wxjit_reserve(heap, 0, 0, 0, &r), EINVAL);
    BAD(wxjit_reserve(heap, SIZE_MAX, 0, 0, &r), EINVAL);
    BAD(wxjit_reserve(heap, 64, 3, 0, &r), EINVAL);
    BAD(wxjit_reserve(heap, 64, 0, 0x80, &r), EINVAL);
    BAD(wxjit_reserve(heap, 64, 0, 0, NULL), EINVAL);

    /* Scratch write view: not the executable address. */
    CHECK_OK(wxjit_reserve(heap, 64, 0, 0, &r));
    CHECK(r.write != r.exec && r.size == 64, "scratch view expected");
    size_t n = emit_return_int(r.write, 5);
    BAD(wxjit_commit(heap, NULL, n), EINVAL);
    BAD(wxjit_commit(heap, &r, 0), EINVAL);
    BAD(wxjit_commit(heap, &r, 65), EINVAL);
    BAD(wxjit_free(heap, r.exec), EINVAL); /* open reservations are not live */
    BAD(wxjit_patch(heap, r.exec, "x", 1), EINVAL);
    r2 = r;
    r2.exec = (uint8_t *)r.exec + 16;
    BAD(wxjit_commit(heap, &r2, n), EINVAL); /* forged */
    r2 = r;
    r2.write = known;
    BAD(wxjit_commit(heap, &r2, n), EINVAL); /* forged write view */
    wxjit_heap *other;
    CHECK_OK(wxjit_heap_create(NULL, &other));
    BAD(wxjit_commit(other, &r, n), EINVAL); /* another heap's */
    CHECK_OK(wxjit_heap_destroy(other));
    r2 = r;
    CHECK_OK(wxjit_commit(heap, &r, n));
    CHECK(r.exec == NULL, "a committed reservation is cleared");
    CHECK_EQ(as_fn(r2.exec)(), 5);
    BAD(wxjit_commit(heap, &r2, n), EINVAL); /* double commit */
    BAD(wxjit_abort(heap, &r2), EINVAL);
    uint8_t *tail = (uint8_t *)r2.exec + n;
    CHECK(emit_is_trap_fill(tail, 1),
          "unused reserved bytes hold traps (%s), saw %#x", EMIT_TRAP_NAME,
          tail[0]);

    /* In place: write straight at the executable address. */
    CHECK_OK(wxjit_reserve(heap, 100, 0, WXJIT_RESERVE_IN_PLACE, &r));
    if (backend == WXJIT_BACKEND_TOGGLE)
        CHECK(r.write == r.exec, "in-place view is the executable address");
    else
        CHECK(r.write != r.exec, "in-place view is the RW alias");
    n = emit_return_int(r.write, 6);
    void *in_place = r.exec;
    CHECK_OK(wxjit_commit(heap, &r, n));
    CHECK_EQ(as_fn(in_place)(), 6);
    printf("  reserve/commit: scratch and in-place; forged, foreign and "
           "double commits refused\n");

    CHECK_OK(wxjit_reserve(heap, 64, 0, 0, &r));
    r2 = r;
    BAD(wxjit_abort(NULL, &r), EINVAL);
    BAD(wxjit_abort(heap, NULL), EINVAL);
    wxjit_stats before, after;
    snapshot(&before);
    CHECK_OK(wxjit_abort(heap, &r));
    snapshot(&after);
    CHECK_EQ(after.installs, before.installs);
    CHECK_EQ(after.bytes_live, before.bytes_live);
    BAD(wxjit_abort(heap, &r2), EINVAL); /* double abort */
    BAD(wxjit_commit(heap, &r2, 8), EINVAL);
    printf("  abort: gives space back; double abort refused\n");
}

static void test_batch(void)
{
    enum { N = 12 };
    wxjit_reservation r[N], copy[N];
    size_t used[N];
    wxjit_stats before, after;
    for (int i = 0; i < N; i++) {
        /* The last one in place: batches mix both kinds. Page-aligned, so
         * that (toggle) it does not hold the page `known` runs on. */
        bool last = i == N - 1;
        CHECK_OK(wxjit_reserve(heap, 40 + 8 * i, last ? page : 0,
                               last ? WXJIT_RESERVE_IN_PLACE : 0, &r[i]));
        used[i] = emit_return_int(r[i].write, 100 + i);
    }
    memcpy(copy, r, sizeof(r));
    BAD(wxjit_commit_batch(NULL, r, used, N), EINVAL);
    BAD(wxjit_commit_batch(heap, NULL, used, N), EINVAL);
    BAD(wxjit_commit_batch(heap, r, NULL, N), EINVAL);
    BAD(wxjit_commit_batch(heap, r, used, 0), EINVAL);
    used[3] = 0;
    BAD(wxjit_commit_batch(heap, r, used, N), EINVAL);
    used[3] = r[3].size + 1;
    BAD(wxjit_commit_batch(heap, r, used, N), EINVAL);
    used[3] = emit_return_int(r[3].write, 103);
    r[5] = r[4]; /* the same reservation twice */
    BAD(wxjit_commit_batch(heap, r, used, N), EINVAL);
    r[5] = copy[5];
    CHECK(memcmp(r, copy, sizeof(r)) == 0, "refused batches left all open");

    snapshot(&before);
    CHECK_OK(wxjit_commit_batch(heap, r, used, N));
    snapshot(&after);
    for (int i = 0; i < N; i++) {
        CHECK(r[i].exec == NULL, "reservation %d consumed", i);
        CHECK_EQ(as_fn(copy[i].exec)(), 100 + i);
    }
    CHECK_EQ(after.installs - before.installs, N);
    uint64_t flips = after.mprotect_calls - before.mprotect_calls;
    if (backend == WXJIT_BACKEND_TOGGLE)
        CHECK(flips <= 4, "%llu mprotect calls for %d functions on 1-2 pages",
              (unsigned long long)flips, N);
    BAD(wxjit_commit_batch(heap, copy, used, 1), EINVAL); /* consumed */
    printf("  commit_batch: %d functions, %llu mprotect calls; bad batches "
           "refused whole\n", N, (unsigned long long)flips);
}

static void test_patch_free(void)
{
    uint8_t buf[32];
    void *f;
    size_t n = emit_return_int_patchable(buf, 10);
    CHECK_OK(wxjit_install(heap, buf, n, 0, &f));
    uint8_t *imm = (uint8_t *)f + EMIT_PATCHABLE_IMM_OFFSET;
    int32_t v = 11;
    int stack_local = 0;

    BAD(wxjit_patch(NULL, imm, &v, 4), EINVAL);
    BAD(wxjit_patch(heap, NULL, &v, 4), EINVAL);
    BAD(wxjit_patch(heap, imm, NULL, 4), EINVAL);
    BAD(wxjit_patch(heap, imm, &v, 0), EINVAL);
    BAD(wxjit_patch(heap, &stack_local, &v, 4), EINVAL); /* foreign */
    BAD(wxjit_patch(heap, imm, &v, 64), EINVAL); /* runs past the function */
    CHECK_OK(wxjit_patch(heap, imm, &v, 4));
    CHECK_EQ(as_fn(f)(), 11);

    BAD(wxjit_patch_atomic(heap, imm, 12, 3), EINVAL);
    BAD(wxjit_patch_atomic(heap, imm + 1, 12, 4), EINVAL); /* misaligned */
    BAD(wxjit_patch_atomic(heap, &stack_local, 12, 4), EINVAL);
    BAD(wxjit_patch_atomic(NULL, imm, 12, 4), EINVAL);
    CHECK_OK(wxjit_patch_atomic(heap, imm, 12, 4));
    CHECK_EQ(as_fn(f)(), 12);
    CHECK_OK(wxjit_patch_atomic(heap, imm, 13, 1));
    CHECK_EQ(as_fn(f)(), 13);
    printf("  patch/patch_atomic: change live code; bad ranges refused\n");

    void *m = malloc(64);
    BAD(wxjit_free(NULL, f), EINVAL);
    BAD(wxjit_free(heap, NULL), EINVAL);
    BAD(wxjit_free(heap, m), EINVAL);               /* foreign */
    BAD(wxjit_free(heap, (uint8_t *)f + 16), EINVAL); /* interior */
    BAD(wxjit_free(heap, (uint8_t *)f + 1), EINVAL);  /* misaligned */
    free(m);
    wxjit_stats before, after;
    snapshot(&before);
    CHECK_OK(wxjit_free(heap, f));
    snapshot(&after);
    CHECK_EQ(after.frees, before.frees + 1);
    CHECK_EQ(after.bytes_live, before.bytes_live - 16);
    CHECK(emit_is_trap_fill(f, 16), "freed code is trap-filled (%s), saw %#x",
          EMIT_TRAP_NAME, ((uint8_t *)f)[0]);
    BAD(wxjit_free(heap, f), EINVAL); /* double free */
    BAD(wxjit_patch(heap, imm, &v, 4), EINVAL); /* patch after free */
    printf("  free: trap fill, counted; foreign/interior/double refused\n");
}

static void test_stats_and_handler(void)
{
    wxjit_stats s;
    CHECK_RET(wxjit_stats_get(NULL, &s), EINVAL);
    CHECK_RET(wxjit_stats_get(heap, NULL), EINVAL);
    CHECK_OK(wxjit_stats_get(heap, &s));
    CHECK(s.installs >= 4 && s.bytes_mapped >= page && s.pages >= 1 &&
              s.chunks == 1 &&
              (backend == WXJIT_BACKEND_TOGGLE ? s.mprotect_calls
                                               : s.map_calls) > 0,
          "implausible stats: installs %llu mapped %llu pages %llu",
          (unsigned long long)s.installs,
          (unsigned long long)s.bytes_mapped, (unsigned long long)s.pages);

    /* What was there before: SIG_DFL, or a sanitizer's own handler. */
    struct sigaction first, now;
    sigaction(SIGSEGV, NULL, &first);
    CHECK_RET(wxjit_fault_handler_uninstall(), EINVAL);
    CHECK_OK(wxjit_fault_handler_install());
    CHECK_OK(wxjit_fault_handler_install());
    CHECK_OK(wxjit_fault_handler_uninstall());
    CHECK_OK(wxjit_fault_handler_uninstall());
    CHECK_RET(wxjit_fault_handler_uninstall(), EINVAL);
    sigaction(SIGSEGV, NULL, &now);
    CHECK(now.sa_handler == first.sa_handler,
          "previous handler restored (%p, was %p)",
          (void *)(uintptr_t)now.sa_handler,
          (void *)(uintptr_t)first.sa_handler);

    /* Someone replaced wxjit's handler: uninstall must not remove theirs. */
    CHECK_OK(wxjit_fault_handler_install());
    struct sigaction theirs, old;
    memset(&theirs, 0, sizeof(theirs));
    theirs.sa_handler = SIG_IGN;
    sigaction(SIGSEGV, &theirs, &old);
    CHECK_RET(wxjit_fault_handler_uninstall(), EBUSY);
    sigaction(SIGSEGV, &old, NULL);
    CHECK_OK(wxjit_fault_handler_uninstall());

    siginfo_t info;
    memset(&info, 0, sizeof(info));
    CHECK_EQ(wxjit_handle_fault(SIGBUS, &info, &info), 0);
    CHECK_EQ(wxjit_handle_fault(SIGSEGV, NULL, NULL), 0);
    CHECK_OK(wxjit_fault_counts(NULL, NULL));
    printf("  stats, handler install/uninstall nesting and EBUSY: ok\n");
}

static void test_destroy(void)
{
    wxjit_heap *h;
    CHECK_OK(wxjit_heap_create(NULL, &h));
    void *f = wxtest_install_int(h, 1);
    wxjit_reservation r;
    CHECK_OK(wxjit_reserve(h, 32, 0, 0, &r));
    CHECK_OK(wxjit_abort(h, &r));
    CHECK_RET(wxjit_heap_destroy(NULL), EINVAL);
    CHECK_OK(wxjit_heap_destroy(h));
    uint8_t buf[8];
    void *exec;
    wxjit_stats s;
    wxjit_backend b;
    CHECK_RET(wxjit_heap_destroy(h), EINVAL);
    CHECK_RET(wxjit_install(h, buf, 8, 0, &exec), EINVAL);
    CHECK_RET(wxjit_reserve(h, 8, 0, 0, &r), EINVAL);
    CHECK_RET(wxjit_free(h, f), EINVAL);
    CHECK_RET(wxjit_patch(h, f, buf, 1), EINVAL);
    CHECK_RET(wxjit_stats_get(h, &s), EINVAL);
    CHECK_RET(wxjit_heap_backend(h, &b), EINVAL);
    CHECK_EQ(as_fn(known)(), 42); /* other heaps are untouched */
    printf("  destroy: later use and double destroy refused\n");
}

/* ---- patch ranges end where the function ends ----------------------------
 * Issue 11, defect 10: a patch is checked against the function's committed
 * size, not the 16-byte granules it occupies. */
static void patch_bounds_case(void *f, const uint8_t *code, size_t n,
                              int32_t v, const char *what)
{
    uint8_t more[32];
    memcpy(more, code, n);
    memset(more + n, emit_trap_byte(more + n), sizeof(more) - n);
    size_t at8 = n & ~(size_t)7; /* an aligned 8 bytes that run past n */
    wxjit_stats before;
    int err[3];
    snapshot(&before);
    err[0] = wxjit_patch(heap, f, more, n + 1);
    err[1] = wxjit_patch(heap, (uint8_t *)f + n, more + n, 1);
    err[2] = wxjit_patch_atomic(heap, (uint8_t *)f + at8, 0, 8);
    CHECK(err[0] == EINVAL && err[1] == EINVAL && err[2] == EINVAL,
          "%s of %zu bytes: wxjit_patch of %zu bytes at its start returned "
          "%d, of 1 byte at its end %d, wxjit_patch_atomic of 8 bytes at "
          "+%zu %d; expected EINVAL (%d) for each",
          what, n, n + 1, err[0], err[1], at8, err[2], EINVAL);
    unchanged("refused patches", &before);
    CHECK_OK(wxjit_patch(heap, f, code, n));
    CHECK_EQ(as_fn(f)(), v);
    printf("  patch bounds, %s of %zu bytes: patch of %zu bytes, 1 byte past "
           "the end, 8-byte atomic at +%zu refused; %zu bytes accepted\n",
           what, n, n + 1, at8, n);
}

static void test_patch_bounds(void)
{
    CHECK_OK(wxjit_fault_handler_install());
    uint8_t buf[32];
    size_t n = emit_return_int(buf, 21); /* 6 bytes on x86_64 */
    void *f;
    CHECK_OK(wxjit_install(heap, buf, n, 0, &f));
    patch_bounds_case(f, buf, n, 21, "installed function");
    wxjit_reservation r;
    CHECK_OK(wxjit_reserve(heap, 64, 0, 0, &r));
    n = emit_return_int(r.write, 22);
    memcpy(buf, r.write, n);
    void *g = r.exec;
    CHECK_OK(wxjit_commit(heap, &r, n));
    patch_bounds_case(g, buf, n, 22, "reservation of 64 committed with used");
    CHECK_OK(wxjit_free(heap, f));
    CHECK_OK(wxjit_free(heap, g));
    CHECK_OK(wxjit_fault_handler_uninstall());
}

/* ---- a failed reserve changes no statistic --------------------------------
 * Issue 11, defect 11: dualmap needs a descriptor for a new chunk's shared
 * memory object. With RLIMIT_NOFILE used up, a reserve that needs a new
 * chunk fails with EMFILE and no counter moves (syscalls, map_calls
 * included). */
static void emfile_child(void *arg)
{
    (void)arg;
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    wxjit_heap *h;
    CHECK_OK(wxjit_fault_handler_install());
    o.backend = WXJIT_BACKEND_DUALMAP;
    o.chunk_size = page; /* the first install fills the first chunk */
    CHECK_OK(wxjit_heap_create(&o, &h));
    uint8_t *code = malloc(page);
    CHECK(code, "malloc");
    void *f;
    CHECK_OK(wxjit_install(h, code, emit_return_int_sized(code, page, 3), 0,
                           &f));
    free(code);
    CHECK_EQ(as_fn(f)(), 3);
    struct rlimit lim = {64, 64};
    CHECK(setrlimit(RLIMIT_NOFILE, &lim) == 0, "setrlimit");
    while (dup(0) >= 0)
        ;
    CHECK(errno == EMFILE, "dup: %s", strerror(errno));
    wxjit_stats before = wxtest_stats_of(h), after;
    wxjit_reservation r;
    CHECK_RET(wxjit_reserve(h, 64, 0, 0, &r), EMFILE);
    after = wxtest_stats_of(h);
    wxtest_check_stats_same("dualmap reserve failing with EMFILE", &before,
                            &after, false);
    void *g;
    uint8_t buf[16];
    CHECK_RET(wxjit_install(h, buf, emit_return_int(buf, 4), 0, &g), EMFILE);
    before = wxtest_stats_of(h);
    wxtest_check_stats_same("dualmap install failing with EMFILE", &after,
                            &before, false);
    CHECK_EQ(as_fn(f)(), 3);
    printf("  dualmap at RLIMIT_NOFILE: reserve and install failed with "
           "EMFILE, every statistic unchanged (syscalls %llu)\n",
           (unsigned long long)after.syscalls);
    fflush(stdout);
    CHECK_OK(wxjit_heap_destroy(h));
}

static void test_failed_reserve_stats(void)
{
    if (backend != WXJIT_BACKEND_DUALMAP)
        return; /* toggle needs no descriptor */
    if (wxtest_valgrind()) {
        wxtest_skip("dualmap at RLIMIT_NOFILE", "Valgrind keeps descriptors "
                    "of its own below the limit");
        return;
    }
    wxtest_expect_exit("dualmap reserve at RLIMIT_NOFILE",
                       wxtest_in_child(emfile_child, NULL), 0);
}

/* A system that refuses to make a page executable again (PR_SET_MDWE,
 * SELinux without execmod) refuses toggle at heap creation, with the
 * errno of its probe, instead of failing every install later. The refusal
 * is simulated through the failure-injection seam. */
static void test_toggle_refused(void)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    wxjit_heap *h = (wxjit_heap *)&o; /* must stay untouched */
    o.backend = WXJIT_BACKEND_TOGGLE;
    wxj_os_inject(WXJ_CALL_MPROTECT, 1, 1, EACCES);
    CHECK_RET(wxjit_heap_create(&o, &h), EACCES);
    wxj_os_inject(WXJ_CALL_MPROTECT, 0, 0, 0);
    CHECK(h == (wxjit_heap *)&o, "out-parameter changed on failure");
    CHECK_OK(wxjit_heap_create(&o, &h));
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  toggle where PROT_EXEC cannot be regained: heap_create "
           "fails with the probe's EACCES\n");
}

int main(int argc, char **argv)
{
    wxtest_enter_wx_policy();
    /* Runs code installed where freed code was (a freed block's space is
     * reused at once): not under an emulator that misses dualmap's
     * writes. */
    wxtest_require_alias_writes_run("test_api");
    page = (size_t)sysconf(_SC_PAGESIZE);
    printf("test_api:\n");
    test_create(); /* every other scenario uses its heap */
    if (wxtest_selected(argc, argv, "install"))
        test_install();
    if (wxtest_selected(argc, argv, "reserve_commit"))
        test_reserve_commit();
    if (wxtest_selected(argc, argv, "batch"))
        test_batch();
    if (wxtest_selected(argc, argv, "patch_free"))
        test_patch_free();
    if (wxtest_selected(argc, argv, "patch_bounds"))
        test_patch_bounds();
    if (wxtest_selected(argc, argv, "failed_reserve_stats"))
        test_failed_reserve_stats();
    if (wxtest_selected(argc, argv, "stats_and_handler"))
        test_stats_and_handler();
    if (wxtest_selected(argc, argv, "toggle_refused"))
        test_toggle_refused();
    if (wxtest_selected(argc, argv, "destroy"))
        test_destroy();
    CHECK_OK(wxjit_heap_destroy(heap));
    CHECK_EQ(wxtest_wx_mappings(), 0);
    printf("test_api: ok\n");
    return 0;
}
