/* The invariant checks run after every op: statistics against the model,
 * each chunk's metadata (granule bitmaps, open bits, free-space bounds,
 * page words and long holds) and bytes (live code, write views of
 * reservations and windows, traps everywhere else), page protections
 * (toggle, procmem), no two live or open ranges overlapping, and every
 * live function returning its value. */
#include "fuzz.h"

NO_COVERAGE static uint64_t live_granules(int hi)
{
    uint64_t g = 0;
    for (int i = 0; i < MAX_FUNCS; i++)
        if (funcs[i].used && funcs[i].heap == hi)
            g += funcs[i].n;
    return g;
}

NO_COVERAGE static void check_stats(int hi)
{
    const struct mheap *m = &heaps[hi];
    wxjit_stats s;
    EXPECT(wxjit_stats_get(m->h, &s), 0);
    FUZZ_CHECK(s.installs == m->installs, "installs %llu, model %llu",
               (unsigned long long)s.installs,
               (unsigned long long)m->installs);
    FUZZ_CHECK(s.frees == m->frees, "frees %llu, model %llu",
               (unsigned long long)s.frees, (unsigned long long)m->frees);
    FUZZ_CHECK(s.bytes_live == live_granules(hi) * WXJ_GRANULE,
               "bytes_live %llu, model %llu",
               (unsigned long long)s.bytes_live,
               (unsigned long long)(live_granules(hi) * WXJ_GRANULE));
    /* Concurrent executors' fetch faults are retried, never forwarded. */
    FUZZ_CHECK((concurrent ? s.faults_retried >= m->retried
                           : s.faults_retried == m->retried) &&
                   s.faults_forwarded == m->forwarded,
               "faults %llu/%llu, model %llu/%llu",
               (unsigned long long)s.faults_retried,
               (unsigned long long)s.faults_forwarded,
               (unsigned long long)m->retried,
               (unsigned long long)m->forwarded);
    FUZZ_CHECK(!m->max_bytes || s.bytes_mapped <= m->max_bytes,
               "mapped %llu over the cap %zu",
               (unsigned long long)s.bytes_mapped, m->max_bytes);
    uint64_t mapped = 0, chunks = 0, pages = 0;
    for (struct wxj_chunk *c = m->h->chunks; c; c = c->next) {
        mapped += c->size;
        chunks++;
        pages += c->fresh_next;
        FUZZ_CHECK(c->size <= round_page(m->chunk_size), "chunk of %zu",
                   c->size);
    }
    FUZZ_CHECK(mapped == s.bytes_mapped && chunks == s.chunks &&
                   pages == s.pages,
               "chunks: %llu bytes, %llu chunks, %llu pages; stats say "
               "%llu, %llu, %llu",
               (unsigned long long)mapped, (unsigned long long)chunks,
               (unsigned long long)pages,
               (unsigned long long)s.bytes_mapped,
               (unsigned long long)s.chunks, (unsigned long long)s.pages);
}

NO_COVERAGE static void set_bits(uint64_t *map, size_t g, size_t n)
{
    for (size_t i = g; i < g + n; i++)
        map[i / 64] |= (uint64_t)1 << (i % 64);
}

NO_COVERAGE static bool bit(const uint64_t *map, size_t g)
{
    return map[g / 64] >> (g % 64) & 1;
}

/* exec holds want (NULL: trap bytes) over len bytes; a mismatch is
 * reported at its first byte. */
NO_COVERAGE static void check_bytes(const uint8_t *exec, const uint8_t *want,
                                    size_t len, const char *what)
{
    static uint8_t traps[4096];
    if (!traps[0])
        memset(traps, TRAP, sizeof(traps));
    bool same = want ? !memcmp(exec, want, len) : true;
    for (size_t done = 0; !want && same && done < len; done += sizeof(traps))
        same = !memcmp(exec + done, traps,
                       len - done < sizeof(traps) ? len - done
                                                  : sizeof(traps));
    for (size_t i = 0; !same && i < len; i++) {
        uint8_t e = want ? want[i] : TRAP;
        FUZZ_CHECK(exec[i] == e, "%s at %p+%zu: byte %#x, expected %#x", what,
                   (const void *)exec, i, exec[i], e);
    }
}

