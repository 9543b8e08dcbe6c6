/* System-call failure injection, swept over every call each API operation
 * makes (invariant 6 of DESIGN.md: a call that fails returns an errno and
 * changes nothing, also when a system call inside it fails).
 *
 * For each operation (heap create, reserve scratch and in place, commit
 * and abort of both kinds, install onto a used page, a new page and a new
 * chunk, commit_batch over two runs of pages, patch, patch_atomic, free;
 * on dualmap also with WXJIT_HEAP_RW_ON_DEMAND) a fresh heap is built with
 * live code on the page the operation touches, and another thread keeps
 * calling a function on that page. The operation runs once unarmed,
 * counting its calls of each kind that can fail (N_k); then for every kind
 * and every n in 1..N_k it runs again with the n-th call failing, once
 * alone and once with every call from the n-th on failing. Then:
 * - it returned 0 and its code runs, or it returned the injected errno
 *   (or ENOMEM) and changed nothing: statistics but the mapped capacity,
 *   every live function's bytes and results, an open reservation it was
 *   given stays open (and commits or aborts on a retry);
 * - bytes outside live functions and open reservations are traps;
 * - a page of live code is r-x, or (after a failure only) becomes so at
 *   the next operation on the heap, and meanwhile its executors wait
 *   instead of crashing; there is never a W+X mapping;
 * - the heap goes on working: install, call, free.
 * Each point runs in a child process (its own heap, its own threads, a
 * timeout), so a crash or a hang is a finding and the sweep goes on. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "../src/internal.h"
#include "emit.h"
#include "wxtest.h"

#define MAX_FNS 64
#define MAX_RES 4
#define PERSISTENT 1000000u /* "every call from the n-th on" */
#define POINT_TIMEOUT 10    /* seconds: a point that takes longer hangs */
#define FIRST_VALUE 100

static size_t page;
static wxjit_backend backend;

/* The kinds a test can make fail, with the errno a real failure of that
 * call would most plausibly give; K_* index the first three. */
enum { K_MMAP, K_MUNMAP, K_MPROTECT };
static const struct {
    enum wxj_os_call kind;
    const char *name;
    int err;
} kinds[] = {
    {WXJ_CALL_MMAP, "mmap", ENOMEM},
    {WXJ_CALL_MUNMAP, "munmap", EINVAL},
    {WXJ_CALL_MPROTECT, "mprotect", ENOMEM},
    {WXJ_CALL_OBJECT, "object", EMFILE},
    {WXJ_CALL_FTRUNCATE, "ftruncate", ENOSPC},
    {WXJ_CALL_PWRITE, "pwrite", EIO},
};
#define NKINDS (sizeof(kinds) / sizeof(kinds[0]))

/* ---- the state one point builds and checks (in its child) ------------- */
struct fn {
    uint8_t *exec;
    size_t size;
    int32_t value;
    uint8_t *bytes; /* what must be at exec */
};

struct res_meta {
    uint8_t *exec; /* as reserved: the reservation's fields are cleared
                      when it is consumed */
    size_t size, used;
    int32_t value;
    bool in_place, open;
    bool abort_it; /* closed by abort (else commit) when still open */
};

static struct {
    wxjit_heap *h;
    unsigned flags;
    struct fn fns[MAX_FNS];
    size_t nfns;
    wxjit_reservation rv[MAX_RES]; /* contiguous for commit_batch */
    struct res_meta rm[MAX_RES];
    size_t nres;
    int32_t next_value;
    /* what the operation produced or aims at */
    void *installed;
    size_t target;
    int32_t new_value;
    /* expected statistics deltas, set by the scenario's `done` */
    int64_t d_installs, d_frees, d_live;
    /* the executor: calls fns[exec_idx] during the operation */
    size_t exec_idx;
    uint8_t *exec_fn;
    int32_t exec_want;
    pthread_t executor;
    bool executing;
    _Atomic bool exec_started, exec_stop;
    _Atomic uint64_t exec_calls, exec_bad;
} C;

/* What a point's child reports to the parent (shared memory). */
struct outcome {
    int done; /* the child reached the end of its checks */
    int ret;
    int deferred; /* live pages not r-x right after a failure */
    uint64_t calls[NKINDS];
    char stage[96]; /* the last step the child began, for a crash */
};

static struct outcome *outcome;

static void stage(const char *what)
{
    snprintf(outcome->stage, sizeof(outcome->stage), "%s", what);
}

static void emit_fn(uint8_t *buf, size_t size, int32_t v)
{
    memset(buf, 0, size);
    emit_return_int_patchable(buf, v);
}

static struct fn *add_fn(void *exec, size_t size, int32_t v,
                         const uint8_t *bytes)
{
    CHECK(C.nfns < MAX_FNS, "too many functions");
    struct fn *f = &C.fns[C.nfns++];
    f->exec = exec;
    f->size = size;
    f->value = v;
    f->bytes = malloc(size);
    CHECK(f->bytes, "malloc");
    memcpy(f->bytes, bytes, size);
    return f;
}

static void drop_fn(size_t i)
{
    free(C.fns[i].bytes);
    C.fns[i] = C.fns[--C.nfns];
}

static void install_fn(size_t size)
{
    uint8_t *buf = malloc(size);
    void *exec;
    CHECK(buf, "malloc");
    int32_t v = C.next_value++;
    emit_fn(buf, size, v);
    CHECK_OK(wxjit_install(C.h, buf, size, 0, &exec));
    add_fn(exec, size, v, buf);
    free(buf);
}

