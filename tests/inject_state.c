/* The failure-injection sweep's state for one point: the live functions
 * and open reservations a scenario builds, the executor thread that calls
 * one of them during the call under test, and the checks after the call
 * (statistics, bytes, traps, page permissions, the heap still usable). */
#include <sched.h>

#include "inject_harness.h"

struct inject_state C;

void emit_fn(uint8_t *buf, size_t size, int32_t v)
{
    memset(buf, 0, size);
    emit_return_int_patchable(buf, v);
}

struct fn *add_fn(void *exec, size_t size, int32_t v, const uint8_t *bytes)
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

void drop_fn(size_t i)
{
    free(C.fns[i].bytes);
    C.fns[i] = C.fns[--C.nfns];
}

void ghost_fn(size_t i)
{
    CHECK(C.nghosts < sizeof(C.ghosts) / sizeof(C.ghosts[0]),
          "too many ghosts");
    C.ghosts[C.nghosts++] = C.fns[i];
    C.fns[i] = C.fns[--C.nfns];
}

void install_fn(size_t size)
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
size_t reserve_fn(size_t size, unsigned flags, size_t used)
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
void res_committed(size_t i)
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

size_t granule_bytes(size_t n)
{
    return (n + WXJ_GRANULE - 1) / WXJ_GRANULE * WXJ_GRANULE;
}

static bool on_same_pages(const uint8_t *a, size_t alen, const uint8_t *b,
                          size_t blen)
{
    return wxtest_page_of(a) <= wxtest_page_of(b + blen - 1) &&
           wxtest_page_of(b) <= wxtest_page_of(a + alen - 1);
}

/* toggle: f lies on a page an open in-place reservation or window holds
 * writable (its executors wait; the holding thread must not call it). */
static bool held(const struct fn *f)
{
    if (backend != WXJIT_BACKEND_TOGGLE)
        return false;
    if (C.win.open && on_same_pages(f->exec, f->size,
                                    C.fns[C.win.fn].exec + C.win.off,
                                    C.win.len))
        return true;
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

void executor_start(void)
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

void executor_stop(void)
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

/* WXJIT_HEAP_DEFER_TRAP_FILL: frees the last function on the executor's
 * page that is neither the executor's nor the call's target, so that the
 * call under test finds a trap fill pending on the page it most likely
 * writes (or reuses that very space). */
void defer_a_free(void)
{
    const uint8_t *pg =
        (const uint8_t *)wxtest_page_of(C.fns[C.exec_idx].exec);
    for (size_t i = C.nfns; i-- > 0;) {
        struct fn *f = &C.fns[i];
        if (i == C.exec_idx || i == C.target ||
            (const uint8_t *)wxtest_page_of(f->exec) != pg)
            continue;
        CHECK_OK(wxjit_free(C.h, f->exec));
        CHECK(!memcmp(f->exec, f->bytes, f->size),
              "a deferred free changed the code at %p", (void *)f->exec);
        ghost_fn(i);
        if (C.exec_idx == C.nfns)
            C.exec_idx = i;
        if (C.target == C.nfns)
            C.target = i;
        return;
    }
    CHECK(0, "no function to free next to the executor's at %p", (void *)pg);
}

bool pending_fill(const uint8_t *p)
{
    struct wxj_chunk *c = C.h ? wxj_chunk_find(C.h, p) : NULL;
    if (!c || !c->stale || !wxj_bit_get(c->stale, wxj_granule_of(c, p)))
        return false;
    for (size_t i = C.nghosts; i-- > 0;) { /* the newest at p counts */
        const struct fn *g = &C.ghosts[i];
        if (p >= g->exec && p < g->exec + g->size)
            return *p == g->bytes[p - g->exec];
    }
    return false;
}

/* Calls every live function (all, or those on r-x pages nobody holds)
 * and compares its result and bytes. */
size_t call_fns(bool only_safe)
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

void call_all_from_another_thread(void)
{
    pthread_t t;
    CHECK(pthread_create(&t, NULL, call_all_main, NULL) == 0,
          "pthread_create");
    pthread_join(t, NULL);
}

/* ---- checks ------------------------------------------------------------- */
void check_bytes(void)
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
void check_traps(void)
{
    for (size_t i = 0; i < C.nfns; i++) {
        const uint8_t *pg = (const uint8_t *)wxtest_page_of(C.fns[i].exec);
        for (size_t k = 0; k < page; k++)
            CHECK(in_code(pg + k) || pg[k] == emit_trap_byte(pg + k) ||
                      pending_fill(pg + k),
                  "byte at %p (page of function %zu at %p) is %#x, outside "
                  "any live function, open reservation or freed code whose "
                  "trap fill is pending, not %s",
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
int check_pages(bool strict, const char *when)
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
void check_stats(const wxjit_stats *b, const wxjit_stats *a, bool failed,
                 uint64_t made, uint64_t made_mprotect, uint64_t made_map)
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
void close_open_reservations(void)
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

int open_window(size_t fn, size_t off, const uint8_t *bytes, size_t len)
{
    CHECK(len <= sizeof(C.win.bytes) && off + len <= C.fns[fn].size,
          "window of %zu bytes at %zu", len, off);
    int err = wxjit_window_open(C.h, C.fns[fn].exec + off, len, &C.win.write);
    if (err == 0) {
        C.win.open = true;
        C.win.fn = fn;
        C.win.off = off;
        C.win.len = len;
        memcpy(C.win.bytes, bytes, len);
    }
    return err;
}

void window_written(void)
{
    struct fn *f = &C.fns[C.win.fn];
    memcpy(f->bytes + C.win.off, C.win.bytes, C.win.len);
    if (C.win.off == EMIT_PATCHABLE_IMM_OFFSET &&
        C.win.len == sizeof(f->value))
        memcpy(&f->value, C.win.bytes, sizeof(f->value));
}

/* A window the call opened is written and closed now; one it failed to
 * close (it stays open, for a retry) closes now. */
void close_open_window(void)
{
    if (!C.win.open)
        return;
    struct fn *f = &C.fns[C.win.fn];
    memcpy(C.win.write, C.win.bytes, C.win.len);
    int err = wxjit_window_close(C.h, f->exec + C.win.off, C.win.len);
    CHECK(err == 0, "closing the window at %p again: %s",
          (void *)(f->exec + C.win.off), strerror(err));
    C.win.open = false;
    window_written();
    check_pages(true, "right after closing the window returned 0");
}

/* The heap still works: install, call, free. */
void check_usable(void)
{
    uint8_t buf[64];
    void *exec;
    emit_fn(buf, sizeof(buf), 4242);
    int err = wxjit_install(C.h, buf, sizeof(buf), 0, &exec);
    CHECK(err == 0, "install after the call: %s", strerror(err));
    CHECK_EQ(as_fn(exec)(), 4242);
    add_fn(exec, sizeof(buf), 4242, buf);
    CHECK_OK(wxjit_free(C.h, exec));
    if (C.flags & WXJIT_HEAP_DEFER_TRAP_FILL)
        ghost_fn(C.nfns - 1);
    else
        drop_fn(C.nfns - 1);
}
