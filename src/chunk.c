/* Chunks: one mapping of code pages each, with all allocation metadata
 * (page protocol words, granule bitmaps) kept outside the code pages so
 * that code pages hold nothing but code and trap fill. */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

#define BITS 64u

static inline size_t word_of(size_t g) { return g / BITS; }
static inline uint64_t bit_of(size_t g) { return (uint64_t)1 << (g % BITS); }

/* Bits are published with release and read with acquire: a block's start,
 * end and used bits are all visible to whoever sees its start bit. */
bool wxj_bit_get(_Atomic uint64_t *map, size_t g)
{
    return atomic_load_explicit(&map[word_of(g)], memory_order_acquire) &
           bit_of(g);
}

bool wxj_block_live(struct wxj_chunk *chunk, size_t g)
{
    return wxj_bit_get(chunk->start, g) && !wxj_bit_get(chunk->open, g);
}

void wxj_bit_set(_Atomic uint64_t *map, size_t g)
{
    atomic_fetch_or_explicit(&map[word_of(g)], bit_of(g),
                             memory_order_release);
}

bool wxj_bit_clear(_Atomic uint64_t *map, size_t g)
{
    return atomic_fetch_and_explicit(&map[word_of(g)], ~bit_of(g),
                                     memory_order_acq_rel) &
           bit_of(g);
}

/* Sets or clears bits [g, g + n) a word at a time. */
static void bits_update(_Atomic uint64_t *map, size_t g, size_t n, bool set)
{
    while (n > 0) {
        size_t in_word = BITS - g % BITS;
        size_t take = n < in_word ? n : in_word;
        uint64_t mask = (take == BITS ? ~(uint64_t)0
                                      : (((uint64_t)1 << take) - 1))
                        << (g % BITS);
        if (set)
            atomic_fetch_or_explicit(&map[word_of(g)], mask,
                                     memory_order_release);
        else
            atomic_fetch_and_explicit(&map[word_of(g)], ~mask,
                                      memory_order_release);
        g += take;
        n -= take;
    }
}

/* First granule >= g, below limit, whose bit equals want; limit if none. */
static size_t bits_next(_Atomic uint64_t *map, size_t g, size_t limit,
                        bool want)
{
    while (g < limit) {
        uint64_t w = atomic_load_explicit(&map[word_of(g)],
                                          memory_order_acquire);
        if (!want)
            w = ~w;
        w &= ~(uint64_t)0 << (g % BITS);
        if (w) {
            size_t found = word_of(g) * BITS + (size_t)__builtin_ctzll(w);
            return found < limit ? found : limit;
        }
        g = (word_of(g) + 1) * BITS;
    }
    return limit;
}

/* Last granule <= g whose bit is set; SIZE_MAX if none. */
static size_t bits_prev_set(_Atomic uint64_t *map, size_t g)
{
    for (;;) {
        uint64_t w = atomic_load_explicit(&map[word_of(g)],
                                          memory_order_acquire);
        unsigned shift = BITS - 1 - g % BITS;
        w = (w << shift) >> shift; /* keep bits <= g within the word */
        if (w)
            return word_of(g) * BITS + (BITS - 1 - (size_t)__builtin_clzll(w));
        if (word_of(g) == 0)
            return SIZE_MAX;
        g = word_of(g) * BITS - 1;
    }
}

void wxj_block_mark(struct wxj_chunk *chunk, size_t g, size_t n, bool open)
{
    if (open)
        wxj_bit_set(chunk->open, g);
    wxj_bit_set(chunk->end, g + n - 1);
    bits_update(chunk->used, g, n, true);
    wxj_bit_set(chunk->start, g);
}

void wxj_block_unmark(struct wxj_chunk *chunk, size_t g, size_t n)
{
    wxj_bit_clear(chunk->start, g);
    wxj_bit_clear(chunk->open, g);
    wxj_bit_clear(chunk->end, g + n - 1);
    bits_update(chunk->used, g, n, false);
}

void wxj_block_defer_traps(struct wxj_chunk *chunk, size_t g, size_t n)
{
    /* release, before the used bits are cleared (release too): a thread
     * that sees the space free and is handed it sees these bits. */
    bits_update(chunk->stale, g, n, true);
}

void wxj_block_rewritten(struct wxj_chunk *chunk, size_t g, size_t n)
{
    bits_update(chunk->stale, g, n, false);
}

void wxj_block_shrink(struct wxj_chunk *chunk, size_t g, size_t n, size_t m)
{
    wxj_bit_set(chunk->end, g + m - 1);
    wxj_bit_clear(chunk->end, g + n - 1);
    bits_update(chunk->used, g + m, n - m, false);
}

/* A block's end bit lies inside the block, so the scan never reads a
 * neighbour's bits however the neighbour changes meanwhile. */
