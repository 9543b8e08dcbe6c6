/* The strategies compared: wxjit toggle (one install at a time, in
 * batches of 16 through wxjit_commit_batch, and with frees whose trap fill
 * waits for the page's next window: WXJIT_HEAP_DEFER_TRAP_FILL), wxjit
 * dualmap, procmem (also with that flag: freed code stays until reused),
 * wxjit's own rwx backend (multi-threaded workload only), and three
 * baselines written here the way JITs write them:
 *   rwx                one RWX mapping, bump allocation, memcpy: the
 *                      physical limit, and what W^X forbids;
 *   page-per-block     mmap RW, copy, mprotect RX, munmap on free: sljit's
 *                      W^X executable allocator;
 *   whole-area-toggle  one area, flipped RW before and RX after every
 *                      install: single-threaded JITs under W^X.
 * Baselines count their own system calls; wxjit reports its own. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "strategy.h"
#include "wxjit.h"

#define AREA ((size_t)1 << 30) /* bump areas: address space, not memory */

static size_t page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

static size_t round_pages(size_t n)
{
    return (n + page_size() - 1) / page_size() * page_size();
}

static void die(const char *what, int err)
{
    fprintf(stderr, "wxjit-bench: %s: %s\n", what, strerror(err));
    exit(1);
}

/* ---- wxjit ---------------------------------------------------------------- */
#define BATCH 16

struct wx {
    wxjit_heap *heap;
    wxjit_reservation pending[BATCH];
    size_t used[BATCH], npending;
};

static void *wx_create(wxjit_backend backend, unsigned flags)
{
    struct wx *w = calloc(1, sizeof(*w));
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    o.backend = backend;
    o.flags = flags;
    int err = wxjit_heap_create(&o, &w->heap);
    if (err)
        die("wxjit_heap_create", err);
    return w;
}

static void *toggle_create(void) { return wx_create(WXJIT_BACKEND_TOGGLE, 0); }
static void *toggle_defer_create(void)
{
    return wx_create(WXJIT_BACKEND_TOGGLE, WXJIT_HEAP_DEFER_TRAP_FILL);
}
static void *dualmap_create(void)
{
    return wx_create(WXJIT_BACKEND_DUALMAP, 0);
}
static void *procmem_create(void)
{
    return wx_create(WXJIT_BACKEND_PROCMEM, 0);
}
static void *procmem_defer_create(void)
{
    return wx_create(WXJIT_BACKEND_PROCMEM, WXJIT_HEAP_DEFER_TRAP_FILL);
}

/* wxjit's allocator on RWX memory: the bench's own rwx bump area is not
 * thread-safe, this is the baseline where many threads install. */
static void *wx_rwx_create(void)
{
    return wx_create(WXJIT_BACKEND_RWX, WXJIT_HEAP_ALLOW_RWX);
}

static void wx_destroy(void *s)
{
    struct wx *w = s;
    wxjit_heap_destroy(w->heap);
    free(w);
}

static void *wx_install(void *s, const void *code, size_t size)
{
    struct wx *w = s;
    void *exec;
    int err = wxjit_install(w->heap, code, size, 0, &exec);
    if (err)
        die("wxjit_install", err);
    return exec;
}

static void wx_release(void *s, void *exec, size_t size)
{
    (void)size;
    int err = wxjit_free(((struct wx *)s)->heap, exec);
    if (err)
        die("wxjit_free", err);
}

static void wx_flush(void *s)
{
    struct wx *w = s;
    if (w->npending == 0)
        return;
    int err = wxjit_commit_batch(w->heap, w->pending, w->used, w->npending);
    if (err)
        die("wxjit_commit_batch", err);
    w->npending = 0;
}

static void *wx_install_batched(void *s, const void *code, size_t size)
{
    struct wx *w = s;
    wxjit_reservation *r = &w->pending[w->npending];
    int err = wxjit_reserve(w->heap, size, 0, 0, r);
    if (err)
        die("wxjit_reserve", err);
    memcpy(r->write, code, size);
    void *exec = r->exec;
    w->used[w->npending++] = size;
    if (w->npending == BATCH)
        wx_flush(w);
    return exec;
}

static struct counts wx_counts(void *s)
{
    wxjit_stats st;
    wxjit_stats_get(((struct wx *)s)->heap, &st);
    return (struct counts){st.syscalls, st.pages * page_size(),
                           st.faults_retried, st.shared_locks};
}

static const struct strategy toggle = {
    "toggle", true, false, false, toggle_create, wx_destroy, wx_install,
    wx_release, NULL, wx_counts};
static const struct strategy toggle_batch = {
    "toggle-batch16", true, true, false, toggle_create, wx_destroy,
    wx_install_batched, wx_release, wx_flush, wx_counts};
static const struct strategy toggle_defer = {
    "toggle-defer", true, false, false, toggle_defer_create, wx_destroy,
    wx_install, wx_release, NULL, wx_counts};
