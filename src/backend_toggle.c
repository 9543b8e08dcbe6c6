/* The toggle backend: a page that receives code is taken by its writer,
 * flipped RW (unless it has never been executable), written, flipped RX,
 * flushed and released. Executors that fetch from it meanwhile fault and
 * are held by the fault handler (fault.c) until the release.
 *
 * A page is taken by setting WRITING in its protocol word; that bit is the
 * writer lock. A thread may take a page it already holds (an in-place
 * reservation open on it, then a free on the same page): the hold nests and
 * the page stays RW until the outermost release.
 *
 * A page is released only while it is executable (or fresh, never
 * executable and holding only traps): executors retry once after a
 * release and must then run. A page whose RX flip failed (ENOMEM at
 * vm.max_map_count) and that nobody will close is left WRITING with the
 * writer WXJ_WRITER_STUCK: executors keep waiting, any later window takes
 * it over, and every later operation on the heap tries to flip it
 * (recover, at the operation's start). */
#define _GNU_SOURCE /* ucontext register names in arch/ */
#include <errno.h>

#include "code_changed.h"
#include "internal.h"

enum take_result { TAKEN, BUSY, SELF_HELD };

/* Tries for a failed RX flip (ENOMEM) before giving up: each waits for
 * other windows to close, which may merge the mappings it would split. */
#define RX_RETRIES 64
/* How long a writer lets executors woken by its last release run before
 * it takes the page again (fairness, not correctness): a woken thread is
 * usually running within tens of microseconds. */
#define HANDOFF_NS 1000000

/* The word of a released page. A page that held code never reads 0 (the
 * handler's "never held code"): the sequence skips 0 when it wraps. */
static uint32_t released_word(uint32_t held)
{
    uint32_t next =
        (held & ~(WXJ_PAGE_WRITING | WXJ_PAGE_WAITERS)) + WXJ_PAGE_SEQ_ONE;
    return next ? next : WXJ_PAGE_SEQ_ONE;
}

static enum take_result page_take(struct wxj_chunk *chunk, struct wxj_page *pg,
                                  int32_t self, uint32_t *seen)
{
    uint32_t s = atomic_load_explicit(&pg->state, memory_order_acquire);
    if (s & WXJ_PAGE_WRITING) {
        int32_t writer =
            atomic_load_explicit(&pg->writer, memory_order_acquire);
        if (writer == self)
            return SELF_HELD;
        int32_t stuck = WXJ_WRITER_STUCK;
        /* acquire: the abandoning writer's restored bytes are seen. */
        if (writer == stuck &&
            atomic_compare_exchange_strong_explicit(&pg->writer, &stuck, self,
                                                    memory_order_acquire,
                                                    memory_order_relaxed)) {
            atomic_fetch_sub_explicit(&chunk->stuck, 1, memory_order_relaxed);
            pg->depth = 1;
            return TAKEN;
        }
        *seen = s;
        return BUSY;
    }
    /* acquire: the previous writer's bytes and metadata happen-before ours. */
    if (!atomic_compare_exchange_strong_explicit(
            &pg->state, &s, (s + WXJ_PAGE_SEQ_ONE) | WXJ_PAGE_WRITING,
            memory_order_acquire, memory_order_acquire)) {
        *seen = s;
        return BUSY;
    }
    /* Stored before the page can become RW: the fault handler compares it
     * with the faulting thread to refuse waiting for itself. */
    atomic_store_explicit(&pg->writer, self, memory_order_relaxed);
    pg->depth = 1;
    return TAKEN;
}

static void page_release(struct wxj_page *pg)
{
    atomic_store_explicit(&pg->writer, 0, memory_order_relaxed);
    uint32_t old = atomic_load_explicit(&pg->state, memory_order_relaxed);
    /* release: the page is RX again and the icache flushed before any
     * waiter sees the new sequence and retries. */
    while (!atomic_compare_exchange_weak_explicit(
        &pg->state, &old, released_word(old), memory_order_release,
        memory_order_relaxed))
        ;
    if (old & WXJ_PAGE_WAITERS)
        wxj_os_futex_wake_all(&pg->state);
}

/* The last hold of a page that is still writable: nobody will close it,
 * so it stays WRITING for nobody (executors keep waiting) until a later
 * window takes it over. release: the bytes put back before. */