/* Granules [g, g + n) hold no code: traps, or, where a deferred free's
 * trap fill is pending (WXJIT_HEAP_DEFER_TRAP_FILL), the freed code's
 * bytes exactly as it left them. */
NO_COVERAGE static void check_no_code(int hi, struct wxj_chunk *c, size_t g,
                                      size_t n, const char *what)
{
    for (size_t k = g; k < g + n; k++) {
        const uint8_t *at = wxj_granule_addr(c, k), *old = NULL;
        if (c->stale && wxj_bit_get(c->stale, k)) {
            old = ghost_at(hi, at);
            FUZZ_CHECK(old,
                       "%s at %p: trap fill pending where no code was "
                       "freed",
                       what, (const void *)at);
        }
        check_bytes(at, old, WXJ_GRANULE, what);
    }
}

/* Granules [g, g + n) hold code written since their last free: any trap
 * fill pending there was done by the window that wrote it. */
NO_COVERAGE static void check_none_pending(const struct wxj_chunk *c, size_t g,
                                           size_t n, const char *what)
{
    for (size_t k = g; c->stale && k < g + n; k++)
        FUZZ_CHECK(!wxj_bit_get(c->stale, k),
                   "%s at %p: trap fill still pending on granule %zu", what,
                   (const void *)wxj_granule_addr(c, g), k);
}

/* Unused and outside every pool's tail: what a search may hand out. */
NO_COVERAGE static bool all_traps(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != TRAP)
            return false;
    return true;
}

NO_COVERAGE static bool free_granule(int hi, const struct wxj_chunk *c,
                         const uint64_t *used, size_t g)
{
    if (bit(used, g))
        return false;
    for (struct wxj_pool *p = heaps[hi].h->pools; p; p = p->next)
        if (p->chunk == c && g >= p->cursor && g < p->limit)
            return false;
    return true;
}

/* toggle: how many holds the page at p has (an in-place reservation
 * and each window over it count one), and whose they are. */
NO_COVERAGE static unsigned page_holds(int hi, const uint8_t *p, int *owner)
{
    unsigned n = 0;
    *owner = -1;
    if (heaps[hi].backend != WXJIT_BACKEND_TOGGLE)
        return 0;
    uintptr_t pg = (uintptr_t)p / page;
    for (int i = 0; i < MAX_RES; i++) {
        const struct mres *m = &res[i];
        if (m->used && m->heap == hi && m->in_place &&
            (uintptr_t)m->r.exec / page <= pg &&
            ((uintptr_t)m->r.exec + m->r.size - 1) / page >= pg) {
            FUZZ_CHECK(n == 0 || *owner == m->owner,
                       "page %p held by threads %d and %d", p, *owner,
                       m->owner);
            *owner = m->owner;
            n++;
        }
    }
    for (int i = 0; i < MAX_WIN; i++) {
        const struct mwin *w = &wins[i];
        if (w->used && w->heap == hi && (uintptr_t)w->exec / page <= pg &&
            ((uintptr_t)w->exec + w->len - 1) / page >= pg) {
            FUZZ_CHECK(n == 0 || *owner == w->owner,
                       "page %p held by threads %d and %d", p, *owner,
                       w->owner);
            *owner = w->owner;
            n++;
        }
    }
    return n;
}

/* Each open window shows what was written through it: on toggle and
 * dualmap the function's own bytes, on procmem its shadow copy. */
NO_COVERAGE static void check_windows(int hi)
{
    for (int i = 0; i < MAX_WIN; i++) {
        const struct mwin *w = &wins[i];
        if (!w->used || w->heap != hi)
            continue;
        const uint8_t *want =
            w->pending ? w->pending : w->f->bytes + (w->exec - w->f->exec);
        check_bytes(w->write, want, w->len, "window view");
    }
}