static const struct strategy dualmap = {
    "dualmap", true, false, false, dualmap_create, wx_destroy, wx_install,
    wx_release, NULL, wx_counts};
static const struct strategy procmem = {
    "procmem", true, false, false, procmem_create, wx_destroy, wx_install,
    wx_release, NULL, wx_counts};
static const struct strategy procmem_defer = {
    "procmem-defer", true, false, false, procmem_defer_create, wx_destroy,
    wx_install, wx_release, NULL, wx_counts};
static const struct strategy wx_rwx = {
    "wxjit-rwx", true, false, false, wx_rwx_create, wx_destroy, wx_install,
    wx_release, NULL, wx_counts};

/* ---- bump areas: rwx and whole-area-toggle -------------------------------
 * Freed code is not reused: a bump area is as fast as allocation gets. */
struct area {
    uint8_t *base;
    size_t used, syscalls;
    bool toggle; /* flip the touched part RW/RX around each install */
};

static void *area_create(bool toggle_area)
{
    struct area *a = calloc(1, sizeof(*a));
    int prot = PROT_READ | PROT_EXEC | (toggle_area ? 0 : PROT_WRITE);
    a->base = mmap(NULL, AREA, prot,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (a->base == MAP_FAILED)
        die("mmap of the code area", errno);
    a->syscalls = 1;
    a->toggle = toggle_area;
    return a;
}

static void *rwx_create(void) { return area_create(false); }
static void *whole_create(void) { return area_create(true); }

static void area_destroy(void *s)
{
    struct area *a = s;
    munmap(a->base, AREA);
    free(a);
}

static void area_protect(struct area *a, int prot)
{
    a->syscalls++;
    if (mprotect(a->base, round_pages(a->used), prot))
        die("mprotect of the code area", errno);
}

static void *area_install(void *s, const void *code, size_t size)
{
    struct area *a = s;
    size_t at = (a->used + 15) & ~(size_t)15;
    if (at + size > AREA)
        die("code area full", ENOMEM);
    a->used = at + size;
    if (a->toggle)
        area_protect(a, PROT_READ | PROT_WRITE);
    memcpy(a->base + at, code, size);
    if (a->toggle)
        area_protect(a, PROT_READ | PROT_EXEC);
    __builtin___clear_cache((char *)a->base + at, (char *)a->base + at + size);
    return a->base + at;
}

static void area_release(void *s, void *exec, size_t size)
{
    (void)s, (void)exec, (void)size;
}

static struct counts area_counts(void *s)
{
    struct area *a = s;
    return (struct counts){a->syscalls, round_pages(a->used), 0, 0};
}

static const struct strategy rwx = {
    "rwx", true, false, false, rwx_create, area_destroy, area_install,
    area_release, NULL, area_counts};
static const struct strategy whole_area = {
    "whole-area-toggle", false, false, true, whole_create, area_destroy,
    area_install, area_release, NULL, area_counts};

/* ---- page-per-block -------------------------------------------------------- */
struct blocks {
    size_t syscalls, mapped;
};

static void *blocks_create(void)
{
    return calloc(1, sizeof(struct blocks));
}

static void blocks_destroy(void *s)
{
    free(s); /* the benchmark releases every block it installed */
}

static void *blocks_install(void *s, const void *code, size_t size)
{
    struct blocks *b = s;
    size_t len = round_pages(size);
    uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        die("mmap of a block", errno);
    memcpy(p, code, size);
    if (mprotect(p, len, PROT_READ | PROT_EXEC))
        die("mprotect of a block", errno);
    __builtin___clear_cache((char *)p, (char *)p + size);
    b->syscalls += 2;
    b->mapped += len;
    return p;
}

static void blocks_release(void *s, void *exec, size_t size)
{
    struct blocks *b = s;
    munmap(exec, round_pages(size));
    b->syscalls++;
    b->mapped -= round_pages(size);
}

static struct counts blocks_counts(void *s)
{
    struct blocks *b = s;
    return (struct counts){b->syscalls, b->mapped, 0, 0};
}

static const struct strategy page_per_block = {
    "page-per-block", true, false, false, blocks_create, blocks_destroy,
    blocks_install, blocks_release, NULL, blocks_counts};

const struct strategy *const strategies[] = {
    &rwx,     &toggle,  &toggle_batch,   &toggle_defer, &dualmap,
    &procmem, &procmem_defer, &page_per_block, &whole_area,
};
const size_t strategy_count = sizeof(strategies) / sizeof(strategies[0]);

/* Those whose install and release may run on many threads at once (wxjit
 * heaps), for the multi-threaded workload; the baseline first. */
const struct strategy *const threaded_strategies[] = {
    &wx_rwx, &toggle, &toggle_defer, &dualmap, &procmem, &procmem_defer,
};
const size_t threaded_strategy_count =
    sizeof(threaded_strategies) / sizeof(threaded_strategies[0]);
