/* The dual-mapping backend: each chunk is one anonymous shared memory
 * object mapped twice, RX where code runs and RW at an unrelated address
 * where wxjit writes. Installs need no system call and cause no fault; the
 * price is the standing RW alias, a target for an attacker who can find it.
 * WXJIT_HEAP_RW_ON_DEMAND trades syscalls for that: the RW view then exists
 * only for the length of each write window. */
#define _GNU_SOURCE /* ucontext register names in arch/ */
#include <errno.h>
#include <stdlib.h>

#include "code_changed.h"
#include "internal.h"

/* An RW window mapped on demand. They are listed so that a fork child can
 * point the ones still open (in-place reservations) at its own copy. */
struct window_rec {
    struct window_rec *next;
    uint8_t *view;
    size_t offset, len;
};
/* Guards every chunk's window list. Not the heap lock: fresh pages are
 * filled through a window while a refill holds that. Never held across a
 * fork: windows open and close inside operations, which forks wait for. */
static pthread_mutex_t windows_lock = PTHREAD_MUTEX_INITIALIZER;

static bool on_demand(const struct wxjit_heap *heap)
{
    return heap->flags & WXJIT_HEAP_RW_ON_DEMAND;
}

/* Runs code written through the RW view at the RX view, twice with
 * different results: an emulator (qemu-user before 8.1 on aarch64, every
 * version on riscv64) may keep running its translation of the old bytes,
 * which would make every install after a free run stale code. */
static bool alias_writes_run(uint8_t *rw, const uint8_t *rx)
{
    /* A private page that only this thread runs: no other core to sync
     * (outside any operation, a change noted here would make the
     * thread's next one sync for it). */
    unsigned noted = wxj_code_changes;
    bool runs = true;
    for (uint32_t v = 1; v <= 2 && runs; v++) {
        size_t n = wxj_arch_emit_return(rw, v);
        wxj_code_changed(rx, n);
        uint32_t (*fn)(void);
        __builtin_memcpy(&fn, &rx, sizeof(fn));
        runs = fn() == v;
    }
    wxj_code_changes = noted;
    return runs;
}

/* Maps one object page twice; with run_code, also checks that code
 * written through the RW view runs (ENOTSUP if not: AUTO must not pick a
 * backend whose code would silently be stale; an explicit request for
 * dualmap is taken as given). The object is the kind the heap would try
 * first, with the same fallbacks. */
static int dualmap_probe(bool run_code, const char **reason)
{
    size_t page = wxj_os_page_size();
    enum wxj_object first;
    int fd;
    void *rx, *rw;
    int err = wxj_object_from_env(&first);
    if (err) {
        *reason = "WXJIT_DUALMAP_OBJECT is not memfd, shm or tmpfile";
        return err;
    }
    if ((err = wxj_os_shared_object(first, page, &fd))) {
        *reason = "no shared memory object (memfd_create, shm_open, "
                  "O_TMPFILE)";
        return err;
    }
    err = wxj_os_map_shared(fd, 0, page, WXJ_PROT_RX, NULL, false, &rx);
    if (err)
        *reason = "shared memory object cannot be mapped executable";
    if (err == 0) {
        err = wxj_os_map_shared(fd, 0, page, WXJ_PROT_RW, NULL, false, &rw);
        if (err)
            *reason = "shared memory object cannot be mapped writable";
        if (err == 0) {
            if (run_code && !alias_writes_run(rw, rx)) {
                err = ENOTSUP;
                *reason = "code written through the writable view does not "
                          "run (stale translation)";
            }
            wxj_os_unmap(rw, page);
        }
        wxj_os_unmap(rx, page);
    }
    wxj_os_close(fd);
    return err;
}

/* Hints tried for the standing RW view. The kernel ignores a hint whose
 * range is not free (ASan's shadow memory covers a quarter of the hint
 * range, for one) and then puts the view where it likes: right next to
 * the RX view just mapped, at a fixed distance from it. Eight tries make
 * that rare wherever most of the hint range is free (1 in 65,536 under
 * ASan); the eighth view is kept wherever it lands (under TSan, which
 * drops most hints before the kernel sees them, next to the RX view). */
