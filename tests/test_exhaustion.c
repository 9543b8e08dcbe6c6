/* Running out of resources: the heap's memory cap, the kernel's limit on
 * mappings (vm.max_map_count) and on descriptors (RLIMIT_NOFILE). Each
 * must give a clear error, change nothing, leave every installed function
 * executable, and the heap must work again once the resource is back.
 * The limits are reached for real, each in a child process. */
#include "emit.h"
#include "wxtest.h"

static size_t page;
static wxjit_backend backend;

/* A function of size bytes returning v (tests/emit.h): the patchable
 * return first, so its immediate is at EMIT_PATCHABLE_IMM_OFFSET, then
 * padding that never runs. */
static void *install_sized(wxjit_heap *h, size_t size, int32_t v, int *err)
{
    uint8_t *code = malloc(size);
    CHECK(code, "malloc");
    memset(code, 0, size);
    CHECK(emit_return_int_patchable(code, v) <= size, "size %zu", size);
    void *exec = NULL;
    *err = wxjit_install(h, code, size, 0, &exec);
    free(code);
    return exec;
}

static void *install_ok(wxjit_heap *h, size_t size, int32_t v)
{
    int err;
    void *f = install_sized(h, size, v, &err);
    CHECK_OK(err);
    return f;
}

/* What a failed call must leave as it was (the syscall and mprotect
 * counters count attempts, failed ones included). */
static void same_state(const char *what, const wxjit_stats *a,
                       const wxjit_stats *b)
{
    CHECK(a->installs == b->installs && a->frees == b->frees &&
              a->bytes_live == b->bytes_live &&
              a->bytes_mapped == b->bytes_mapped && a->pages == b->pages &&
              a->chunks == b->chunks,
          "%s changed the heap: installs %llu->%llu frees %llu->%llu live "
          "%llu->%llu mapped %llu->%llu",
          what, (unsigned long long)a->installs,
          (unsigned long long)b->installs, (unsigned long long)a->frees,
          (unsigned long long)b->frees, (unsigned long long)a->bytes_live,
          (unsigned long long)b->bytes_live,
          (unsigned long long)a->bytes_mapped,
          (unsigned long long)b->bytes_mapped);
}

static wxjit_heap *heap_new(size_t chunk_pages, size_t cap_pages,
                            unsigned flags)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    wxjit_heap *h;
    o.chunk_size = chunk_pages * page;
    o.max_bytes = cap_pages * page;
    o.flags = flags;
    CHECK_OK(wxjit_heap_create(&o, &h));
    return h;
}

/* ---- the memory cap -------------------------------------------------------- */
static void test_cap(void)
{
    wxjit_heap *h = heap_new(2, 4, 0);
    void *f[64];
    int n = 0, err = 0;
    while (n < 64) {
        f[n] = install_sized(h, page / 2, n, &err);
        if (err)
            break;
        n++;
    }
    CHECK_EQ(err, ENOMEM);
    CHECK(n == 8, "%d half-page functions fit in a 4-page cap", n);
    wxjit_stats before = wxtest_stats_of(h), after;
    wxjit_reservation r;
    CHECK_RET(wxjit_reserve(h, 64, 0, 0, &r), ENOMEM);
    CHECK_RET(wxjit_reserve(h, 64, 0, WXJIT_RESERVE_IN_PLACE, &r), ENOMEM);
    after = wxtest_stats_of(h);
    same_state("reserve at the cap", &before, &after);
    CHECK(after.bytes_mapped <= 4 * page, "mapped %llu over the cap",
          (unsigned long long)after.bytes_mapped);
    for (int i = 0; i < n; i++)
        CHECK_EQ(as_fn(f[i])(), i);
    /* Freed space is reused under the cap. */
    CHECK_OK(wxjit_free(h, f[3]));
    f[3] = install_ok(h, page / 2, 33);
    CHECK_EQ(as_fn(f[3])(), 33);
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  max_bytes: ENOMEM at the cap (%d functions), nothing changed, "
           "all still run; freed space reused\n", n);
}

/* ---- vm.max_map_count -----------------------------------------------------
 * Filled for real: single pages mapped with alternating protections (so
 * the kernel cannot merge them) until mmap fails. mmap refuses only once
 * the count is above the limit, so the process then sits at limit + 1,
 * where every split of a mapping fails too. */
#define MAP_COUNT_FILLABLE 262144 /* larger limits take too long to fill */

struct filler {
    void **maps;
    size_t n, cap;
};

