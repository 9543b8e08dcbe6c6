/* Describing code (wxjit_describe): the name and unwind information of a
 * live function, handed to the tools its heap reports to, kept in a slot
 * of its chunk by start granule and retracted when the function is freed,
 * before its space can be reused: a later function at the same address
 * never inherits the description.
 *
 * A slot goes NULL -> pending (the description's address | 1) -> the
 * description. The describer claims the slot (pending) before it checks
 * that the function is live and reads its size and bytes, and keeps it
 * pending until every record is written (or retracted again). A free,
 * after its claim (the start bit), waits while the slot is pending, then
 * takes a settled description and retracts it. Both order their slot and
 * start-bit accesses with full fences (as patches and frees do in
 * code.c): either the describer sees the free's claim (EINVAL) or the
 * free sees the pending slot and waits. So the space of a function being
 * described is not reused before its describer is done: the description
 * is of that function alone, and its records are all written (or
 * retracted) before any record of code later put there. Only its describer
 * ever changes a pending slot: a free that finds one after its wait
 * leaves it (a describer that came after the claim, and fails). */
#define _GNU_SOURCE /* strnlen, strdup */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../internal.h"

#define PENDING 1u

static void desc_free(struct wxj_desc *d)
{
    free(d->name);
    free(d->cfi);
    free(d);
}

/* The tools are told that d's function is gone, and d is released;
 * all: every description of the heap goes (its destruction). */
static void retract(const struct wxjit_heap *heap, struct wxj_desc *d,
                    bool all)
{
    if (heap->sinks & WXJ_SINK_JITDUMP)
        wxj_jitdump_freed(d);
    wxj_gdb_remove(d, !all);
    wxj_unwind_deregister(d);
    desc_free(d);
}

/* ---- which tools ---------------------------------------------------------- */
/* A variable of 1 (sink on) or 0 (nothing). */
static int switch_from_env(const char *name, unsigned sink, unsigned *sinks)
{
    const char *env = getenv(name);
    if (!env || !*env || !strcmp(env, "0"))
        return 0;
    if (strcmp(env, "1"))
        return EINVAL;
    *sinks |= sink;
    return 0;
}

/* WXJIT_GDB, WXJIT_UNWIND, and WXJIT_PERF: a comma-separated list of map,
 * jitdump, off. */
static int sinks_from_env(unsigned *sinks)
{
    int err = switch_from_env("WXJIT_GDB", WXJ_SINK_GDB, sinks);
    const char *env = getenv("WXJIT_PERF");
    if (err == 0)
        err = switch_from_env("WXJIT_UNWIND", WXJ_SINK_UNWIND, sinks);
    if (err)
        return err;
    while (env && *env) {
        size_t n = strcspn(env, ",");
        if (n == 3 && !strncmp(env, "map", 3))
            *sinks |= WXJ_SINK_PERF_MAP;
        else if (n == 7 && !strncmp(env, "jitdump", 7))
            *sinks |= WXJ_SINK_JITDUMP;
        else if (!(n == 3 && !strncmp(env, "off", 3)))
            return EINVAL;
        env += n + (env[n] == ',');
    }
    return 0;
}

int wxj_sinks_choose(unsigned flags, unsigned *out)
{
    unsigned sinks = (flags & WXJIT_HEAP_PERF_MAP ? WXJ_SINK_PERF_MAP : 0) |
                     (flags & WXJIT_HEAP_JITDUMP ? WXJ_SINK_JITDUMP : 0) |
                     (flags & WXJIT_HEAP_GDB ? WXJ_SINK_GDB : 0) |
                     (flags & WXJIT_HEAP_UNWIND ? WXJ_SINK_UNWIND : 0);
    int err = sinks_from_env(&sinks);
    if (err == 0 && (sinks & WXJ_SINK_GDB))
        err = wxj_gdb_usable();
    if (err == 0)
        *out = sinks;
    return err;
}

/* ---- slot tables ---------------------------------------------------------- */
int wxj_desc_table_new(struct wxj_chunk *chunk)
{
    /* calloc of this size maps zero pages: memory only where code is
     * described. */
    chunk->desc = calloc(chunk->ngranules, sizeof(*chunk->desc));
    return chunk->desc ? 0 : ENOMEM;
}

/* fn for each description of chunk, while no operation runs (nothing is
 * pending). Only live functions have descriptions: their start bits lead
 * to them, without reading (and faulting in) the whole table, which for
 * a 1 GiB chunk is 512 MiB. */
static void each_description(struct wxj_chunk *chunk,
                             void (*fn)(const struct wxjit_heap *heap,
                                        struct wxj_desc *d))
{
    for (size_t w = 0; w * 64 < chunk->ngranules; w++) {
        uint64_t bits = atomic_load_explicit(&chunk->start[w],
                                             memory_order_relaxed);
        for (; bits; bits &= bits - 1) {
            size_t g = w * 64 + (size_t)__builtin_ctzll(bits);
            struct wxj_desc *d = atomic_load_explicit(&chunk->desc[g],
                                                      memory_order_relaxed);
            if (d)
                fn(chunk->heap, d);
        }
    }
}

