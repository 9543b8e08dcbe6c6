/* The procmem backend: code pages are mapped read+exec once, before any
 * code lands there, and never change protection. Bytes are written with
 * pwrite on the process's own /proc/self/mem, through which the kernel
 * writes via its own mapping of the page (as debuggers set breakpoints):
 * no page is ever writable in user space, no second mapping exists, and
 * executors never fault or wait. One system call per write run.
 *
 * A window is a scratch buffer the size of its pages; close writes exactly
 * the bytes the caller wrote ([flush, flush + flush_len)) to the code,
 * never the rest, which other threads may change meanwhile.
 *
 * Instruction caches: the kernel's write path, copy_to_user_page(), makes
 * the new bytes visible to instruction fetch when the mapping is
 * executable: on arm64 through flush_ptrace_access() ->
 * sync_icache_aliases() (arch/arm64/mm/flush.c), on riscv through
 * flush_icache_user_page() -> flush_icache_mm() on every hart of the mm
 * (arch/riscv/include/asm/cacheflush.h); x86 keeps them coherent. Only a
 * binary translator (Valgrind) is told here. An emulator that misses such
 * writes (qemu-user keeps its translation) fails the probe, which runs
 * what it wrote.
 *
 * Atomic stores: the kernel copies with memcpy (x86: rep movsb with FSRM,
 * bytewise below 4 bytes otherwise; arm64 and riscv: their memcpy), which
 * no architecture promises to perform as one store. wxjit_patch_atomic
 * therefore opens a toggle window on the page (RW for the store, RX
 * again; executors wait in the fault handler) where the system lets a
 * page regain PROT_EXEC, and fails with ENOTSUP where it does not. */
#define _GNU_SOURCE /* ucontext register names in arch/ */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "code_changed.h"
#include "internal.h"

/* The process's descriptor of /proc/self/mem, -1 until first needed.
 * It is opened under open_lock, which fork() holds too (fork.c): a fork
 * between the open and the publication would leave the child a hidden
 * descriptor of its parent's memory. The first open may run outside the
 * operation gate (a probe), so the gate alone does not keep forks out. */
static _Atomic int mem_fd = -1;
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;

static int self_mem(int *fd)
{
    int cur = atomic_load_explicit(&mem_fd, memory_order_acquire), err = 0;
    if (cur < 0) {
        pthread_mutex_lock(&open_lock);
        if ((cur = atomic_load_explicit(&mem_fd, memory_order_relaxed)) < 0 &&
            (err = wxj_os_open_self_mem(&cur)) == 0)
            atomic_store_explicit(&mem_fd, cur, memory_order_release);
        pthread_mutex_unlock(&open_lock);
    }
    *fd = cur;
    return err;
}

/* Taken last in fork's preparation (after operations have drained: an
 * operation may wait here for a probe's open, never the other way). */
void wxj_procmem_fork_prepare(void)
{
    pthread_mutex_lock(&open_lock);
}

void wxj_procmem_fork_parent(void)
{
    pthread_mutex_unlock(&open_lock);
}

/* The inherited descriptor still writes into the parent's memory: it is
 * closed at once, in fork() (before the child can reuse its number), and
 * the child opens its own on first use. */
void wxj_procmem_after_fork(void)
{
    int fd = atomic_exchange_explicit(&mem_fd, -1, memory_order_relaxed);
    if (fd >= 0)
        wxj_os_close(fd);
    pthread_mutex_unlock(&open_lock);
}

/* Writes [at, at + len) from src; a write that fails part-way puts the
 * old bytes (old, the same length) back, so that a failure changes
 * nothing. */
static int write_back(void *at, const void *src, const void *old, size_t len)
{
    int fd;
    size_t done, undone;
    int err = self_mem(&fd);
    if (err)
        return err;
    err = wxj_os_write_mem(fd, at, src, len, 1, &done);
    if (err && done)
        wxj_os_write_mem(fd, at, old, done, 1, &undone);
    return err;
}

