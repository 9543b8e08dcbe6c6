/* The public API: heaps, reservations, install, patch, free, stats. Every
 * entry point validates all of its arguments before it changes anything,
 * so a failed call leaves the heap exactly as it was. */
#define _GNU_SOURCE /* ucontext register names in arch/ */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "arch/arch.h"
#include "internal.h"

/* ---- heap handles -------------------------------------------------------
 * Destroyed heap structs are kept on a recycle list instead of being freed,
 * so a call on a destroyed handle reads valid memory and fails with EINVAL
 * instead of corrupting the allocator. */
static pthread_mutex_t heaps_lock = PTHREAD_MUTEX_INITIALIZER;
static struct wxjit_heap *recycled;
static uint64_t next_heap_id;

static bool heap_ok(const struct wxjit_heap *heap)
{
    return heap && atomic_load_explicit(&heap->magic, memory_order_acquire) ==
                       WXJ_HEAP_ALIVE;
}

struct wxjit_heap *wxj_heap_lock_if_alive(struct wxjit_heap *heap,
                                          uint64_t id)
{
    pthread_mutex_lock(&heaps_lock);
    bool alive = heap_ok(heap) && heap->id == id;
    if (alive)
        pthread_mutex_lock(&heap->lock); /* order: heaps_lock, heap->lock */
    pthread_mutex_unlock(&heaps_lock);
    return alive ? heap : NULL;
}

static const struct wxj_backend *backend_for(wxjit_backend id)
{
    switch (id) {
    case WXJIT_BACKEND_AUTO:
    case WXJIT_BACKEND_TOGGLE:
        return &wxj_backend_toggle;
    default:
        return NULL;
    }
}

int wxjit_heap_create(const wxjit_heap_options *opts, wxjit_heap **out)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    if (!out)
        return EINVAL;
    if (opts) {
        if (opts->size < sizeof(o) || opts->flags != 0 ||
            opts->chunk_size > WXJ_MAX_CHUNK)
            return EINVAL;
        o = *opts;
    }
    if (o.backend == WXJIT_BACKEND_DUALMAP)
        return ENOTSUP;
    const struct wxj_backend *backend = backend_for(o.backend);
    if (!backend)
        return EINVAL;

    wxj_os_init();
    pthread_mutex_lock(&heaps_lock);
    struct wxjit_heap *heap = recycled;
    if (heap)
        recycled = heap->recycle_next;
    uint64_t id = ++next_heap_id;
    pthread_mutex_unlock(&heaps_lock);
    if (!heap && !(heap = malloc(sizeof(*heap))))
        return ENOMEM;

    memset(heap, 0, sizeof(*heap));
    heap->id = id;
    heap->backend = backend;
    heap->page_size = wxj_os_page_size();
    size_t chunk = o.chunk_size ? o.chunk_size : WXJ_DEFAULT_CHUNK;
    heap->chunk_size = (chunk + heap->page_size - 1) / heap->page_size *
                       heap->page_size;
    heap->max_bytes = o.max_bytes;
    heap->cookie = (uintptr_t)heap * 0x9e3779b97f4a7c15u ^ id;
    pthread_mutex_init(&heap->lock, NULL);
    atomic_store_explicit(&heap->magic, WXJ_HEAP_ALIVE, memory_order_release);
    *out = heap;
    return 0;
}

int wxjit_heap_destroy(wxjit_heap *heap)
{
    pthread_mutex_lock(&heaps_lock);
    if (!heap_ok(heap)) {
        pthread_mutex_unlock(&heaps_lock);
        return EINVAL;
    }
    atomic_store_explicit(&heap->magic, WXJ_HEAP_DEAD, memory_order_release);
    pthread_mutex_unlock(&heaps_lock);

    /* A thread retiring its pool at exit may be inside the heap lock. */
    pthread_mutex_lock(&heap->lock);
    pthread_mutex_unlock(&heap->lock);
    struct wxj_chunk *chunk = heap->chunks;
    while (chunk) {
        struct wxj_chunk *next = chunk->next;
        wxj_chunk_destroy(heap, chunk);
        chunk = next;
    }
    heap->chunks = NULL;
    wxj_pools_forget_heap(heap);
    pthread_mutex_destroy(&heap->lock);

    pthread_mutex_lock(&heaps_lock);
    heap->recycle_next = recycled;
    recycled = heap;
    pthread_mutex_unlock(&heaps_lock);
    return 0;
}

