/* Write windows on live code (wxjit_window_open / wxjit_window_close).
 *
 * Each heap keeps a registry of open windows under one lock: these are
 * the rare writes (patching call sites, inline caches), never installs,
 * so a shared lock (counted in stats.shared_locks, as every such lock
 * is) is the price of exact exclusion by byte range (by page on toggle,
 * whose windows take whole pages). A window waits while another
 * thread's overlaps it.
 *
 * No deadlock among wxjit's own waits: a thread that holds something
 * others may wait for (a window on live code, an in-place reservation)
 * never waits for a window: it gets EDEADLK instead. Every wait is then by
 * a thread that holds nothing, so no cycle can form. (A holder that runs
 * code on a page another thread's window holds waits in the fault
 * handler: the README's rule that a thread must not wait for the windows
 * of a thread that waits for it.)
 *
 * A free of a function with a window open over it waits for the window
 * (another thread's) or fails with EDEADLK (the caller's own, or when the
 * caller holds a window or in-place reservation itself). The free and the
 * open order their claim (start bit) and their registration with a full
 * fence each, so either the free sees the window or the open sees the
 * claim. A free waiting is registered too, so that a fork child, where
 * the waiter does not exist, can give the function back its start bit.
 * On procmem a patch also registers for the time of its write: a window's
 * close writes back what the window saw, which would revert it. */
#define _GNU_SOURCE /* ucontext register names in arch/ */
#include <errno.h>
#include <stdlib.h>

#include "code_changed.h"
#include "internal.h"
#include "wxjit.h"

/* The calling thread's open windows, per heap (a heap destroyed with
 * windows open must not count: its id no longer matches). */
#define OWN_HEAPS 8
static __thread struct {
    const struct wxjit_heap *heap;
    uint64_t id;
    unsigned n;
} own[OWN_HEAPS];

static bool own_is_live(int i)
{
    return own[i].n && wxj_heap_ok(own[i].heap) &&
           own[i].heap->id == own[i].id;
}

static unsigned own_in(const struct wxjit_heap *heap)
{
    for (int i = 0; i < OWN_HEAPS; i++)
        if (own[i].heap == heap && own_is_live(i))
            return own[i].n;
    return 0;
}

/* Counts a window opened (+1) or closed (-1) in heap; false if the
 * thread already has windows in OWN_HEAPS other heaps. */
static bool own_add(const struct wxjit_heap *heap, int by)
{
    int slot = -1;
    for (int i = 0; i < OWN_HEAPS; i++) {
        if (own[i].heap == heap && own[i].id == heap->id && own[i].n) {
            own[i].n += (unsigned)by;
            return true;
        }
        if (slot < 0 && !own_is_live(i))
            slot = i;
    }
    if (by < 0 || slot < 0)
        return by < 0;
    own[slot].heap = heap;
    own[slot].id = heap->id;
    own[slot].n = 1;
    return true;
}

unsigned wxj_live_windows_own(void)
{
    unsigned n = 0;
    for (int i = 0; i < OWN_HEAPS; i++)
        n += own[i].n;
    return n;
}

struct wxj_live_window {
    struct wxj_live_window *next;
    int32_t owner;
    bool waiting;             /* a free waiting, not an open window */
    bool opened;              /* the backend's open succeeded */
    bool patch;               /* a procmem patch's, for its write */
    struct wxj_window w;      /* pages and view (open windows) */
    uintptr_t lo, hi;         /* bytes [lo, hi) */
    size_t start;             /* a waiting free: its start granule */
};

void wxj_live_windows_init(struct wxj_live_windows *lw)
{
    pthread_mutex_init(&lw->lock, NULL);
    pthread_cond_init(&lw->changed, NULL);
    lw->list = NULL;
    atomic_store_explicit(&lw->open, 0, memory_order_relaxed);
}

void wxj_live_windows_destroy(struct wxj_live_windows *lw)
{
    for (struct wxj_live_window *r = lw->list, *next; r; r = next) {
        next = r->next;
        free(r);
    }
    pthread_cond_destroy(&lw->changed);
    pthread_mutex_destroy(&lw->lock);
}

/* The range a window excludes others from: its pages where windows take
 * whole pages (toggle), else its bytes. */