/* Reserves size bytes and writes a function returning a new value into
 * the write view; `used` is what will be committed. Returns its index. */
static size_t reserve_fn(size_t size, unsigned flags, size_t used)
{
    size_t i = C.nres;
    CHECK(i < MAX_RES, "too many reservations");
    CHECK_OK(wxjit_reserve(C.h, size, 0, flags, &C.rv[i]));
    C.nres++;
    struct res_meta *m = &C.rm[i];
    *m = (struct res_meta){C.rv[i].exec,
                           size,
                           used,
                           C.next_value++,
                           flags & WXJIT_RESERVE_IN_PLACE,
                           true,
                           false};
    emit_fn(C.rv[i].write, size, m->value);
    return i;
}

/* A reservation that was consumed by commit: its code is live now. */
static void res_committed(size_t i)
{
    struct res_meta *m = &C.rm[i];
    uint8_t *bytes = malloc(m->size);
    CHECK(bytes, "malloc");
    emit_fn(bytes, m->size, m->value);
    CHECK(C.rv[i].exec == NULL, "reservation %zu committed but not cleared",
          i);
    add_fn(m->exec, m->used, m->value, bytes);
    free(bytes);
    m->open = false;
}

static size_t granule_bytes(size_t n)
{
    return (n + WXJ_GRANULE - 1) / WXJ_GRANULE * WXJ_GRANULE;
}

static bool on_same_pages(const uint8_t *a, size_t alen, const uint8_t *b,
                          size_t blen)
{
    return wxtest_page_of(a) <= wxtest_page_of(b + blen - 1) &&
           wxtest_page_of(b) <= wxtest_page_of(a + alen - 1);
}

/* toggle: f lies on a page an open in-place reservation holds writable
 * (its executors wait; its reserving thread must not call it). */
static bool held(const struct fn *f)
{
    if (backend != WXJIT_BACKEND_TOGGLE)
        return false;
    for (size_t i = 0; i < C.nres; i++)
        if (C.rm[i].open && C.rm[i].in_place &&
            on_same_pages(f->exec, f->size, C.rm[i].exec, C.rm[i].size))
            return true;
    return false;
}

/* ---- the executor and other threads ------------------------------------ */
static void *executor_main(void *unused)
{
    (void)unused;
    int_fn fn = as_fn(C.exec_fn);
    int32_t want = C.exec_want;
    atomic_store(&C.exec_started, true);
    while (!atomic_load(&C.exec_stop)) {
        if (fn() != want)
            atomic_fetch_add(&C.exec_bad, 1);
        atomic_fetch_add(&C.exec_calls, 1);
    }
    return NULL;
}

static void executor_start(void)
{
    const struct fn *f = &C.fns[C.exec_idx];
    C.exec_fn = f->exec;
    C.exec_want = f->value;
    CHECK(pthread_create(&C.executor, NULL, executor_main, NULL) == 0,
          "pthread_create");
    C.executing = true;
    while (!atomic_load(&C.exec_started))
        sched_yield();
    /* On a page nobody holds: wait until it really runs the code. */
    while (!held(f) && atomic_load(&C.exec_calls) == 0)
        sched_yield();
}

static void executor_stop(void)
{
    if (!C.executing)
        return;
    atomic_store(&C.exec_stop, true);
    pthread_join(C.executor, NULL);
    C.executing = false;
    CHECK(atomic_load(&C.exec_bad) == 0,
          "the executor of the function at %p saw a wrong result %llu of "
          "%llu times",
          (void *)C.exec_fn, (unsigned long long)C.exec_bad,
          (unsigned long long)C.exec_calls);
}

/* Calls every live function (all, or those on r-x pages nobody holds)
 * and compares its result and bytes. */
static size_t call_fns(bool only_safe)
{
    size_t called = 0;
    for (size_t i = 0; i < C.nfns; i++) {
        struct fn *f = &C.fns[i];
        char perms[5];
        if (only_safe && (held(f) || !wxtest_exec_only(f->exec, perms)))
            continue;
        int got = as_fn(f->exec)();
        CHECK(got == f->value, "function %zu at %p returned %d, not %d", i,
              (void *)f->exec, got, f->value);
        called++;
    }
    return called;
}

static void *call_all_main(void *unused)
{
    (void)unused;
    call_fns(false);
    return NULL;
}

static void call_all_from_another_thread(void)
{
    pthread_t t;
    CHECK(pthread_create(&t, NULL, call_all_main, NULL) == 0,
          "pthread_create");
    pthread_join(t, NULL);
}

/* ---- checks ------------------------------------------------------------- */
static void check_bytes(void)
{
    for (size_t i = 0; i < C.nfns; i++) {
        struct fn *f = &C.fns[i];
        for (size_t k = 0; k < f->size; k++)
            CHECK(f->exec[k] == f->bytes[k],
                  "function %zu at %p (returns %d): byte %zu is %#x, "
                  "expected %#x",
                  i, (void *)f->exec, f->value, k, f->exec[k], f->bytes[k]);
    }
}

