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

/* ---- backend selection -------------------------------------------------- */
static const struct wxj_backend *const backends[] = {
    [WXJIT_BACKEND_TOGGLE] = &wxj_backend_toggle,
    [WXJIT_BACKEND_DUALMAP] = &wxj_backend_dualmap,
    [WXJIT_BACKEND_RWX] = &wxj_backend_rwx,
};
static const char *const backend_names[] = {"auto", "toggle", "dualmap",
                                             "rwx"};

int wxjit_backend_name(wxjit_backend backend, const char **out)
{
    if ((unsigned)backend >= sizeof(backend_names) / sizeof(*backend_names) ||
        !out)
        return EINVAL;
    *out = backend_names[backend];
    return 0;
}

static pthread_once_t dualmap_probe_once = PTHREAD_ONCE_INIT;
static int dualmap_probe_result;

static void probe_dualmap(void)
{
    dualmap_probe_result = wxj_backend_dualmap.probe();
}

/* AUTO: the environment's choice, else dualmap when it works here. */
static int resolve_auto(wxjit_backend *out)
{
    const char *env = getenv("WXJIT_BACKEND");
    if (env && *env && strcmp(env, "auto") != 0) {
        if (!strcmp(env, "toggle"))
            *out = WXJIT_BACKEND_TOGGLE;
        else if (!strcmp(env, "dualmap"))
            *out = WXJIT_BACKEND_DUALMAP;
        else
            return EINVAL; /* rwx is never chosen from outside */
        return 0;
    }
    pthread_once(&dualmap_probe_once, probe_dualmap);
    *out = dualmap_probe_result == 0 ? WXJIT_BACKEND_DUALMAP
                                     : WXJIT_BACKEND_TOGGLE;
    return 0;
}

static int object_from_env(enum wxj_object *out)
{
    static const char *const names[] = {"memfd", "shm", "tmpfile"};
    const char *env = getenv("WXJIT_DUALMAP_OBJECT");
    *out = WXJ_OBJECT_MEMFD;
    if (!env || !*env)
        return 0;
    for (size_t i = 0; i < sizeof(names) / sizeof(*names); i++)
        if (!strcmp(env, names[i])) {
            *out = (enum wxj_object)i;
            return 0;
        }
    return EINVAL;
}

/* Validates the options and picks the backend; probes it when chosen
 * explicitly, so an unusable backend fails here and not at first use. */
static int choose_backend(const wxjit_heap_options *o,
                          const struct wxj_backend **out)
{
    const unsigned known = WXJIT_HEAP_RW_ON_DEMAND | WXJIT_HEAP_ALLOW_RWX;
    wxjit_backend id = o->backend;
    if ((o->flags & ~known) || (unsigned)id >= 4)
        return EINVAL;
    if (id == WXJIT_BACKEND_RWX && !(o->flags & WXJIT_HEAP_ALLOW_RWX))
        return EPERM;
    if ((id != WXJIT_BACKEND_RWX && (o->flags & WXJIT_HEAP_ALLOW_RWX)) ||
        ((o->flags & WXJIT_HEAP_RW_ON_DEMAND) &&
         id != WXJIT_BACKEND_DUALMAP && id != WXJIT_BACKEND_AUTO))
        return EINVAL;
    int err = id == WXJIT_BACKEND_AUTO ? resolve_auto(&id)
                                       : backends[id]->probe();
    if (err == 0)
        *out = backends[id];
    return err;
}

int wxjit_heap_create(const wxjit_heap_options *opts, wxjit_heap **out)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    const struct wxj_backend *backend;
    enum wxj_object object_first;
    if (!out)
        return EINVAL;
    if (opts) {
        if (opts->size < sizeof(o) || opts->chunk_size > WXJ_MAX_CHUNK)
            return EINVAL;
        o = *opts;
    }
    int err = choose_backend(&o, &backend);
    if (err == 0)
        err = object_from_env(&object_first);
    if (err)
        return err;

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
    heap->flags = o.flags;
    heap->object_first = object_first;
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

/* The window over the pages of [exec, exec + len); view set by open. */
static struct wxj_window window_over(const struct wxjit_heap *heap,
                                     struct wxj_chunk *chunk,
                                     const uint8_t *exec, size_t len)
{
    struct wxj_window w = {chunk, page_of(heap, chunk, exec),
                           page_of(heap, chunk, exec + len - 1), NULL};
    return w;
}

/* Where the byte that executes at exec is written through window w. */
static uint8_t *window_at(const struct wxjit_heap *heap,
                          const struct wxj_window *w, const uint8_t *exec)
{
    return w->view + (exec - (w->chunk->base + w->first * heap->page_size));
}