static void page_abandon(struct wxj_chunk *chunk, struct wxj_page *pg)
{
    atomic_fetch_add_explicit(&chunk->stuck, 1, memory_order_relaxed);
    atomic_store_explicit(&pg->writer, WXJ_WRITER_STUCK, memory_order_release);
    /* Writers asleep on the page may take it over now; executors look,
     * see it still WRITING and sleep again. */
    if (atomic_load_explicit(&pg->state, memory_order_relaxed) &
        WXJ_PAGE_WAITERS)
        wxj_os_futex_wake_all(&pg->state);
}

/* Sleeps until the word moves on from seen (a writer released the page).
 * pause: let a fork proceed meanwhile; not while the caller holds the heap
 * lock, which the fork's preparation takes. */
static void page_wait(struct wxj_page *pg, uint32_t seen, bool pause)
{
    if (!(seen & WXJ_PAGE_WRITING))
        return; /* lost a race with another taker: just try again */
    if (!(seen & WXJ_PAGE_WAITERS) &&
        !atomic_compare_exchange_strong_explicit(
            &pg->state, &seen, seen | WXJ_PAGE_WAITERS, memory_order_relaxed,
            memory_order_relaxed))
        return;
    if (pause)
        wxj_op_pause();
    wxj_os_futex_wait(&pg->state, seen | WXJ_PAGE_WAITERS);
    if (pause)
        wxj_op_resume();
}

static bool released(struct wxj_page *pg)
{
    return !(atomic_load_explicit(&pg->state, memory_order_relaxed) &
             WXJ_PAGE_WRITING);
}

/* Executors woken by the page's last release get to run before a writer
 * takes it again, so back-to-back windows do not starve them. Only while
 * the page is released (waiters of a page held by someone else wait for
 * that writer, as the caller will); bounded, so that a waiter that is not
 * scheduled does not stall writers for long. */
static bool handing_off(struct wxj_page *pg)
{
    return atomic_load_explicit(&pg->waiting, memory_order_relaxed) &&
           released(pg);
}

/* A waiter that has left the handler has still to return from the signal
 * and fetch its instruction again. That takes about as long as its wake
 * did, since both wait for the scheduler to run it: tens of microseconds
 * natively, up to a millisecond under TSan's signal wrappers, where a
 * writer that took the page as soon as the count fell starved executors
 * for 8-12 windows in a row (check-tsan, test_inplace). So the writer
 * waits that long again before it takes the page. */
static void let_waiters_run(struct wxj_page *pg)
{
    if (!handing_off(pg))
        return;
    uint64_t start = wxj_os_now_ns(), now = start;
    uint64_t until = start + HANDOFF_NS;
    while (handing_off(pg) && now < until) {
        wxj_os_yield();
        now = wxj_os_now_ns();
    }
    if (now - start < until - now)
        until = now + (now - start);
    while (released(pg) && now < until) {
        wxj_os_yield();
        now = wxj_os_now_ns();
    }
}

/* Drops one hold on each page of [first, last]; the last hold releases,
 * or abandons a page left writable. */
static void pages_drop(struct wxj_chunk *chunk, size_t first, size_t last)
{
    for (size_t i = first; i <= last; i++) {
        struct wxj_page *pg = &chunk->pages[i];
        if (--pg->depth == 0) {
            if (pg->rw && !pg->fresh)
                page_abandon(chunk, pg);
            else
                page_release(pg);
        }
    }
}

/* Flips each maximal run of pages in [first, last] that this window holds
 * alone (depth 1), whose protection differs from the wanted one and, with
 * skip_fresh, that are not fresh. Each run that succeeds is marked; with
 * stop, the first failure ends the walk. Returns the first error. */
static int protect_runs(struct wxjit_heap *heap, struct wxj_chunk *chunk,
                        size_t first, size_t last, bool want_rw,
                        bool skip_fresh, bool stop)
{
    size_t ps = heap->page_size;
    int first_err = 0;
#define FLIPS(pg)                                                             \
    ((pg)->depth == 1 && (pg)->rw != want_rw && !(skip_fresh && (pg)->fresh))
    for (size_t i = first; i <= last; i++) {
        if (!FLIPS(&chunk->pages[i]))
            continue;
        size_t j = i;
        while (j + 1 <= last && FLIPS(&chunk->pages[j + 1]))
            j++;
        int err = (want_rw ? wxj_os_protect_rw : wxj_os_protect_rx)(
            chunk->base + i * ps, (j - i + 1) * ps);
        if (err && !first_err)
            first_err = err;
        if (err && stop)
            return err;
        /* A failed mprotect over several mappings may have changed the
         * first ones: after a failed RW flip, treat the run as writable,
         * so that it is flipped back (or abandoned), never released. */
        for (size_t k = i; k <= j && (!err || want_rw); k++) {
            chunk->pages[k].rw = want_rw;
            chunk->pages[k].fresh &= want_rw;
        }
        i = j;
    }
#undef FLIPS
    return first_err;
}

