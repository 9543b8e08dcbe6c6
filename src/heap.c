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
    pthread_mutex_lock(&heaps_lock);
    bool alive = wxj_heap_ok(heap) && heap->id == id;
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
    dualmap_probe_result = wxj_dualmap_runs_alias_code();
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
    const unsigned known = WXJIT_HEAP_RW_ON_DEMAND | WXJIT_HEAP_ALLOW_RWX |
                           WXJIT_HEAP_DEFER_TRAP_FILL;
    wxjit_backend id = o->backend;
    if ((o->flags & ~known) || (unsigned)id >= 4)
        return EINVAL;
    if (id == WXJIT_BACKEND_RWX && !(o->flags & WXJIT_HEAP_ALLOW_RWX))
        return EPERM;
    if ((id != WXJIT_BACKEND_RWX && (o->flags & WXJIT_HEAP_ALLOW_RWX)) ||
        ((o->flags & WXJIT_HEAP_RW_ON_DEMAND) && id != WXJIT_BACKEND_DUALMAP &&
         id != WXJIT_BACKEND_AUTO) ||
        ((o->flags & WXJIT_HEAP_DEFER_TRAP_FILL) && id != WXJIT_BACKEND_AUTO &&
         !backends[id]->defers_trap_fill))
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
    /* AUTO chose a backend whose frees open no window: nothing to defer. */
    if (!backend->defers_trap_fill)
        o.flags &= ~(unsigned)WXJIT_HEAP_DEFER_TRAP_FILL;

    wxj_fork_init();
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
    wxj_open_init(&heap->open);
    pthread_mutex_init(&heap->lock, NULL);
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
    wxj_open_forget(&heap->open);
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