static void retract_all(const struct wxjit_heap *heap, struct wxj_desc *d)
{
    retract(heap, d, true);
}

void wxj_desc_table_free(struct wxj_chunk *chunk)
{
    if (!chunk->desc)
        return;
    /* The heap is being destroyed: its code goes with it. */
    each_description(chunk, retract_all);
    free((void *)chunk->desc);
    chunk->desc = NULL;
}

void wxj_describe_wait(struct wxj_chunk *chunk, size_t g)
{
    atomic_thread_fence(memory_order_seq_cst); /* after the claim */
    while ((uintptr_t)atomic_load(&chunk->desc[g]) & PENDING)
        wxj_os_yield();
}

void wxj_describe_retract(struct wxjit_heap *heap, struct wxj_chunk *chunk,
                          size_t g)
{
    /* After wxj_describe_wait: settled, empty, or pending for a describer
     * that came after the claim (it fails, and clears its slot itself). */
    struct wxj_desc *d = atomic_load(&chunk->desc[g]);
    if (d && !((uintptr_t)d & PENDING)) {
        atomic_store(&chunk->desc[g], NULL);
        retract(heap, d, false);
    }
}

/* ---- wxjit_describe and wxjit_describe_batch ----------------------------- */
static int check_name(const char *name)
{
    size_t n = name ? strnlen(name, WXJIT_NAME_MAX + 1) : 0;
    if (n == 0 || n > WXJIT_NAME_MAX)
        return EINVAL;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            return EINVAL;
    return 0;
}

static int check_info(const wxjit_code_info *info)
{
    if (!info || info->size < sizeof(*info) || check_name(info->name) ||
        (info->flags & ~(unsigned)WXJIT_DESCRIBE_FRAME_POINTER) ||
        (!info->eh_frame != !info->eh_frame_size) ||
        (info->eh_frame && (info->flags & WXJIT_DESCRIBE_FRAME_POINTER)))
        return EINVAL;
    return 0;
}

/* The committed bytes of the live function starting at granule g, or 0. */
static size_t live_size(struct wxj_chunk *c, size_t g)
{
    if (!wxj_block_live(c, g))
        return 0;
    return wxj_block_extent(c, g) * WXJ_GRANULE -
           atomic_load_explicit(&c->slack[g], memory_order_relaxed);
}

static struct wxj_desc *pending_of(struct wxj_desc *d)
{
    return (struct wxj_desc *)((uintptr_t)d | PENDING);
}

/* d's slot, claimed: pending until settle or unclaim. EBUSY if described
 * (or being described). With no tool on there are no slots: nothing is
 * kept, so the function is only checked. */
static int claim(struct wxj_desc *d)
{
    struct wxj_desc *expect = NULL;
    if (!d->chunk->desc)
        return 0;
    if (!atomic_compare_exchange_strong(&d->chunk->desc[d->granule], &expect,
                                        pending_of(d)))
        return EBUSY;
    atomic_thread_fence(memory_order_seq_cst); /* before the live check */
    return 0;
}

/* d's claim is given up (no record of d stays): frees waiting on it go on. */
static void unclaim(struct wxj_desc *d)
{
    if (d->chunk->desc)
        atomic_store(&d->chunk->desc[d->granule], NULL);
}

/* The description of the live function at exec, its slot claimed and the
 * function checked under the claim (its size, its unwind information
 * against its bytes): no free can complete meanwhile. */
static int make_desc(struct wxjit_heap *heap, const uint8_t *exec,
                     const wxjit_code_info *info, struct wxj_desc **out)
{
    struct wxj_chunk *c = wxj_chunk_find(heap, exec);
    if (!c || (uintptr_t)(exec - c->base) % WXJ_GRANULE)
        return EINVAL;
    struct wxj_desc *d = malloc(sizeof(*d));
    char *name = strdup(info->name);
    if (!d || !name) {
        free(d);
        free(name);
        return ENOMEM;
    }
    *d = (struct wxj_desc){exec, 0, name, NULL, c, wxj_granule_of(c, exec),
                           NULL, 0, NULL};
    int err = claim(d);
    if (err) {
        desc_free(d);
        return err;
    }
    d->size = live_size(c, d->granule);
    err = d->size ? 0 : EINVAL;
    if (err == 0 && (info->flags & WXJIT_DESCRIBE_FRAME_POINTER))
        err = wxj_cfi_frame_pointer(exec, d->size, &d->cfi);
    else if (err == 0 && info->eh_frame)
        err = wxj_cfi_parse(info->eh_frame, info->eh_frame_size, d->size,
                            &d->cfi);
    if (err) {
        unclaim(d);
        desc_free(d);
        return err;
    }
    *out = d;
    return 0;
}