int wxjit_heap_backend(const wxjit_heap *heap, wxjit_backend *out)
{
    if (!heap_ok(heap) || !out)
        return EINVAL;
    *out = heap->backend->id;
    return 0;
}

/* ---- writing code ------------------------------------------------------- */
static size_t page_of(const struct wxjit_heap *heap,
                      const struct wxj_chunk *chunk, const uint8_t *p)
{
    return (size_t)(p - chunk->base) / heap->page_size;
}

typedef void (*fill_fn)(uint8_t *dst, size_t len, const void *arg);

static void fill_copy(uint8_t *dst, size_t len, const void *src)
{
    memcpy(dst, src, len);
}

static void fill_trap(uint8_t *dst, size_t len, const void *unused)
{
    (void)unused;
    wxj_arch_trap_fill(dst, len);
}

/* Writes [exec, exec + len) through the backend's write window. */
static int write_code(struct wxjit_heap *heap, struct wxj_chunk *chunk,
                      uint8_t *exec, size_t len, fill_fn fill,
                      const void *arg)
{
    size_t first = page_of(heap, chunk, exec);
    size_t last = page_of(heap, chunk, exec + len - 1);
    int err = heap->backend->open(heap, chunk, first, last);
    if (err)
        return err;
    fill(heap->backend->write_addr(chunk, exec), len, arg);
    return heap->backend->close(heap, chunk, first, last, exec, len);
}

static size_t granules(size_t bytes)
{
    return (bytes + WXJ_GRANULE - 1) / WXJ_GRANULE;
}

/* Common argument checks of reserve and install; n and align in granules. */
static int check_request(const struct wxjit_heap *heap, size_t size,
                         size_t align, size_t *n, size_t *align_g)
{
    if (!heap_ok(heap) || size == 0 || size > heap->chunk_size ||
        (align & (align - 1)) != 0 || align > heap->page_size)
        return EINVAL;
    *n = granules(size);
    *align_g = align > WXJ_GRANULE ? align / WXJ_GRANULE : 1;
    return 0;
}

static void account_live(struct wxjit_heap *heap, size_t n, bool install)
{
    wxj_count(&heap->count.granules_live, n);
    if (install)
        wxj_count(&heap->count.installs, 1);
}

int wxjit_install(wxjit_heap *heap, const void *code, size_t size,
                  size_t align, void **exec)
{
    size_t n, align_g, g;
    struct wxj_chunk *chunk;
    int err = check_request(heap, size, align, &n, &align_g);
    if (err || !code || !exec)
        return err ? err : EINVAL;
    if ((err = wxj_pool_alloc(heap, n, align_g, &chunk, &g)))
        return err;
    uint8_t *at = wxj_granule_addr(chunk, g);
    if ((err = write_code(heap, chunk, at, size, fill_copy, code))) {
        wxj_pool_give_back(heap, chunk, g, n);
        return err;
    }
    wxj_block_mark(chunk, g, n, false);
    account_live(heap, n, true);
    *exec = at;
    return 0;
}

/* ---- reservations ------------------------------------------------------- */
static uintptr_t scramble(const struct wxjit_heap *heap, const void *p)
{
    return (uintptr_t)p ^ heap->cookie;
}

int wxjit_reserve(wxjit_heap *heap, size_t size, size_t align, unsigned flags,
                  wxjit_reservation *out)
{
    size_t n, align_g, g;
    struct wxj_chunk *chunk;
    int err = check_request(heap, size, align, &n, &align_g);
    if (err || !out || (flags & ~(unsigned)WXJIT_RESERVE_IN_PLACE))
        return err ? err : EINVAL;
    bool in_place = flags & WXJIT_RESERVE_IN_PLACE;
    void *scratch = NULL;
    if (!in_place && !(scratch = malloc(size)))
        return ENOMEM;
    if ((err = wxj_pool_alloc(heap, n, align_g, &chunk, &g))) {
        free(scratch);
        return err;
    }
    uint8_t *at = wxj_granule_addr(chunk, g);
    if (in_place) {
        /* Held RW from now to commit or abort. */
        err = heap->backend->open(heap, chunk, page_of(heap, chunk, at),
                                  page_of(heap, chunk, at + size - 1));
        if (err) {
            wxj_pool_give_back(heap, chunk, g, n);
            return err;
        }
        /* The thread's next code starts on another page: it must be
         * executable when its install returns, and this page is not. */
        wxj_pool_end_tail_page(heap, chunk, g + n);
    }
    wxj_block_mark(chunk, g, n, true);
    out->exec = at;
    out->write = in_place ? heap->backend->write_addr(chunk, at) : scratch;
    out->size = size;
    out->internal[0] = scramble(heap, chunk);
    out->internal[1] = scramble(heap, scratch);
    return 0;
}

