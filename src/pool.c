/* Per-thread pools: each thread appends code to its own tail range, so
 * installs from different threads touch different pages and never take a
 * shared lock. A tail is refilled under the heap lock, first from free
 * space (dense packing), then from fresh pages, then from a new chunk. A
 * thread's pools are retired when it exits. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Heaps a thread uses at once before its least recently used pool is
 * retired (it is re-created on demand): JITs use one heap or a few. */
#define TLS_POOLS 8

struct tls_entry {
    struct wxjit_heap *heap;
    uint64_t heap_id; /* tells a recycled heap handle from the old heap */
    struct wxj_pool *pool;
    uint64_t used_at;
};

static __thread struct tls_entry tls_pools[TLS_POOLS];
static __thread uint64_t tls_clock;
static pthread_key_t exit_key;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;

static size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

/* Heap lock held. The unused rest of the tail becomes free space. */
static void tail_retire(struct wxj_pool *pool)
{
    if (pool->chunk)
        wxj_chunk_note_free(pool->chunk, pool->cursor,
                            pool->limit - pool->cursor);
    pool->chunk = NULL;
    pool->tail_start = pool->cursor = pool->limit = 0;
}

static void tls_entry_retire(struct tls_entry *e)
{
    struct wxjit_heap *heap = wxj_heap_lock_if_alive(e->heap, e->heap_id);
    if (heap) {
        tail_retire(e->pool);
        wxj_open_let_go(e->pool);
        e->pool->owned = false;
        pthread_mutex_unlock(&heap->lock);
    }
    e->heap = NULL;
    e->pool = NULL;
}

/* The thread is going away, and with it the in-place windows and the
 * windows on live code it holds open, in any heap: nobody else may close
 * them (they are its own), and pages left writable would hold up their
 * executors forever. */
static void thread_exit(void *unused)
{
    (void)unused;
    if (wxj_open_own_in_place())
        wxj_heaps_abort_in_place_of(wxj_os_tid());
    if (wxj_live_windows_own())
        wxj_heaps_close_windows_of(wxj_os_tid());
    /* Outside any operation, but what those windows hold is what every
     * thread runs from now on: synced as their closes would have been
     * (and before pthread_join returns to anyone waiting). */
    wxj_core_sync_changes();
    for (int i = 0; i < TLS_POOLS; i++)
        if (tls_pools[i].heap)
            tls_entry_retire(&tls_pools[i]);
}

static void create_exit_key(void)
{
    pthread_key_create(&exit_key, thread_exit);
}

static struct tls_entry *entry_for(const struct wxjit_heap *heap)
{
    for (int i = 0; i < TLS_POOLS; i++)
        if (tls_pools[i].heap == heap && tls_pools[i].heap_id == heap->id)
            return &tls_pools[i];
    return NULL;
}

/* An empty entry, else the least recently used one, retired. */
static struct tls_entry *entry_victim(void)
{
    struct tls_entry *victim = &tls_pools[0];
    for (int i = 0; i < TLS_POOLS && victim->heap; i++)
        if (!tls_pools[i].heap || tls_pools[i].used_at < victim->used_at)
            victim = &tls_pools[i];
    if (victim->heap)
        tls_entry_retire(victim);
    return victim;
}

/* A cache line: the owner writes its pool on every operation, so no two
 * pools share one (x86_64, and most aarch64 parts). */
#define POOL_ALIGN 64

/* Heap lock held. A new pool, listed in the heap; NULL if out of memory
 * (or of indexes, which cannot happen: see WXJ_POOL_INDEX_BITS). */
static struct wxj_pool *pool_create(struct wxjit_heap *heap)
{
    struct wxj_pool *pool;
    if (heap->npools == WXJ_MAX_POOLS ||
        !(pool = aligned_alloc(POOL_ALIGN,
                               align_up(sizeof(*pool), POOL_ALIGN))))
        return NULL;
    memset(pool, 0, sizeof(*pool));
    pool->index = heap->npools++;
    wxj_open_init(pool);
    pool->next = heap->pools;
    /* release: fork preparation and commits from other threads walk the
     * list without the lock. */
    atomic_store_explicit(&heap->pools, pool, memory_order_release);
    return pool;
}