/* Writes d's records to perf's files and registers its unwind
 * information. On failure nothing stays but a perf map line (the format
 * has no retraction); the slot stays claimed. */
static int begin(struct wxjit_heap *heap, struct wxj_desc *d)
{
    bool dumped = false;
    int err = 0;
    if (heap->sinks & WXJ_SINK_PERF_MAP)
        err = wxj_perf_map_load(d);
    if (err == 0 && (heap->sinks & WXJ_SINK_JITDUMP))
        dumped = !(err = wxj_jitdump_load(d));
    if (err == 0 && (heap->sinks & WXJ_SINK_UNWIND) && d->cfi)
        err = wxj_unwind_register(d);
    if (err && dumped)
        wxj_jitdump_freed(d);
    return err;
}

/* d was begun: the tools that have it drop it, then its slot is given up
 * (retracted first: a free waiting on the slot reuses the space after). */
static void undo(struct wxjit_heap *heap, struct wxj_desc *d)
{
    struct wxj_chunk *c = d->chunk;
    size_t g = d->granule;
    retract(heap, d, false);
    atomic_store(&c->desc[g], NULL);
}

/* d's records are all written: it takes its slot (only its describer
 * changes a pending slot). */
static void settle(struct wxj_desc *d)
{
    atomic_store(&d->chunk->desc[d->granule], d);
}

static int describe(struct wxjit_heap *heap, void *const *exec,
                    const wxjit_code_info *info, size_t count,
                    struct wxj_desc **d)
{
    size_t made = 0, begun = 0;
    int err = 0;
    while (made < count && !err)
        if (!(err = make_desc(heap, exec[made], &info[made], &d[made])))
            made++;
    if (err || !heap->sinks) /* or checked, and no tool wants them */
        goto release;
    while (begun < made && !err)
        if (!(err = begin(heap, d[begun])))
            begun++;
    if (!err && (heap->sinks & WXJ_SINK_GDB))
        err = wxj_gdb_register(d, count);
    if (err) {
        for (size_t i = 0; i < begun; i++)
            undo(heap, d[i]); /* unclaimed too */
        made -= begun;
        d += begun;
        goto release;
    }
    for (size_t i = 0; i < count; i++)
        settle(d[i]);
    return 0;
release:
    for (size_t i = 0; i < made; i++) {
        unclaim(d[i]);
        desc_free(d[i]);
    }
    return err;
}

int wxjit_describe_batch(wxjit_heap *heap, void *const *exec,
                         const wxjit_code_info *info, size_t count)
{
    struct wxj_pool *pool;
    if (!wxj_heap_ok(heap) || !exec || !info || count == 0 ||
        count > SIZE_MAX / sizeof(struct wxj_desc *))
        return EINVAL;
    for (size_t i = 0; i < count; i++)
        if (!exec[i] || check_info(&info[i]))
            return EINVAL;
    struct wxj_desc *one, **d = count == 1 ? &one : malloc(count * sizeof(*d));
    if (!d)
        return ENOMEM;
    int err = wxj_op_begin(heap, &pool);
    if (err == 0) {
        err = describe(heap, exec, info, count, d);
        wxj_op_end(heap, pool, err);
    }
    if (d != &one)
        free(d);
    return err;
}

int wxjit_describe(wxjit_heap *heap, void *exec, const wxjit_code_info *info)
{
    return wxjit_describe_batch(heap, &exec, info, 1);
}

/* ---- fork ----------------------------------------------------------------- */
void wxj_observe_fork_prepare(void)
{
    wxj_perf_map_fork_prepare();
    wxj_jitdump_fork_prepare();
    wxj_gdb_fork_prepare();
}

void wxj_observe_fork_parent(void)
{
    wxj_gdb_fork_release();
    wxj_jitdump_fork_parent();
    wxj_perf_map_fork_parent();
}

/* In a fork child: d's records in the child's own files (gdb's list is
 * in memory: the child has it already). */
static void replay(const struct wxjit_heap *heap, struct wxj_desc *d)
{
    if (heap->sinks & WXJ_SINK_PERF_MAP)
        wxj_perf_map_load(d);
    if (heap->sinks & WXJ_SINK_JITDUMP)
        wxj_jitdump_load(d);
}

void wxj_observe_after_fork(struct wxjit_heap *heaps)
{
    wxj_gdb_fork_release();
    wxj_perf_map_after_fork();
    wxj_jitdump_after_fork();
    /* Only this thread lives and no operation is under way: every slot is
     * settled. The child's files start with the code it inherited; heaps
     * that write no file have nothing to replay. */
    for (struct wxjit_heap *h = heaps; h; h = h->live_next)
        if (h->sinks & (WXJ_SINK_PERF_MAP | WXJ_SINK_JITDUMP))
            for (struct wxj_chunk *c = h->chunks; c; c = c->next)
                each_description(c, replay);
}