/* Writes [exec, exec + len) through a write window of the backend. */
static int write_code(struct wxjit_heap *heap, struct wxj_chunk *chunk,
                      uint8_t *exec, size_t len, fill_fn fill,
                      const void *arg)
{
    struct wxj_window w = window_over(heap, chunk, exec, len);
    int err = heap->backend->open(heap, &w);
    if (err)
        return err;
    fill(window_at(heap, &w, exec), len, arg);
    return heap->backend->close(heap, &w, exec, len);
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

/* ---- reservations -------------------------------------------------------
 * internal[0]: the chunk, with bit 0 set for an in-place reservation;
 * internal[1]: the write view. Both scrambled with the heap's cookie so a
 * stale or hand-made reservation is refused rather than trusted. */
static uintptr_t scramble(const struct wxjit_heap *heap, uintptr_t v)
{
    return v ^ heap->cookie;
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
    uint8_t *write = NULL;
    if (!in_place && !(write = malloc(size)))
        return ENOMEM;
    if ((err = wxj_pool_alloc(heap, n, align_g, &chunk, &g))) {
        free(write);
        return err;
    }
    uint8_t *at = wxj_granule_addr(chunk, g);
    if (in_place) {
        /* The window stays open from now to commit or abort. */
        struct wxj_window w = window_over(heap, chunk, at, size);
        if ((err = heap->backend->open(heap, &w))) {
            wxj_pool_give_back(heap, chunk, g, n);
            return err;
        }
        write = window_at(heap, &w, at);
        /* The thread's next code starts on another page: it must be
         * executable when its install returns, and this page may not be. */
        wxj_pool_end_tail_page(heap, chunk, g + n);
    }
    wxj_block_mark(chunk, g, n, true);
    out->exec = at;
    out->write = write;
    out->size = size;
    out->internal[0] = scramble(heap, (uintptr_t)chunk | in_place);
    out->internal[1] = scramble(heap, (uintptr_t)write);
    return 0;
}

struct open_res {
    struct wxj_chunk *chunk;
    size_t g, n;
    bool in_place;
};

/* Checks that res is an open reservation of heap and claims it (clears its
 * open bit) so that a racing second commit or abort fails. */
static int claim_reservation(struct wxjit_heap *heap, wxjit_reservation *res,
                             struct open_res *r)
{
    if (!heap_ok(heap) || !res || !res->exec)
        return EINVAL;
    uintptr_t tagged = scramble(heap, res->internal[0]);
    r->in_place = tagged & 1;
    r->chunk = wxj_chunk_find(heap, res->exec);
    if (!r->chunk || (uintptr_t)r->chunk != (tagged & ~(uintptr_t)1) ||
        ((uintptr_t)res->exec - (uintptr_t)r->chunk->base) % WXJ_GRANULE ||
        (uintptr_t)res->write != scramble(heap, res->internal[1]))
        return EINVAL;
    r->g = wxj_granule_of(r->chunk, res->exec);
    if (!wxj_bit_get(r->chunk->start, r->g) ||
        !wxj_bit_get(r->chunk->open, r->g))
        return EINVAL;
    r->n = wxj_block_extent(r->chunk, r->g);
    if (res->size == 0 || granules(res->size) != r->n)
        return EINVAL;
    if (r->in_place) {
        /* A backend that holds pages for the window (toggle) holds them
         * for the reserving thread only. */
        struct wxj_page *pg =
            &r->chunk->pages[page_of(heap, r->chunk, res->exec)];
        int32_t writer =
            atomic_load_explicit(&pg->writer, memory_order_relaxed);
        if (writer != 0 && writer != wxj_os_tid())
            return EPERM;
    }
    return wxj_bit_clear(r->chunk->open, r->g) ? 0 : EINVAL;
}

/* Closes an in-place reservation's window, opened by wxjit_reserve. */
static int close_in_place(struct wxjit_heap *heap, const struct open_res *r,
                          const wxjit_reservation *res)
{
    struct wxj_window w = window_over(heap, r->chunk, res->exec, res->size);
    w.view = (uint8_t *)res->write -
             ((uint8_t *)res->exec - (r->chunk->base +
                                      w.first * heap->page_size));
    return heap->backend->close(heap, &w, res->exec, res->size);
}

int wxjit_commit(wxjit_heap *heap, wxjit_reservation *res, size_t used)
{
    struct open_res r;
    if (res && (used == 0 || used > res->size))
        return EINVAL;
    int err = claim_reservation(heap, res, &r);
    if (err)
        return err;
    size_t m = granules(used);
    if (r.in_place) {
        /* Whatever the JIT left past `used` must not stay executable. */
        fill_trap((uint8_t *)res->write + used, r.n * WXJ_GRANULE - used,
                  NULL);
        err = close_in_place(heap, &r, res);
    } else {
        err = write_code(heap, r.chunk, res->exec, used, fill_copy,
                         res->write);
    }
    if (err) {
        wxj_bit_set(r.chunk->open, r.g); /* still open: retry or abort */
        return err;
    }
    if (m < r.n) {
        wxj_block_shrink(r.chunk, r.g, r.n, m);
        wxj_pool_give_back(heap, r.chunk, r.g + m, r.n - m);
    }
    if (!r.in_place)
        free(res->write);
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
    if (r.in_place) {
        fill_trap(res->write, r.n * WXJ_GRANULE, NULL);
        close_in_place(heap, &r, res);
    } else {
        free(res->write);
    }
    wxj_block_unmark(r.chunk, r.g, r.n);
    wxj_pool_give_back(heap, r.chunk, r.g, r.n);
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
    out->map_calls = READ(map_calls);
    out->faults_retried = READ(faults_retried);
    out->faults_forwarded = READ(faults_forwarded);
#undef READ
    return 0;
}
