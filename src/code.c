/* Code operations: reserve, commit, abort, install, patch, free. Each
 * public entry point checks all its arguments before it changes anything,
 * so a failed call leaves the heap exactly as it was, and runs inside the
 * operation gate (pool.c) so that fork() never copies a half-done one. */
#define _GNU_SOURCE /* ucontext register names in arch/ */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "arch/arch.h"
#include "code_changed.h"
#include "internal.h"

static int fill_copy(uint8_t *dst, size_t len, const void *src)
{
    memcpy(dst, src, len);
    return 0;
}

static int fill_trap(uint8_t *dst, size_t len, const void *unused)
{
    (void)unused;
    wxj_arch_trap_fill(dst, len);
    return 0;
}

static size_t granules(size_t bytes)
{
    return (bytes + WXJ_GRANULE - 1) / WXJ_GRANULE;
}

/* Common argument checks of reserve and install; n and align in granules. */
static int check_request(const struct wxjit_heap *heap, size_t size,
                         size_t align, size_t *n, size_t *align_g)
{
    if (!wxj_heap_ok(heap) || size == 0 || size > heap->chunk_size ||
        (align & (align - 1)) != 0 || align > heap->page_size)
        return EINVAL;
    *n = granules(size);
    *align_g = align > WXJ_GRANULE ? align / WXJ_GRANULE : 1;
    return 0;
}

static void account_live(struct wxj_pool *pool, int64_t granules,
                         bool install)
{
    atomic_store_explicit(
        &pool->granules_live,
        atomic_load_explicit(&pool->granules_live, memory_order_relaxed) +
            granules,
        memory_order_relaxed);
    wxj_count_own(install ? &pool->installs : &pool->frees, 1);
}

/* ---- install ------------------------------------------------------------- */
static int install(struct wxjit_heap *heap, struct wxj_pool *pool,
                   const void *code, size_t size, size_t n, size_t align_g,
                   void **exec)
{
    struct wxj_chunk *chunk;
    size_t g;
    int err = wxj_pool_alloc(heap, pool, n, align_g, &chunk, &g);
    if (err)
        return err;
    uint8_t *at = wxj_granule_addr(chunk, g);
    if ((err = wxj_write_code(heap, chunk, at, size, fill_copy, code, 0))) {
        wxj_pool_give_back(pool, chunk, g, n);
        return err;
    }
    atomic_store_explicit(&chunk->slack[g], (uint8_t)(n * WXJ_GRANULE - size),
                          memory_order_relaxed);
    wxj_block_mark(chunk, g, n, false);
    account_live(pool, (int64_t)n, true);
    *exec = at;
    return 0;
}

int wxjit_install(wxjit_heap *heap, const void *code, size_t size,
                  size_t align, void **exec)
{
    size_t n, align_g;
    struct wxj_pool *pool;
    int err = check_request(heap, size, align, &n, &align_g);
    if (err || !code || !exec)
        return err ? err : EINVAL;
    if ((err = wxj_op_begin(heap, &pool)))
        return err;
    err = install(heap, pool, code, size, n, align_g, exec);
    wxj_op_end(heap, pool, err);
    return err;
}

/* New code on a page where the calling thread has an in-place window or
 * a window on live code open would not be executable when its commit
 * returns (toggle keeps that page writable until the window closes), so
 * it is refused, on every backend alike (EDEADLK): a JIT behaves the same
 * whichever backend it runs on. */
static bool on_own_window(struct wxjit_heap *heap, struct wxj_pool *pool,
                          const void *exec, size_t len)
{
    uintptr_t lo = (uintptr_t)exec, hi = lo + len - 1;
    return wxj_open_holds_pages(heap, pool, lo, hi) ||
           wxj_live_windows_own_pages(heap, lo, hi);
}

/* ---- reservations -------------------------------------------------------
 * wxjit records each open reservation in the pool it was made through
 * (reservations.c); internal[] holds its serial, so commit and abort accept only the reservation as handed
 * out, once. */