/* A page of traps, repeated over fresh steps. */
static uint8_t *trap_page;
static pthread_once_t trap_page_once = PTHREAD_ONCE_INIT;

static void make_trap_page(void)
{
    size_t page = wxj_os_page_size();
    if ((trap_page = malloc(page)))
        wxj_arch_trap_fill(trap_page, page);
}

/* Runs code written through /proc/self/mem twice with different results:
 * an emulator may keep running its translation of the old bytes. */
static int probe_page(int fd, uint8_t *rx, const char **reason)
{
    uint8_t code[64];
    for (uint32_t v = 1; v <= 2; v++) {
        size_t n = wxj_arch_emit_return(code, v), done;
        int err = wxj_os_write_mem(fd, rx, code, n, 1, &done);
        if (err) {
            *reason = "/proc/self/mem not writable";
            return err;
        }
        wxj_code_changed_by_kernel(rx, n);
        uint32_t (*fn)(void);
        __builtin_memcpy(&fn, &rx, sizeof(fn));
        if (fn() != v) {
            *reason = "code written through /proc/self/mem does not run "
                      "(stale translation)";
            return ENOTSUP;
        }
    }
    return 0;
}

static int procmem_probe(bool run_code, const char **reason)
{
    size_t page = wxj_os_page_size();
    void *rx;
    int fd;
    (void)run_code; /* always: the point is that writes reach the code */
    int err = self_mem(&fd);
    if (err) {
        *reason = "/proc/self/mem cannot be opened";
        return err;
    }
    if ((err = wxj_os_map_anon(page, WXJ_PROT_RX, &rx))) {
        *reason = "anonymous executable mapping refused";
        return err;
    }
    /* Its page is private to this thread: nothing to sync (dualmap's
     * probe says why the note is undone). */
    unsigned noted = wxj_code_changes;
    err = probe_page(fd, rx, reason);
    wxj_code_changes = noted;
    wxj_os_unmap(rx, page);
    return err;
}

/* Reserved inaccessible: steps become executable as pages are handed out
 * (fill_fresh), so a stray jump past them faults at its target. No page is
 * ever writable from the mapping, so none is fresh in toggle's sense: a
 * toggle window (atomic stores) flips every page it opens, and never
 * widens into neighbours by writing them directly. */
static int procmem_chunk_map(struct wxjit_heap *heap, struct wxj_chunk *chunk)
{
    void *base, *shadow;
    (void)heap;
    int err = wxj_os_map_anon(chunk->size, WXJ_PROT_NONE, &base);
    if (err == 0 &&
        (err = wxj_os_map_anon(chunk->size, WXJ_PROT_RW, &shadow)) != 0)
        wxj_os_unmap(base, chunk->size);
    if (err == 0) {
        chunk->base = base;
        chunk->shadow = shadow;
    }
    for (size_t i = 0; err == 0 && i < chunk->npages; i++)
        chunk->pages[i].fresh = false;
    return err;
}

static void procmem_chunk_unmap(struct wxjit_heap *heap,
                                struct wxj_chunk *chunk)
{
    (void)heap;
    wxj_os_unmap(chunk->base, chunk->size);
    wxj_os_unmap(chunk->shadow, chunk->size);
}

/* Maps pages [from, to) executable and fills them with traps. */
static int map_step(struct wxj_chunk *c, size_t ps, size_t from, size_t to)
{
    uint8_t *at = c->base + from * ps;
    size_t done;
    int fd, err;
    pthread_once(&trap_page_once, make_trap_page);
    if (!trap_page)
        return ENOMEM;
    if ((err = self_mem(&fd)))
        return err;
    if ((err = wxj_os_map_anon_at(at, (to - from) * ps, WXJ_PROT_RX)))
        return err;
    /* Executable zeros must not stay: back to inaccessible if the traps
     * cannot be written (best effort; nothing points there yet). */
    if ((err = wxj_os_write_mem(fd, at, trap_page, ps, to - from, &done))) {
        wxj_os_map_anon_at(at, (to - from) * ps, WXJ_PROT_NONE);
        return err;
    }
    c->rx_pages = to;
    return 0;
}

