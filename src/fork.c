/* fork(): the child must get heaps that are consistent and its own.
 * Before the fork every heap operation is let finish and new ones wait
 * (the gate in pool.c), and every lock a child could need is taken, so
 * the child's copy of the metadata is never caught half-way. Backends then
 * do their part (backend ops fork_*): dualmap copies each chunk's shared
 * object, since MAP_SHARED memory would otherwise stay shared with the
 * parent; toggle releases pages held by threads that do not exist in the
 * child; procmem's descriptor of the parent's memory is closed; the child writes
 * its own profiler files (observe/describe.c). Only the forking thread lives on in the child; the other threads'
 * pools are retired there. The handlers run in the forking thread only, so
 * the statics below need no synchronisation. */
#include "internal.h"

static struct wxjit_heap *heaps; /* the live heaps, listed under prepare */
static int32_t parent_tid;

static void prepare(void)
{
    heaps = wxj_heaps_lock_all();
    wxj_ops_close();
    /* Operations in progress take heap and registry locks: wait for them
     * before taking those locks ourselves. */
    for (struct wxjit_heap *h = heaps; h; h = h->live_next)
        wxj_ops_wait_idle(h);
    for (struct wxjit_heap *h = heaps; h; h = h->live_next)
        pthread_mutex_lock(&h->lock);
    wxj_registry_lock();
    parent_tid = wxj_os_tid();
    for (struct wxjit_heap *h = heaps; h; h = h->live_next)
        if (h->backend->fork_prepare)
            for (struct wxj_chunk *c = h->chunks; c; c = c->next)
                h->backend->fork_prepare(h, c);
    wxj_procmem_fork_prepare();
    wxj_observe_fork_prepare();
}

static void release_all(void)
{
    wxj_registry_unlock();
    for (struct wxjit_heap *h = heaps; h; h = h->live_next)
        pthread_mutex_unlock(&h->lock);
    wxj_ops_reopen();
    wxj_heaps_unlock_all();
}

static void parent(void)
{
    for (struct wxjit_heap *h = heaps; h; h = h->live_next)
        if (h->backend->fork_parent)
            for (struct wxj_chunk *c = h->chunks; c; c = c->next)
                h->backend->fork_parent(h, c);
    wxj_procmem_fork_parent();
    wxj_observe_fork_parent();
    release_all();
}

static void child(void)
{
    wxj_os_forget_tid();
    wxj_procmem_after_fork();
    int32_t self = wxj_os_tid();
    wxj_registry_after_fork();
    for (struct wxjit_heap *h = heaps; h; h = h->live_next) {
        wxj_pools_after_fork(h);
        if (h->backend->fork_child)
            for (struct wxj_chunk *c = h->chunks; c; c = c->next)
                h->backend->fork_child(h, c, parent_tid);
        /* In-place windows of threads that do not exist here. */
        wxj_open_after_fork(h, parent_tid, self);
        wxj_live_windows_after_fork(h, parent_tid, self);
        if (wxj_heap_ok(h))
            wxj_open_abort_orphans(h, self, true);
    }
    wxj_observe_after_fork(heaps);
    /* The closes and aborts above wrote code that no other thread of this
     * process runs (it has none): no core sync, and nothing left noted
     * for this thread's next operation to sync. */
    wxj_core_sync_forget();
    release_all();
}

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void register_handlers(void)
{
    pthread_atfork(prepare, parent, child);
}

void wxj_fork_init(void)
{
    pthread_once(&once, register_handlers);
}