static long max_map_count(void)
{
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    long v = -1;
    if (f) {
        if (fscanf(f, "%ld", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

static void fill_mappings(struct filler *fl)
{
    while (fl->n < fl->cap) {
        int prot = fl->n % 2 ? PROT_READ : PROT_NONE;
        void *p = mmap(NULL, page, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            CHECK(errno == ENOMEM, "mmap: %s", strerror(errno));
            return;
        }
        fl->maps[fl->n++] = p;
    }
    CHECK(0, "%zu mappings and mmap still works", fl->n);
}

static void release_mappings(struct filler *fl, size_t count)
{
    for (; count && fl->n; count--)
        munmap(fl->maps[--fl->n], page);
}

static void expect_runs(void *const *f, const int32_t *v, int n)
{
    for (int i = 0; i < n; i++)
        CHECK(as_fn(f[i])() == v[i], "function %d returned %d, not %d", i,
              as_fn(f[i])(), v[i]);
}

/* Patches f[p], frees f[fr] (installing a replacement if that worked)
 * and installs a new function, at the limit: each works or fails with
 * ENOMEM and changes nothing; every function runs after each. Returns
 * the number of calls that failed. */
static int try_at_limit(wxjit_heap *h, void **f, int32_t *v, int n, int p,
                        int fr, const char *where)
{
    int failures = 0, err;
    wxjit_stats before = wxtest_stats_of(h), after;
    int32_t nv = v[p] + 100;
    err = wxjit_patch(h, (uint8_t *)f[p] + EMIT_PATCHABLE_IMM_OFFSET, &nv, 4);
    CHECK(err == 0 || err == ENOMEM, "patch %s: %s", where, strerror(err));
    if (err == 0)
        v[p] = nv;
    failures += err != 0;
    after = wxtest_stats_of(h);
    same_state("patch at the map limit", &before, &after);
    expect_runs(f, v, n);

    before = after;
    err = wxjit_free(h, f[fr]);
    CHECK(err == 0 || err == ENOMEM, "free %s: %s", where, strerror(err));
    after = wxtest_stats_of(h);
    if (err) {
        failures++;
        same_state("free at the map limit", &before, &after);
    } else {
        CHECK_EQ(after.frees, before.frees + 1);
        f[fr] = install_ok(h, 64, v[fr]); /* the caller's layout goes on */
    }
    expect_runs(f, v, n);

    before = wxtest_stats_of(h);
    void *g = install_sized(h, 64, 77, &err);
    CHECK(err == 0 || err == ENOMEM, "install %s: %s", where, strerror(err));
    after = wxtest_stats_of(h);
    if (err) {
        failures++;
        same_state("install at the map limit", &before, &after);
    } else {
        CHECK_EQ(as_fn(g)(), 77);
        CHECK_OK(wxjit_free(h, g));
    }
    expect_runs(f, v, n);
    return failures;
}

static void map_count_child(void *arg)
{
    unsigned flags = *(unsigned *)arg;
    long limit = max_map_count();
    struct filler fl = {NULL, 0, (size_t)limit + 16};
    fl.maps = malloc(fl.cap * sizeof(void *));
    CHECK(fl.maps, "malloc");
    /* 16 pages: page 0 code; page 1 held RW by an in-place reservation;
     * page 2 code between two RW neighbours (page 1, fresh page 6): its
     * RW flip merges three mappings into one and the RX flip back needs
     * two splits; pages 3-5 code: page 4's RW flip itself needs two
     * splits; pages 6.. fresh. */
    wxjit_heap *h = heap_new(16, 0, flags);
    void *f[6];
    int32_t v[6] = {10, 20, 30, 40, 50, 60};
    f[0] = install_ok(h, page, v[0]);
    wxjit_reservation r;
    CHECK_OK(wxjit_reserve(h, page, 0, WXJIT_RESERVE_IN_PLACE, &r));
    f[1] = install_ok(h, 64, v[1]);
    f[2] = install_ok(h, 64, v[2]);
    for (int i = 3; i < 6; i++)
        f[i] = install_ok(h, page, v[i]);
    expect_runs(f, v, 6);

    fill_mappings(&fl);
    int over = try_at_limit(h, f, v, 6, 1, 2, "over the limit (page 2)");
    over += try_at_limit(h, f, v, 6, 4, 4, "over the limit (page 4)");
    release_mappings(&fl, 1);
    int at = try_at_limit(h, f, v, 6, 4, 4, "at the limit (page 4)");
    if (backend == WXJIT_BACKEND_TOGGLE)
        CHECK(over >= 2 && at >= 2, "page 4 can be made writable at the "
              "limit? %d/%d failures", over, at);

    /* The open in-place reservation still commits (its page needs one RX
     * flip, which may need a split). */
    size_t len = emit_return_int(r.write, 42);
    int err = wxjit_commit(h, &r, len);
    CHECK(err == 0 || err == ENOMEM, "commit: %s", strerror(err));
    if (err) {
        CHECK(r.exec != NULL, "a failed commit consumed the reservation");
        release_mappings(&fl, 64);
        CHECK_OK(wxjit_commit(h, &r, len));
    }

    size_t filled = fl.n;
    release_mappings(&fl, 4096);
    CHECK_EQ(try_at_limit(h, f, v, 6, 4, 4, "after unmapping"), 0);
    void *more[64];
    for (int i = 0; i < 64; i++)
        more[i] = install_ok(h, 256, 1000 + i);
    for (int i = 0; i < 64; i++)
        CHECK_EQ(as_fn(more[i])(), 1000 + i);
    expect_runs(f, v, 6);
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  %zu mappings filled (limit %ld): %d call(s) refused over the "
           "limit, %d at it, each ENOMEM with nothing changed; all code "
           "ran throughout; usable again after unmapping\n",
           filled, limit, over, at);
    release_mappings(&fl, fl.n);
    free(fl.maps);
    fflush(stdout);
}

static void test_map_count(void)
{
    long limit = max_map_count();
    if (wxtest_tool()) {
        wxtest_skip("vm.max_map_count exhausted", "the tool's runtime needs "
                    "mappings of its own for every allocation");
        return;
    }
    if (limit < 0 || limit > MAP_COUNT_FILLABLE) {
        printf("  SKIPPED: vm.max_map_count is %ld; filling more than %d "
               "mappings takes too long for a unit test\n",
               limit, MAP_COUNT_FILLABLE);
        return;
    }
    unsigned flags = 0;
    wxtest_expect_exit("mappings exhausted",
                       wxtest_in_child(map_count_child, &flags), 0);
    if (backend == WXJIT_BACKEND_DUALMAP) {
        flags = WXJIT_HEAP_RW_ON_DEMAND;
        wxtest_expect_exit("mappings exhausted, RW views on demand",
                           wxtest_in_child(map_count_child, &flags), 0);
    }
}

/* ---- RLIMIT_NOFILE ----------------------------------------------------------
 * dualmap needs a descriptor for each new chunk's shared memory object
 * (memfd, shm_open, O_TMPFILE: all fail with EMFILE). That error is
 * passed on as is: the caller learns it is out of descriptors, not
 * memory. toggle needs none. */
static void nofile_child(void *unused)
{
    (void)unused;
    wxjit_heap *h = heap_new(1, 0, 0);
    int32_t v[2] = {1, 2};
    void *f[2];
    f[0] = install_ok(h, page / 2, v[0]);
    f[1] = install_ok(h, page / 2, v[1]); /* the first chunk is full */

    struct rlimit lim = {64, 64};
    CHECK(setrlimit(RLIMIT_NOFILE, &lim) == 0, "setrlimit");
    int fds[64], nfds = 0;
    for (int fd; nfds < 64 && (fd = dup(0)) >= 0;)
        fds[nfds++] = fd;
    CHECK(dup(0) < 0 && errno == EMFILE, "descriptors left: %d", nfds);

    wxjit_stats before = wxtest_stats_of(h), after;
    int err;
    void *g = install_sized(h, 64, 3, &err);
    after = wxtest_stats_of(h);
    if (backend == WXJIT_BACKEND_DUALMAP) {
        CHECK_RET(err, EMFILE);
        same_state("install without descriptors", &before, &after);
        wxjit_reservation r;
        CHECK_RET(wxjit_reserve(h, 64, 0, 0, &r), EMFILE);
    } else {
        CHECK_OK(err);
        CHECK_EQ(as_fn(g)(), 3);
    }
    expect_runs(f, v, 2);
    CHECK_OK(wxjit_patch_atomic(h, (uint8_t *)f[0] + EMIT_PATCHABLE_IMM_OFFSET,
                                11, 4));
    v[0] = 11;
    expect_runs(f, v, 2);

    while (nfds)
        close(fds[--nfds]);
    g = install_ok(h, 64, 4);
    CHECK_EQ(as_fn(g)(), 4);
    expect_runs(f, v, 2);
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  RLIMIT_NOFILE exhausted: %s; existing code ran and was "
           "patched; installs work once descriptors are free\n",
           backend == WXJIT_BACKEND_DUALMAP
               ? "new chunk refused with EMFILE, nothing changed"
               : "toggle needs no descriptor, installs went on");
    fflush(stdout);
}

static void test_nofile(void)
{
    if (wxtest_valgrind()) {
        wxtest_skip("RLIMIT_NOFILE exhausted", "Valgrind keeps descriptors "
                    "of its own below the limit");
        return;
    }
    wxtest_expect_exit("descriptors exhausted",
                       wxtest_in_child(nofile_child, NULL), 0);
}

int main(void)
{
    wxtest_enter_wx_policy();
    wxtest_require_alias_writes_run("test_exhaustion");
    page = (size_t)sysconf(_SC_PAGESIZE);
    CHECK_OK(wxjit_fault_handler_install());
    wxjit_heap *h;
    CHECK_OK(wxjit_heap_create(NULL, &h));
    CHECK_OK(wxjit_heap_backend(h, &backend));
    CHECK_OK(wxjit_heap_destroy(h));
    const char *name;
    CHECK_OK(wxjit_backend_name(backend, &name));
    printf("test_exhaustion (%s)\n", name);
    test_cap();
    test_map_count();
    test_nofile();
    CHECK_EQ(wxtest_wx_mappings(), 0);
    printf("test_exhaustion: ok\n");
    return 0;
}