struct open_res {
    struct wxj_chunk *chunk;
    size_t g, n;
    void *scratch; /* NULL for in-place */
};

/* Checks that res is an open reservation of heap and claims it (clears its
 * open bit) so that a racing second commit or abort fails. */
static int claim_reservation(struct wxjit_heap *heap, wxjit_reservation *res,
                             struct open_res *r)
{
    if (!heap_ok(heap) || !res || !res->exec)
        return EINVAL;
    r->chunk = wxj_chunk_find(heap, res->exec);
    if (!r->chunk || scramble(heap, r->chunk) != res->internal[0] ||
        ((uintptr_t)res->exec - (uintptr_t)r->chunk->base) % WXJ_GRANULE)
        return EINVAL;
    r->g = wxj_granule_of(r->chunk, res->exec);
    if (!wxj_bit_get(r->chunk->start, r->g) ||
        !wxj_bit_get(r->chunk->open, r->g))
        return EINVAL;
    r->n = wxj_block_extent(r->chunk, r->g);
    r->scratch = (void *)scramble(heap, (void *)res->internal[1]);
    bool in_place = r->scratch == NULL;
    if (res->size == 0 || granules(res->size) != r->n ||
        res->write != (in_place ? heap->backend->write_addr(r->chunk,
                                                            res->exec)
                                : r->scratch))
        return EINVAL;
    if (in_place) {
        struct wxj_page *pg =
            &r->chunk->pages[page_of(heap, r->chunk, res->exec)];
        if (atomic_load_explicit(&pg->writer, memory_order_relaxed) !=
            wxj_os_tid())
            return EPERM;
    }
    return wxj_bit_clear(r->chunk->open, r->g) ? 0 : EINVAL;
}

/* Closes an in-place reservation's window over [exec, exec + size). */
static int close_in_place(struct wxjit_heap *heap, const struct open_res *r,
                          uint8_t *exec, size_t size)
{
    return heap->backend->close(heap, r->chunk, page_of(heap, r->chunk, exec),
                                page_of(heap, r->chunk, exec + size - 1),
                                exec, size);
}

int wxjit_commit(wxjit_heap *heap, wxjit_reservation *res, size_t used)
{
    struct open_res r;
    if (res && (used == 0 || used > res->size))
        return EINVAL;
    int err = claim_reservation(heap, res, &r);
    if (err)
        return err;
    uint8_t *exec = res->exec;
    size_t m = granules(used);
    if (r.scratch) {
        err = write_code(heap, r.chunk, exec, used, fill_copy, r.scratch);
    } else {
        /* Whatever the JIT left past `used` must not stay executable. */
        fill_trap(heap->backend->write_addr(r.chunk, exec + used),
                  r.n * WXJ_GRANULE - used, NULL);
        err = close_in_place(heap, &r, exec, res->size);
    }
    if (err) {
        wxj_bit_set(r.chunk->open, r.g); /* still open: retry or abort */
        return err;
    }
    if (m < r.n) {
        wxj_block_shrink(r.chunk, r.g, r.n, m);
        wxj_pool_give_back(heap, r.chunk, r.g + m, r.n - m);
    }
    free(r.scratch);
    account_live(heap, m, true);
    memset(res, 0, sizeof(*res));
    return 0;
}

int wxjit_abort(wxjit_heap *heap, wxjit_reservation *res)
{
    struct open_res r;
    int err = claim_reservation(heap, res, &r);
    if (err)
        return err;
    if (!r.scratch) {
        fill_trap(heap->backend->write_addr(r.chunk, res->exec),
                  r.n * WXJ_GRANULE, NULL);
        close_in_place(heap, &r, res->exec, res->size);
    }
    wxj_block_unmark(r.chunk, r.g, r.n);
    wxj_pool_give_back(heap, r.chunk, r.g, r.n);
    free(r.scratch);
    memset(res, 0, sizeof(*res));
    return 0;
}

/* ---- live code: patch and free ------------------------------------------ */

/* Finds the live block holding [addr, addr + size); fails if it is not
 * entirely inside one committed block of this heap. */
