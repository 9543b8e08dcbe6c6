/* The insecure baseline: one RWX mapping per chunk, written in place. It
 * exists so benchmarks can show what W^X costs; wxjit_heap_create refuses
 * it unless the caller passes WXJIT_HEAP_ALLOW_RWX, and W^X policies (the
 * tests' seccomp filter, SELinux execmem, PaX) refuse the mapping itself. */
#define _GNU_SOURCE /* ucontext register names in arch/ */
#include "code_changed.h"
#include "internal.h"

static int rwx_probe(bool run_code, const char **reason)
{
    void *p;
    size_t page = wxj_os_page_size();
    (void)run_code;
    int err = wxj_os_map_anon(page, WXJ_PROT_RWX, &p);
    if (err == 0)
        wxj_os_unmap(p, page);
    else
        *reason = "mmap with write+exec refused";
    return err;
}

static int rwx_chunk_map(struct wxjit_heap *heap, struct wxj_chunk *chunk)
{
    void *base;
    (void)heap;
    int err = wxj_os_map_anon(chunk->size, WXJ_PROT_RWX, &base);
    if (err == 0) {
        chunk->base = base;
    }
    return err;
}

static void rwx_chunk_unmap(struct wxjit_heap *heap, struct wxj_chunk *chunk)
{
    (void)heap;
    wxj_os_unmap(chunk->base, chunk->size);
}

static int rwx_open(struct wxjit_heap *heap, struct wxj_window *w)
{
    w->view = w->chunk->base + w->first * heap->page_size;
    return 0;
}

static int rwx_close(struct wxjit_heap *heap, struct wxj_window *w,
                     const void *flush, size_t flush_len)
{
    (void)heap;
    (void)w;
    wxj_code_changed(flush, flush_len);
    return 0;
}

static int rwx_fill_fresh(struct wxjit_heap *heap, struct wxj_window *w)
{
    rwx_open(heap, w);
    wxj_arch_trap_fill(w->view, (w->last - w->first + 1) * heap->page_size);
    return 0;
}

const struct wxj_backend wxj_backend_rwx = {
    .name = "rwx",
    .id = WXJIT_BACKEND_RWX,
    .probe = rwx_probe,
    .chunk_map = rwx_chunk_map,
    .chunk_unmap = rwx_chunk_unmap,
    .fill_fresh = rwx_fill_fresh,
    .open = rwx_open,
    .close = rwx_close,
};