static bool in_code(const uint8_t *p)
{
    for (size_t i = 0; i < C.nfns; i++)
        if (p >= C.fns[i].exec && p < C.fns[i].exec + C.fns[i].size)
            return true;
    for (size_t i = 0; i < C.nres; i++)
        if (C.rm[i].open && p >= C.rm[i].exec &&
            p < C.rm[i].exec + C.rm[i].size)
            return true;
    return false;
}

/* Every byte of a page holding live code that is neither live code nor
 * reserved is a trap: freed space, unused tails and bytes a failed call
 * wrote and had to take back. */
static void check_traps(void)
{
    for (size_t i = 0; i < C.nfns; i++) {
        const uint8_t *pg = (const uint8_t *)wxtest_page_of(C.fns[i].exec);
        for (size_t k = 0; k < page; k++)
            CHECK(in_code(pg + k) || pg[k] == emit_trap_byte(pg + k),
                  "byte at %p (page of function %zu at %p) is %#x, outside "
                  "any live function or open reservation, not %s",
                  (void *)(pg + k), i, (void *)C.fns[i].exec, pg[k],
                  EMIT_TRAP_NAME);
    }
}

/* toggle: whether a writer holds the page of addr (WRITING in its page
 * word, read through the internal header): then its executors wait in the
 * fault handler; on a page that is not executable and not held they are
 * forwarded a SIGSEGV after one retry. */
static bool writer_holds(const void *addr)
{
    struct wxj_chunk *c = wxj_chunk_find(C.h, addr);
    CHECK(c, "%p is in no chunk of the heap", addr);
    size_t i = (size_t)((const uint8_t *)addr - c->base) / page;
    return atomic_load(&c->pages[i].state) & WXJ_PAGE_WRITING;
}

/* Live functions whose page is not r-x (those on pages an in-place
 * reservation holds excepted); with strict, any is a failure, and
 * without, such a page must at least be held (executors wait). Open
 * in-place reservations must keep their write view writable and (toggle)
 * their pages held. */
static int check_pages(bool strict, const char *when)
{
    int bad = 0;
    for (size_t i = 0; i < C.nfns; i++) {
        char perms[5] = "?";
        struct fn *f = &C.fns[i];
        if (held(f))
            continue;
        const uint8_t *last = f->exec + f->size - 1;
        if (wxtest_exec_only(f->exec, perms) && wxtest_exec_only(last, perms))
            continue;
        CHECK(!strict,
              "%s: function %zu at %p (returns %d) is on a page "
              "mapped %s, not r-x",
              when, i, (void *)f->exec, f->value, perms);
        bool waits = backend != WXJIT_BACKEND_TOGGLE ||
                     (writer_holds(f->exec) && writer_holds(last));
        CHECK(waits,
              "%s: function %zu at %p (returns %d) is on a page mapped %s "
              "that no writer holds: its executors crash",
              when, i, (void *)f->exec, f->value, perms);
        bad++;
    }
    for (size_t i = 0; i < C.nres; i++) {
        char perms[5] = "?";
        const struct res_meta *m = &C.rm[i];
        if (!m->open || !m->in_place)
            continue;
        CHECK(wxtest_perms_at(C.rv[i].write, perms) && perms[1] == 'w',
              "%s: the write view %p of the open in-place reservation at %p "
              "is mapped %s, not writable",
              when, C.rv[i].write, (void *)m->exec, perms);
        bool kept =
            backend != WXJIT_BACKEND_TOGGLE ||
            (writer_holds(m->exec) && writer_holds(m->exec + m->size - 1));
        CHECK(kept,
              "%s: the pages of the open in-place reservation at %p are "
              "not held (mapped %s): its neighbours' executors crash",
              when, (void *)m->exec, perms);
    }
    CHECK_EQ(wxtest_wx_mappings(), 0);
    return bad;
}

/* made: the system calls the calling thread made during the call, in
 * all (wxj_os_calls) and by kind; a successful call counts exactly those. */
static void check_stats(const wxjit_stats *b, const wxjit_stats *a,
                        bool failed, uint64_t made, uint64_t made_mprotect,
                        uint64_t made_map)
{
#define U(x) (unsigned long long)(x)
    bool as_expected = (int64_t)(a->installs - b->installs) == C.d_installs &&
                       (int64_t)(a->frees - b->frees) == C.d_frees &&
                       (int64_t)(a->bytes_live - b->bytes_live) == C.d_live &&
                       a->faults_forwarded == b->faults_forwarded &&
                       a->bytes_mapped >= b->bytes_mapped &&
                       a->pages >= b->pages && a->chunks >= b->chunks &&
                       (!failed || (a->syscalls == b->syscalls &&
                                    a->mprotect_calls == b->mprotect_calls &&
                                    a->map_calls == b->map_calls));
    CHECK(as_expected,
          "statistics after a %s call (expected installs %+lld frees "
          "%+lld bytes_live %+lld%s): installs %llu->%llu frees "
          "%llu->%llu bytes_live %llu->%llu syscalls %llu->%llu "
          "mprotect_calls %llu->%llu map_calls %llu->%llu faults_forwarded "
          "%llu->%llu bytes_mapped %llu->%llu pages %llu->%llu chunks "
          "%llu->%llu",
          failed ? "failed" : "successful", (long long)C.d_installs,
          (long long)C.d_frees, (long long)C.d_live,
          failed ? ", every call counter unchanged" : "", U(b->installs),
          U(a->installs), U(b->frees), U(a->frees), U(b->bytes_live),
          U(a->bytes_live), U(b->syscalls), U(a->syscalls),
          U(b->mprotect_calls), U(a->mprotect_calls), U(b->map_calls),
          U(a->map_calls), U(b->faults_forwarded), U(a->faults_forwarded),
          U(b->bytes_mapped), U(a->bytes_mapped), U(b->pages), U(a->pages),
          U(b->chunks), U(a->chunks));
    CHECK(failed || (a->syscalls - b->syscalls == made &&
                     a->mprotect_calls - b->mprotect_calls == made_mprotect &&
                     a->map_calls - b->map_calls == made_map),
          "a successful call made %llu system calls (%llu mprotect, %llu "
          "mmap/munmap), statistics counted syscalls %llu->%llu "
          "mprotect_calls %llu->%llu map_calls %llu->%llu",
          U(made), U(made_mprotect), U(made_map), U(b->syscalls),
          U(a->syscalls), U(b->mprotect_calls), U(a->mprotect_calls),
          U(b->map_calls), U(a->map_calls));
#undef U
    /* faults_retried is not compared: the executor's faults while the
     * call held its page are real, whatever the call returned. */
}

