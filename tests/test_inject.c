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
 * timeout), so a crash or a hang is a finding and the sweep goes on.
 *
 * This file holds the operations swept; the state, the checks and the
 * sweep are the harness's (inject_harness.h). */
#include "inject_harness.h"

/* ---- the operations ------------------------------------------------------
 * What each does is in struct scenario (inject_harness.h); the harness
 * runs, checks and sweeps them. */
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
    if (C.flags & WXJIT_HEAP_DEFER_TRAP_FILL)
        CHECK(!memcmp(f->exec, f->bytes, f->size),
              "deferred free changed the code at %p", (void *)f->exec);
    else
        CHECK(emit_is_trap_fill(f->exec, f->size),
              "freed function at %p is not trap-filled", (void *)f->exec);
    C.d_frees = 1;
    C.d_live = -(int64_t)granule_bytes(f->size);
    if (C.flags & WXJIT_HEAP_DEFER_TRAP_FILL)
        ghost_fn(C.target);
    else
        drop_fn(C.target);
}

/* Windows on live code: over fns[1]'s immediate (fns[0] is the
 * executor's, on the same page), or over 8 bytes of the big function's
 * padding across its two pages. The call under test opens the window
 * (written and closed after the checks), or closes it once written. */
static int s_window_imm(void)
{
    C.new_value = C.next_value++;
    return open_window(C.target, EMIT_PATCHABLE_IMM_OFFSET,
                       (const uint8_t *)&C.new_value, sizeof(C.new_value));
}

static int s_window_across(void)
{
    static const uint8_t bytes[8] = {8, 7, 6, 5, 4, 3, 2, 1};
    return open_window(0, page - 4, bytes, sizeof(bytes));
}

static int s_window_close_op(void)
{
    return wxjit_window_close(C.h, C.fns[C.win.fn].exec + C.win.off,
                              C.win.len);
}

/* The window is open and written before the call under test closes it. */
static void window_ready(int (*open)(void))
{
    CHECK_OK(open());
    memcpy(C.win.write, C.win.bytes, C.win.len);
}

static void s_window_close_imm(void)
{
    s_live_setup();
    window_ready(s_window_imm);
}

static void s_window_close_across(void)
{
    s_across_setup();
    window_ready(s_window_across);
}

static void s_window_open_done(int err)
{
    (void)err; /* the window, if open, is written and closed later */
}

/* Closed: the new bytes are the function's. Still open: toggle's and
 * dualmap's writes went to the code's own bytes (dualmap's through its
 * alias), procmem's to a shadow copy that only the close writes. */
static void s_window_close_done(int err)
{
    if (err == 0) {
        C.win.open = false;
        window_written();
    } else if (backend != WXJIT_BACKEND_PROCMEM) {
        memcpy(C.fns[C.win.fn].bytes + C.win.off, C.win.bytes, C.win.len);
    }
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
    {"window open", s_live_setup, s_window_imm, s_window_open_done},
    {"window open (across 2 pages)", s_across_setup, s_window_across,
     s_window_open_done},
    {"window close", s_window_close_imm, s_window_close_op,
     s_window_close_done},
    {"window close (across 2 pages)", s_window_close_across,
     s_window_close_op, s_window_close_done},
    {"free (across 2 pages)", s_across_setup, s_free_op, s_free_done},
};
#define NSCENARIOS (sizeof(scenarios) / sizeof(scenarios[0]))

/* With an argument, only the operations whose name contains it. */
int main(int argc, char **argv)
{
    return inject_main(scenarios, NSCENARIOS, argc, argv);
}