/* The calling thread's pool for heap, adopting a retired one if any. */
static int pool_get(struct wxjit_heap *heap, struct wxj_pool **out)
{
    struct tls_entry *e = entry_for(heap);
    if (e) {
        e->used_at = ++tls_clock;
        *out = e->pool;
        return 0;
    }
    struct tls_entry *victim = entry_victim();

    pthread_once(&exit_key_once, create_exit_key);
    if (pthread_setspecific(exit_key, tls_pools) != 0)
        return ENOMEM;

    wxj_lock_shared(&heap->lock);
    struct wxj_pool *pool = heap->pools;
    while (pool && pool->owned)
        pool = pool->next;
    if (!pool && !(pool = pool_create(heap))) {
        pthread_mutex_unlock(&heap->lock);
        return ENOMEM;
    }
    pool->owned = true;
    pthread_mutex_unlock(&heap->lock);

    victim->heap = heap;
    victim->heap_id = heap->id;
    victim->pool = pool;
    victim->used_at = ++tls_clock;
    *out = pool;
    return 0;
}

/* Heap lock held. A new chunk, clipped to what max_bytes still allows. */
static int grow(struct wxjit_heap *heap, size_t need_pages,
                struct wxj_chunk **out)
{
    size_t size = heap->chunk_size;
    uint64_t mapped = atomic_load_explicit(&heap->count.bytes_mapped,
                                           memory_order_relaxed);
    if (heap->max_bytes) {
        size_t room = mapped < heap->max_bytes
                          ? (heap->max_bytes - mapped) / heap->page_size *
                                heap->page_size
                          : 0;
        if (room < size)
            size = room;
    }
    if (size < need_pages * heap->page_size)
        return ENOMEM;
    struct wxj_chunk *chunk;
    int err = wxj_chunk_create(heap, size, &chunk);
    if (err)
        return err == ENOMEM || err == EAGAIN ? ENOMEM : err;
    wxj_count(&heap->count.bytes_mapped, size);
    wxj_count(&heap->count.chunks, 1);
    atomic_store_explicit(&chunk->next,
                          atomic_load_explicit(&heap->chunks,
                                               memory_order_relaxed),
                          memory_order_relaxed);
    /* release: lock-free readers of the list see a complete chunk. */
    atomic_store_explicit(&heap->chunks, chunk, memory_order_release);
    *out = chunk;
    return 0;
}

/* Heap lock held. Gives pool a new tail that fits n granules at align. */
static int refill(struct wxjit_heap *heap, struct wxj_pool *pool, size_t n,
                  size_t align)
{
    tail_retire(pool);
    struct wxj_chunk *c;
    size_t start, len;
    for (c = heap->chunks; c; c = c->next)
        if (wxj_chunk_find_run(c, n, align, heap->pools, pool, &start, &len))
            goto claim;
    size_t per_page = heap->page_size / WXJ_GRANULE;
    size_t pages = (n + per_page - 1) / per_page;
    for (c = heap->chunks; c; c = c->next)
        if (c->npages - c->fresh_next >= pages)
            break;
    if (!c) {
        int err = grow(heap, pages, &c);
        if (err)
            return err;
    }
    /* Trap-filled before any code goes there: every byte of a page handed
     * out is code or a trap, whatever a stale jump hits. */
    struct wxj_window w = {.chunk = c,
                           .first = c->fresh_next,
                           .last = c->fresh_next + pages - 1};
    int err = heap->backend->fill_fresh(heap, &w);
    if (err)
        return err;
    /* Fresh pages start page-aligned, which satisfies any align. */
    start = c->fresh_next * per_page;
    len = pages * per_page;
    c->fresh_next += pages;
    wxj_count(&heap->count.pages, pages);
claim:
    pool->chunk = c;
    pool->tail_start = pool->cursor = start;
    pool->limit = start + len;
    return 0;
}

/* toggle: the first granule at or after `at` (aligned) from which n fit
 * on no page held from one call to another (an in-place reservation, a
 * window on live code): another thread's would make the write wait,
 * perhaps for long (and a thread that holds such a page itself may not
 * wait at all: toggle_open); the caller's own would leave its new code
 * unexecutable until that window closes. */
