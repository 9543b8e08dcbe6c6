/* sljit's executable allocator on one process-wide wxjit heap: the four
 * SLJIT_*_EXEC / SLJIT_UPDATE_WX_FLAGS hooks of sljitConfigPre.h. Each
 * block sljit asks for is an in-place reservation that the calling thread
 * keeps in a small thread-local table from malloc to seal (or to free,
 * for PCRE2's probe block), because sljit names it first by its write
 * address and then by its executable address, never by a handle. */
#include "wxjit_sljit.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wxjit.h>

static pthread_once_t heap_once = PTHREAD_ONCE_INIT;
static wxjit_heap *heap;
static int heap_err;

/* The calling thread's unsealed blocks; a free slot has exec == NULL
 * (wxjit clears a reservation when it is committed or aborted). */
static _Thread_local wxjit_reservation open_blocks[WXJIT_SLJIT_OPEN_MAX];

/* The calling thread's windows on sealed code, innermost last:
 * SLJIT_UPDATE_WX_FLAGS(.., 0) opens one, the matching (.., 1) closes it. */
struct live_window {
    void *exec;
    size_t size;
};
static _Thread_local struct live_window windows[WXJIT_SLJIT_WINDOWS_MAX];
static _Thread_local int nwindows;

static _Atomic(wxjit_sljit_seal_hook *) seal_hook;

/* sljit's hooks cannot return an error: a seal or free that wxjit refuses
 * means the host passed a block that is not (or no longer) its own, which
 * is a crash waiting to happen. Stop here, loudly, like free() does. */
static _Noreturn void die(const char *what, const void *addr, int err)
{
    fprintf(stderr, "wxjit_sljit: %s %p: %s\n", what, addr, strerror(err));
    abort();
}

static const char *backend_name(void)
{
    wxjit_backend b;
    const char *name = "?";
    if (wxjit_heap_backend(heap, &b) == 0)
        wxjit_backend_name(b, &name);
    return name;
}

static void print_stats(void)
{
    wxjit_stats s;
    if (wxjit_stats_get(heap, &s) != 0)
        return;
    fprintf(stderr,
            "wxjit_sljit: backend=%s installs=%llu frees=%llu "
            "bytes_live=%llu pages=%llu chunks=%llu bytes_mapped=%llu "
            "mprotect_calls=%llu map_calls=%llu syscalls=%llu "
            "faults_retried=%llu\n",
            backend_name(), (unsigned long long)s.installs,
            (unsigned long long)s.frees, (unsigned long long)s.bytes_live,
            (unsigned long long)s.pages, (unsigned long long)s.chunks,
            (unsigned long long)s.bytes_mapped,
            (unsigned long long)s.mprotect_calls,
            (unsigned long long)s.map_calls, (unsigned long long)s.syscalls,
            (unsigned long long)s.faults_retried);
}