/* Open reservations left: each must still be one (a failed commit or
 * abort leaves it open) and close now. */
static void close_open_reservations(void)
{
    for (size_t i = 0; i < C.nres; i++) {
        struct res_meta *m = &C.rm[i];
        if (!m->open)
            continue;
        CHECK(C.rv[i].exec == m->exec,
              "open reservation %zu: exec %p, "
              "reserved at %p",
              i, C.rv[i].exec, (void *)m->exec);
        if (m->abort_it) {
            int err = wxjit_abort(C.h, &C.rv[i]);
            CHECK(err == 0, "aborting reservation %zu at %p again: %s", i,
                  (void *)m->exec, strerror(err));
            m->open = false;
            check_pages(true, "right after aborting it again returned 0");
        } else {
            int err = wxjit_commit(C.h, &C.rv[i], m->used);
            CHECK(err == 0, "committing reservation %zu at %p again: %s", i,
                  (void *)m->exec, strerror(err));
            res_committed(i);
            check_pages(true, "right after committing it again returned 0");
        }
    }
}

/* The heap still works: install, call, free. */
static void check_usable(void)
{
    uint8_t buf[64];
    void *exec;
    emit_fn(buf, sizeof(buf), 4242);
    int err = wxjit_install(C.h, buf, sizeof(buf), 0, &exec);
    CHECK(err == 0, "install after the call: %s", strerror(err));
    CHECK_EQ(as_fn(exec)(), 4242);
    CHECK_OK(wxjit_free(C.h, exec));
}

/* ---- the operations ------------------------------------------------------
 * setup builds the state (live code first, then the executor); op is the
 * call under test; done checks what its result implies and sets the
 * expected statistics deltas. */
struct scenario {
    const char *name;
    void (*setup)(void);
    int (*op)(void);
    void (*done)(int err);
};

static wxjit_heap *new_heap(size_t chunk_pages)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    wxjit_heap *h;
    o.chunk_size = chunk_pages * page;
    o.flags = C.flags;
    CHECK_OK(wxjit_heap_create(&o, &h));
    return h;
}

/* Live code on page 0 with room left: 8 functions of 64 bytes. */
static void setup_room(void)
{
    C.h = new_heap(4);
    for (int i = 0; i < 8; i++)
        install_fn(64);
}

/* Page 0 full (8 functions of page/8), the rest of a 4-page chunk
 * fresh: the next install of page/8 takes a new page. */
static void setup_page_full(void)
{
    C.h = new_heap(4);
    for (int i = 0; i < 8; i++)
        install_fn(page / 8);
}

/* A 2-page chunk full: the next allocation maps a new chunk. */
static void setup_chunk_full(void)
{
    C.h = new_heap(2);
    for (int i = 0; i < 16; i++)
        install_fn(page / 8);
}

static void with_executor(void (*setup)(void))
{
    setup();
    executor_start();
}

/* heap create: explicitly the backend under test, so that its probe
 * (dualmap: an object mapped twice) runs inside the call. */
static void s_create_setup(void) {}

static int s_create_op(void)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    o.backend = backend;
    o.flags = C.flags;
    return wxjit_heap_create(&o, &C.h);
}

static void s_create_done(int err)
{
    if (err) {
        CHECK(C.h == NULL, "failed create set the heap to %p", (void *)C.h);
        wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
        o.backend = backend;
        o.flags = C.flags;
        CHECK_OK(wxjit_heap_create(&o, &C.h));
    }
    install_fn(64);
}

/* reserve: scratch or in place, with room on page 0 or into a new chunk */
static unsigned reserve_flags;
static wxjit_reservation untouched;

static int s_reserve_op(void)
{
    memset(&C.rv[C.nres], 0xa5, sizeof(C.rv[0]));
    memset(&untouched, 0xa5, sizeof(untouched));
    return wxjit_reserve(C.h, 64, 0, reserve_flags, &C.rv[C.nres]);
}

static void s_reserve_done(int err)
{
    if (err) {
        CHECK(!memcmp(&C.rv[C.nres], &untouched, sizeof(untouched)),
              "a failed reserve wrote its out-parameter");
        return;
    }
    size_t i = C.nres++;
    C.rm[i] = (struct res_meta){C.rv[i].exec,
                                64,
                                64,
                                C.next_value++,
                                reserve_flags & WXJIT_RESERVE_IN_PLACE,
                                true,
                                false};
    emit_fn(C.rv[i].write, 64, C.rm[i].value);
}