#define RW_VIEW_HINTS 8

static int map_rw_view(int fd, size_t size, void **out)
{
    for (int i = 1;; i++) {
        void *hint = wxj_os_random_hint(), *p;
        int err = wxj_os_map_shared(fd, 0, size, WXJ_PROT_RW, hint, false, &p);
        if (err)
            return err;
        if (p == hint || i == RW_VIEW_HINTS) {
            *out = p;
            return 0;
        }
        wxj_os_unmap(p, size);
    }
}

static int dualmap_chunk_map(struct wxjit_heap *heap, struct wxj_chunk *chunk)
{
    void *rx, *rw = NULL;
    int fd;
    int err = wxj_os_shared_object(heap->object_first, chunk->size, &fd);
    if (err)
        return err;
    err = wxj_os_map_anon(chunk->size, WXJ_PROT_NONE, &rx);
    if (err == 0 && !on_demand(heap)) {
        err = map_rw_view(fd, chunk->size, &rw);
        if (err)
            wxj_os_unmap(rx, chunk->size);
    }
    if (err) {
        wxj_os_close(fd);
        return err;
    }
    /* The descriptor maps the executable view's steps, and on demand the
     * windows; dualmap_fill_fresh closes it when neither needs it. */
    chunk->base = rx;
    chunk->alias = rw;
    chunk->fd = fd;
    return 0;
}

static void dualmap_chunk_unmap(struct wxjit_heap *heap,
                                struct wxj_chunk *chunk)
{
    (void)heap;
    /* Windows of reservations left open at destruction. */
    while (chunk->windows) {
        struct window_rec *rec = chunk->windows;
        chunk->windows = rec->next;
        wxj_os_unmap(rec->view, rec->len);
        free(rec);
    }
    if (chunk->alias)
        wxj_os_unmap(chunk->alias, chunk->size);
    if (chunk->fd >= 0)
        wxj_os_close(chunk->fd);
    wxj_os_unmap(chunk->base, chunk->size);
}

static size_t window_bytes(const struct wxjit_heap *heap,
                           const struct wxj_window *w)
{
    return (w->last - w->first + 1) * heap->page_size;
}

static int dualmap_open(struct wxjit_heap *heap, struct wxj_window *w)
{
    size_t offset = w->first * heap->page_size, len = window_bytes(heap, w);
    if (w->chunk->alias) {
        w->view = w->chunk->alias + offset;
        return 0;
    }
    struct window_rec *rec = malloc(sizeof(*rec));
    void *view;
    (void)heap;
    if (!rec)
        return ENOMEM;
    int err = wxj_os_map_shared(w->chunk->fd, offset, len, WXJ_PROT_RW,
                                wxj_os_random_hint(), false, &view);
    if (err) {
        free(rec);
        return err;
    }
    *rec = (struct window_rec){NULL, view, offset, len};
    wxj_lock_shared(&windows_lock);
    rec->next = w->chunk->windows;
    w->chunk->windows = rec;
    pthread_mutex_unlock(&windows_lock);
    w->view = view;
    return 0;
}

/* The RX view shows the new bytes at once (same physical pages); only the
 * instruction cache needs telling. */
static int dualmap_close(struct wxjit_heap *heap, struct wxj_window *w,
                         const void *flush, size_t flush_len)
{
    (void)heap;
    if (!w->chunk->alias) {
        wxj_lock_shared(&windows_lock);
        struct window_rec **p = (struct window_rec **)&w->chunk->windows;
        while ((*p)->view != w->view)
            p = &(*p)->next;
        struct window_rec *rec = *p;
        *p = rec->next;
        pthread_mutex_unlock(&windows_lock);
        wxj_os_unmap(rec->view, rec->len);
        free(rec);
    }
    wxj_code_changed(flush, flush_len);
    return 0;
}

/* A chunk whose executable view is complete and that has a standing
 * alias needs its descriptor no more: the mappings keep the object. */
static void keep_fd_if_needed(struct wxj_chunk *c)
{
    if (c->alias && c->rx_pages == c->npages && c->fd >= 0) {
        wxj_os_close(c->fd);
        c->fd = -1;
    }
}