/* Set, and neither empty nor "0". */
static bool env_on(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

static void heap_init(void)
{
    wxjit_heap *h = NULL;
    wxjit_backend b = WXJIT_BACKEND_AUTO;
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    if (env_on("WXJIT_SLJIT_DEFER_TRAP_FILL"))
        o.flags |= WXJIT_HEAP_DEFER_TRAP_FILL;
    heap_err = wxjit_heap_create(&o, &h);
    if (heap_err == 0)
        heap_err = wxjit_heap_backend(h, &b);
    /* toggle needs the fault-retry handler before any page of the heap can
     * be both executed by one thread and written by another; dualmap never
     * makes an executable page writable, so it leaves SIGSEGV alone. */
    if (heap_err == 0 && b == WXJIT_BACKEND_TOGGLE)
        heap_err = wxjit_fault_handler_install();
    if (heap_err != 0) {
        if (h)
            wxjit_heap_destroy(h);
        /* sljit only sees NULL from SLJIT_MALLOC_EXEC and PCRE2 turns its
         * JIT off quietly: say once why. */
        fprintf(stderr, "wxjit_sljit: no executable heap: %s\n",
                strerror(heap_err));
        return;
    }
    heap = h;
    if (env_on("WXJIT_SLJIT_STATS"))
        atexit(print_stats);
}

struct wxjit_heap *wxjit_sljit_heap(int *err)
{
    pthread_once(&heap_once, heap_init);
    if (err)
        *err = heap_err;
    return heap;
}

static wxjit_reservation *open_by_write(const void *write)
{
    for (int i = 0; i < WXJIT_SLJIT_OPEN_MAX; i++)
        if (open_blocks[i].exec && open_blocks[i].write == write)
            return &open_blocks[i];
    return NULL;
}

static wxjit_reservation *open_by_exec(const void *exec)
{
    for (int i = 0; i < WXJIT_SLJIT_OPEN_MAX; i++)
        if (open_blocks[i].exec && open_blocks[i].exec == exec)
            return &open_blocks[i];
    return NULL;
}

void *wxjit_sljit_malloc_exec(size_t size)
{
    wxjit_heap *h = wxjit_sljit_heap(NULL);
    wxjit_reservation *slot = NULL;
    for (int i = 0; !slot && i < WXJIT_SLJIT_OPEN_MAX; i++)
        if (!open_blocks[i].exec)
            slot = &open_blocks[i];
    if (!h || !slot)
        return NULL;
    /* sljit's own allocators hand out empty blocks; wxjit wants a byte. */
    if (wxjit_reserve(h, size ? size : 1, 0, WXJIT_RESERVE_IN_PLACE, slot))
        return NULL;
    return slot->write;
}

ptrdiff_t wxjit_sljit_exec_offset(void *ptr)
{
    /* sljit asks before it checks the allocation (since sljit 40eff81):
     * a failed one must reach sljit as SLJIT_ERR_EX_ALLOC_FAILED. */
    if (!ptr)
        return 0;
    wxjit_reservation *r = open_by_write(ptr);
    if (!r)
        die("exec offset of a block this thread did not allocate", ptr,
            EINVAL);
    return (uint8_t *)r->exec - (uint8_t *)r->write;
}

/* sljit_set_jump_addr and sljit_set_const pass the write address sljit
 * kept from the block's reservation; read-only buffers pass executable
 * addresses: wxjit tells them apart. */
static void *exec_of(void *addr)
{
    void *exec;
    int err = wxjit_exec_of(wxjit_sljit_heap(NULL), addr, &exec);
    if (err)
        die("rewriting code that is not wxjit's, at", addr, err);
    return exec;
}

/* Rewriting sealed code: a write window, open from (.., 0) to (.., 1). */
static void rewrite(void *from, size_t size, int enable_exec)
{
    wxjit_heap *h = wxjit_sljit_heap(NULL);
    uint8_t *exec = exec_of(from);
    int err;
    if (!enable_exec) {
        void *write;
        if (nwindows == WXJIT_SLJIT_WINDOWS_MAX)
            die("too many windows open on sealed code, at", exec, EBUSY);
        if ((err = wxjit_window_open(h, exec, size, &write)))
            die("opening sealed code for writing, at", exec, err);
        windows[nwindows++] = (struct live_window){exec, size};
        return;
    }
    struct live_window *top = nwindows ? &windows[nwindows - 1] : NULL;
    if (top && top->exec == exec && top->size == size) {
        if ((err = wxjit_window_close(h, exec, size)))
            die("closing a window on sealed code, at", exec, err);
        nwindows--;
    } else if (!top || exec < (uint8_t *)top->exec ||
               exec + size > (uint8_t *)top->exec + top->size) {
        /* Code generated into a read-only buffer is sealed with a (.., 1)
         * inside the buffer's window (sljit's SLJIT_GENERATE_CODE_BUFFER):
         * the window's close publishes it. Anything else is not open. */
        die("sealing code this thread has not opened, at", exec, EINVAL);
    }
}

void wxjit_sljit_update_wx_flags(void *from, void *to, int enable_exec)
{
    size_t size = (uint8_t *)to > (uint8_t *)from
                      ? (size_t)((uint8_t *)to - (uint8_t *)from)
                      : 1;
    wxjit_reservation *r = enable_exec ? open_by_exec(from) : NULL;
    if (!r) {
        rewrite(from, size, enable_exec);
        return;
    }
    /* sljit seals the bytes it emitted, often fewer than it asked for:
     * wxjit gives the rest back and fills it with traps. */
    size_t used = size;
    int err = wxjit_commit(wxjit_sljit_heap(NULL), r, used);
    if (err)
        die("sealing", from, err);
    wxjit_sljit_seal_hook *hook =
        atomic_load_explicit(&seal_hook, memory_order_acquire);
    if (hook)
        hook(from, used);
}

void wxjit_sljit_free_exec(void *exec)
{
    if (!exec)
        return;
    wxjit_heap *h = wxjit_sljit_heap(NULL);
    wxjit_reservation *r = open_by_exec(exec);
    int err = !h ? EINVAL : r ? wxjit_abort(h, r) : wxjit_free(h, exec);
    if (err)
        die("freeing", exec, err);
}

void sljit_free_unused_memory_exec(void)
{
    /* wxjit's heap reuses freed space itself; its chunks stay mapped. */
}

void wxjit_sljit_set_seal_hook(wxjit_sljit_seal_hook *hook)
{
    atomic_store_explicit(&seal_hook, hook, memory_order_release);
}