static void s_reserve_room(void)
{
    reserve_flags = 0;
    with_executor(setup_room);
}
static void s_reserve_new_chunk(void)
{
    reserve_flags = 0;
    with_executor(setup_chunk_full);
}
static void s_reserve_ip_room(void)
{
    reserve_flags = WXJIT_RESERVE_IN_PLACE;
    with_executor(setup_room);
}
static void s_reserve_ip_new_chunk(void)
{
    reserve_flags = WXJIT_RESERVE_IN_PLACE;
    with_executor(setup_chunk_full);
}

/* commit / abort of a 256-byte reservation on page 0 (committing all of
 * it, or 32 bytes: the tail goes back) */
static void setup_reservation(unsigned flags, size_t used, bool abort_it)
{
    setup_room();
    executor_start();
    size_t i = reserve_fn(256, flags, used);
    C.rm[i].abort_it = abort_it;
}

static void s_commit_scratch(void)
{
    setup_reservation(0, 256, false);
}
static void s_commit_scratch_part(void)
{
    setup_reservation(0, 32, false);
}
static void s_commit_ip(void)
{
    setup_reservation(WXJIT_RESERVE_IN_PLACE, 256, false);
}
static void s_commit_ip_part(void)
{
    setup_reservation(WXJIT_RESERVE_IN_PLACE, 32, false);
}
static void s_abort_scratch(void)
{
    setup_reservation(0, 256, true);
}
static void s_abort_ip(void)
{
    setup_reservation(WXJIT_RESERVE_IN_PLACE, 256, true);
}

static int s_commit_op(void)
{
    return wxjit_commit(C.h, &C.rv[0], C.rm[0].used);
}

static void s_commit_done(int err)
{
    if (err) {
        CHECK(C.rv[0].exec == C.rm[0].exec,
              "a failed commit changed the reservation (exec %p)",
              C.rv[0].exec);
        return;
    }
    res_committed(0);
    C.d_installs = 1;
    C.d_live = (int64_t)granule_bytes(C.rm[0].used);
}

static int s_abort_op(void)
{
    return wxjit_abort(C.h, &C.rv[0]);
}

static void s_abort_done(int err)
{
    if (err) {
        CHECK(C.rv[0].exec == C.rm[0].exec,
              "a failed abort changed the reservation (exec %p)",
              C.rv[0].exec);
        return;
    }
    CHECK(C.rv[0].exec == NULL, "aborted reservation not cleared");
    C.rm[0].open = false;
}

/* install: 64 bytes onto page 0, page/8 onto a new page, page/8 into a
 * new chunk */
static size_t install_size;

static void s_install_small(void)
{
    install_size = 64;
    with_executor(setup_room);
}
static void s_install_new_page(void)
{
    install_size = page / 8;
    with_executor(setup_page_full);
}
static void s_install_new_chunk(void)
{
    install_size = page / 8;
    with_executor(setup_chunk_full);
}

static uint8_t *install_code;

static int s_install_op(void)
{
    install_code = malloc(install_size);
    CHECK(install_code, "malloc");
    C.new_value = C.next_value++;
    emit_fn(install_code, install_size, C.new_value);
    C.installed = &untouched; /* a failure must leave it alone */
    return wxjit_install(C.h, install_code, install_size, 0, &C.installed);
}

static void s_install_done(int err)
{
    if (err) {
        CHECK(C.installed == &untouched, "a failed install set exec to %p",
              C.installed);
    } else {
        add_fn(C.installed, install_size, C.new_value, install_code);
        C.d_installs = 1;
        C.d_live = (int64_t)granule_bytes(install_size);
    }
    free(install_code);
}

/* commit_batch: A on page 0 after the live code; a page-sized filler on
 * page 1; B and C on page 2 (A's page is too full for B): two runs of
 * pages, [0] and [2]. */
static void s_batch_setup(void)
{
    setup_room();
    executor_start();
    reserve_fn(page / 4, 0, page / 4);
    install_fn(page);
    reserve_fn(page * 3 / 4, 0, page * 3 / 4);
    reserve_fn(page / 8, 0, page / 16);
    CHECK(wxtest_page_of(C.rm[0].exec) == wxtest_page_of(C.fns[0].exec) &&
              wxtest_page_of(C.rm[1].exec) ==
                  wxtest_page_of(C.fns[0].exec) + 2 * page &&
              wxtest_page_of(C.rm[2].exec) == wxtest_page_of(C.rm[1].exec),
          "batch layout: A %p B %p C %p, code at %p", (void *)C.rm[0].exec,
          (void *)C.rm[1].exec, (void *)C.rm[2].exec, (void *)C.fns[0].exec);
}

static int s_batch_op(void)
{
    size_t used[MAX_RES];
    for (size_t i = 0; i < C.nres; i++)
        used[i] = C.rm[i].used;
    return wxjit_commit_batch(C.h, C.rv, used, C.nres);
}

/* A failed batch commits the reservations before the failing run and
 * leaves the others open (as the header says). */
