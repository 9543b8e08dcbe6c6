/* The toggle backend: a page that receives code is taken by its writer,
 * flipped RW (unless it has never been executable), written, flipped RX,
 * flushed and released. Executors that fetch from it meanwhile fault and
 * are held by the fault handler (fault.c) until the release.
 *
 * A page is taken by setting WRITING in its protocol word; that bit is the
 * writer lock. A thread may take a page it already holds (an in-place
 * reservation open on it, then a free on the same page): the hold nests and
 * the page stays RW until the outermost release. */
#define _GNU_SOURCE /* ucontext register names in arch/ */
#include <errno.h>

#include "code_changed.h"
#include "internal.h"

enum take_result { TAKEN, NESTED, BUSY };

static enum take_result page_take(struct wxj_page *pg, int32_t self,
                                  uint32_t *seen)
{
    uint32_t s = atomic_load_explicit(&pg->state, memory_order_acquire);
    if (s & WXJ_PAGE_WRITING) {
        if (atomic_load_explicit(&pg->writer, memory_order_relaxed) == self) {
            pg->depth++;
            return NESTED;
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
    uint32_t next;
    do {
        next = (old & ~(WXJ_PAGE_WRITING | WXJ_PAGE_WAITERS)) +
               WXJ_PAGE_SEQ_ONE;
        /* release: the page is RX again and the icache flushed before any
         * waiter sees the new sequence and retries. */
    } while (!atomic_compare_exchange_weak_explicit(
        &pg->state, &old, next, memory_order_release, memory_order_relaxed));
    if (old & WXJ_PAGE_WAITERS)
        wxj_os_futex_wake_all(&pg->state);
}

/* Sleeps until the word moves on from seen (a writer released the page). */
static void page_wait(struct wxj_page *pg, uint32_t seen)
{
    if (!(seen & WXJ_PAGE_WRITING))
        return; /* lost a race with another taker: just try again */
    if (!(seen & WXJ_PAGE_WAITERS) &&
        !atomic_compare_exchange_strong_explicit(
            &pg->state, &seen, seen | WXJ_PAGE_WAITERS, memory_order_relaxed,
            memory_order_relaxed))
        return;
    wxj_op_pause();
    wxj_os_futex_wait(&pg->state, seen | WXJ_PAGE_WAITERS);
    wxj_op_resume();
}

/* Drops one hold on each page of [first, last]; the last hold releases. */
static void pages_drop(struct wxj_chunk *chunk, size_t first, size_t last)
{
    for (size_t i = first; i <= last; i++)
        if (--chunk->pages[i].depth == 0)
            page_release(&chunk->pages[i]);
}

/* Applies protect to each maximal run of pages in [first, last] that match
 * (depth == 1 and, when skip_fresh, not fresh): the pages this call took.
 * On failure, undo (if non-NULL) is applied to the runs already done. */
static int protect_runs(struct wxjit_heap *heap, struct wxj_chunk *chunk,
                        size_t first, size_t last, bool skip_fresh,
                        int (*protect)(void *, size_t),
                        int (*undo)(void *, size_t))
{
    size_t ps = heap->page_size;
    size_t i = first;
    while (i <= last) {
        struct wxj_page *pg = &chunk->pages[i];
        if (pg->depth != 1 || (skip_fresh && pg->fresh)) {
            i++;
            continue;
        }
        size_t j = i;
        while (j + 1 <= last && chunk->pages[j + 1].depth == 1 &&
               !(skip_fresh && chunk->pages[j + 1].fresh))
            j++;
        int err = protect(chunk->base + i * ps, (j - i + 1) * ps);
        if (err) {
            if (undo && i > first)
                protect_runs(heap, chunk, first, i - 1, skip_fresh, undo,
                             NULL);
            return err;
        }
        i = j + 1;
    }
    return 0;
}

static int toggle_open(struct wxjit_heap *heap, struct wxj_window *w)
{
    struct wxj_chunk *chunk = w->chunk;
    int32_t self = wxj_os_tid();
    uint32_t seen;
retry:
    for (size_t i = w->first; i <= w->last; i++) {
        if (page_take(&chunk->pages[i], self, &seen) == BUSY) {
            /* Never hold pages while waiting: no lock-order cycle between
             * two writers whose ranges overlap. */
            if (i > w->first)
                pages_drop(chunk, w->first, i - 1);
            page_wait(&chunk->pages[i], seen);
            goto retry;
        }
    }
    int err = protect_runs(heap, chunk, w->first, w->last, true,
                           wxj_os_protect_rw, wxj_os_protect_rx);
    if (err) {
        pages_drop(chunk, w->first, w->last);
        return err;
    }
    w->view = chunk->base + w->first * heap->page_size;
    return 0;
}

/* Takes pg if it is fresh and nobody holds it (the caller not either). */
static bool take_fresh(struct wxj_page *pg, int32_t self)
{
    uint32_t seen;
    enum take_result t = page_take(pg, self, &seen);
    if (t == TAKEN && pg->fresh)
        return true;
    if (t != BUSY && --pg->depth == 0)
        page_release(pg);
    return false;
}

/* At vm.max_map_count the RX flip can fail (ENOMEM): the RW flip merged
 * the window with RW neighbours (fresh pages, pages other windows hold)
 * into one mapping, and cutting it out again takes mappings the kernel
 * refuses. Code must not stay unexecutable, so the flip is retried over
 * the window widened to the fresh pages beside it that nobody holds:
 * taken first so that nobody writes them meanwhile, trap-filled (they
 * hold traps or were never handed out) and flipped with the window, which
 * spares the split on that side. They stop being fresh: their next write
 * flips them like any page, and fill_fresh leaves them alone. It can
 * still fail where both sides border pages that other windows hold. */
static int protect_rx_widened(struct wxjit_heap *heap,
                              struct wxj_chunk *chunk, size_t first,
                              size_t last)
{
    size_t ps = heap->page_size, lo = first, hi = last;
    int32_t self = wxj_os_tid();
    for (size_t i = first; i <= last; i++)
        if (chunk->pages[i].depth != 1)
            return ENOMEM; /* a nested page stays RW: not one range */
    while (lo > 0 && take_fresh(&chunk->pages[lo - 1], self))
        lo--;
    while (hi + 1 < chunk->npages && take_fresh(&chunk->pages[hi + 1], self))
        hi++;
    if (lo < first)
        wxj_arch_trap_fill(chunk->base + lo * ps, (first - lo) * ps);
    if (hi > last)
        wxj_arch_trap_fill(chunk->base + (last + 1) * ps, (hi - last) * ps);
    int err = wxj_os_protect_rx(chunk->base + lo * ps, (hi - lo + 1) * ps);
    for (size_t i = lo; i <= hi; i++)
        if (err == 0 && (i < first || i > last))
            chunk->pages[i].fresh = false;
    if (lo < first)
        pages_drop(chunk, lo, first - 1);
    if (hi > last)
        pages_drop(chunk, last + 1, hi);
    return err;
}

static int toggle_close(struct wxjit_heap *heap, struct wxj_window *w,
                        const void *flush, size_t flush_len)
{
    struct wxj_chunk *chunk = w->chunk;
    int err = protect_runs(heap, chunk, w->first, w->last, false,
                           wxj_os_protect_rx, NULL);
    if (err == ENOMEM)
        err = protect_rx_widened(heap, chunk, w->first, w->last);
    wxj_code_changed(flush, flush_len);
    /* Even if RX failed: the page holds code now and needs the RW flip
     * before the next write; that window retries the RX flip. */
    for (size_t i = w->first; i <= w->last; i++)
        if (chunk->pages[i].depth == 1)
            chunk->pages[i].fresh = false;
    pages_drop(chunk, w->first, w->last);
    return err;
}

/* Fresh pages are still RW from the chunk mapping and nobody can execute
 * them yet: fill them directly, no mprotect. Each is taken meanwhile: a
 * widened RX flip (protect_rx_widened) may be filling and flipping it,
 * and then leaves it trap-filled and not fresh any more. */
static int toggle_fill_fresh(struct wxjit_heap *heap, struct wxj_window *w)
{
    int32_t self = wxj_os_tid();
    uint32_t seen;
    for (size_t i = w->first; i <= w->last; i++) {
        struct wxj_page *pg = &w->chunk->pages[i];
        while (page_take(pg, self, &seen) == BUSY)
            page_wait(pg, seen);
        if (pg->fresh)
            wxj_arch_trap_fill(w->chunk->base + i * heap->page_size,
                               heap->page_size);
        pages_drop(w->chunk, i, i);
    }
    return 0;
}

static int toggle_probe(void)
{
    return 0; /* mprotect exists everywhere */
}

static int toggle_chunk_map(struct wxjit_heap *heap, struct wxj_chunk *chunk)
{
    (void)heap;
    void *base;
    /* Mapped RW, never X: fresh pages are written before their first
     * mprotect to RX, which is then the only syscall they need. */
    int err = wxj_os_map_anon(chunk->size, false, &base);
    if (err == 0)
        chunk->base = base;
    return err;
}

static void toggle_chunk_unmap(struct wxjit_heap *heap,
                               struct wxj_chunk *chunk)
{
    (void)heap;
    wxj_os_unmap(chunk->base, chunk->size);
}

/* In a fork child only the forking thread lives on. Pages it held keep
 * being its own under its new tid; pages held by the other threads (open
 * in-place reservations) would stay writable and locked forever: they are
 * made executable and released, and those reservations are abandoned. */
static void toggle_fork_child(struct wxjit_heap *heap,
                              struct wxj_chunk *chunk, int32_t parent_tid)
{
    int32_t self = wxj_os_tid();
    for (size_t i = 0; i < chunk->fresh_next; i++) {
        struct wxj_page *pg = &chunk->pages[i];
        uint32_t s = atomic_load_explicit(&pg->state, memory_order_relaxed);
        if (!(s & WXJ_PAGE_WRITING))
            continue;
        if (atomic_load_explicit(&pg->writer, memory_order_relaxed) ==
            parent_tid) {
            atomic_store_explicit(&pg->writer, self, memory_order_relaxed);
            continue;
        }
        wxj_os_protect_rx(chunk->base + i * heap->page_size, heap->page_size);
        pg->fresh = false;
        pg->depth = 0;
        atomic_store_explicit(&pg->writer, 0, memory_order_relaxed);
        atomic_store_explicit(
            &pg->state,
            (s & ~(WXJ_PAGE_WRITING | WXJ_PAGE_WAITERS)) + WXJ_PAGE_SEQ_ONE,
            memory_order_relaxed);
    }
}

const struct wxj_backend wxj_backend_toggle = {
    .name = "toggle",
    .id = WXJIT_BACKEND_TOGGLE,
    .probe = toggle_probe,
    .chunk_map = toggle_chunk_map,
    .chunk_unmap = toggle_chunk_unmap,
    .fill_fresh = toggle_fill_fresh,
    .open = toggle_open,
    .close = toggle_close,
    .fork_child = toggle_fork_child,
};