/* Under the heap lock, for pages about to be handed out. Pages below
 * rx_pages were trap-filled with their step and never handed out since. */
static int procmem_fill_fresh(struct wxjit_heap *heap, struct wxj_window *w)
{
    struct wxj_chunk *c = w->chunk;
    size_t ps = heap->page_size, from = c->rx_pages;
    size_t to = wxj_rx_step_end(c, w->last);
    return to > from ? map_step(c, ps, from, to) : 0;
}

static size_t window_bytes(const struct wxjit_heap *heap,
                           const struct wxj_window *w)
{
    return (w->last - w->first + 1) * heap->page_size;
}

/* A scratch buffer is twice the window: the view, then room for the
 * bytes that close replaces (to put them back if its write fails
 * part-way). The view starts as traps, as the space it stands for does:
 * an in-place emitter that leaves a gap gets traps there on every
 * backend. Stable views are the shadow's pages; only the window's own
 * bytes are set there (other threads' stable views may share the page). */
static int procmem_open(struct wxjit_heap *heap, struct wxj_window *w)
{
    struct wxj_chunk *c = w->chunk;
    if (w->kind != WXJ_VIEW_SCRATCH) {
        w->view = c->shadow + w->first * heap->page_size;
        uint8_t *at = wxj_window_at(heap, w, w->exec);
        if (w->kind == WXJ_VIEW_STABLE_TRAPS)
            wxj_arch_trap_fill(at, w->len);
        else
            memcpy(at, w->exec, w->len);
        return 0;
    }
    size_t len = window_bytes(heap, w);
    uint8_t *buf = malloc(2 * len);
    if (!buf)
        return ENOMEM;
    wxj_arch_trap_fill(buf, len);
    w->view = buf;
    return 0;
}

static bool stable_view(const struct wxj_window *w)
{
    const struct wxj_chunk *c = w->chunk;
    return w->view >= c->shadow && w->view < c->shadow + c->size;
}

/* Atomic stores open toggle windows on these pages (heap->atomic): bytes
 * written there run once such a window has closed, and not at all on a
 * page one abandoned writable (its RX flip failed). Windows in progress
 * are waited out (they are short: one store); an abandoned page is tried
 * again (recover), and if it stays so, ENOMEM, as toggle reports it. */
static int pages_executable(struct wxjit_heap *heap, struct wxj_chunk *c,
                            const uint8_t *from, size_t len)
{
    if (heap->atomic != &wxj_backend_toggle)
        return 0;
    for (size_t i = wxj_page_of(heap, c, from);
         i <= wxj_page_of(heap, c, from + len - 1); i++) {
        struct wxj_page *pg = &c->pages[i];
        for (bool retried = false;
             atomic_load_explicit(&pg->state, memory_order_acquire) &
             WXJ_PAGE_WRITING;) {
            if (atomic_load_explicit(&pg->writer, memory_order_relaxed) !=
                WXJ_WRITER_STUCK) {
                wxj_os_yield();
            } else if (!retried) {
                wxj_backend_toggle.recover(heap);
                retried = true;
            } else {
                return ENOMEM;
            }
        }
    }
    return 0;
}

/* WXJIT_HEAP_DEFER_TRAP_FILL: freed space keeps its old code until
 * written again (WXJ_FILL_ON_REUSE). A write that begins or ends inside
 * such a granule takes in the rest of it from the view (traps, or the
 * caller's bytes), so that no granule is left part new, part old code: a
 * commit's last granule gets its traps past the code. Only the writer's
 * own block can be pending there (patches are over live code, which is
 * never pending), so no other thread writes those bytes meanwhile. */