static void s_batch_done(int err)
{
    for (size_t i = 0; i < C.nres; i++) {
        if (C.rv[i].exec == NULL) {
            res_committed(i);
            C.d_installs++;
            C.d_live += (int64_t)granule_bytes(C.rm[i].used);
        } else {
            CHECK(err != 0, "batch returned 0, reservation %zu still open", i);
            CHECK(C.rv[i].exec == C.rm[i].exec, "reservation %zu changed", i);
        }
    }
}

/* commit_batch of an in-place reservation on page 0 (closed on its own)
 * and two scratch ones after it (one run) */
static void s_batch_ip_setup(void)
{
    setup_room();
    executor_start();
    reserve_fn(256, WXJIT_RESERVE_IN_PLACE, 256);
    reserve_fn(page / 4, 0, page / 4);
    reserve_fn(page / 4, 0, 64);
    /* toggle: the held page 0 is skipped, B and C go to page 1; dualmap
     * holds no page, they may share page 0. */
    CHECK(wxtest_page_of(C.rm[0].exec) == wxtest_page_of(C.fns[0].exec) &&
              (backend != WXJIT_BACKEND_TOGGLE ||
               wxtest_page_of(C.rm[1].exec) ==
                   wxtest_page_of(C.rm[0].exec) + page),
          "batch layout: A %p B %p C %p, code at %p", (void *)C.rm[0].exec,
          (void *)C.rm[1].exec, (void *)C.rm[2].exec, (void *)C.fns[0].exec);
}

/* A function of 1.5 pages (fns[0]) across pages 0 and 1, small ones after
 * it on page 1; the call under test patches or frees the big one, whose
 * window spans both pages, while fns[1] runs. */
static void s_across_setup(void)
{
    C.h = new_heap(4);
    install_fn(page + page / 2);
    for (int i = 0; i < 8; i++)
        install_fn(64);
    CHECK(wxtest_page_of(C.fns[1].exec) ==
              wxtest_page_of(C.fns[0].exec) + page,
          "layout: big function at %p, next at %p", (void *)C.fns[0].exec,
          (void *)C.fns[1].exec);
    C.exec_idx = 1;
    executor_start();
    C.target = 0;
}

/* 8 bytes that straddle the page boundary inside the big function (its
 * padding, never executed). */