/* Abandoned pages of the heap, if any: each is taken over and flipped,
 * and released if that works. One relaxed load per chunk otherwise. */
static void unstick(struct wxjit_heap *heap)
{
    int32_t self = wxj_os_tid();
    uint32_t seen;
    for (struct wxj_chunk *c =
             atomic_load_explicit(&heap->chunks, memory_order_acquire);
         c; c = atomic_load_explicit(&c->next, memory_order_acquire)) {
        if (!atomic_load_explicit(&c->stuck, memory_order_relaxed))
            continue;
        for (size_t i = 0; i < c->npages; i++) {
            struct wxj_page *pg = &c->pages[i];
            if (atomic_load_explicit(&pg->writer, memory_order_relaxed) !=
                    WXJ_WRITER_STUCK ||
                page_take(c, pg, self, &seen) != TAKEN)
                continue;
            protect_runs(heap, c, i, i, false, false, false);
            wxj_code_changed(c->base + i * heap->page_size, heap->page_size);
            pages_drop(c, i, i);
        }
    }
}

/* WXJIT_HEAP_DEFER_TRAP_FILL: freed code on the pages of [first, last]
 * whose trap fill was left for the next window is filled now, while this
 * window holds them writable and before it writes anything (what it
 * writes may land in that space). A page's granules are whole words of
 * the bitmap: a page holds a multiple of 64 granules (1 KiB). Bits a free
 * sets meanwhile either are taken here or wait for the next window; the
 * space they mark is free, so filling it late or now is the same to
 * everyone but a stale caller. */
static void fill_deferred(struct wxjit_heap *heap, struct wxj_chunk *chunk,
                          size_t first, size_t last)
{
    size_t words = heap->page_size / WXJ_GRANULE / 64;
    uint8_t *lo = NULL, *hi = NULL;
    for (size_t w = first * words; w < (last + 1) * words; w++) {
        if (!atomic_load_explicit(&chunk->stale[w], memory_order_relaxed))
            continue;
        /* relaxed: the bits are all a free hands over; the bytes were
         * last written under the page word, which this window holds. */
        uint64_t bits = atomic_exchange_explicit(&chunk->stale[w], 0,
                                                 memory_order_relaxed);
        for (; bits; bits &= bits - 1) {
            uint8_t *at = wxj_granule_addr(
                chunk, w * 64 + (size_t)__builtin_ctzll(bits));
            wxj_arch_trap_fill(at, WXJ_GRANULE);
            lo = lo && lo < at ? lo : at;
            hi = at + WXJ_GRANULE;
        }
    }
    /* One flush over all of them: on some CPUs a flush is a system call. */
    if (lo)
        wxj_code_changed(lo, (size_t)(hi - lo));
}

/* In-place reservations and windows on live code hold their pages from
 * one call to another: counted on each page (toggle_open's rule). */
static void count_long_hold(const struct wxj_window *w, int by)
{
    if (w->kind == WXJ_VIEW_SCRATCH)
        return;
    for (size_t i = w->first; i <= w->last; i++)
        atomic_fetch_add_explicit(&w->chunk->pages[i].long_holds,
                                  (uint32_t)by, memory_order_release);
}