size_t wxj_block_extent(struct wxj_chunk *chunk, size_t g)
{
    return bits_next(chunk->end, g, chunk->ngranules, true) - g + 1;
}

bool wxj_block_find_start(struct wxj_chunk *chunk, size_t g, size_t *start)
{
    if (!wxj_bit_get(chunk->used, g))
        return false;
    size_t s = bits_prev_set(chunk->start, g);
    if (s == SIZE_MAX || s + wxj_block_extent(chunk, s) <= g)
        return false;
    *start = s;
    return true;
}

size_t wxj_granule_of(const struct wxj_chunk *chunk, const void *addr)
{
    return (size_t)((const uint8_t *)addr - chunk->base) / WXJ_GRANULE;
}

uint8_t *wxj_granule_addr(const struct wxj_chunk *chunk, size_t granule)
{
    return chunk->base + granule * WXJ_GRANULE;
}

struct wxj_chunk *wxj_chunk_find(struct wxjit_heap *heap, const void *addr)
{
    const uint8_t *p = addr;
    for (struct wxj_chunk *c =
             atomic_load_explicit(&heap->chunks, memory_order_acquire);
         c; c = atomic_load_explicit(&c->next, memory_order_acquire))
        if (p >= c->base && p < c->base + c->size)
            return c;
    return NULL;
}

static size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

/* Of the pages that active tails lie on, the first range overlapping
 * [a, b), as [*from, *to) in granules; false if none. Whole pages: two
 * threads appending to one page would contend for its writer lock and
 * make each other's executors fault, which per-thread pools exist to
 * avoid. */
static bool tail_pages_overlap(const struct wxj_chunk *chunk,
                               const struct wxj_pool *pools, size_t a,
                               size_t b, size_t *from, size_t *to)
{
    size_t per_page = chunk->heap->page_size / WXJ_GRANULE;
    bool found = false;
    for (const struct wxj_pool *p = pools; p; p = p->next) {
        if (p->chunk != chunk)
            continue;
        size_t lo = p->tail_start / per_page * per_page;
        size_t hi = align_up(p->limit, per_page);
        if (lo < b && a < hi && (!found || lo < *from)) {
            *from = lo;
            *to = hi;
            found = true;
        }
    }
    return found;
}

/* A page in [first, last] that a writer holds (toggle: most likely an
 * in-place reservation) or where the searching thread has an in-place
 * reservation open (every backend): code written there would not be
 * executable when its install returns (toggle), and its commit would be
 * refused (EDEADLK, on every backend alike), so reuse looks elsewhere. */
static size_t held_page(struct wxj_chunk *chunk, struct wxj_pool *self,
                        size_t first, size_t last)
{
    size_t ps = chunk->heap->page_size;
    for (size_t pg = first; pg <= last; pg++) {
        uintptr_t at = (uintptr_t)(chunk->base + pg * ps);
        if ((atomic_load_explicit(&chunk->pages[pg].state,
                                  memory_order_relaxed) &
             WXJ_PAGE_WRITING) ||
            wxj_open_holds_pages(chunk->heap, self, at, at + ps - 1) ||
            wxj_live_windows_own_pages(chunk->heap, at, at + ps - 1))
            return pg;
    }
    return SIZE_MAX;
}

/* Moves a scan from b (the end of the run it just measured) on to skip,
 * over pages it may not hand out now (held, or another thread's tail),
 * still counting the free runs that start there before `to` into *longest:
 * they become usable once those pages are let go, and a bound lowered
 * without them would hide them from every later search. */
static size_t skip_measured(struct wxj_chunk *chunk, size_t b, size_t skip,
                            size_t to, size_t limit, size_t *longest)
{
    size_t end = skip < to ? skip : to;
    for (size_t g = b; g < end;) {
        size_t free_at = bits_next(chunk->used, g, limit, false);
        if (free_at >= end)
            break;
        g = bits_next(chunk->used, free_at, limit, true);
        *longest = g - free_at > *longest ? g - free_at : *longest;
    }
    return skip;
}

/* A free run of at least n granules starting at a multiple of align in
 * [from, to), among pages already handed out, outside other threads' tail
 * pages and held pages. The run returned is the whole free run from its
 * start, so the caller's pool can keep appending to it. *longest gets the
 * longest free run seen starting in [from, to), exclusions ignored. */