static int reserve(struct wxjit_heap *heap, struct wxj_pool *pool,
                   size_t size, size_t n, size_t align_g, bool in_place,
                   uint8_t *write, wxjit_reservation *out)
{
    struct wxj_chunk *chunk;
    struct wxj_window w;
    size_t g;
    int err = wxj_pool_alloc(heap, pool, n, align_g, &chunk, &g);
    if (err)
        return err;
    uint8_t *at = wxj_granule_addr(chunk, g);
    if (in_place) {
        /* The window stays open from now to commit or abort, its view
         * where later windows on this code will find it. */
        w = wxj_window_over(heap, chunk, at, size);
        w.kind = WXJ_VIEW_STABLE_TRAPS;
        if ((err = heap->backend->open(heap, &w))) {
            wxj_pool_give_back(pool, chunk, g, n);
            return err;
        }
        write = wxj_window_at(heap, &w, at);
    }
    struct wxj_open_rec rec = {(uintptr_t)at, write, size, 0, in_place,
                               wxj_os_tid()};
    if ((err = wxj_open_add(pool, &rec))) {
        /* Nothing was written: a close that fails leaves traps. */
        if (in_place && heap->backend->close(heap, &w, at, size))
            heap->backend->abandon(heap, &w);
        wxj_pool_give_back(pool, chunk, g, n);
        return err;
    }
    wxj_block_mark(chunk, g, n, true);
    /* The thread's next code starts on another page: it must be executable
     * when its install returns, and this page may not be. */
    if (in_place)
        wxj_pool_end_tail_page(heap, pool, chunk, g + n);
    out->exec = at;
    out->write = write;
    out->size = size;
    out->internal[0] = rec.serial;
    out->internal[1] = ~rec.serial; /* both words must come back as given */
    return 0;
}

int wxjit_reserve(wxjit_heap *heap, size_t size, size_t align, unsigned flags,
                  wxjit_reservation *out)
{
    size_t n, align_g;
    struct wxj_pool *pool;
    int err = check_request(heap, size, align, &n, &align_g);
    if (err || !out || (flags & ~(unsigned)WXJIT_RESERVE_IN_PLACE))
        return err ? err : EINVAL;
    bool in_place = flags & WXJIT_RESERVE_IN_PLACE;
    uint8_t *scratch = NULL;
    if (!in_place && !(scratch = malloc(size)))
        return ENOMEM;
    if ((err = wxj_op_begin(heap, &pool)) == 0) {
        err = reserve(heap, pool, size, n, align_g, in_place, scratch, out);
        wxj_op_end(heap, pool, err);
    }
    if (err)
        free(scratch);
    return err;
}

struct open_res {
    struct wxj_open_rec rec;
    struct wxj_pool *from; /* the pool that recorded it */
    struct wxj_chunk *chunk;
    size_t g, n;
    bool in_place;
};

/* Takes res out of the open reservations, or fails if it is not one as
 * handed out; the claim makes a racing second commit or abort fail. used:
 * the bytes a commit makes live (0 for an abort), recorded before the
 * block can look live. The block keeps its open bit until the commit has
 * finished (commit_finish) or the abort unmarked it: a free or patch of
 * its address meanwhile fails as for any open reservation. */
static int claim_reservation(struct wxjit_heap *heap, struct wxj_pool *pool,
                             wxjit_reservation *res, size_t used,
                             struct open_res *r)
{
    /* An in-place window belongs to the thread that opened it, on every
     * backend (toggle holds its pages for that thread alone): EPERM. */
    int err = res->exec ? wxj_open_take(heap, pool, res, &r->rec, &r->from)
                        : EINVAL;
    if (err)
        return err;
    r->in_place = r->rec.in_place;
    r->chunk = wxj_chunk_find(heap, res->exec);
    r->g = wxj_granule_of(r->chunk, res->exec);
    r->n = wxj_block_extent(r->chunk, r->g);
    if (used)
        atomic_store_explicit(&r->chunk->slack[r->g],
                              (uint8_t)(granules(used) * WXJ_GRANULE - used),
                              memory_order_relaxed);
    return 0;
}

/* Undoes a claim: the reservation is open again, for a retry or abort. */
static void unclaim(struct wxj_pool *pool, const struct open_res *r)
{
    wxj_open_put_back(pool, r->from, &r->rec);
}

/* The bytes are in place: return the unused tail, release the scratch
 * buffer, count, and consume the reservation. The block looks live only
 * now, shrunk to what was used (release: its bits and slack first). */
