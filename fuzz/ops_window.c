/* Ops on write windows over live code (wxjit_window_open / _close):
 * windows over whole functions or parts of them, nested on one thread,
 * on several threads over different functions of one page, writes
 * through the view (on any thread), closes by the owner, by another
 * thread, of closed windows and with wrong ranges; and what windows do
 * to the rest: thread exit and fork close them, a heap destroyed with
 * windows open drops them (ops_other.c), frees, patches and commits near
 * them answer EDEADLK or EBUSY (ops_code.c). A call that would wait for
 * another thread's window (or, toggle, for a page another thread holds)
 * is left out: with one op at a time nothing comes to close it. */
#include "fuzz.h"

#define MAX_WRITE 64 /* bytes written through a view at a time */

/* Bytes through w's view: instructions stay, the immediate changes
 * where no executor can see it change half-way (toggle: the page is not
 * executable until close; dualmap: not a published function; procmem:
 * its close is a kernel copy, so never while executors run). */
static void write_through(struct input *in, struct mwin *w)
{
    size_t at = u16(in) % w->len;
    size_t len = 1 + u16(in) % (w->len - at);
    if (len > MAX_WRITE)
        len = MAX_WRITE;
    struct mfunc *f = w->f;
    size_t off = (size_t)(w->exec - f->exec) + at;
    wxjit_backend b = heaps[w->heap].backend;
    bool keep_imm = b == WXJIT_BACKEND_DUALMAP   ? !share_quiet(f)
                    : b == WXJIT_BACKEND_PROCMEM ? concurrent
                                                 : false;
    uint8_t buf[MAX_WRITE];
    patch_bytes(in, f, off, len, keep_imm, buf);
    TRACE("write %zu bytes through the window at %p+%zu\n", len,
          (void *)w->exec, at);
    memcpy(w->write + at, buf, len);
    if (w->pending) {
        memcpy(w->pending + at, buf, len);
    } else {
        apply_patch(f, off, buf, len);
        share_patched(f);
    }
}

/* A range to open: mostly inside a live function (whole, a part), else
 * running past its end, starting before it, or somewhere that is not
 * live code (freed code, an open reservation, the stack, any granule). */
static uint8_t *pick_range(struct input *in, size_t *len)
{
    unsigned sel = u8(in);
    struct mfunc *f = pick_func(sel / 8);
    if (f && sel % 8 == 0) {
        *len = f->size;
        return f->exec;
    }
    if (f && sel % 8 < 7) {
        size_t off = u16(in) % f->size;
        *len = 1 + u16(in) % (f->size - off);
        if (sel % 8 == 5) /* past its end, or past the address space */
            *len = sel & 0x80 ? SIZE_MAX - u8(in)
                              : f->size - off + 1 + u8(in) % 32;
        if (sel % 8 == 6)
            return f->exec - 1 - u8(in) % 16; /* from before it */
        return f->exec + off;
    }
    static int local;
    struct mres *m = pick_open(sel / 8);
    *len = 1 + u8(in) % 64;
    switch (u8(in) % 4) {
    case 0: return n_stale_ptr ? stale_ptrs[sel % MAX_STALE] : NULL;
    case 1: return m ? m->r.exec : NULL;
    case 2: return (uint8_t *)&local;
    default: {
        struct wxj_chunk *c = f ? chunk_of(f->heap, f->exec) : NULL;
        return c ? c->base + u16(in) % (c->size / WXJ_GRANULE) * WXJ_GRANULE
                 : NULL;
    }
    }
}