static bool scan_runs(struct wxj_chunk *chunk, size_t from, size_t to,
                      size_t n, size_t align, const struct wxj_pool *pools,
                      struct wxj_pool *self, size_t *run_start,
                      size_t *run_len, size_t *longest)
{
    size_t per_page = chunk->heap->page_size / WXJ_GRANULE;
    size_t limit = chunk->fresh_next * per_page;
    size_t g = from;
    *longest = 0;
    while (g < to) {
        size_t free_at = bits_next(chunk->used, g, limit, false);
        if (free_at >= to)
            break;
        size_t b = bits_next(chunk->used, free_at, limit, true);
        *longest = b - free_at > *longest ? b - free_at : *longest;
        size_t a = align_up(free_at, align);
        if (a >= b || b - a < n) {
            g = b;
            continue;
        }
        size_t from_g = 0, to_g = 0;
        if (tail_pages_overlap(chunk, pools, a, b, &from_g, &to_g)) {
            if (from_g <= a || from_g - a < n) {
                g = skip_measured(chunk, b, to_g, to, limit, longest);
                continue;
            }
            b = from_g; /* the run stops short of another thread's pages */
        }
        size_t held =
            held_page(chunk, self, a / per_page, (b - 1) / per_page);
        if (held != SIZE_MAX) {
            if (held * per_page < a + n) {
                g = skip_measured(chunk, b, (held + 1) * per_page, to, limit,
                                  longest);
                continue;
            }
            b = held * per_page; /* the run stops short of it */
        }
        *run_start = a;
        *run_len = b - a;
        return true;
    }
    return false;
}

/* ---- segment bounds --------------------------------------------------------
 * Each segment of WXJ_SEGMENT granules keeps an upper bound on the longest
 * free run that starts in it. Frees raise it (lock-free, fetch-max); a
 * search that scans a segment in vain lowers it to what it saw. Searches
 * skip segments whose bound is too small, so a failing search costs a
 * walk over the bounds, not over the bitmaps.
 * A bound word holds the bound in its low half and, in its high half, a
 * count of the raises: a search lowers the bound only if no free raised
 * it since the search read it, even a raise that left the value as it
 * was (a free the scan may have missed, behind a bound already high). */
#define BOUND_OF(word) ((uint32_t)(word))
#define RAISES_ONE ((uint64_t)1 << 32)
#define WXJ_SEGMENT 4096u /* 64 KiB of code: 64 bitmap words */

/* release: a search that reads the raise also sees the freed bits. */
static void bound_raise(_Atomic uint64_t *bound, size_t len)
{
    uint32_t v = len > UINT32_MAX ? UINT32_MAX : (uint32_t)len;
    uint64_t old = atomic_load_explicit(bound, memory_order_relaxed), next;
    do
        next = ((old >> 32) + 1) << 32 | (BOUND_OF(old) > v ? BOUND_OF(old) : v);
    while (!atomic_compare_exchange_weak_explicit(
        bound, &old, next, memory_order_release, memory_order_relaxed));
}

/* Lowers *bound to len unless a free raised it since it read seen. */
static uint32_t bound_lower(_Atomic uint64_t *bound, uint64_t seen,
                            size_t len)
{
    uint64_t lowered = (seen & ~(uint64_t)UINT32_MAX) | (uint32_t)len;
    if (atomic_compare_exchange_strong_explicit(bound, &seen, lowered,
                                                memory_order_relaxed,
                                                memory_order_relaxed))
        return (uint32_t)len;
    return BOUND_OF(seen);
}

bool wxj_chunk_unused(struct wxj_chunk *chunk, size_t g, size_t n)
{
    return bits_next(chunk->used, g, g + n, true) == g + n;
}

void wxj_chunk_note_free(struct wxj_chunk *chunk, size_t g, size_t n)
{
    if (n == 0)
        return;
    /* The whole free run around [g, g + n): beyond the pages handed out
     * everything reads free, which only makes the bound larger (safe). */
    size_t used_before = g ? bits_prev_set(chunk->used, g - 1) : SIZE_MAX;
    size_t a = used_before == SIZE_MAX ? 0 : used_before + 1;
    size_t b = bits_next(chunk->used, g + n, chunk->ngranules, true);
    bound_raise(&chunk->seg_bound[a / WXJ_SEGMENT], b - a);
    bound_raise(&chunk->chunk_bound, b - a);
    /* The granules before g may be a block its caller has not marked yet
     * (the tail after an in-place reservation, wxj_pool_end_tail_page):
     * the run then starts at g, in g's own segment. */
    bound_raise(&chunk->seg_bound[g / WXJ_SEGMENT], b - g);
}

/* Next fit over the segments, under the heap lock: the search resumes in
 * the segment where the last one succeeded and wraps around. */
/* Space never handed out stays PROT_NONE, so a stray jump there faults at
 * its target (toggle's fresh pages do: they are not executable) instead
 * of running zeros. 64 KiB: one mmap per 16 pages handed out, merged by
 * the kernel into one mapping. */
#define RX_STEP_PAGES 16