/* Under the heap lock (a refill). Fresh pages lie at or beyond the
 * executable frontier's start: pages are handed out in order. */
static int dualmap_fill_fresh(struct wxjit_heap *heap, struct wxj_window *w)
{
    struct wxj_chunk *c = w->chunk;
    size_t ps = heap->page_size, from = c->rx_pages;
    size_t to = wxj_rx_step_end(c, w->last);
    if (to > from)
        w->last = to - 1; /* the whole step is filled before it maps */
    int err = dualmap_open(heap, w);
    if (err)
        return err;
    wxj_arch_trap_fill(w->view, window_bytes(heap, w));
    dualmap_close(heap, w, c->base + w->first * ps, window_bytes(heap, w));
    if (to > from) {
        void *p;
        if ((err = wxj_os_map_shared(c->fd, from * ps, (to - from) * ps,
                                     WXJ_PROT_RX, c->base + from * ps, true,
                                     &p)))
            return err;
        c->rx_pages = to;
        keep_fd_if_needed(c);
    }
    return 0;
}

/* fork(): the child must not keep writing into the parent's object. With
 * every operation stopped, copy the pages in use into a new object now;
 * the child maps it over both views, the parent drops it. The cost is one
 * copy of the code in use per fork (posix_spawn and vfork run no fork
 * handlers and pay nothing). */
static void dualmap_fork_prepare(struct wxjit_heap *heap,
                                 struct wxj_chunk *chunk)
{
    int fd;
    chunk->fork_fd = -1;
    if (wxj_os_shared_object(heap->object_first, chunk->size, &fd))
        return;
    /* The whole executable view: its steps reach past the pages handed
     * out, and the child maps it from this copy (traps there too). */
    if (wxj_os_copy_to(fd, chunk->base, chunk->rx_pages * heap->page_size))
        wxj_os_close(fd);
    else
        chunk->fork_fd = fd;
}

static void dualmap_fork_parent(struct wxjit_heap *heap,
                                struct wxj_chunk *chunk)
{
    (void)heap;
    if (chunk->fork_fd >= 0)
        wxj_os_close(chunk->fork_fd);
    chunk->fork_fd = -1;
}

static void dualmap_fork_child(struct wxjit_heap *heap,
                               struct wxj_chunk *chunk, int32_t parent_tid)
{
    (void)parent_tid;
    int fd = chunk->fork_fd;
    size_t rx_len = chunk->rx_pages * heap->page_size;
    void *p;
    chunk->fork_fd = -1;
    /* Without a private copy the child would write into the parent's
     * code: the child's heap refuses every call instead. */
    if (fd < 0 ||
        (rx_len && wxj_os_map_shared(fd, 0, rx_len, WXJ_PROT_RX, chunk->base,
                                     true, &p)) ||
        (chunk->alias && wxj_os_map_shared(fd, 0, chunk->size, WXJ_PROT_RW,
                                           chunk->alias, true, &p))) {
        wxj_heap_disable(heap);
        if (fd >= 0)
            wxj_os_close(fd);
        return;
    }
    /* Windows still open belong to in-place reservations; the forking
     * thread may commit its own, and must then write to the child's copy. */
    for (struct window_rec *rec = chunk->windows; rec; rec = rec->next)
        if (wxj_os_map_shared(fd, rec->offset, rec->len, WXJ_PROT_RW,
                              rec->view, true, &p))
            wxj_heap_disable(heap);
    if (chunk->fd >= 0)
        wxj_os_close(chunk->fd);
    chunk->fd = fd;
    keep_fd_if_needed(chunk);
}

const struct wxj_backend wxj_backend_dualmap = {
    .name = "dualmap",
    .id = WXJIT_BACKEND_DUALMAP,
    .stable_views = true, /* the standing alias; not RW_ON_DEMAND's */
    .probe = dualmap_probe,
    .chunk_map = dualmap_chunk_map,
    .chunk_unmap = dualmap_chunk_unmap,
    .fill_fresh = dualmap_fill_fresh,
    .open = dualmap_open,
    .close = dualmap_close,
    .fork_prepare = dualmap_fork_prepare,
    .fork_parent = dualmap_fork_parent,
    .fork_child = dualmap_fork_child,
};