void op_window_open(struct input *in)
{
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    size_t len;
    uint8_t *exec = pick_range(in, &len);
    unsigned mode = u8(in) % 16;
    struct mfunc *f = hi >= 0 ? func_holding(hi, exec, len) : NULL;
    void *write = NULL;
    if (!f || mode >= 13) {
        REFUSED(h, hi,
                wxjit_window_open(h, mode == 15 ? NULL : exec,
                                  mode == 13 ? 0 : len,
                                  mode == 14 ? NULL : &write));
        FUZZ_CHECK(!write, "out-parameter written on failure");
        return;
    }
    int want = heaps[hi].on_demand              ? ENOTSUP
               : own_window_over(hi, exec, len) ? EBUSY
                                                : 0;
    /* Another thread's window in the way, or (toggle) a page another
     * thread holds open in place. */
    if (!want)
        want = wait_rule(other_window_over(hi, exec, len) ||
                         held_by_other(hi, exec, len));
    struct mwin *w = win_slot();
    if (want == WAITS || (!want && !w))
        return;
    TRACE("window_open %p+%zu (function %p)\n", (void *)exec, len,
          (void *)f->exec);
    wxjit_stats before;
    stats_before(hi, &before);
    int err = wxjit_window_open(h, exec, len, &write);
    if (want) {
        EXPECT(err, want);
        check_unchanged(hi, &before, err, "refused window_open");
    }
    if (want || injected(hi, &before, err, "window_open")) {
        FUZZ_CHECK(!write, "out-parameter written on failure");
        return;
    }
    EXPECT(err, 0);
    /* The view keeps the distance the reservation had: toggle writes the
     * code itself, the others a view wxjit_exec_of maps back. */
    void *back = NULL;
    EXPECT(wxjit_exec_of(h, write, &back), 0);
    FUZZ_CHECK(back == exec &&
                   (heaps[hi].backend == WXJIT_BACKEND_TOGGLE) ==
                       (write == exec),
               "window at %p: write view %p, which is the code of %p", exec,
               write, back);
    *w = (struct mwin){true, hi, cur, f, exec, len, write, NULL};
    if (heaps[hi].backend == WXJIT_BACKEND_PROCMEM) {
        w->pending = malloc(len);
        FUZZ_CHECK(w->pending, "malloc");
        memcpy(w->pending, f->bytes + (exec - f->exec), len);
    }
    FUZZ_CHECK(!memcmp(write, f->bytes + (exec - f->exec), len),
               "window at %p: the view does not show the code's bytes", exec);
    write_through(in, w);
}

/* The last window closed, to close again. */
static struct {
    int heap;
    uint8_t *exec;
    size_t len;
} closed;

static void closed_now(struct mwin *w)
{
    closed.heap = w->heap;
    closed.exec = w->exec;
    closed.len = w->len;
    drop_win(w, true);
}

static void close_here(void *p)
{
    struct mwin *w = p;
    TRACE("window_close %p+%zu\n", (void *)w->exec, w->len);
    EXPECT(wxjit_window_close(heaps[w->heap].h, w->exec, w->len), 0);
    closed_now(w);
}

void op_window_close(struct input *in)
{
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    unsigned sel = u8(in);
    struct mwin *w = pick_win(sel / 16);
    if (!w) {
        size_t len;
        uint8_t *exec = pick_range(in, &len);
        REFUSED(h, hi, wxjit_window_close(h, exec, len));
        return;
    }
    uint8_t *exec = w->exec;
    size_t len = w->len;
    switch (sel % 16) {
    case 6: case 7: case 8: /* only a write, from whichever thread */
        write_through(in, w);
        return;
    case 9: len++; break;
    case 10: len--; break; /* 0 for a one-byte window */
    case 11: exec++; break;
    case 12: exec = NULL; break;
    case 13: h = heaps[w->heap].h; hi = w->heap; break; /* its own heap */
    case 14: exec = closed.exec; len = closed.len; break; /* closed */
    default: write_through(in, w); break;
    }
    struct mwin *target = hi >= 0 && exec ? own_window(hi, exec, len) : NULL;
    if (!target) {
        /* Not the calling thread's window at exactly that range (another
         * thread's, a closed one, a wrong size or heap): nothing changes. */
        REFUSED(h, hi, wxjit_window_close(h, exec, len));
        return;
    }
    wxjit_stats before;
    stats_before(hi, &before);
    TRACE("window_close %p+%zu\n", (void *)exec, len);
    int err = wxjit_window_close(h, exec, len);
    /* A failed close (toggle's RX flip, procmem's write) keeps the
     * window open and writable, for a retry. */
    if (injected(hi, &before, err, "window_close"))
        return;
    EXPECT(err, 0);
    closed_now(target);
}

void windows_close_all(void)
{
    for (int i = 0; i < MAX_WIN; i++)
        if (wins[i].used)
            thread_call(wins[i].owner, close_here, &wins[i]);
}

void windows_thread_exited(int t)
{
    for (int i = 0; i < MAX_WIN; i++)
        if (wins[i].used && wins[i].owner == t)
            drop_win(&wins[i], true);
}

NO_COVERAGE void windows_fork_child(void)
{
    for (int i = 0; i < MAX_WIN; i++) {
        struct mwin *w = &wins[i];
        if (!w->used)
            continue;
        EXPECT(wxjit_window_close(heaps[w->heap].h, w->exec, w->len),
               w->owner == cur ? 0 : EINVAL);
        drop_win(w, true);
    }
}
