/* Write windows: where the bytes that execute at an address are written,
 * and the one way every layer writes code through a backend, including
 * what a window whose close failed leaves behind. */
#define _GNU_SOURCE /* ucontext register names in arch/ */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "arch/arch.h"
#include "internal.h"

size_t wxj_page_of(const struct wxjit_heap *heap,
                   const struct wxj_chunk *chunk, const void *p)
{
    return (size_t)((const uint8_t *)p - chunk->base) / heap->page_size;
}

struct wxj_window wxj_window_over(const struct wxjit_heap *heap,
                                  struct wxj_chunk *chunk, const void *exec,
                                  size_t len)
{
    const uint8_t *p = exec;
    struct wxj_window w = {chunk, wxj_page_of(heap, chunk, p),
                           wxj_page_of(heap, chunk, p + len - 1), NULL,
                           WXJ_VIEW_SCRATCH, p, len};
    return w;
}

uint8_t *wxj_window_at(const struct wxjit_heap *heap,
                       const struct wxj_window *w, const void *exec)
{
    return w->view + ((const uint8_t *)exec -
                      (w->chunk->base + w->first * heap->page_size));
}

/* The window an in-place reservation opened at reserve, rebuilt from its
 * executable address and write view. */
static struct wxj_window in_place_window(const struct wxjit_heap *heap,
                                         struct wxj_chunk *chunk,
                                         const void *exec, void *write,
                                         size_t len)
{
    struct wxj_window w = wxj_window_over(heap, chunk, exec, len);
    w.view = (uint8_t *)write - ((const uint8_t *)exec -
                                 (chunk->base + w.first * heap->page_size));
    w.kind = WXJ_VIEW_STABLE_TRAPS;
    return w;
}

int wxj_close_in_place(struct wxjit_heap *heap, struct wxj_chunk *chunk,
                       const void *exec, void *write, size_t len)
{
    struct wxj_window w = in_place_window(heap, chunk, exec, write, len);
    return heap->backend->close(heap, &w, exec, len);
}

/* A close failed: the backend kept the window open. What was written is
 * undone (restore), then the window is abandoned: its pages stay held for
 * nobody, executors wait, and a later window takes them over. */
static void close_failed(struct wxjit_heap *heap,
                         const struct wxj_backend *b, struct wxj_window *w,
                         uint8_t *at, const uint8_t *saved, size_t len)
{
    if (saved)
        memcpy(at, saved, len);
    else
        wxj_arch_trap_fill(at, len);
    b->abandon(heap, w);
}

/* Saved bytes up to this size live on the stack: patches and most frees. */
#define SAVE_ON_STACK 512

int wxj_write_code(struct wxjit_heap *heap, struct wxj_chunk *chunk,
                   void *exec, size_t len, wxj_fill_fn fill, const void *arg,
                   unsigned how)
{
    struct wxj_window w = wxj_window_over(heap, chunk, exec, len);
    const struct wxj_backend *b =
        how & WXJ_WRITE_ATOMIC ? heap->atomic : heap->backend;
    uint8_t stack[SAVE_ON_STACK], *saved = NULL;
    if (!b)
        return ENOTSUP;
    /* Only a backend whose close can fail, and that writes through the
     * code's own bytes, needs the old bytes back. */
    if ((how & WXJ_WRITE_OVER_CODE) && b->abandon && !b->exact_writes)
        if (!(saved = len <= sizeof(stack) ? stack : malloc(len)))
            return ENOMEM;
    int err = b->open(heap, &w);
    if (err == 0) {
        uint8_t *at = wxj_window_at(heap, &w, exec);
        if (saved)
            memcpy(saved, at, len);
        if ((err = fill(at, len, arg))) {
            /* Nothing written: an exact backend must not write its view
             * (traps) over the code; the others close as they are. */
            if (b->exact_writes || b->close(heap, &w, exec, len))
                b->abandon(heap, &w);
        } else if ((err = b->close(heap, &w, exec, len))) {
            close_failed(heap, b, &w, at, saved, len);
        }
    }
    if (saved != stack)
        free(saved);
    return err;
}

int wxj_in_place_abort(struct wxjit_heap *heap, struct wxj_chunk *chunk,
                       const void *exec, void *write, size_t len, bool give_up)
{
    size_t g = wxj_granule_of(chunk, exec);
    size_t n = wxj_block_extent(chunk, g);
    struct wxj_window w = in_place_window(heap, chunk, exec, write, len);
    wxj_arch_trap_fill(write, n * WXJ_GRANULE);
    int err = heap->backend->close(heap, &w, exec, n * WXJ_GRANULE);
    if (err && !give_up)
        return err;
    if (err)
        heap->backend->abandon(heap, &w);
    wxj_block_unmark(chunk, g, n);
    return 0;
}
