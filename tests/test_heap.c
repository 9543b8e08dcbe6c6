/* The heap as an allocator, from one thread: dense packing, reuse of freed
 * space, reservation tails, multi-page functions, chunk_size and max_bytes,
 * a bounded number of mappings, in-place reservations and range patches. */
#include "emit.h"
#include "wxtest.h"

#define GRANULE 16 /* wxjit hands out code in 16-byte granules */

static size_t page;
static uint8_t *buf; /* emit buffer, 4 pages + slack */

static wxjit_heap *heap_new(size_t chunk_size, size_t max_bytes)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    wxjit_heap *h;
    o.chunk_size = chunk_size;
    o.max_bytes = max_bytes;
    CHECK_OK(wxjit_heap_create(&o, &h));
    return h;
}

/* A function of exactly size bytes (>= EMIT_RETURN_INT_SIZE, 6 on
 * x86_64, 12 on aarch64 and riscv64) that returns v. */
static size_t emit_sized(uint8_t *p, size_t size, int32_t v)
{
    return emit_return_int_sized(p, size, v);
}

static void *install_sized(wxjit_heap *h, size_t size, int32_t v)
{
    void *exec;
    CHECK_OK(wxjit_install(h, buf, emit_sized(buf, size, v), 0, &exec));
    return exec;
}

static void *install_int(wxjit_heap *h, int32_t v)
{
    return install_sized(h, EMIT_RETURN_INT_SIZE, v);
}

static void expect_returns(void *f, int32_t v)
{
    int got = as_fn(f)();
    CHECK(got == v, "function at %p returned %d, expected %d", f, got, v);
}