static size_t past_long_holds(struct wxjit_heap *heap, struct wxj_pool *pool,
                              size_t at, size_t n, size_t align)
{
    size_t per_page = heap->page_size / WXJ_GRANULE;
    struct wxj_chunk *c = pool->chunk;
    for (size_t pg = at / per_page; at + n <= pool->limit &&
                                    pg <= (at + n - 1) / per_page;
         pg++) {
        if (atomic_load_explicit(&c->pages[pg].long_holds,
                                 memory_order_acquire)) {
            at = align_up((pg + 1) * per_page, align);
            pg = at / per_page - 1;
        }
    }
    return at;
}

int wxj_pool_alloc(struct wxjit_heap *heap, struct wxj_pool *pool, size_t n,
                   size_t align, struct wxj_chunk **chunk, size_t *granule)
{
    size_t at = align_up(pool->cursor, align);
    if (pool->chunk && heap->backend->exclusive_windows)
        at = past_long_holds(heap, pool, at, n, align);
    if (!pool->chunk || at + n > pool->limit) {
        wxj_lock_shared(&heap->lock);
        int err = refill(heap, pool, n, align);
        pthread_mutex_unlock(&heap->lock);
        if (err)
            return err;
        at = align_up(pool->cursor, align);
        /* A new tail skips held pages already (refill); one taken since
         * is waited for (or EDEADLK, toggle_open's rule). */
        size_t past = heap->backend->exclusive_windows
                          ? past_long_holds(heap, pool, at, n, align)
                          : at;
        if (past + n <= pool->limit)
            at = past;
    }
    wxj_chunk_note_free(pool->chunk, pool->cursor, at - pool->cursor);
    pool->cursor = at + n;
    *chunk = pool->chunk;
    *granule = at;
    return 0;
}

void wxj_pool_give_back(struct wxj_pool *pool, struct wxj_chunk *chunk,
                        size_t g, size_t n)
{
    /* The tail's last block: append over it again. Only inside the tail:
     * a block carved from an older tail can end where the cursor stands
     * (the new tail began at the old one's free rest), and rewinding over
     * it would hand out space that other refills see as free. */
    if (pool->chunk == chunk && pool->cursor == g + n &&
        g >= pool->tail_start)
        pool->cursor = g;
    else
        wxj_chunk_note_free(chunk, g, n);
}

void wxj_pool_end_tail_page(struct wxjit_heap *heap, struct wxj_pool *pool,
                            struct wxj_chunk *chunk, size_t end)
{
    if (pool->chunk != chunk || pool->cursor != end)
        return;
    size_t next = align_up(end, heap->page_size / WXJ_GRANULE);
    if (next > pool->limit)
        next = pool->limit;
    wxj_chunk_note_free(chunk, end, next - end);
    pool->cursor = next;
}

void wxj_pool_leave_pages(struct wxjit_heap *heap, struct wxj_pool *pool,
                          struct wxj_chunk *chunk, size_t first, size_t last)
{
    size_t per_page = heap->page_size / WXJ_GRANULE;
    if (pool->chunk != chunk || pool->cursor / per_page < first ||
        pool->cursor / per_page > last || pool->cursor >= pool->limit)
        return;
    size_t next = (last + 1) * per_page;
    if (next > pool->limit)
        next = pool->limit;
    wxj_chunk_note_free(chunk, pool->cursor, next - pool->cursor);
    pool->cursor = next;
}

/* Without this, every in-place reservation (each sljit function) would
 * cost its thread the rest of a page, and a JIT that compiles and frees
 * in turn would walk its tail page by page and refill it under the heap
 * lock, instead of reusing the same bytes. Space in the tail is the
 * pool's alone (searches skip every pool's [tail_start, limit)), so once
 * nothing in [end, cursor) is in use the cursor may stand at end again,
 * as a give-back of the tail's last block makes it. */
void wxj_pool_in_place_ended(struct wxj_pool *pool, struct wxj_chunk *chunk,
                             size_t end)
{
    if (pool->chunk == chunk && end >= pool->tail_start &&
        end < pool->cursor && wxj_chunk_unused(chunk, end, pool->cursor - end))
        pool->cursor = end;
}