static int s_patch_across_op(void)
{
    static const uint8_t bytes[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    C.new_value = C.fns[0].value;
    return wxjit_patch(C.h, C.fns[0].exec + page - 4, bytes, sizeof(bytes));
}

static void s_patch_across_done(int err)
{
    if (err == 0)
        for (int i = 0; i < 8; i++)
            C.fns[0].bytes[page - 4 + i] = (uint8_t)(i + 1);
}

/* patch, patch_atomic and free of fns[1] (fns[0] is the executor's) */
static void s_live_setup(void)
{
    with_executor(setup_room);
    C.target = 1;
}

static int s_patch_op(void)
{
    C.new_value = C.next_value++;
    return wxjit_patch(C.h, C.fns[C.target].exec + EMIT_PATCHABLE_IMM_OFFSET,
                       &C.new_value, sizeof(C.new_value));
}

static int s_patch_atomic_op(void)
{
    C.new_value = C.next_value++;
    return wxjit_patch_atomic(C.h,
                              C.fns[C.target].exec + EMIT_PATCHABLE_IMM_OFFSET,
                              (uint32_t)C.new_value, sizeof(C.new_value));
}

static void s_patch_done(int err)
{
    if (err)
        return;
    struct fn *f = &C.fns[C.target];
    f->value = C.new_value;
    memcpy(f->bytes + EMIT_PATCHABLE_IMM_OFFSET, &C.new_value,
           sizeof(C.new_value));
}

static int s_free_op(void)
{
    return wxjit_free(C.h, C.fns[C.target].exec);
}

static void s_free_done(int err)
{
    if (err)
        return;
    struct fn *f = &C.fns[C.target];
    CHECK(emit_is_trap_fill(f->exec, f->size),
          "freed function at %p is not trap-filled", (void *)f->exec);
    C.d_frees = 1;
    C.d_live = -(int64_t)granule_bytes(f->size);
    drop_fn(C.target);
}

static const struct scenario scenarios[] = {
    {"heap create", s_create_setup, s_create_op, s_create_done},
    {"reserve scratch", s_reserve_room, s_reserve_op, s_reserve_done},
    {"reserve scratch (new chunk)", s_reserve_new_chunk, s_reserve_op,
     s_reserve_done},
    {"reserve in place", s_reserve_ip_room, s_reserve_op, s_reserve_done},
    {"reserve in place (new chunk)", s_reserve_ip_new_chunk, s_reserve_op,
     s_reserve_done},
    {"commit scratch", s_commit_scratch, s_commit_op, s_commit_done},
    {"commit scratch (used < size)", s_commit_scratch_part, s_commit_op,
     s_commit_done},
    {"commit in place", s_commit_ip, s_commit_op, s_commit_done},
    {"commit in place (used < size)", s_commit_ip_part, s_commit_op,
     s_commit_done},
    {"abort scratch", s_abort_scratch, s_abort_op, s_abort_done},
    {"abort in place", s_abort_ip, s_abort_op, s_abort_done},
    {"install (used page)", s_install_small, s_install_op, s_install_done},
    {"install (new page)", s_install_new_page, s_install_op, s_install_done},
    {"install (new chunk)", s_install_new_chunk, s_install_op, s_install_done},
    {"commit_batch (2 runs)", s_batch_setup, s_batch_op, s_batch_done},
    {"commit_batch (in place + scratch)", s_batch_ip_setup, s_batch_op,
     s_batch_done},
    {"patch", s_live_setup, s_patch_op, s_patch_done},
    {"patch (across 2 pages)", s_across_setup, s_patch_across_op,
     s_patch_across_done},
    {"patch_atomic", s_live_setup, s_patch_atomic_op, s_patch_done},
    {"free", s_live_setup, s_free_op, s_free_done},
    {"free (across 2 pages)", s_across_setup, s_free_op, s_free_done},
};
#define NSCENARIOS (sizeof(scenarios) / sizeof(scenarios[0]))

/* ---- one point, in a child ----------------------------------------------
 * A variant: heap flags, and (dualmap) the first way to get a shared
 * memory object, whose fallbacks are swept with the calls that map a new
 * chunk. */
struct variant {
    unsigned flags;
    const char *object; /* WXJIT_DUALMAP_OBJECT; NULL: the default */
    const char *label;
};

static const struct variant variants[] = {
    {0, NULL, ""},
    {WXJIT_HEAP_RW_ON_DEMAND, NULL, " [RW_ON_DEMAND]"},
    {0, "shm", " [object shm]"},
    {0, "tmpfile", " [object tmpfile]"},
};

struct point {
    const struct scenario *s;
    const struct variant *v;
    int kind; /* index into kinds[], -1: unarmed */
    uint64_t nth, count;
    struct outcome *out;
};

static void run_point(void *arg)
{
    const struct point *pt = arg;
    alarm(POINT_TIMEOUT);
    stage("setup");
    C.flags = pt->v->flags;
    if (pt->v->object)
        setenv("WXJIT_DUALMAP_OBJECT", pt->v->object, 1);
    C.next_value = FIRST_VALUE;
    pt->s->setup();
    wxjit_stats before = {0}, after;
    if (C.h)
        before = wxtest_stats_of(C.h);
    uint64_t calls[NKINDS], all = wxj_os_calls();
    for (size_t k = 0; k < NKINDS; k++)
        calls[k] = wxj_os_calls_of(kinds[k].kind);
    enum wxj_os_call kind = pt->kind >= 0 ? kinds[pt->kind].kind : 0;
    if (pt->kind >= 0)
        wxj_os_inject(kind, pt->nth, pt->count, kinds[pt->kind].err);
    bool had_heap = C.h != NULL;
    stage("the call");
    int err = pt->s->op();
    if (pt->kind >= 0)
        wxj_os_inject(kind, 1, 0, 0);
    for (size_t k = 0; k < NKINDS; k++)
        pt->out->calls[k] = wxj_os_calls_of(kinds[k].kind) - calls[k];
    all = wxj_os_calls() - all;
    pt->out->ret = err;
    CHECK(err == 0 ||
              (pt->kind >= 0 && (err == kinds[pt->kind].err || err == ENOMEM)),
          "returned %d (%s)%s", err, strerror(err),
          pt->kind >= 0 ? ", neither the injected errno nor ENOMEM"
                        : " with nothing injected");

    snprintf(outcome->stage, sizeof(outcome->stage),
             "checks after the call returned %d", err);
    pt->s->done(err);
    if (had_heap) {
        after = wxtest_stats_of(C.h);
        check_stats(&before, &after, err != 0, all, pt->out->calls[K_MPROTECT],
                    pt->out->calls[K_MMAP] + pt->out->calls[K_MUNMAP]);
    }
    check_bytes();
    check_traps();
    /* Right after a failure a page of live code may still be waiting for
     * its RX flip (executors wait meanwhile); after success never. */
    pt->out->deferred = check_pages(err == 0, err ? "right after the "
                                                    "failed call"
                                                  : "right after the call "
                                                    "returned 0");
    if (pt->out->deferred) {
        /* Executors of that code must wait, not crash: give the
         * executor time to run into the page. */
        stage("executor waiting on a page left unexecutable");
        usleep(20000);
    }
    call_fns(true);

    stage("closing open reservations");
    close_open_reservations();
    stage("install, call, free after the call");
    check_usable();
    stage("final checks");
    check_pages(true, "after closing reservations and one more install");
    check_bytes();
    check_traps();
    call_fns(false);
    stage("calls from another thread");
    call_all_from_another_thread();
    stage("stopping the executor");
    executor_stop();
    stage("heap destroy");
    CHECK_OK(wxjit_heap_destroy(C.h));
    pt->out->done = 1;
}

/* A fault that wxjit did not retry reaches this handler (installed before
 * wxjit's, which forwards to it): a thread crashed on wxjit code. Says
 * where, then the child exits with CRASHED. Async-signal-safe. */
#define CRASHED 70

static void put_hex(char *p, uintptr_t v)
{
    for (int i = 15; i >= 0; i--, v >>= 4)
        p[i] = "0123456789abcdef"[v & 15];
}

static void on_crash(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    char msg[] = "  crash: signal xx at address 0x................ (a "
                 "thread was not held by the fault handler)\n";
    msg[16] = (char)('0' + sig / 10);
    msg[17] = (char)('0' + sig % 10);
    put_hex(msg + 32, (uintptr_t)si->si_addr);
    if (write(2, msg, sizeof(msg) - 1) < 0)
        _exit(CRASHED);
    _exit(CRASHED);
}

static void catch_crashes(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_crash;
    sa.sa_flags = SA_SIGINFO;
    CHECK(sigaction(SIGSEGV, &sa, NULL) == 0, "sigaction");
}

/* ---- the sweep (parent) ------------------------------------------------- */
struct tally {
    unsigned points, ok, failed_clean, deferred, bad;
};

static unsigned total_points, total_bad;

static const char *describe(const struct point *pt, char *buf, size_t len)
{
    if (pt->kind < 0)
        snprintf(buf, len, "%s%s, nothing injected", pt->s->name,
                 pt->v->label);
    else
        snprintf(buf, len, "%s%s, %s call #%llu %s (%s)", pt->s->name,
                 pt->v->label, kinds[pt->kind].name,
                 (unsigned long long)pt->nth,
                 pt->count == 1 ? "fails" : "and all later fail",
                 strerror(kinds[pt->kind].err));
    return buf;
}

/* Runs one point; false (and says why) if it failed. */
static bool sweep_point(const struct point *pt, struct tally *t)
{
    memset(pt->out, 0, sizeof(*pt->out));
    int status = wxtest_in_child(run_point, (void *)pt);
    char what[256], how[96];
    total_points++;
    if (t)
        t->points++;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && pt->out->done) {
        if (t) {
            t->ok += pt->out->ret == 0;
            t->failed_clean += pt->out->ret != 0;
            t->deferred += pt->out->deferred != 0;
        }
        return true;
    }
    total_bad++;
    if (t)
        t->bad++;
    bool crashed = WIFEXITED(status) && WEXITSTATUS(status) == CRASHED;
    fprintf(stderr, "  FAILED: %s: child %s%s during %s\n",
            describe(pt, what, sizeof(what)),
            crashed ? "crashed (SIGSEGV)"
                    : wxtest_describe(status, how, sizeof(how)),
            WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM
                ? " (hung: timed out)"
                : "",
            pt->out->stage);
    return false;
}