static void widen_over_pending(const struct wxj_chunk *c, const uint8_t **lo,
                               const uint8_t **hi, size_t *g, size_t *n)
{
    size_t first = wxj_granule_of(c, *lo), last = wxj_granule_of(c, *hi - 1);
    if (wxj_bit_get(c->stale, first))
        *lo = wxj_granule_addr(c, first);
    if (wxj_bit_get(c->stale, last))
        *hi = wxj_granule_addr(c, last) + WXJ_GRANULE;
    *g = first;
    *n = last - first + 1;
}

/* On failure the buffer stays (the window stays open, for a retry or for
 * abandon) and the code is as it was. */
static int procmem_close(struct wxjit_heap *heap, struct wxj_window *w,
                         const void *flush, size_t flush_len)
{
    struct wxj_chunk *c = w->chunk;
    const uint8_t *lo = flush, *hi = lo + flush_len;
    size_t g = 0, n = 0, undone;
    int fd;
    if (c->stale)
        widen_over_pending(c, &lo, &hi, &g, &n);
    size_t len = (size_t)(hi - lo);
    bool stable = stable_view(w);
    uint8_t *old = stable ? malloc(len) : w->view + window_bytes(heap, w);
    if (!old)
        return ENOMEM;
    memcpy(old, lo, len);
    int err = write_back((void *)lo, wxj_window_at(heap, w, lo), old, len);
    if (err == 0 && (err = pages_executable(heap, c, lo, len)) &&
        self_mem(&fd) == 0)
        wxj_os_write_mem(fd, (void *)lo, old, len, 1, &undone);
    if (stable)
        free(old);
    if (err)
        return err;
    if (n)
        wxj_block_rewritten(c, g, n);
    wxj_code_changed_by_kernel(lo, len);
    if (!stable)
        free(w->view);
    return 0;
}

/* Nothing was written (or it was put back): only a scratch buffer goes. */
static void procmem_abandon(struct wxjit_heap *heap, struct wxj_window *w)
{
    (void)heap;
    if (!stable_view(w))
        free(w->view);
}

/* EACCES or EPERM: the policy refuses to make written pages executable
 * (MDWE, SELinux execmod): no atomic stores here, for good. Any other
 * failure (ENOMEM, a full map count) is the moment's, not the system's:
 * taken for a refusal it would leave patch_atomic ENOTSUP for the heap's
 * life (found by the fuzzer: fuzz/regressions/procmem-create-probe-
 * failure-loses-atomic-stores). */
static int procmem_atomic_stores(const struct wxj_backend **out)
{
    const char *reason;
    int err = wxj_backend_toggle.probe(false, &reason);
    *out = err ? NULL : &wxj_backend_toggle;
    return err == EACCES || err == EPERM ? 0 : err;
}

/* Toggle windows (atomic stores) follow toggle's rules for pages left
 * writable and for forks. */
static void procmem_recover(struct wxjit_heap *heap)
{
    if (heap->atomic == &wxj_backend_toggle)
        wxj_backend_toggle.recover(heap);
}

static void procmem_fork_child(struct wxjit_heap *heap,
                               struct wxj_chunk *chunk, int32_t parent_tid)
{
    if (heap->atomic == &wxj_backend_toggle)
        wxj_backend_toggle.fork_child(heap, chunk, parent_tid);
}

const struct wxj_backend wxj_backend_procmem = {
    .name = "procmem",
    .id = WXJIT_BACKEND_PROCMEM,
    .exact_writes = true,
    .stable_views = true, /* the shadow */
    .deferral = WXJ_FILL_ON_REUSE,
    .probe = procmem_probe,
    .chunk_map = procmem_chunk_map,
    .chunk_unmap = procmem_chunk_unmap,
    .fill_fresh = procmem_fill_fresh,
    .open = procmem_open,
    .close = procmem_close,
    .abandon = procmem_abandon,
    .recover = procmem_recover,
    .atomic_stores = procmem_atomic_stores,
    .fork_child = procmem_fork_child,
};