/* ---- the operation gate, closed while the process forks ----------------
 * Every operation that changes a heap runs between wxj_op_begin and
 * wxj_op_end with its pool's busy flag up. Fork preparation raises
 * `forking` and waits for every busy flag to drop, so the child's copy of
 * the metadata and code is never caught mid-operation. A seq_cst store and
 * load on each side (Dekker): either the operation sees `forking`, or the
 * fork sees `busy`. */
static _Atomic uint32_t forking;
static __thread struct wxj_pool *tls_busy; /* the pool of the current op */

static void raise_busy(struct wxj_pool *pool)
{
    for (;;) {
        atomic_store(&pool->busy, 1);
        if (!atomic_load(&forking))
            return;
        atomic_store(&pool->busy, 0);
        wxj_os_futex_wait(&forking, 1);
    }
}

int wxj_op_begin(struct wxjit_heap *heap, struct wxj_pool **out)
{
    struct wxj_pool *pool;
    /* Before pool_get: adopting a pool takes the heap lock. */
    uint64_t locks = wxj_shared_locks_taken();
    int err = pool_get(heap, &pool);
    if (err)
        return err;
    raise_busy(pool);
    tls_busy = pool;
    if (heap->backend->recover)
        heap->backend->recover(heap);
    pool->locks_at_begin = locks;
    for (int k = 0; k < WXJ_CALL_KINDS; k++)
        pool->calls_at_begin[k] = wxj_os_calls_of(k);
    *out = pool;
    return 0;
}

void wxj_op_end(struct wxjit_heap *heap, struct wxj_pool *pool, int err)
{
    (void)heap;
    wxj_core_sync_changes(); /* a failed operation may have put bytes back */
    if (err == 0) {
        uint64_t d[WXJ_CALL_KINDS], sum = 0;
        for (int k = 0; k < WXJ_CALL_KINDS; k++)
            sum += d[k] = wxj_os_calls_of(k) - pool->calls_at_begin[k];
        wxj_count_own(&pool->syscalls, sum);
        wxj_count_own(&pool->mprotect_calls, d[WXJ_CALL_MPROTECT]);
        wxj_count_own(&pool->map_calls,
                      d[WXJ_CALL_MMAP] + d[WXJ_CALL_MUNMAP]);
        wxj_count_own(&pool->core_syncs, d[WXJ_CALL_MEMBARRIER]);
        wxj_count_own(&pool->shared_locks,
                      wxj_shared_locks_taken() - pool->locks_at_begin);
    }
    tls_busy = NULL;
    atomic_store_explicit(&pool->busy, 0, memory_order_release);
}

/* A thread sleeping on a page that another thread holds (an in-place
 * reservation, committed by an operation that must pass the gate) would
 * otherwise deadlock a fork that waits for it. */
void wxj_op_pause(void)
{
    if (tls_busy)
        atomic_store_explicit(&tls_busy->busy, 0, memory_order_release);
}

void wxj_op_resume(void)
{
    if (tls_busy)
        raise_busy(tls_busy);
}

void wxj_ops_close(void)
{
    atomic_store(&forking, 1);
}

void wxj_ops_reopen(void)
{
    atomic_store(&forking, 0);
    wxj_os_futex_wake_all(&forking);
}

void wxj_ops_wait_idle(struct wxjit_heap *heap)
{
    for (struct wxj_pool *p = atomic_load(&heap->pools); p; p = p->next)
        while (atomic_load(&p->busy))
            wxj_os_yield();
}

/* In a fork child, where only the forking thread lives: the other threads'
 * pools are retired, their tails become free space. */
void wxj_pools_after_fork(struct wxjit_heap *heap)
{
    for (struct wxj_pool *p = heap->pools; p; p = p->next) {
        bool mine = false;
        for (int i = 0; i < TLS_POOLS; i++)
            mine |= tls_pools[i].pool == p && tls_pools[i].heap == heap;
        if (!mine) {
            tail_retire(p);
            p->owned = false;
        }
    }
}

void wxj_pools_forget_heap(struct wxjit_heap *heap)
{
    /* Other threads' TLS entries may still name these pools; they check
     * the heap id under the registry lock before touching them. */
    struct wxj_pool *p = heap->pools;
    while (p) {
        struct wxj_pool *next = p->next;
        wxj_open_forget(p);
        free(p);
        p = next;
    }
    heap->pools = NULL;
}