static void sweep(const struct scenario *s, const struct variant *v,
                  struct outcome *out)
{
    struct point pt = {s, v, -1, 0, 0, out};
    char what[256];
    if (!sweep_point(&pt, NULL)) {
        printf("  %s: fails with nothing injected; not swept\n",
               describe(&pt, what, sizeof(what)));
        return;
    }
    uint64_t n[NKINDS];
    memcpy(n, out->calls, sizeof(n));
    printf("  %s%s:", s->name, v->label);
    for (size_t k = 0; k < NKINDS; k++)
        if (n[k])
            printf(" %s %llu", kinds[k].name, (unsigned long long)n[k]);
    printf("%s\n", n[0] + n[1] + n[2] + n[3] + n[4] + n[5]
                       ? ""
                       : " no system call that can fail");
    fflush(stdout);
    for (size_t k = 0; k < NKINDS; k++) {
        if (!n[k])
            continue;
        struct tally t = {0};
        for (uint64_t i = 1; i <= n[k]; i++)
            for (int persistent = 0; persistent < 2; persistent++) {
                pt.kind = (int)k;
                pt.nth = i;
                pt.count = persistent ? PERSISTENT : 1;
                sweep_point(&pt, &t);
            }
        printf("    %-9s %3u points: %u returned 0, %u failed cleanly "
               "(%u of them left live code unexecutable until the next "
               "call), %u FAILED\n",
               kinds[k].name, t.points, t.ok, t.failed_clean, t.deferred,
               t.bad);
        fflush(stdout);
    }
}

/* With an argument, only the operations whose name contains it. */
int main(int argc, char **argv)
{
    wxtest_enter_wx_policy();
    wxtest_require_alias_writes_run("test_inject");
    page = (size_t)sysconf(_SC_PAGESIZE);
    catch_crashes();
    CHECK_OK(wxjit_fault_handler_install());
    wxjit_heap *h;
    CHECK_OK(wxjit_heap_create(NULL, &h));
    CHECK_OK(wxjit_heap_backend(h, &backend));
    CHECK_OK(wxjit_heap_destroy(h));
    const char *name;
    CHECK_OK(wxjit_backend_name(backend, &name));
    printf("test_inject (%s)\n", name);
    struct outcome *out = outcome =
        mmap(NULL, sizeof(*out), PROT_READ | PROT_WRITE,
             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(out != MAP_FAILED, "mmap: %s", strerror(errno));

    /* dualmap: every operation also with RW views on demand; the other
     * objects only where a chunk is mapped. */
    size_t nvariants = backend == WXJIT_BACKEND_DUALMAP
                           ? sizeof(variants) / sizeof(variants[0])
                           : 1;
    for (size_t v = 0; v < nvariants; v++)
        for (size_t i = 0; i < NSCENARIOS; i++)
            if ((argc < 2 || strstr(scenarios[i].name, argv[1])) &&
                (!variants[v].object || strstr(scenarios[i].name, "create") ||
                 strstr(scenarios[i].name, "chunk")))
                sweep(&scenarios[i], &variants[v], out);
    CHECK_EQ(wxtest_wx_mappings(), 0);
    printf("test_inject: %u points, %u failed\n", total_points, total_bad);
    CHECK(total_bad == 0, "%u of %u points failed (listed above)", total_bad,
          total_points);
    printf("test_inject: ok\n");
    return 0;
}