static void commit_finish(struct wxj_pool *pool, wxjit_reservation *res,
                          const struct open_res *r, size_t used)
{
    size_t m = granules(used);
    if (r->in_place)
        wxj_pool_in_place_ended(pool, r->chunk, r->g + r->n);
    if (m < r->n) {
        wxj_block_shrink(r->chunk, r->g, r->n, m);
        wxj_pool_give_back(pool, r->chunk, r->g + m, r->n - m);
    }
    wxj_bit_clear(r->chunk->open, r->g);
    if (!r->in_place)
        free(res->write);
    account_live(pool, (int64_t)m, true);
    memset(res, 0, sizeof(*res));
}

/* An in-place reservation: the bytes are there already; whatever the JIT
 * left past `used` must not stay executable. If the close fails the
 * window stays open and held by its owner, for a retry or an abort. */
static int commit_in_place(struct wxjit_heap *heap, wxjit_reservation *res,
                           const struct open_res *r, size_t used)
{
    fill_trap((uint8_t *)res->write + used, r->n * WXJ_GRANULE - used, NULL);
    return wxj_close_in_place(heap, r->chunk, res->exec, res->write,
                              res->size);
}

static int commit(struct wxjit_heap *heap, struct wxj_pool *pool,
                  wxjit_reservation *res, size_t used)
{
    struct open_res r;
    int err = claim_reservation(heap, pool, res, used, &r);
    if (err)
        return err;
    if (!r.in_place && on_own_window(heap, pool, res->exec, used))
        err = EDEADLK;
    else if (r.in_place)
        err = commit_in_place(heap, res, &r, used);
    else
        err = wxj_write_code(heap, r.chunk, res->exec, used, fill_copy,
                             res->write, 0);
    if (err) {
        unclaim(pool, &r); /* still open: retry or abort */
        return err;
    }
    commit_finish(pool, res, &r, used);
    return 0;
}

int wxjit_commit(wxjit_heap *heap, wxjit_reservation *res, size_t used)
{
    struct wxj_pool *pool;
    if (!wxj_heap_ok(heap) || !res || used == 0 || used > res->size)
        return EINVAL;
    int err = wxj_op_begin(heap, &pool);
    if (err)
        return err;
    err = commit(heap, pool, res, used);
    wxj_op_end(heap, pool, err);
    return err;
}

static int abort_reservation(struct wxjit_heap *heap, struct wxj_pool *pool,
                             wxjit_reservation *res)
{
    struct open_res r;
    int err = claim_reservation(heap, pool, res, 0, &r);
    if (err)
        return err;
    if (r.in_place) {
        if ((err = wxj_in_place_abort(heap, r.chunk, res->exec, res->write,
                                      res->size, false))) {
            unclaim(pool, &r); /* still open and held: retry */
            return err;
        }
        wxj_pool_in_place_ended(pool, r.chunk, r.g + r.n);
    } else {
        free(res->write);
        wxj_block_unmark(r.chunk, r.g, r.n);
    }
    wxj_pool_give_back(pool, r.chunk, r.g, r.n);
    memset(res, 0, sizeof(*res));
    return 0;
}

int wxjit_abort(wxjit_heap *heap, wxjit_reservation *res)
{
    struct wxj_pool *pool;
    if (!wxj_heap_ok(heap) || !res)
        return EINVAL;
    int err = wxj_op_begin(heap, &pool);
    if (err)
        return err;
    err = abort_reservation(heap, pool, res);
    wxj_op_end(heap, pool, err);
    return err;
}

/* ---- batches --------------------------------------------------------------
 * Scratch reservations are sorted by address and written through one
 * window per run of adjacent pages; in-place ones are already in place and
 * are closed one by one. */
struct batch_item {
    wxjit_reservation *res;
    size_t used;
    struct open_res r;
};

/* In-place reservations first, then scratch ones by address. */
static int by_kind_and_address(const void *a, const void *b)
{
    const struct batch_item *x = a, *y = b;
    if (x->r.in_place != y->r.in_place)
        return x->r.in_place ? -1 : 1;
    uintptr_t p = (uintptr_t)x->res->exec, q = (uintptr_t)y->res->exec;
    return p < q ? -1 : p > q;
}

/* Items [i, end) with the same chunk whose pages touch or overlap item i's
 * run; returns end and widens *last to the run's last page. A backend with
 * exact writes needs one range of bytes: each item must start where the
 * granules of the one before end (the bytes between are that one's, and
 * traps). */