NO_COVERAGE static void check_chunk(int hi, struct wxj_chunk *c)
{
    size_t words = (c->ngranules + 63) / 64, per_page = page / WXJ_GRANULE;
    size_t handed = c->fresh_next * per_page;
    /* Kept between calls: a fresh calloc of this size is an mmap. */
    static uint64_t *want;
    static size_t want_words;
    if (want_words < words * 4) {
        free(want);
        want_words = words * 4;
        want = malloc(want_words * sizeof(uint64_t));
    }
    FUZZ_CHECK(want, "malloc");
    memset(want, 0, words * 4 * sizeof(uint64_t));
    uint64_t *used = want, *start = want + words, *end = want + 2 * words,
             *open = want + 3 * words;
    FUZZ_CHECK(c->fresh_next <= c->npages, "fresh_next %zu of %zu pages",
               c->fresh_next, c->npages);
    FUZZ_CHECK(!c->stale == !heaps[hi].defer,
               "pending trap fills recorded: %d, heap deferring: %d",
               !!c->stale, heaps[hi].defer);

    /* Bitmaps: exactly the model's blocks; bytes: exactly the model's. */
    static uint8_t *covered;
    static size_t covered_len;
    if (covered_len < handed) {
        free(covered);
        covered_len = handed;
        covered = malloc(covered_len);
    }
    FUZZ_CHECK(covered || !handed, "malloc");
    if (handed)
        memset(covered, 0, handed);
    for (int i = 0; i < MAX_FUNCS; i++) {
        struct mfunc *f = &funcs[i];
        if (!f->used || f->heap != hi || wxj_chunk_find(heaps[hi].h,
                                                        f->exec) != c)
            continue;
        size_t g = wxj_granule_of(c, f->exec);
        FUZZ_CHECK(g + f->n <= handed, "function beyond the handed-out pages");
        set_bits(used, g, f->n);
        set_bits(start, g, 1);
        set_bits(end, g + f->n - 1, 1);
        memset(covered + g, 1, f->n);
        check_bytes(f->exec, f->bytes, f->n * WXJ_GRANULE, "live code");
        check_none_pending(c, g, f->n, "live code");
    }
    for (int i = 0; i < MAX_RES; i++) {
        struct mres *m = &res[i];
        if (!m->used || m->heap != hi ||
            wxj_chunk_find(heaps[hi].h, m->r.exec) != c)
            continue;
        size_t g = wxj_granule_of(c, m->r.exec);
        FUZZ_CHECK(g + m->n <= handed, "reservation beyond handed-out pages");
        set_bits(used, g, m->n);
        set_bits(start, g, 1);
        set_bits(end, g + m->n - 1, 1);
        set_bits(open, g, 1);
        memset(covered + g, 1, m->n);
        /* The executable view shows what the JIT wrote in place (toggle:
         * the page itself, dualmap: the same memory), traps otherwise
         * (procmem: its write views are copies until commit). */
        const uint8_t *exec = m->r.exec;
        if (m->in_place && heaps[hi].backend != WXJIT_BACKEND_PROCMEM) {
            check_bytes(exec, m->bytes, m->r.size, "in-place write view");
            check_bytes(exec + m->r.size, NULL, m->n * WXJ_GRANULE - m->r.size,
                        "reservation tail");
            check_none_pending(c, g, m->n, "in-place reservation");
        } else {
            /* Nothing written there yet: freed space, as it was. */
            check_no_code(hi, c, g, m->n, "reserved space");
        }
    }
    for (size_t g = 0; g < handed; g++)
        if (!covered[g])
            check_no_code(hi, c, g, 1, "free space");
    for (size_t w = 0; w < words; w++) {
        FUZZ_CHECK(atomic_load(&c->used[w]) == used[w] &&
                       atomic_load(&c->start[w]) == start[w] &&
                       atomic_load(&c->end[w]) == end[w] &&
                       atomic_load(&c->open[w]) == open[w],
                   "bitmap word %zu: used %#llx/%#llx start %#llx/%#llx end "
                   "%#llx/%#llx open %#llx/%#llx (heap/model)",
                   w, (unsigned long long)atomic_load(&c->used[w]),
                   (unsigned long long)used[w],
                   (unsigned long long)atomic_load(&c->start[w]),
                   (unsigned long long)start[w],
                   (unsigned long long)atomic_load(&c->end[w]),
                   (unsigned long long)end[w],
                   (unsigned long long)atomic_load(&c->open[w]),
                   (unsigned long long)open[w]);
    }

    /* Free-space bounds (chunk.c): every maximal free run (unused,
     * handed out, in no pool's tail) must be within the bound of the
     * segment it starts in and of the chunk, or searches would skip it
     * and the space would never be reused. */
    uint32_t chunk_bound = (uint32_t)atomic_load(&c->chunk_bound);
    for (size_t g = 0; g < handed;) {
        if (!free_granule(hi, c, used, g)) {
            g++;
            continue;
        }
        size_t b = g;
        while (b < handed && free_granule(hi, c, used, b))
            b++;
        uint32_t seg = (uint32_t)atomic_load(&c->seg_bound[g / FUZZ_SEGMENT]);
        FUZZ_CHECK(seg >= b - g && chunk_bound >= b - g,
                   "free run [%zu, %zu) of %zu granules, but its segment's "
                   "bound is %u and the chunk's %u",
                   g, b, b - g, seg, chunk_bound);
        g = b;
    }

    /* Page words: WRITING exactly on pages in-place reservations and
     * windows hold (toggle), by their owner, once per hold, each counted
     * a long hold; never-handed-out pages untouched (fresh: RW from the
     * mapping; procmem: never). */
    for (size_t i = 0; i < c->npages; i++) {
        struct wxj_page *pg = &c->pages[i];
        uint32_t s = atomic_load(&pg->state);
        int owner;
        unsigned holds =
            i < c->fresh_next ? page_holds(hi, c->base + i * page, &owner) : 0;
        FUZZ_CHECK(!!(s & WXJ_PAGE_WRITING) == !!holds &&
                       atomic_load(&pg->long_holds) == holds,
                   "page %zu: state %#x, long holds %u; model: %u holds", i,
                   s, atomic_load(&pg->long_holds), holds);
        if (holds)
            FUZZ_CHECK(owner >= 0 &&
                           atomic_load(&pg->writer) == thread_tid(owner) &&
                           pg->depth == holds,
                       "page %zu: writer %d depth %u, owner thread %d, %u "
                       "holds",
                       i, (int)atomic_load(&pg->writer), pg->depth, owner,
                       holds);
        /* Or, toggle, widened into by an RX flip at the mapping limit
         * (injected ENOMEM): taken and trap-filled, and made executable
         * (not fresh any more) unless that flip failed too. */
        bool fresh = heaps[hi].backend != WXJIT_BACKEND_PROCMEM;
        if (i >= c->fresh_next)
            FUZZ_CHECK(s == 0 ? pg->fresh == fresh
                              : !(s & WXJ_PAGE_WRITING) &&
                                    all_traps(c->base + i * page, page),
                       "page %zu never handed out: state %#x fresh %d", i,
                       s, pg->fresh);
    }
}