static int live_range(struct wxjit_heap *heap, const void *addr, size_t size,
                      struct wxj_chunk **chunk)
{
    if (!heap_ok(heap) || !addr || size == 0)
        return EINVAL;
    struct wxj_chunk *c = wxj_chunk_find(heap, addr);
    size_t start;
    if (!c || !wxj_block_find_start(c, wxj_granule_of(c, addr), &start) ||
        wxj_bit_get(c->open, start))
        return EINVAL;
    const uint8_t *end =
        wxj_granule_addr(c, start + wxj_block_extent(c, start));
    if (size > (size_t)(end - (const uint8_t *)addr))
        return EINVAL;
    *chunk = c;
    return 0;
}

int wxjit_patch(wxjit_heap *heap, void *addr, const void *bytes, size_t size)
{
    struct wxj_chunk *chunk;
    int err = bytes ? live_range(heap, addr, size, &chunk) : EINVAL;
    return err ? err
               : write_code(heap, chunk, addr, size, fill_copy, bytes);
}

struct atomic_store {
    uint64_t value;
    size_t width;
};

static void fill_atomic(uint8_t *dst, size_t len, const void *arg)
{
    const struct atomic_store *s = arg;
    (void)len;
    /* Relaxed: the window's close publishes it; atomicity is what counts,
     * so an executor reading these bytes sees old or new, never a mix. */
    switch (s->width) {
    case 1: __atomic_store_n(dst, (uint8_t)s->value, __ATOMIC_RELAXED); break;
    case 2: __atomic_store_n((uint16_t *)dst, (uint16_t)s->value,
                             __ATOMIC_RELAXED); break;
    case 4: __atomic_store_n((uint32_t *)dst, (uint32_t)s->value,
                             __ATOMIC_RELAXED); break;
    default: __atomic_store_n((uint64_t *)dst, s->value, __ATOMIC_RELAXED);
    }
}

int wxjit_patch_atomic(wxjit_heap *heap, void *addr, uint64_t value,
                       size_t width)
{
    struct wxj_chunk *chunk;
    if ((width != 1 && width != 2 && width != 4 && width != 8) ||
        (uintptr_t)addr % width)
        return EINVAL;
    int err = live_range(heap, addr, width, &chunk);
    struct atomic_store s = {value, width};
    return err ? err : write_code(heap, chunk, addr, width, fill_atomic, &s);
}

int wxjit_free(wxjit_heap *heap, void *exec)
{
    if (!heap_ok(heap) || !exec)
        return EINVAL;
    struct wxj_chunk *chunk = wxj_chunk_find(heap, exec);
    if (!chunk || ((uintptr_t)exec - (uintptr_t)chunk->base) % WXJ_GRANULE)
        return EINVAL;
    size_t g = wxj_granule_of(chunk, exec);
    if (wxj_bit_get(chunk->open, g))
        return EINVAL; /* a reservation: abort it instead */
    /* Clearing the start bit is the claim: of two racing frees of the same
     * block exactly one proceeds. */
    if (!wxj_bit_clear(chunk->start, g))
        return EINVAL;
    size_t n = wxj_block_extent(chunk, g);
    int err = write_code(heap, chunk, exec, n * WXJ_GRANULE, fill_trap, NULL);
    if (err) {
        wxj_bit_set(chunk->start, g);
        return err;
    }
    wxj_block_unmark(chunk, g, n);
    atomic_fetch_add_explicit(&chunk->free_granules, n, memory_order_relaxed);
    atomic_fetch_sub_explicit(&heap->count.granules_live, n,
                              memory_order_relaxed);
    wxj_count(&heap->count.frees, 1);
    return 0;
}

int wxjit_stats_get(wxjit_heap *heap, wxjit_stats *out)
{
    if (!heap_ok(heap) || !out)
        return EINVAL;
    const struct wxj_counters *c = &heap->count;
#define READ(field) atomic_load_explicit(&c->field, memory_order_relaxed)
    out->installs = READ(installs);
    out->frees = READ(frees);
    out->bytes_live = READ(granules_live) * WXJ_GRANULE;
    out->bytes_mapped = READ(bytes_mapped);
    out->pages = READ(pages);
    out->chunks = READ(chunks);
    out->mprotect_calls = READ(mprotect_calls);
    out->faults_retried = READ(faults_retried);
    out->faults_forwarded = READ(faults_forwarded);
#undef READ
    return 0;
}