static size_t run_end(const struct wxjit_heap *heap,
                      const struct batch_item *items, size_t i, size_t count,
                      size_t *last)
{
    const struct wxj_chunk *c = items[i].r.chunk;
    size_t end = i;
    while (end < count && items[end].r.chunk == c) {
        const uint8_t *exec = items[end].res->exec;
        if (wxj_page_of(heap, c, exec) > *last + 1)
            break;
        if (heap->backend->exact_writes && end > i &&
            exec != (uint8_t *)items[end - 1].res->exec +
                        granules(items[end - 1].used) * WXJ_GRANULE)
            break;
        size_t l = wxj_page_of(heap, c, exec + items[end].used - 1);
        *last = l > *last ? l : *last;
        end++;
    }
    return end;
}

static int write_runs(struct wxjit_heap *heap, struct wxj_pool *pool,
                      struct batch_item *items, size_t count)
{
    size_t i = 0;
    while (i < count) {
        struct wxj_chunk *c = items[i].r.chunk;
        size_t first = wxj_page_of(heap, c, items[i].res->exec), last = first;
        size_t end = run_end(heap, items, i, count, &last);
        struct wxj_window w = {.chunk = c, .first = first, .last = last};
        uint8_t *flush = items[i].res->exec;
        size_t flush_len = (uint8_t *)items[end - 1].res->exec +
                           items[end - 1].used - flush;
        int err = heap->backend->open(heap, &w);
        if (err)
            return err;
        /* Each item's own granules past `used` are traps again, in the
         * view too (an exact backend writes the gaps between items). */
        for (size_t k = i; k < end; k++) {
            uint8_t *at = wxj_window_at(heap, &w, items[k].res->exec);
            size_t used = items[k].used;
            memcpy(at, items[k].res->write, used);
            fill_trap(at + used, granules(used) * WXJ_GRANULE - used, NULL);
        }
        if ((err = heap->backend->close(heap, &w, flush, flush_len))) {
            /* The run's space was free: traps again, as before. */
            for (size_t k = i; k < end; k++)
                fill_trap(wxj_window_at(heap, &w, items[k].res->exec),
                          items[k].used, NULL);
            heap->backend->abandon(heap, &w);
            return err;
        }
        for (; i < end; i++)
            commit_finish(pool, items[i].res, &items[i].r,
                          items[i].used);
    }
    return 0;
}

/* Claimed items not consumed yet (res->exec still set) become open again. */
static void reopen_unconsumed(struct wxj_pool *pool,
                              const struct batch_item *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (items[i].res->exec)
            unclaim(pool, &items[i].r);
}

static int commit_batch(struct wxjit_heap *heap, struct wxj_pool *pool,
                        struct batch_item *items, size_t count)
{
    size_t claimed = 0, in_place = 0;
    int err = 0;
    while (claimed < count && !err)
        if (!(err = claim_reservation(heap, pool, items[claimed].res,
                                      items[claimed].used,
                                      &items[claimed].r)))
            claimed++;
    qsort(items, claimed, sizeof(*items), by_kind_and_address);
    /* The batch's own in-place reservations are claimed (out of the
     * table) and close first: only others count here. */
    for (size_t i = 0; !err && i < claimed; i++)
        if (!items[i].r.in_place &&
            on_own_window(heap, pool, items[i].res->exec, items[i].used))
            err = EDEADLK;
    for (; !err && in_place < claimed && items[in_place].r.in_place;
         in_place++) {
        struct batch_item *it = &items[in_place];
        if (!(err = commit_in_place(heap, it->res, &it->r, it->used)))
            commit_finish(pool, it->res, &it->r, it->used);
    }
    if (!err)
        err = write_runs(heap, pool, items + in_place, claimed - in_place);
    if (err)
        reopen_unconsumed(pool, items, claimed);
    return err;
}

int wxjit_commit_batch(wxjit_heap *heap, wxjit_reservation *res,
                       const size_t *used, size_t count)
{
    struct wxj_pool *pool;
    if (!wxj_heap_ok(heap) || !res || !used || count == 0 ||
        count > SIZE_MAX / sizeof(struct batch_item))
        return EINVAL;
    for (size_t i = 0; i < count; i++)
        if (used[i] == 0 || used[i] > res[i].size)
            return EINVAL;
    struct batch_item *items = malloc(count * sizeof(*items));
    if (!items)
        return ENOMEM;
    for (size_t i = 0; i < count; i++)
        items[i] = (struct batch_item){.res = &res[i], .used = used[i]};
    int err = wxj_op_begin(heap, &pool);
    if (err == 0) {
        err = commit_batch(heap, pool, items, count);
        wxj_op_end(heap, pool, err);
    }
    free(items);
    return err;
}

