/* Heaps: creation with backend selection, destruction, handles that stay
 * recognisable after destruction, statistics. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- heap handles -------------------------------------------------------
 * Destroyed heap structs are kept on a recycle list instead of being freed,
 * so a call on a destroyed handle reads valid memory and fails with EINVAL
 * instead of corrupting the allocator. */
static pthread_mutex_t heaps_lock = PTHREAD_MUTEX_INITIALIZER;
static struct wxjit_heap *recycled;
static struct wxjit_heap *live;
static uint64_t next_heap_id;

struct wxjit_heap *wxj_heaps_lock_all(void)
{
    pthread_mutex_lock(&heaps_lock);
    return live;
}

void wxj_heaps_unlock_all(void)
{
    pthread_mutex_unlock(&heaps_lock);
}

/* heaps_lock held. */
static void unlink_live(struct wxjit_heap *heap)
{
    struct wxjit_heap **p = &live;
    while (*p != heap)
        p = &(*p)->live_next;
    *p = heap->live_next;
}

void wxj_heaps_close_windows_of(int32_t tid)
{
    pthread_mutex_lock(&heaps_lock);
    for (struct wxjit_heap *h = live; h; h = h->live_next)
        wxj_live_windows_close_own(h, tid);
    pthread_mutex_unlock(&heaps_lock);
}

void wxj_heaps_abort_in_place_of(int32_t tid)
{
    pthread_mutex_lock(&heaps_lock);
    for (struct wxjit_heap *h = live; h; h = h->live_next) {
        pthread_mutex_lock(&h->lock); /* order: heaps_lock, heap->lock */
        wxj_open_abort_orphans(h, tid, false);
        pthread_mutex_unlock(&h->lock);
    }
    pthread_mutex_unlock(&heaps_lock);
}

void wxj_heap_disable(struct wxjit_heap *heap)
{
    atomic_store_explicit(&heap->magic, WXJ_HEAP_DEAD, memory_order_release);
}


struct wxjit_heap *wxj_heap_lock_if_alive(struct wxjit_heap *heap,
                                          uint64_t id)
{
    wxj_lock_shared(&heaps_lock);
    bool alive = wxj_heap_ok(heap) && heap->id == id;
    if (alive)
        wxj_lock_shared(&heap->lock); /* order: heaps_lock, heap->lock */
    pthread_mutex_unlock(&heaps_lock);
    return alive ? heap : NULL;
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
    /* Before any probe: procmem's descriptor must be dropped by every
     * fork child from its opening on. */
    wxj_fork_init();
    unsigned sinks;
    int err = wxj_choose_backend(&o, &backend);
    if (err == 0)
        err = wxj_object_from_env(&object_first);
    if (err == 0)
        err = wxj_sinks_choose(o.flags, &sinks);
    if (err)
        return err;
    /* AUTO chose a backend whose frees make no system call (dualmap):
     * nothing to defer. */
    if (backend->deferral == WXJ_FILL_AT_FREE)
        o.flags &= ~(unsigned)WXJIT_HEAP_DEFER_TRAP_FILL;
    /* AUTO chose a backend whose views are stable anyway: RW_ON_DEMAND is
     * dualmap's, and kept would refuse windows (ENOTSUP) there too. */
    if (backend->id != WXJIT_BACKEND_DUALMAP)
        o.flags &= ~(unsigned)WXJIT_HEAP_RW_ON_DEMAND;
    /* Before the heap is taken: a failure here changes nothing. */
    const struct wxj_backend *atomic = backend;
    if (backend->atomic_stores && (err = backend->atomic_stores(&atomic)))
        return err;

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
    heap->atomic = atomic;
    heap->flags = o.flags;
    heap->sinks = sinks;
    heap->object_first = object_first;
    heap->page_size = wxj_os_page_size();
    size_t chunk = o.chunk_size ? o.chunk_size : WXJ_DEFAULT_CHUNK;
    heap->chunk_size = (chunk + heap->page_size - 1) / heap->page_size *
                       heap->page_size;
    heap->max_bytes = o.max_bytes;
    pthread_mutex_init(&heap->lock, NULL);
    wxj_live_windows_init(&heap->windows);
    pthread_mutex_lock(&heaps_lock);
    heap->live_next = live;
    live = heap;
    atomic_store_explicit(&heap->magic, WXJ_HEAP_ALIVE, memory_order_release);
    pthread_mutex_unlock(&heaps_lock);
    *out = heap;
    return 0;
}

int wxjit_heap_destroy(wxjit_heap *heap)
{
    pthread_mutex_lock(&heaps_lock);
    if (!wxj_heap_ok(heap)) {
        pthread_mutex_unlock(&heaps_lock);
        return EINVAL;
    }
    wxj_heap_disable(heap);
    unlink_live(heap);
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
    wxj_live_windows_destroy(&heap->windows);
    pthread_mutex_destroy(&heap->lock);

    pthread_mutex_lock(&heaps_lock);
    heap->recycle_next = recycled;
    recycled = heap;
    pthread_mutex_unlock(&heaps_lock);
    return 0;
}

int wxjit_heap_backend(const wxjit_heap *heap, wxjit_backend *out)
{
    if (!wxj_heap_ok(heap) || !out)
        return EINVAL;
    *out = heap->backend->id;
    return 0;
}

int wxjit_stats_get(wxjit_heap *heap, wxjit_stats *out)
{
    if (!wxj_heap_ok(heap) || !out)
        return EINVAL;
    const struct wxj_counters *c = &heap->count;
#define READ(counter) atomic_load_explicit(&(counter), memory_order_relaxed)
    memset(out, 0, sizeof(*out));
    int64_t granules = 0;
    for (struct wxj_pool *p = READ(heap->pools); p; p = p->next) {
        out->installs += READ(p->installs);
        out->frees += READ(p->frees);
        out->syscalls += READ(p->syscalls);
        out->mprotect_calls += READ(p->mprotect_calls);
        out->map_calls += READ(p->map_calls);
        out->shared_locks += READ(p->shared_locks);
        out->core_syncs += READ(p->core_syncs);
        granules += READ(p->granules_live);
    }
    out->bytes_live = granules > 0 ? (uint64_t)granules * WXJ_GRANULE : 0;
    out->bytes_mapped = READ(c->bytes_mapped);
    out->pages = READ(c->pages);
    out->chunks = READ(c->chunks);
    out->faults_retried = READ(c->faults_retried);
    out->faults_forwarded = READ(c->faults_forwarded);
#undef READ
    return 0;
}