static void extent(const struct wxjit_heap *heap, uintptr_t lo, uintptr_t hi,
                   uintptr_t *a, uintptr_t *b)
{
    uintptr_t ps = heap->page_size;
    if (heap->backend->exclusive_windows) {
        *a = lo / ps * ps;
        *b = (hi + ps - 1) / ps * ps;
    } else {
        *a = lo;
        *b = hi;
    }
}

static bool meet(uintptr_t a, uintptr_t b, uintptr_t c, uintptr_t d)
{
    return a < d && c < b;
}

/* Lock held. Another thread's open window over [a, b) (extents). */
static struct wxj_live_window *blocker(const struct wxjit_heap *heap,
                                       const struct wxj_live_windows *lw,
                                       int32_t self, uintptr_t a,
                                       uintptr_t b)
{
    for (struct wxj_live_window *r = lw->list; r; r = r->next) {
        uintptr_t c, d;
        extent(heap, r->lo, r->hi, &c, &d);
        if (!r->waiting && r->owner != self && meet(a, b, c, d))
            return r;
    }
    return NULL;
}

/* Lock held: waits for a change, letting a fork proceed meanwhile (never
 * resuming with the lock held: fork's preparation may be waiting). */
static void sleep_on(struct wxj_live_windows *lw)
{
    /* Not a cancellation point: a thread cancelled here would die with
     * the lock held and its wait record linked. */
    int state;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &state);
    wxj_op_pause();
    pthread_cond_wait(&lw->changed, &lw->lock);
    pthread_mutex_unlock(&lw->lock);
    wxj_op_resume();
    wxj_lock_shared(&lw->lock);
    pthread_setcancelstate(state, NULL);
}

static void unlink_record(struct wxj_live_windows *lw,
                          struct wxj_live_window *rec)
{
    for (struct wxj_live_window **p = &lw->list; *p; p = &(*p)->next)
        if (*p == rec) {
            *p = rec->next;
            return;
        }
}

/* Whether the calling thread holds what another may wait for. */
static bool holds_any(void)
{
    for (int i = 0; i < OWN_HEAPS; i++)
        if (own_is_live(i))
            return true;
    return wxj_open_own_in_place() != 0;
}

bool wxj_thread_holds_long(void)
{
    return holds_any();
}

/* Lock held: waits until no other thread's window blocks [a, b) (an
 * extent), or fails with EDEADLK where the caller may not wait. */
static int admit(struct wxjit_heap *heap, struct wxj_live_windows *lw,
                 int32_t self, uintptr_t a, uintptr_t b)
{
    while (blocker(heap, lw, self, a, b)) {
        if (holds_any())
            return EDEADLK;
        sleep_on(lw);
    }
    return 0;
}

/* The live function holding [addr, addr + size), whole: its granules. */
static int live_block(struct wxj_chunk *c, const uint8_t *addr, size_t size,
                      size_t *g, size_t *n)
{
    if (!wxj_block_find_start(c, wxj_granule_of(c, addr), g) ||
        !wxj_bit_get(c->start, *g) || wxj_bit_get(c->open, *g))
        return EINVAL;
    *n = wxj_block_extent(c, *g);
    const uint8_t *end =
        wxj_granule_addr(c, *g + *n) -
        atomic_load_explicit(&c->slack[*g], memory_order_relaxed);
    return addr < end && size <= (size_t)(end - addr) ? 0 : EINVAL;
}

static void drop(struct wxjit_heap *heap, struct wxj_live_window *rec);