/* ---- live code: patch and free ------------------------------------------ */

/* Finds the live block holding [addr, addr + size), which starts at
 * granule start; fails if it is not entirely inside that committed
 * block. */
static int live_range(struct wxj_chunk *c, const void *addr, size_t size,
                      size_t start)
{
    size_t found;
    if (!wxj_block_find_start(c, wxj_granule_of(c, addr), &found) ||
        found != start || !wxj_block_live(c, start))
        return EINVAL;
    /* The committed bytes, not the granules: a patch past them would
     * write over the trap fill after the function. */
    const uint8_t *end =
        wxj_granule_addr(c, start + wxj_block_extent(c, start)) -
        atomic_load_explicit(&c->slack[start], memory_order_relaxed);
    if ((const uint8_t *)addr >= end ||
        size > (size_t)(end - (const uint8_t *)addr))
        return EINVAL;
    return 0;
}

/* A patch racing a free of the same function must not write into the
 * freed space after its trap fill (a stale call would run the patch, and
 * the bytes would outlive the function). Two guards, one per kind of
 * backend:
 * - inside a window that excludes every other writer (toggle), the fill
 *   itself checks that the block is still live: a free's claim either
 *   came first (nothing is written) or its trap fill comes after;
 * - elsewhere the patch is pinned (a counter per start-granule stripe)
 *   from before its liveness check to after its write, and a free waits
 *   after its claim until its stripe has no pin. Both sides order their
 *   store before their load with a full fence, so either the patch sees
 *   the claim or the free sees the pin. */
struct checked_fill {
    struct wxj_chunk *chunk;
    size_t start;
    wxj_fill_fn fill;
    const void *arg;
};

static int fill_if_live(uint8_t *dst, size_t len, const void *arg)
{
    const struct checked_fill *c = arg;
    if (!wxj_block_live(c->chunk, c->start))
        return EINVAL;
    /* Live code changes from here (in place on toggle and dualmap, at the
     * close on procmem): only a patch that gets this far needs the core
     * sync, failed or not. */
    wxj_code_changes |= WXJ_CHANGE_LIVE;
    return c->fill(dst, len, c->arg);
}

static _Atomic uint32_t *pin_of(struct wxj_chunk *c, size_t start)
{
    return &c->patching[start % WXJ_PIN_STRIPES];
}

static void wait_for_patches(struct wxjit_heap *heap, struct wxj_chunk *c,
                             size_t start)
{
    if (heap->backend->exclusive_windows)
        return; /* toggle: its fill checks liveness (fill_if_live) */
    atomic_thread_fence(memory_order_seq_cst);
    while (atomic_load_explicit(pin_of(c, start), memory_order_acquire))
        wxj_os_yield();
}