/* toggle: RX where code may run, RW only where fresh or held (in-place
 * reservations, windows). */
NO_COVERAGE static void check_protections(int hi, struct wxj_chunk *c)
{
    FILE *f = fopen("/proc/self/maps", "r");
    FUZZ_CHECK(f, "open /proc/self/maps");
    char line[512], perms[8];
    unsigned long lo, hi_addr;
    uintptr_t base = (uintptr_t)c->base, top = base + c->size;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi_addr, perms) != 3 ||
            hi_addr <= base || lo >= top)
            continue;
        for (uintptr_t a = lo > base ? lo : base; a < hi_addr && a < top;
             a += page) {
            size_t i = (a - base) / page;
            if (heaps[hi].backend == WXJIT_BACKEND_PROCMEM) {
                /* Never writable: executable steps, the rest reserved. */
                FUZZ_CHECK(!strncmp(perms, i < c->rx_pages ? "r-x" : "---",
                                    3),
                           "procmem page %zu (rx up to %zu): %s", i,
                           c->rx_pages, perms);
                continue;
            }
            bool rw = c->pages[i].fresh ||
                      held_pages(hi, (const void *)a, page, NULL);
            FUZZ_CHECK(!strncmp(perms, rw ? "rw-" : "r-x", 3),
                       "page %zu (%s): %s", i,
                       rw                 ? "fresh or held"
                       : i >= c->fresh_next ? "widened into"
                                            : "code",
                       perms);
        }
    }
    fclose(f);
}

/* Invariant 2: [exec, exec + n granules) meets no live function and no
 * open reservation of heap hi other than self, the model's entry for it
 * (NULL for a range not in the model yet). */