static int window_open(struct wxjit_heap *heap, struct wxj_pool *pool,
                       uint8_t *exec, size_t size, void **write)
{
    struct wxj_live_windows *lw = &heap->windows;
    struct wxj_chunk *c = wxj_chunk_find(heap, exec);
    size_t g, n;
    /* exec is inside c: its distance to the end, not exec + size, which
     * overflows for a size past the address space. */
    if (!c || size > (size_t)(c->base + c->size - exec) ||
        live_block(c, exec, size, &g, &n))
        return EINVAL;
    /* The view must stay where the function's reservation had it. */
    if (!heap->backend->stable_views || (heap->flags & WXJIT_HEAP_RW_ON_DEMAND))
        return ENOTSUP;
    int32_t self = wxj_os_tid();
    struct wxj_live_window *rec = calloc(1, sizeof(*rec));
    if (!rec)
        return ENOMEM;
    rec->owner = self;
    rec->lo = (uintptr_t)exec;
    rec->hi = (uintptr_t)exec + size;
    wxj_lock_shared(&lw->lock);
    int err = 0;
    for (struct wxj_live_window *r = lw->list; r && !err; r = r->next)
        if (!r->waiting && r->owner == self && meet(rec->lo, rec->hi, r->lo, r->hi))
            err = EBUSY; /* the caller's own window over these bytes */
    uintptr_t a, b;
    extent(heap, rec->lo, rec->hi, &a, &b);
    if (!err)
        err = admit(heap, lw, self, a, b);
    if (!err) {
        rec->next = lw->list;
        lw->list = rec;
        atomic_fetch_add_explicit(&lw->open, 1, memory_order_seq_cst);
    }
    pthread_mutex_unlock(&lw->lock);
    if (err) {
        free(rec);
        return err;
    }
    /* Registered, then checked again: a free that claimed the function
     * before it could see this record is seen here (free_code's fence). */
    atomic_thread_fence(memory_order_seq_cst);
    rec->w = wxj_window_over(heap, c, exec, size);
    rec->w.kind = WXJ_VIEW_STABLE_LIVE;
    /* All of it again: while this thread waited, the function may have
     * been freed and its space reused by another. */
    size_t g2, n2;
    if (live_block(c, exec, size, &g2, &n2) || g2 != g || n2 != n ||
        (err = heap->backend->open(heap, &rec->w)) != 0) {
        if (!err)
            err = EINVAL;
        drop(heap, rec);
        return err;
    }
    if (!own_add(heap, 1)) {
        /* Windows in too many heaps at once to count (OWN_HEAPS). */
        heap->backend->close(heap, &rec->w, exec, size);
        drop(heap, rec);
        return ENOMEM;
    }
    rec->opened = true;
    *write = wxj_window_at(heap, &rec->w, exec);
    /* The thread's next code goes elsewhere: on toggle it would not run
     * until this window closes (and its commit is EDEADLK on every
     * backend, as for in-place reservations). */
    wxj_pool_leave_pages(heap, pool, c, rec->w.first, rec->w.last);
    return 0;
}

static void drop(struct wxjit_heap *heap, struct wxj_live_window *rec)
{
    struct wxj_live_windows *lw = &heap->windows;
    wxj_lock_shared(&lw->lock);
    unlink_record(lw, rec);
    atomic_fetch_sub_explicit(&lw->open, 1, memory_order_relaxed);
    pthread_cond_broadcast(&lw->changed);
    pthread_mutex_unlock(&lw->lock);
    free(rec);
}

static int window_close(struct wxjit_heap *heap, uint8_t *exec, size_t size)
{
    struct wxj_live_windows *lw = &heap->windows;
    int32_t self = wxj_os_tid();
    struct wxj_live_window *rec = NULL;
    wxj_lock_shared(&lw->lock);
    for (struct wxj_live_window *r = lw->list; r && !rec; r = r->next)
        if (!r->waiting && r->owner == self && r->lo == (uintptr_t)exec &&
            r->hi == (uintptr_t)exec + size)
            rec = r;
    pthread_mutex_unlock(&lw->lock);
    if (!rec)
        return EINVAL;
    /* On failure (toggle: the flip back to RX) the window stays open and
     * held, for a retry. */
    wxj_code_changes |= WXJ_CHANGE_LIVE;
    int err = heap->backend->close(heap, &rec->w, exec, size);
    if (err == 0) {
        drop(heap, rec);
        own_add(heap, -1);
    }
    return err;
}

int wxj_live_windows_own_over(struct wxjit_heap *heap, const uint8_t *block,
                              size_t len)
{
    if (!own_in(heap))
        return 0;
    struct wxj_live_windows *lw = &heap->windows;
    uintptr_t a = (uintptr_t)block, b = a + len;
    int32_t self = wxj_os_tid();
    bool found = false;
    wxj_lock_shared(&lw->lock);
    for (struct wxj_live_window *r = lw->list; r && !found; r = r->next)
        found = !r->waiting && r->owner == self && meet(a, b, r->lo, r->hi);
    pthread_mutex_unlock(&lw->lock);
    return found;
}