/* Checks, then writes fill(arg) over live code at [addr, addr + size). */
static int patch_live(struct wxjit_heap *heap, uint8_t *addr, size_t size,
                      wxj_fill_fn fill, const void *arg, unsigned how)
{
    struct wxj_chunk *c = wxj_chunk_find(heap, addr);
    size_t start;
    if (!c || !wxj_block_find_start(c, wxj_granule_of(c, addr), &start))
        return EINVAL;
    struct wxj_live_window *held;
    int err = wxj_live_windows_patch_begin(heap, addr, size, &held);
    if (err)
        return err;
    _Atomic uint32_t *pin = pin_of(c, start);
    atomic_fetch_add_explicit(pin, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    struct checked_fill checked = {c, start, fill, arg};
    err = live_range(c, addr, size, start);
    if (err == 0)
        err = wxj_write_code(heap, c, addr, size, fill_if_live, &checked,
                             WXJ_WRITE_OVER_CODE | how);
    atomic_fetch_sub_explicit(pin, 1, memory_order_release);
    wxj_live_windows_patch_end(heap, held);
    return err;
}

static int patch(struct wxjit_heap *heap, void *addr, size_t size,
                 wxj_fill_fn fill, const void *arg, unsigned how)
{
    struct wxj_pool *pool;
    if (!wxj_heap_ok(heap) || !addr || size == 0)
        return EINVAL;
    int err = wxj_op_begin(heap, &pool);
    if (err)
        return err;
    err = patch_live(heap, addr, size, fill, arg, how);
    wxj_op_end(heap, pool, err);
    return err;
}

int wxjit_patch(wxjit_heap *heap, void *addr, const void *bytes, size_t size)
{
    return bytes ? patch(heap, addr, size, fill_copy, bytes, 0) : EINVAL;
}

struct atomic_store {
    uint64_t value;
    size_t width;
};

static int fill_atomic(uint8_t *dst, size_t len, const void *arg)
{
    const struct atomic_store *s = arg;
    (void)len;
    /* Relaxed: the window's close publishes it; atomicity is what counts,
     * so an executor reading these bytes sees old or new, never a mix. */
    switch (s->width) {
    case 1:
        __atomic_store_n(dst, (uint8_t)s->value, __ATOMIC_RELAXED);
        break;
    case 2:
        __atomic_store_n((uint16_t *)dst, (uint16_t)s->value,
                         __ATOMIC_RELAXED);
        break;
    case 4:
        __atomic_store_n((uint32_t *)dst, (uint32_t)s->value,
                         __ATOMIC_RELAXED);
        break;
    default:
        __atomic_store_n((uint64_t *)dst, s->value, __ATOMIC_RELAXED);
    }
    return 0;
}

int wxjit_patch_atomic(wxjit_heap *heap, void *addr, uint64_t value,
                       size_t width)
{
    if ((width != 1 && width != 2 && width != 4 && width != 8) ||
        (uintptr_t)addr % width)
        return EINVAL;
    struct atomic_store s = {value, width};
    return patch(heap, addr, width, fill_atomic, &s, WXJ_WRITE_ATOMIC);
}

static int free_code(struct wxjit_heap *heap, struct wxj_pool *pool,
                     uint8_t *exec)
{
    struct wxj_chunk *chunk = wxj_chunk_find(heap, exec);
    if (!chunk || (uintptr_t)(exec - chunk->base) % WXJ_GRANULE)
        return EINVAL;
    size_t g = wxj_granule_of(chunk, exec);
    if (wxj_bit_get(chunk->open, g))
        return EINVAL; /* a reservation: abort it instead */
    /* Refused before the claim, so that the function never looks freed
     * for a moment: the caller's own window is over it, or the caller
     * holds one (or an in-place reservation) and would have to wait. */
    if (wxj_bit_get(chunk->start, g)) {
        size_t n = wxj_block_extent(chunk, g);
        if (wxj_live_windows_own_over(heap, exec, n * WXJ_GRANULE) ||
            wxj_live_windows_free_would_wait(heap, chunk, g, n, !chunk->stale))
            return EDEADLK;
    }
    /* Clearing the start bit is the claim: of two racing frees of the same
     * block exactly one proceeds, and patches from now on refuse it. */
    if (!wxj_bit_clear(chunk->start, g))
        return EINVAL;
    wait_for_patches(heap, chunk, g);
    /* Before the traps: a describer copies the function's bytes. */
    if (chunk->desc)
        wxj_describe_wait(chunk, g);
    size_t n = wxj_block_extent(chunk, g);
    int err = wxj_live_windows_before_free(heap, chunk, g, n * WXJ_GRANULE);
    if (err) {
        wxj_bit_set(chunk->start, g); /* it may not wait: still live */
        return err;
    }
    if (chunk->stale) {
        /* The page's next window fills it: no window of its own. */
        wxj_block_defer_traps(chunk, g, n);
    } else {
        err = wxj_write_code(heap, chunk, exec, n * WXJ_GRANULE, fill_trap,
                             NULL, WXJ_WRITE_OVER_CODE);
        if (err) {
            wxj_bit_set(chunk->start, g);
            return err;
        }
    }
    /* Before the space can be reused: no later code gets its name. */
    if (chunk->desc)
        wxj_describe_retract(heap, chunk, g);
    wxj_block_unmark(chunk, g, n);
    /* The calling thread's last install: its tail appends there again, so
     * install-and-free churn never runs the tail out (no refill, no heap
     * lock) and touches no chunk-wide free-space bound. */
    wxj_pool_give_back(pool, chunk, g, n);
    account_live(pool, -(int64_t)n, false);
    return 0;
}

int wxjit_free(wxjit_heap *heap, void *exec)
{
    struct wxj_pool *pool;
    if (!wxj_heap_ok(heap) || !exec)
        return EINVAL;
    int err = wxj_op_begin(heap, &pool);
    if (err)
        return err;
    err = free_code(heap, pool, exec);
    wxj_op_end(heap, pool, err);
    return err;
}