static int toggle_open(struct wxjit_heap *heap, struct wxj_window *w)
{
    struct wxj_chunk *chunk = w->chunk;
    int32_t self = wxj_os_tid();
    uint32_t seen;
retry:
    for (size_t i = w->first; i <= w->last; i++) {
        struct wxj_page *pg = &chunk->pages[i];
        let_waiters_run(pg);
        enum take_result t = page_take(chunk, pg, self, &seen);
        if (t == SELF_HELD)
            pg->depth++; /* code.c refuses new code there (EDEADLK) */
        if (t != BUSY)
            continue;
        /* Never hold pages while waiting: no lock-order cycle between
         * two writers whose ranges overlap. */
        if (i > w->first)
            pages_drop(chunk, w->first, i - 1);
        /* Nor wait for another thread's long hold while holding one: it
         * may be waiting for ours. Short holds always end by themselves
         * (their writers never hold pages while they wait). */
        if (atomic_load_explicit(&pg->long_holds, memory_order_acquire) &&
            wxj_thread_holds_long())
            return EDEADLK;
        page_wait(pg, seen, true);
        goto retry;
    }
    /* Counted before the flip: a holder meeting these pages from now on
     * sees a long hold, not one it may wait for. */
    count_long_hold(w, 1);
    int err = protect_runs(heap, chunk, w->first, w->last, true, true, true);
    if (err) {
        count_long_hold(w, -1);
        /* Pages flipped before the failure go back to RX; any that will
         * not stay abandoned, never released writable. */
        protect_runs(heap, chunk, w->first, w->last, false, true, false);
        pages_drop(chunk, w->first, w->last);
        return err;
    }
    /* Not in procmem's atomic-store windows: there other threads write
     * the page without taking it, reused space included. */
    if (chunk->stale && heap->backend->deferral == WXJ_FILL_IN_PAGE_WINDOW)
        fill_deferred(heap, chunk, w->first, w->last);
    w->view = chunk->base + w->first * heap->page_size;
    return 0;
}

/* Takes page i if it is fresh and nobody holds it (the caller not
 * either). */
static bool take_fresh(struct wxj_chunk *chunk, size_t i, int32_t self)
{
    uint32_t seen;
    enum take_result t = page_take(chunk, &chunk->pages[i], self, &seen);
    if (t == TAKEN && chunk->pages[i].fresh)
        return true;
    if (t == TAKEN)
        pages_drop(chunk, i, i);
    return false;
}

/* At vm.max_map_count the RX flip can fail (ENOMEM): the RW flip merged
 * the window with RW neighbours (fresh pages, pages other windows hold)
 * into one mapping, and cutting it out again takes mappings the kernel
 * refuses. The flip is retried over the window widened to the fresh pages
 * beside it that nobody holds: taken first so that nobody writes them
 * meanwhile, trap-filled (they hold traps or were never handed out) and
 * flipped with the window, which spares the split on that side. They stop
 * being fresh: their next write flips them like any page, and fill_fresh
 * leaves them alone. It fails where a side borders a page that another
 * window holds; that window's close merges the two, so the caller waits
 * and tries again. */
static int protect_rx_widened(struct wxjit_heap *heap, struct wxj_chunk *chunk,
                              size_t first, size_t last)
{
    size_t ps = heap->page_size, lo = first, hi = last;
    int32_t self = wxj_os_tid();
    for (size_t i = first; i <= last; i++)
        if (chunk->pages[i].depth != 1)
            return ENOMEM; /* a nested page stays RW: not one range */
    while (lo > 0 && take_fresh(chunk, lo - 1, self))
        lo--;
    while (hi + 1 < chunk->npages && take_fresh(chunk, hi + 1, self))
        hi++;
    if (lo < first)
        wxj_arch_trap_fill(chunk->base + lo * ps, (first - lo) * ps);
    if (hi > last)
        wxj_arch_trap_fill(chunk->base + (last + 1) * ps, (hi - last) * ps);
    int err = wxj_os_protect_rx(chunk->base + lo * ps, (hi - lo + 1) * ps);
    for (size_t i = lo; err == 0 && i <= hi; i++)
        chunk->pages[i].rw = chunk->pages[i].fresh = false;
    if (lo < first)
        pages_drop(chunk, lo, first - 1);
    if (hi > last)
        pages_drop(chunk, last + 1, hi);
    return err;
}

/* Makes every page of [first, last] that the window holds alone
 * executable, retrying a flip that failed for want of mappings. */
static int flip_rx(struct wxjit_heap *heap, struct wxj_chunk *chunk,
                   size_t first, size_t last)
{
    int err = protect_runs(heap, chunk, first, last, false, false, false);
    for (int i = 0; err == ENOMEM && i < RX_RETRIES; i++) {
        if ((err = protect_rx_widened(heap, chunk, first, last)) == 0)
            break;
        wxj_os_yield();
        err = protect_runs(heap, chunk, first, last, false, false, false);
    }
    return err;
}

static int toggle_close(struct wxjit_heap *heap, struct wxj_window *w,
                        const void *flush, size_t flush_len)
{
    int err = flip_rx(heap, w->chunk, w->first, w->last);
    wxj_code_changed(flush, flush_len);
    if (err)
        return err; /* still open and held: the caller decides */
    count_long_hold(w, -1);
    pages_drop(w->chunk, w->first, w->last);
    return 0;
}