int wxj_live_windows_before_free(struct wxjit_heap *heap,
                                 struct wxj_chunk *chunk, size_t start,
                                 size_t len)
{
    struct wxj_live_windows *lw = &heap->windows;
    atomic_thread_fence(memory_order_seq_cst); /* pairs with the open's */
    if (!atomic_load_explicit(&lw->open, memory_order_relaxed))
        return 0;
    int32_t self = wxj_os_tid();
    uintptr_t a = (uintptr_t)wxj_granule_addr(chunk, start), b = a + len;
    struct wxj_live_window wait = {.owner = self, .waiting = true,
                                   .w = {.chunk = chunk}, .lo = a, .hi = b,
                                   .start = start};
    int err = 0;
    wxj_lock_shared(&lw->lock);
    while (blocker(heap, lw, self, a, b)) {
        if (holds_any()) {
            err = EDEADLK;
            break;
        }
        wait.next = lw->list;
        lw->list = &wait;
        sleep_on(lw);
        unlink_record(lw, &wait);
    }
    pthread_mutex_unlock(&lw->lock);
    return err;
}

int wxj_live_windows_patch_begin(struct wxjit_heap *heap, uint8_t *at,
                                 size_t len, struct wxj_live_window **out)
{
    *out = NULL;
    if (heap->backend->id != WXJIT_BACKEND_PROCMEM)
        return 0;
    struct wxj_live_windows *lw = &heap->windows;
    int32_t self = wxj_os_tid();
    struct wxj_live_window *rec = calloc(1, sizeof(*rec));
    if (!rec)
        return ENOMEM;
    rec->owner = self;
    rec->patch = true;
    rec->lo = (uintptr_t)at;
    rec->hi = rec->lo + len;
    int err = 0;
    wxj_lock_shared(&lw->lock);
    for (struct wxj_live_window *r = lw->list; r && !err; r = r->next)
        if (!r->waiting && r->owner == self && meet(rec->lo, rec->hi, r->lo, r->hi))
            err = EBUSY; /* its close would write back the old bytes */
    if (!err)
        err = admit(heap, lw, self, rec->lo, rec->hi);
    if (!err) {
        rec->next = lw->list;
        lw->list = rec;
    }
    pthread_mutex_unlock(&lw->lock);
    if (err)
        free(rec);
    else
        *out = rec;
    return err;
}

void wxj_live_windows_patch_end(struct wxjit_heap *heap,
                                struct wxj_live_window *rec)
{
    if (!rec)
        return;
    struct wxj_live_windows *lw = &heap->windows;
    wxj_lock_shared(&lw->lock);
    unlink_record(lw, rec);
    pthread_cond_broadcast(&lw->changed);
    pthread_mutex_unlock(&lw->lock);
    free(rec);
}

/* Closes rec (its bytes as they are) for a thread that cannot: one going
 * away, or one that does not exist in a fork child. A close that fails
 * leaves the window abandoned (toggle: the pages held for nobody; a later
 * window takes them over). */
static void close_for_owner(struct wxjit_heap *heap,
                            struct wxj_live_window *rec)
{
    const uint8_t *exec = (const uint8_t *)rec->lo;
    /* A close on live code like window_close's (the exiting thread syncs
     * the cores after all its closes: pool.c, thread_exit). */
    wxj_code_changes |= WXJ_CHANGE_LIVE;
    if (heap->backend->close(heap, &rec->w, exec, rec->hi - rec->lo) &&
        heap->backend->abandon)
        heap->backend->abandon(heap, &rec->w);
}

/* Takes one open window of tid out of the registry. */
static struct wxj_live_window *take_own(struct wxj_live_windows *lw,
                                        int32_t tid)
{
    struct wxj_live_window *found = NULL;
    wxj_lock_shared(&lw->lock);
    for (struct wxj_live_window *r = lw->list; r && !found; r = r->next)
        if (!r->waiting && r->owner == tid)
            found = r;
    pthread_mutex_unlock(&lw->lock);
    return found;
}

void wxj_live_windows_close_own(struct wxjit_heap *heap, int32_t tid)
{
    struct wxj_live_window *rec;
    while ((rec = take_own(&heap->windows, tid))) {
        close_for_owner(heap, rec);
        drop(heap, rec);
    }
}