size_t wxj_rx_step_end(const struct wxj_chunk *chunk, size_t last)
{
    size_t from = chunk->rx_pages, to = last + 1;
    if (to <= from)
        return from;
    to = from + RX_STEP_PAGES > to ? from + RX_STEP_PAGES : to;
    return to < chunk->npages ? to : chunk->npages;
}

bool wxj_chunk_find_run(struct wxj_chunk *chunk, size_t n, size_t align,
                        const struct wxj_pool *pools, struct wxj_pool *self,
                        size_t *run_start, size_t *run_len)
{
    size_t limit = chunk->fresh_next * (chunk->heap->page_size / WXJ_GRANULE);
    size_t nseg = (limit + WXJ_SEGMENT - 1) / WXJ_SEGMENT;
    uint64_t chunk_seen =
        atomic_load_explicit(&chunk->chunk_bound, memory_order_acquire);
    if (BOUND_OF(chunk_seen) < n)
        return false;
    uint32_t largest = 0;
    for (size_t k = 0; k < nseg; k++) {
        size_t seg = (chunk->search_seg + k) % nseg, longest;
        _Atomic uint64_t *bound = &chunk->seg_bound[seg];
        uint64_t seen = atomic_load_explicit(bound, memory_order_acquire);
        if (BOUND_OF(seen) < n) {
            largest = BOUND_OF(seen) > largest ? BOUND_OF(seen) : largest;
            continue;
        }
        size_t to = (seg + 1) * WXJ_SEGMENT;
        if (scan_runs(chunk, seg * WXJ_SEGMENT, to < limit ? to : limit, n,
                      align, pools, self, run_start, run_len, &longest)) {
            chunk->search_seg = seg;
            return true;
        }
        uint32_t now = bound_lower(bound, seen, longest);
        largest = now > largest ? now : largest;
    }
    /* The chunk's bound is the largest of its segments' (same rule). */
    bound_lower(&chunk->chunk_bound, chunk_seen, largest);
    return false;
}

static void free_chunk_memory(struct wxj_chunk *chunk)
{
    wxj_desc_table_free(chunk); /* reads the start bits */
    free(chunk->pages);
    free((void *)chunk->used);
    free((void *)chunk->start);
    free((void *)chunk->end);
    free((void *)chunk->open);
    free((void *)chunk->stale);
    free((void *)chunk->slack);
    free((void *)chunk->seg_bound);
    free(chunk);
}

int wxj_chunk_create(struct wxjit_heap *heap, size_t size,
                     struct wxj_chunk **out)
{
    struct wxj_chunk *chunk = calloc(1, sizeof(*chunk));
    if (!chunk)
        return ENOMEM;
    chunk->heap = heap;
    chunk->fd = -1;
    chunk->fork_fd = -1;
    chunk->size = size;
    chunk->npages = size / heap->page_size;
    chunk->ngranules = size / WXJ_GRANULE;
    size_t words = (chunk->ngranules + BITS - 1) / BITS;
    chunk->pages = calloc(chunk->npages, sizeof(*chunk->pages));
    chunk->used = calloc(words, sizeof(uint64_t));
    chunk->start = calloc(words, sizeof(uint64_t));
    chunk->end = calloc(words, sizeof(uint64_t));
    chunk->open = calloc(words, sizeof(uint64_t));
    bool defer = heap->flags & WXJIT_HEAP_DEFER_TRAP_FILL;
    if (defer)
        chunk->stale = calloc(words, sizeof(uint64_t));
    chunk->slack = calloc(chunk->ngranules, 1);
    chunk->seg_bound = calloc(
        (chunk->ngranules + WXJ_SEGMENT - 1) / WXJ_SEGMENT, sizeof(uint64_t));
    int err = ENOMEM;
    if (chunk->pages && chunk->used && chunk->start && chunk->end &&
        chunk->open && chunk->slack && chunk->seg_bound &&
        (chunk->stale || !defer) &&
        (!heap->sinks || wxj_desc_table_new(chunk) == 0)) {
        for (size_t i = 0; i < chunk->npages; i++)
            chunk->pages[i].fresh = true;
        err = heap->backend->chunk_map(heap, chunk);
        if (err == 0) {
            /* Registered before any page can become executable, so the
             * fault handler knows every wxjit page it may meet. */
            err = wxj_region_register(chunk);
            if (err == 0) {
                *out = chunk;
                return 0;
            }
            heap->backend->chunk_unmap(heap, chunk);
        }
    }
    free_chunk_memory(chunk);
    return err;
}

void wxj_chunk_destroy(struct wxjit_heap *heap, struct wxj_chunk *chunk)
{
    wxj_region_unregister(chunk);
    heap->backend->chunk_unmap(heap, chunk);
    free_chunk_memory(chunk);
}