static void toggle_abandon(struct wxjit_heap *heap, struct wxj_window *w)
{
    (void)heap;
    count_long_hold(w, -1);
    pages_drop(w->chunk, w->first, w->last);
}

/* Fresh pages are still RW from the chunk mapping and nobody can execute
 * them yet: fill them directly, no mprotect. Each is taken meanwhile: a
 * widened RX flip (protect_rx_widened) may be filling and flipping it,
 * and then leaves it trap-filled and not fresh any more. The caller holds
 * the heap lock: waiting here must not let a fork in (page_wait). */
static int toggle_fill_fresh(struct wxjit_heap *heap, struct wxj_window *w)
{
    int32_t self = wxj_os_tid();
    uint32_t seen;
    for (size_t i = w->first; i <= w->last; i++) {
        struct wxj_page *pg = &w->chunk->pages[i];
        while (page_take(w->chunk, pg, self, &seen) != TAKEN)
            page_wait(pg, seen, false);
        if (pg->fresh)
            wxj_arch_trap_fill(w->chunk->base + i * heap->page_size,
                               heap->page_size);
        pages_drop(w->chunk, i, i);
    }
    return 0;
}

/* A page made writable and then executable again: refused where the
 * system forbids gaining PROT_EXEC (PR_SET_MDWE, SELinux execmod). */
static int toggle_probe(bool run_code, const char **reason)
{
    size_t page = wxj_os_page_size();
    void *p;
    (void)run_code; /* mprotect makes the bytes themselves executable */
    int err = wxj_os_map_anon(page, WXJ_PROT_RW, &p);
    if (err) {
        *reason = "anonymous memory cannot be mapped";
        return err;
    }
    if ((err = wxj_os_protect_rx(p, page)))
        *reason = "mprotect adding PROT_EXEC refused";
    wxj_os_unmap(p, page);
    return err;
}

static int toggle_chunk_map(struct wxjit_heap *heap, struct wxj_chunk *chunk)
{
    (void)heap;
    void *base;
    /* Mapped RW, never X: fresh pages are written before their first
     * mprotect to RX, which is then the only syscall they need. */
    int err = wxj_os_map_anon(chunk->size, WXJ_PROT_RW, &base);
    if (err == 0)
        chunk->base = base;
    for (size_t i = 0; err == 0 && i < chunk->npages; i++)
        chunk->pages[i].rw = true;
    return err;
}

static void toggle_chunk_unmap(struct wxjit_heap *heap,
                               struct wxj_chunk *chunk)
{
    (void)heap;
    wxj_os_unmap(chunk->base, chunk->size);
}

/* In a fork child only the forking thread lives on. The pages other
 * threads held are open in-place windows (operations had drained): they
 * become the forking thread's, so that the reservations whose owners are
 * gone can be aborted (fork.c) and their pages closed like any window.
 * Abandoned pages stay abandoned. */
static void toggle_fork_child(struct wxjit_heap *heap, struct wxj_chunk *chunk,
                              int32_t parent_tid)
{
    (void)heap;
    (void)parent_tid;
    int32_t self = wxj_os_tid();
    for (size_t i = 0; i < chunk->fresh_next; i++) {
        struct wxj_page *pg = &chunk->pages[i];
        uint32_t s = atomic_load_explicit(&pg->state, memory_order_relaxed);
        if ((s & WXJ_PAGE_WRITING) &&
            atomic_load_explicit(&pg->writer, memory_order_relaxed) !=
                WXJ_WRITER_STUCK)
            atomic_store_explicit(&pg->writer, self, memory_order_relaxed);
        /* Executors asleep in the parent do not exist here. */
        atomic_store_explicit(&pg->waiting, 0, memory_order_relaxed);
    }
}

const struct wxj_backend wxj_backend_toggle = {
    .name = "toggle",
    .id = WXJIT_BACKEND_TOGGLE,
    .deferral = WXJ_FILL_IN_PAGE_WINDOW,
    .stable_views = true,
    .exclusive_windows = true,
    .probe = toggle_probe,
    .chunk_map = toggle_chunk_map,
    .chunk_unmap = toggle_chunk_unmap,
    .fill_fresh = toggle_fill_fresh,
    .open = toggle_open,
    .close = toggle_close,
    .abandon = toggle_abandon,
    .recover = unstick,
    .fork_child = toggle_fork_child,
};