void wxj_live_windows_after_fork(struct wxjit_heap *heap, int32_t parent_tid,
                                 int32_t self)
{
    struct wxj_live_windows *lw = &heap->windows;
    /* Whoever held the lock or waited does not exist here. */
    pthread_mutex_init(&lw->lock, NULL);
    pthread_cond_init(&lw->changed, NULL);
    struct wxj_live_window **p = &lw->list, *others = NULL;
    while (*p) {
        struct wxj_live_window *r = *p;
        if (r->waiting || r->owner != parent_tid) {
            *p = r->next;
            if (r->waiting) /* a free that never happened here */
                wxj_bit_set(r->w.chunk->start, r->start);
            else if (r->patch)
                free(r); /* it never wrote here */
            else {
                /* Closed below if it was open; one still waiting to open
                 * holds no page (toggle_open drops them to wait). */
                r->next = others;
                others = r;
            }
        } else {
            r->owner = self;
            p = &r->next;
        }
    }
    for (struct wxj_live_window *r = others, *next; r; r = next) {
        next = r->next;
        if (r->opened)
            close_for_owner(heap, r);
        atomic_fetch_sub_explicit(&lw->open, 1, memory_order_relaxed);
        free(r);
    }
}

int wxjit_window_open(wxjit_heap *heap, void *exec, size_t size, void **write)
{
    struct wxj_pool *pool;
    if (!wxj_heap_ok(heap) || !exec || !write || size == 0)
        return EINVAL;
    int err = wxj_op_begin(heap, &pool);
    if (err)
        return err;
    err = window_open(heap, pool, exec, size, write);
    wxj_op_end(heap, pool, err);
    return err;
}

int wxjit_window_close(wxjit_heap *heap, void *exec, size_t size)
{
    struct wxj_pool *pool;
    if (!wxj_heap_ok(heap) || !exec || size == 0)
        return EINVAL;
    int err = wxj_op_begin(heap, &pool);
    if (err)
        return err;
    err = window_close(heap, exec, size);
    wxj_op_end(heap, pool, err);
    return err;
}

int wxjit_exec_of(wxjit_heap *heap, const void *addr, void **exec)
{
    if (!wxj_heap_ok(heap) || !addr || !exec)
        return EINVAL;
    const uint8_t *p = addr;
    if (wxj_chunk_find(heap, p)) {
        *exec = (void *)p;
        return 0;
    }
    for (struct wxj_chunk *c =
             atomic_load_explicit(&heap->chunks, memory_order_acquire);
         c; c = atomic_load_explicit(&c->next, memory_order_acquire)) {
        const uint8_t *view = c->alias ? c->alias : c->shadow;
        if (view && p >= view && p < view + c->size) {
            *exec = c->base + (p - view);
            return 0;
        }
    }
    return EINVAL;
}

bool wxj_live_windows_own_pages(struct wxjit_heap *heap, uintptr_t lo,
                                uintptr_t hi)
{
    if (!own_in(heap))
        return false;
    struct wxj_live_windows *lw = &heap->windows;
    uintptr_t ps = heap->page_size, a = lo / ps * ps, b = hi / ps * ps + ps;
    int32_t self = wxj_os_tid();
    bool found = false;
    wxj_lock_shared(&lw->lock);
    for (struct wxj_live_window *r = lw->list; r && !found; r = r->next)
        found = !r->waiting && r->owner == self &&
                meet(a, b, r->lo / ps * ps, (r->hi + ps - 1) / ps * ps);
    pthread_mutex_unlock(&lw->lock);
    return found;
}

bool wxj_live_windows_free_would_wait(struct wxjit_heap *heap,
                                      struct wxj_chunk *chunk, size_t start,
                                      size_t n, bool writes)
{
    if (!holds_any())
        return false;
    if (writes && heap->backend->exclusive_windows) {
        int32_t self = wxj_os_tid();
        size_t ps = heap->page_size;
        size_t first = (size_t)(wxj_granule_addr(chunk, start) - chunk->base) / ps;
        size_t last = (size_t)(wxj_granule_addr(chunk, start + n) - 1 -
                               chunk->base) / ps;
        for (size_t i = first; i <= last; i++)
            if (atomic_load_explicit(&chunk->pages[i].long_holds,
                                     memory_order_acquire) &&
                atomic_load_explicit(&chunk->pages[i].writer,
                                     memory_order_relaxed) != self)
                return true;
    }
    struct wxj_live_windows *lw = &heap->windows;
    if (!atomic_load_explicit(&lw->open, memory_order_acquire))
        return false;
    uintptr_t a = (uintptr_t)wxj_granule_addr(chunk, start);
    wxj_lock_shared(&lw->lock);
    bool blocked = blocker(heap, lw, wxj_os_tid(), a, a + n * WXJ_GRANULE);
    pthread_mutex_unlock(&lw->lock);
    return blocked;
}