NO_COVERAGE void check_no_overlap(int hi, const uint8_t *exec, size_t n,
                                  const char *what, const void *self)
{
    const uint8_t *end = exec + n * WXJ_GRANULE;
    for (int i = 0; i < MAX_FUNCS; i++) {
        const struct mfunc *f = &funcs[i];
        if (f->used && f->heap == hi && (const void *)f != self &&
            exec < f->exec + f->n * WXJ_GRANULE && f->exec < end)
            FUZZ_CHECK(0, "%s [%p, %p) by thread %d overlaps live function "
                          "[%p, %p) from thread %d",
                       what, (const void *)exec, (const void *)end, cur,
                       (void *)f->exec, (void *)(f->exec + f->n * WXJ_GRANULE),
                       f->thread);
    }
    for (int i = 0; i < MAX_RES; i++) {
        const struct mres *m = &res[i];
        const uint8_t *r = m->r.exec;
        if (m->used && m->heap == hi && (const void *)m != self &&
            exec < r + m->n * WXJ_GRANULE && r < end)
            FUZZ_CHECK(0, "%s [%p, %p) by thread %d overlaps the open "
                          "reservation [%p, %p) of thread %d",
                       what, (const void *)exec, (const void *)end, cur,
                       (const void *)r, (const void *)(r + m->n * WXJ_GRANULE),
                       m->owner);
    }
}

NO_COVERAGE static void check_overlaps(int hi)
{
    for (int i = 0; i < MAX_FUNCS; i++)
        if (funcs[i].used && funcs[i].heap == hi)
            check_no_overlap(hi, funcs[i].exec, funcs[i].n, "live function",
                             &funcs[i]);
    for (int i = 0; i < MAX_RES; i++)
        if (res[i].used && res[i].heap == hi)
            check_no_overlap(hi, res[i].r.exec, res[i].n, "open reservation",
                             &res[i]);
}

/* Invariant 3: committed code runs, from the calling thread. Not on pages
 * an in-place reservation or a window holds (toggle): their executors
 * wait for its owner, which with one op at a time never comes, and the
 * owner itself must not run code there (a documented limit). */
NO_COVERAGE void check_calls(void)
{
    for (int i = 0; i < MAX_FUNCS; i++) {
        struct mfunc *f = &funcs[i];
        if (f->used && f->callable &&
            !held_pages(f->heap, f->exec, f->n * WXJ_GRANULE, NULL)) {
            int got = call(f->exec);
            FUZZ_CHECK(got == f->value,
                       "%p (from thread %d) returned %d on thread %d, not %d",
                       (void *)f->exec, f->thread, got, cur, f->value);
        }
    }
}

/* Each pool's tail: the cursor inside [tail_start, limit], and nothing
 * from the cursor on is in use (it is the pool's to hand out next). Space
 * before tail_start is visible to other pools' refills: a cursor below it
 * is the first step to two functions at one address (issue 11, defect 1),
 * caught here before any install lands there. Checked between ops, when
 * no owner is inside an operation. */
NO_COVERAGE static void check_pools(int hi)
{
    for (struct wxj_pool *p = heaps[hi].h->pools; p; p = p->next) {
        if (!p->chunk)
            continue;
        FUZZ_CHECK(p->tail_start <= p->cursor && p->cursor <= p->limit,
                   "pool tail [%zu, %zu) with its cursor at %zu", p->tail_start,
                   p->limit, p->cursor);
        for (size_t g = p->cursor; g < p->limit; g++)
            FUZZ_CHECK(!bit((const uint64_t *)p->chunk->used, g),
                       "granule %zu of a pool's unused tail [%zu, %zu) is in "
                       "use", g, p->cursor, p->limit);
    }
}

NO_COVERAGE void check_all(bool protections)
{
    for (int hi = 0; hi < MAX_HEAPS; hi++) {
        if (!heaps[hi].alive)
            continue;
        check_stats(hi);
        check_overlaps(hi);
        check_pools(hi);
        check_windows(hi);
        for (struct wxj_chunk *c = heaps[hi].h->chunks; c; c = c->next) {
            check_chunk(hi, c);
            if (protections && heaps[hi].backend != WXJIT_BACKEND_DUALMAP)
                check_protections(hi, c);
        }
    }
}