/* Every byte of [p, p + n) is a trap. */
static void expect_traps(const char *what, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        CHECK(b[i] == emit_trap_byte(b + i),
              "%s: byte %zu at %p is %#x, expected %#x (%s)", what, i,
              (const void *)(b + i), b[i], emit_trap_byte(b + i),
              EMIT_TRAP_NAME);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint32_t rng(void) /* xorshift64: deterministic, no libc state */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

static void test_dense(void)
{
    enum { N = 200 };
    void *f[N];
    wxjit_heap *h = heap_new(0, 0);
    for (int i = 0; i < N; i++) {
        f[i] = install_int(h, i * 7 + 1);
        CHECK((uintptr_t)f[i] % GRANULE == 0, "function %d at %p", i, f[i]);
    }
    for (int i = 0; i < N; i++)
        for (int j = 0; j < i; j++)
            CHECK(f[i] != f[j], "functions %d and %d share %p", j, i, f[i]);
    size_t pages = wxtest_distinct_pages(f, N);
    size_t bound = (N * GRANULE + page - 1) / page + 1;
    CHECK(pages <= bound,
          "%d functions of %d bytes use %zu pages, expected at most %zu", N,
          EMIT_RETURN_INT_SIZE, pages, bound);
    for (int i = 0; i < N; i++)
        expect_returns(f[i], i * 7 + 1);
    wxjit_stats s = wxtest_stats_of(h);
    CHECK_EQ(s.bytes_live, N * GRANULE);
    CHECK_EQ(s.installs, N);
    printf("  dense packing: %d functions of %d bytes on %zu page(s) (bound "
           "%zu, stats.pages %llu), all return their value\n",
           N, EMIT_RETURN_INT_SIZE, pages, bound,
           (unsigned long long)s.pages);
    CHECK_OK(wxjit_heap_destroy(h));
}

static void test_reuse(void)
{
    /* One freed granule: traps until reused, and it does come back. */
    wxjit_heap *h = heap_new(0, 0);
    void *a = install_int(h, 1), *b = install_int(h, 2),
         *c = install_int(h, 3);
    CHECK_OK(wxjit_free(h, b));
    expect_traps("freed granule", b, GRANULE);
    size_t limit = 2 * (page / GRANULE) + 2, reused_after = 0;
    void **later = malloc(limit * sizeof(*later));
    CHECK(later, "malloc");
    for (size_t i = 0; i < limit && !reused_after; i++) {
        expect_traps("freed granule before reuse", b, GRANULE);
        later[i] = install_int(h, (int32_t)(100 + i));
        if (later[i] == b)
            reused_after = i + 1;
    }
    CHECK(reused_after, "freed granule %p not reused after %zu installs", b,
          limit);
    expect_returns(b, (int32_t)(100 + reused_after - 1));
    expect_returns(a, 1);
    expect_returns(c, 3);
    for (size_t i = 0; i < reused_after; i++)
        expect_returns(later[i], (int32_t)(100 + i));
    free(later);
    printf("  reuse: freed granule read traps until install %zu reused it\n",
           reused_after);
    CHECK_OK(wxjit_heap_destroy(h));

    /* Churn: 10,000 install/free pairs with 100 live never map more. */
    enum { LIVE = 100, PAIRS = 10000 };
    void *live[LIVE];
    int32_t val[LIVE];
    h = heap_new(0, 0);
    for (int i = 0; i < LIVE; i++)
        live[i] = install_int(h, val[i] = i);
    wxjit_stats before = wxtest_stats_of(h);
    for (int i = 0; i < PAIRS; i++) {
        int k = (int)(rng() % LIVE);
        expect_returns(live[k], val[k]);
        CHECK_OK(wxjit_free(h, live[k]));
        expect_traps("freed in churn", live[k], GRANULE);
        live[k] = install_int(h, val[k] = 1000 + i);
    }
    for (int i = 0; i < LIVE; i++)
        expect_returns(live[i], val[i]);
    wxjit_stats after = wxtest_stats_of(h);
    size_t bound = (LIVE * GRANULE + page - 1) / page + 1;
    CHECK(after.bytes_mapped == before.bytes_mapped,
          "bytes_mapped grew from %llu to %llu during churn",
          (unsigned long long)before.bytes_mapped,
          (unsigned long long)after.bytes_mapped);
    CHECK(after.pages <= bound,
          "churn with %d live granules uses %llu pages (%llu before), "
          "expected at most %zu",
          LIVE, (unsigned long long)after.pages,
          (unsigned long long)before.pages, bound);
    CHECK_EQ(after.installs, LIVE + PAIRS);
    CHECK_EQ(after.frees, PAIRS);
    CHECK_EQ(after.bytes_live, LIVE * GRANULE);
    printf("  reuse: %d install/free pairs, %d live: pages %llu -> %llu "
           "(bound %zu), bytes_mapped %llu -> %llu\n",
           PAIRS, LIVE, (unsigned long long)before.pages,
           (unsigned long long)after.pages, bound,
           (unsigned long long)before.bytes_mapped,
           (unsigned long long)after.bytes_mapped);
    CHECK_OK(wxjit_heap_destroy(h));
}

static void test_reserve_tail(void)
{
    wxjit_heap *h = heap_new(0, 0);
    wxjit_reservation r;
    CHECK_OK(wxjit_reserve(h, 256, 0, 0, &r));
    uint8_t *first = r.exec;
    CHECK_OK(wxjit_commit(h, &r, emit_return_int(r.write, 21)));
    CHECK_OK(wxjit_reserve(h, 128, 0, 0, &r));
    uint8_t *second = r.exec;
    CHECK(second == first + GRANULE,
          "after committing %d of 256 bytes at %p the next reservation is "
          "at %p, expected %p",
          EMIT_RETURN_INT_SIZE, (void *)first, (void *)second,
          (void *)(first + GRANULE));
    CHECK_OK(wxjit_commit(h, &r, emit_sized(r.write, 40, 22)));
    uint8_t *third = install_int(h, 23);
    CHECK(third == second + 48,
          "after committing 40 of 128 bytes at %p the next install is at %p, "
          "expected %p",
          (void *)second, (void *)third, (void *)(second + 48));
    expect_returns(first, 21);
    expect_returns(second, 22);
    expect_returns(third, 23);
    expect_traps("granule rest after one return", first + EMIT_RETURN_INT_SIZE,
                 GRANULE - EMIT_RETURN_INT_SIZE);
    expect_traps("granule rest after 40 used bytes", second + 40, 8);
    CHECK_EQ(wxtest_stats_of(h).bytes_live, GRANULE + 48 + GRANULE);
    printf("  reserve/commit: unused reserved tail returned: next code at +16 "
           "after %d of 256 used, at +48 after 40 of 128 used\n",
           EMIT_RETURN_INT_SIZE);
    CHECK_OK(wxjit_heap_destroy(h));
}

static void test_big(void)
{
    /* A function over several pages. */
    wxjit_heap *h = heap_new(0, 0);
    size_t size = 3 * page + 106; /* 3 pages + 100 bytes of nops, return */
    void *big = install_sized(h, size, 31);
    expect_returns(big, 31);
    CHECK_EQ(wxtest_stats_of(h).bytes_live, (size + GRANULE - 1) / GRANULE * GRANULE);
    void *small = install_int(h, 32);
    expect_returns(small, 32);
    expect_returns(big, 31);
    printf("  multi-page: a %zu-byte function installs and runs\n", size);
    CHECK_OK(wxjit_heap_destroy(h));

    /* chunk_size: the largest reservation, and the heap's growth step. */
    size_t chunk = 64 * 1024;
    h = heap_new(chunk, 0);
    wxjit_reservation r;
    void *exec = NULL;
    CHECK_RET(wxjit_reserve(h, chunk + 1, 0, 0, &r), EINVAL);
    uint8_t *whole = malloc(chunk + 1);
    CHECK(whole, "malloc");
    CHECK_RET(wxjit_install(h, whole, chunk + 1, 0, &exec), EINVAL);
    CHECK(exec == NULL, "out-parameter written on failure");
    CHECK_EQ(wxtest_stats_of(h).chunks, 0);
    void *full = NULL;
    /* The whole chunk: the function, then a granule of traps, so that the
     * return is not the chunk's last byte (Valgrind 3.19 stops with an
     * internal error when it translates a ret that ends right before
     * unmapped memory: its decoder reads the byte after it). */
    size_t used = emit_sized(whole, chunk - GRANULE, 33);
    for (size_t k = used; k < chunk; k++)
        whole[k] = emit_trap_byte(whole + k);
    CHECK_OK(wxjit_install(h, whole, chunk, 0, &full));
    free(whole);
    expect_returns(full, 33);
    CHECK_EQ(wxtest_stats_of(h).chunks, 1);

    enum { MAX_FNS = 4096 };
    void **f = malloc(MAX_FNS * sizeof(*f));
    CHECK(f, "malloc");
    int n = 0;
    while (wxtest_stats_of(h).chunks < 4) {
        CHECK(n < MAX_FNS, "%d functions of 1000 bytes and still %llu chunks",
              n, (unsigned long long)wxtest_stats_of(h).chunks);
        f[n] = install_sized(h, 1000, 1000 + n);
        n++;
    }
    for (int i = 0; i < n; i++)
        expect_returns(f[i], 1000 + i);
    expect_returns(full, 33);
    wxjit_stats s = wxtest_stats_of(h);
    CHECK(s.bytes_mapped == s.chunks * chunk,
          "bytes_mapped %llu for %llu chunks of %zu",
          (unsigned long long)s.bytes_mapped, (unsigned long long)s.chunks,
          chunk);
    printf("  chunk_size 64 KiB: reservation of 64 KiB + 1 refused (EINVAL), "
           "64 KiB accepted; %d more functions of 1000 bytes grew it to %llu "
           "chunks (%llu bytes mapped), all run\n",
           n, (unsigned long long)s.chunks,
           (unsigned long long)s.bytes_mapped);
    free(f);
    CHECK_OK(wxjit_heap_destroy(h));
}

static void test_max_bytes(void)
{
    size_t cap = 64 * 1024, most = cap / GRANULE;
    wxjit_heap *h = heap_new(0, cap);
    void **f = malloc((most + 1) * sizeof(*f));
    CHECK(f, "malloc");
    size_t n = 0;
    int err;
    void *exec = NULL;
    for (;;) {
        emit_return_int(buf, (int32_t)n);
        err = wxjit_install(h, buf, EMIT_RETURN_INT_SIZE, 0, &exec);
        if (err)
            break;
        CHECK(n < most, "%zu functions of 16 bytes fit under a %zu-byte cap",
              n + 1, cap);
        f[n++] = exec;
        exec = NULL;
    }
    CHECK(err == ENOMEM, "install %zu returned %d (%s), expected ENOMEM", n,
          err, strerror(err));
    CHECK(exec == NULL, "out-parameter written on failure");
    wxjit_reservation r;
    CHECK_RET(wxjit_reserve(h, 64, 0, 0, &r), ENOMEM);
    wxjit_stats s = wxtest_stats_of(h);
    CHECK(s.bytes_mapped <= cap, "bytes_mapped %llu above max_bytes %zu",
          (unsigned long long)s.bytes_mapped, cap);
    /* Dense packing holds under the cap too: not a page per function. */
    CHECK(n * GRANULE >= cap / 10 * 9,
          "only %zu functions of 16 bytes fit in %zu bytes", n, cap);
    for (size_t i = 0; i < n; i++)
        expect_returns(f[i], (int32_t)i);
    printf("  max_bytes 64 KiB: ENOMEM after %zu installs, bytes_mapped %llu, "
           "earlier functions still run\n",
           n, (unsigned long long)s.bytes_mapped);

    enum { FREED = 10 };
    for (size_t k = 0; k < FREED; k++)
        CHECK_OK(wxjit_free(h, f[k * (n / FREED)]));
    size_t again = 0;
    for (;;) {
        emit_return_int(buf, (int32_t)(5000 + again));
        err = wxjit_install(h, buf, EMIT_RETURN_INT_SIZE, 0, &exec);
        if (err)
            break;
        CHECK(again < 4 * FREED, "%zu installs after freeing %d", again + 1,
              FREED);
        expect_returns(exec, (int32_t)(5000 + again));
        again++;
    }
    CHECK(err == ENOMEM, "install returned %d (%s), expected ENOMEM", err,
          strerror(err));
    CHECK(again >= FREED,
          "only %zu installs succeed after freeing %d functions at the cap",
          again, FREED);
    s = wxtest_stats_of(h);
    CHECK(s.bytes_mapped <= cap, "bytes_mapped %llu above max_bytes %zu",
          (unsigned long long)s.bytes_mapped, cap);
    for (size_t i = 0; i < n; i++)
        if (i % (n / FREED) != 0 || i / (n / FREED) >= FREED)
            expect_returns(f[i], (int32_t)i);
    printf("  max_bytes: after freeing %d, %zu installs reused the space, "
           "then ENOMEM again; bytes_mapped %llu\n",
           FREED, again, (unsigned long long)s.bytes_mapped);
    free(f);
    CHECK_OK(wxjit_heap_destroy(h));
}

static void check_growth(const char *what, int before, wxjit_heap *h)
{
    int after = wxtest_mapping_count();
    wxjit_stats s = wxtest_stats_of(h);
    long long bound = 3 * (long long)s.chunks + 4;
    printf("  mappings: %s: /proc/self/maps %d -> %d lines (growth %d, bound "
           "3*%llu chunks+4 = %lld), %llu mprotect calls\n",
           what, before, after, after - before, (unsigned long long)s.chunks,
           bound, (unsigned long long)s.mprotect_calls);
    CHECK(after - before <= bound, "%s: mappings grew by %d, more than %lld",
          what, after - before, bound);
    CHECK_EQ(wxtest_wx_mappings(), 0);
}

static void test_mappings(void)
{
    const int n = wxtest_rounds(100000);
    char what[64];
    enum { SLOTS = 2000 }; /* the churn's, below */
    /* Allocated before counting; the churn below reuses it. */
    void **f = calloc((size_t)(n > SLOTS ? n : SLOTS), sizeof(*f));
    CHECK(f, "calloc");
    wxjit_heap *h = heap_new(0, 0);
    int before = wxtest_mapping_count();
    for (int i = 0; i < n; i++)
        f[i] = install_int(h, i);
    for (int i = 0; i < n; i++)
        expect_returns(f[i], i);
    snprintf(what, sizeof(what), "%d installs", n);
    check_growth(what, before, h);
    CHECK_OK(wxjit_heap_destroy(h));

    /* Churn: mixed sizes (some over two pages), frees, reservations that
     * commit less than they reserved, aborts, in-place reservations; in
     * 256 KiB chunks so that the churn spans several. */
    const int ops = wxtest_rounds(60000);
    int32_t *val = calloc(SLOTS, sizeof(*val));
    CHECK(val, "calloc");
    memset(f, 0, SLOTS * sizeof(*f));
    h = heap_new(256 * 1024, 0);
    before = wxtest_mapping_count();
    for (int i = 0; i < ops; i++) {
        int k = (int)(rng() % SLOTS);
        if (f[k]) {
            expect_returns(f[k], val[k]);
            CHECK_OK(wxjit_free(h, f[k]));
            f[k] = NULL;
            continue;
        }
        uint32_t kind = rng() % 64;
        size_t size =
            kind == 0 ? 2 * page + 100 : EMIT_RETURN_INT_SIZE + rng() % 1500;
        val[k] = i;
        if (kind < 48) {
            f[k] = install_sized(h, size, i);
            continue;
        }
        wxjit_reservation r;
        unsigned flags = kind >= 60 ? WXJIT_RESERVE_IN_PLACE : 0;
        CHECK_OK(wxjit_reserve(h, size + 200, 0, flags, &r));
        void *at = r.exec;
        if (kind % 4 == 0) {
            CHECK_OK(wxjit_abort(h, &r));
            continue;
        }
        CHECK_OK(wxjit_commit(h, &r, emit_sized(r.write, size, i)));
        f[k] = at;
    }
    for (int k = 0; k < SLOTS; k++)
        if (f[k])
            expect_returns(f[k], val[k]);
    snprintf(what, sizeof(what), "%d churn operations (256 KiB chunks)", ops);
    check_growth(what, before, h);
    CHECK_OK(wxjit_heap_destroy(h));
    free(val);
    free(f);
}

/* Calls the aborted in-place reservation: it must be traps only. */
static void call_aborted(void *p)
{
    int_fn fn = as_fn(*(void **)p);
    fn();
}

static void test_in_place(void)
{
    wxjit_heap *h = heap_new(0, 0);
    wxjit_backend backend;
    CHECK_OK(wxjit_heap_backend(h, &backend));
    wxjit_reservation r;
    CHECK_OK(wxjit_reserve(h, 64, 0, WXJIT_RESERVE_IN_PLACE, &r));
    /* toggle writes at the executable address itself; other backends may
     * give an alias of it. */
    CHECK(backend != WXJIT_BACKEND_TOGGLE || r.write == r.exec,
          "toggle in-place write view %p, exec %p", r.write, r.exec);
    uint8_t *at = r.exec, *w = r.write;
    /* Leftovers past `used` must not survive the commit. */
    memset(w, 0x90, 64);
    CHECK_OK(wxjit_commit(h, &r, emit_return_int(w, 41)));
    expect_returns(at, 41);
    expect_traps("in-place bytes past used", at + EMIT_RETURN_INT_SIZE,
                 64 - EMIT_RETURN_INT_SIZE);

    CHECK_OK(wxjit_reserve(h, 100, 0, WXJIT_RESERVE_IN_PLACE, &r));
    uint8_t *aborted = r.exec;
    emit_sized(r.write, 100, 42);
    CHECK_OK(wxjit_abort(h, &r));
    expect_traps("aborted in-place reservation", aborted, 112);
    wxtest_expect_signal("calling an aborted in-place reservation",
                         wxtest_in_child(call_aborted, &aborted), SIGTRAP);
    void *next = install_int(h, 43);
    expect_returns(next, 43);
    expect_returns(at, 41);
    CHECK_EQ(wxtest_stats_of(h).bytes_live, 2 * GRANULE);
    CHECK_EQ(wxtest_wx_mappings(), 0);
    printf("  in-place: written at %s, committed and run; bytes past used "
           "and an aborted reservation are traps\n",
           w == at ? "exec itself" : "an alias of exec");
    CHECK_OK(wxjit_heap_destroy(h));
}

static void test_patch_range(void)
{
    wxjit_heap *h = heap_new(0, 0);
    void *before = install_int(h, 50);
    uint8_t *f = install_sized(h, 46, 1); /* three granules */
    void *after = install_int(h, 51);
    uint8_t orig[46];
    memcpy(orig, f, sizeof(orig));
    expect_returns(f, 1);

    /* Bytes [12, 32), across a granule boundary: return 2 from 26. */
    uint8_t patch[64];
    size_t n = emit_sized(patch, 20, 2);
    CHECK_OK(wxjit_patch(h, f + 12, patch, n));
    expect_returns(f, 2);
    CHECK(memcmp(f, orig, 12) == 0 && memcmp(f + 32, orig + 32, 14) == 0,
          "bytes outside the patched range changed");
    CHECK(memcmp(f + 12, patch, n) == 0, "patched bytes not in place");
    /* The whole function body. */
    n = emit_sized(patch, 46, 3);
    CHECK_OK(wxjit_patch(h, f, patch, n));
    expect_returns(f, 3);
    CHECK_RET(wxjit_patch(h, f + 40, patch, 10), EINVAL); /* past the end */
    expect_returns(f, 3);
    expect_returns(before, 50);
    expect_returns(after, 51);

    /* A range straddling a page boundary inside a multi-page function. */
    size_t size = 3 * page + 106;
    uint8_t *big = install_sized(h, size, 60);
    expect_returns(big, 60);
    /* The return starts 4 bytes before the second page boundary inside
     * the function: on x86_64 its 5-byte mov straddles the boundary; on
     * aarch64 and riscv64 its first instruction lies before it and the
     * rest after (the nops before are a whole number of instructions). */
    size_t at = wxtest_page_of(big) + 2 * page - (uintptr_t)big - 4;
    uint8_t *old = malloc(at);
    CHECK(old, "malloc");
    memcpy(old, big, at);
    n = emit_return_int(patch, 77);
    CHECK_OK(wxjit_patch(h, big + at, patch, n));
    expect_returns(big, 77);
    for (size_t i = 0; i < at; i++)
        CHECK(big[i] == old[i], "byte %zu before the patch is %#x, was %#x",
              i, big[i], old[i]);
    free(old);
    expect_returns(f, 3);
    printf("  patch: a 20-byte range across granules, a whole function and a "
           "range across a page boundary take effect; neighbours intact\n");
    CHECK_OK(wxjit_heap_destroy(h));
}

int main(void)
{
    wxtest_enter_wx_policy();
    wxtest_require_alias_writes_run("test_heap");
    page = (size_t)sysconf(_SC_PAGESIZE);
    buf = malloc(4 * page + 256);
    CHECK(buf, "malloc");
    printf("test_heap:\n");
    wxtest_print_backend();
    test_dense();
    test_reuse();
    test_reserve_tail();
    test_big();
    test_max_bytes();
    test_mappings();
    test_in_place();
    test_patch_range();
    free(buf);
    CHECK_EQ(wxtest_wx_mappings(), 0);
    printf("test_heap: ok\n");
    return 0;
}
