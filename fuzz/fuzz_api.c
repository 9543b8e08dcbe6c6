/* libFuzzer harness for the whole API: the input is read as a sequence of
 * API calls on up to MAX_HEAPS heaps, with valid, stale, forged and garbage
 * arguments. A model of what must exist (heaps, live functions with their
 * bytes and return values, open reservations) predicts the result of every
 * call, and after every step the harness checks that
 *   - each call returned what the model predicts (the documented errno for
 *     bad arguments, and then nothing changed: same statistics, same bits);
 *   - every live function returns its value when called;
 *   - the heap's own metadata (granule bitmaps, page words, free-space
 *     hints, counters) describes exactly the model's blocks;
 *   - every byte of every page handed out is live code, the write view of
 *     an open reservation, or a trap byte;
 *   - (toggle, every few steps) each page has the protection it should.
 * The backend is WXJIT_BACKEND from the environment (make fuzz runs each);
 * an input may also ask for one explicitly.
 *
 * Input format: a byte stream, consumed as
 *     op-byte operand-bytes op-byte operand-bytes ...
 * where op = op-byte % OP_COUNT (enum op below) and each op reads the
 * operand bytes it needs (a heap selector, size and alignment classes,
 * values); reading past the end yields zeros and ends the sequence after
 * that op. At most MAX_STEPS ops run per input. At the end every open
 * reservation is aborted and every heap destroyed, so inputs are
 * independent (the fault handler's last-retry memory is modelled across
 * inputs). Seeds in fuzz/corpus/ were made by fuzz/make_seeds.py.
 *
 * Built with fuzz/CMakeLists.txt (clang, -fsanitize=fuzzer,address,
 * undefined); `make fuzz` runs it per backend. tests/test_fuzz_replay.c
 * includes this file to replay fuzz/corpus/ and fuzz/regressions/ under
 * ctest with any compiler. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include "../src/arch/arch.h"
#include "../src/internal.h"
#include "../tools/wx_policy.h"

#define MAX_HEAPS 3
#define MAX_FUNCS 48
#define MAX_RES 6
#define MAX_STALE 8
#define MAX_STEPS 96
#define MAX_CODE 65536   /* largest valid size the harness asks for */
#define SMALL_CHUNK_PAGES 64
#define FUZZ_SEGMENT 4096u /* WXJ_SEGMENT in src/chunk.c */
#define NOP 0x90
#define TRAP 0xcc
#define X86_MOV_EAX 0xb8
#define X86_RET 0xc3
#define CODE_LEN(k) ((k) + 6) /* k nops; mov eax, imm32; ret */

/* Strict mode also replays stale and forged reservations that match an
 * open reservation in everything but wxjit's own record of it (a copy of
 * a reservation committed before, whose space was reserved again; a
 * flipped in-place flag; a changed size). wxjit refuses them since its
 * reservations are recorded (src/reservations.c); 0 leaves them out. */
#ifndef FUZZ_STRICT_RESERVATIONS
#define FUZZ_STRICT_RESERVATIONS 1
#endif

/* The checks are not what is being fuzzed: their loops would only slow
 * the fuzzer down and flood it with meaningless coverage. */
#if defined(__clang__)
#define NO_COVERAGE __attribute__((no_sanitize("coverage")))
#else
#define NO_COVERAGE
#endif

#define FUZZ_CHECK(cond, ...)                                                \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "fuzz_api: %s:%d: check failed: %s: ", __FILE__, \
                    __LINE__, #cond);                                        \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
            abort();                                                         \
        }                                                                    \
    } while (0)

#define EXPECT(call, want)                                                   \
    do {                                                                     \
        int got_ = (call), want_ = (want);                                   \
        FUZZ_CHECK(got_ == want_, "returned %d (%s), expected %d (%s)",      \
                   got_, strerror(got_), want_, strerror(want_));            \
    } while (0)

/* ---- input ---------------------------------------------------------------- */
struct input {
    const uint8_t *p;
    size_t left;
};

static unsigned u8(struct input *in)
{
    if (!in->left)
        return 0;
    in->left--;
    return *in->p++;
}

static unsigned u16(struct input *in)
{
    unsigned lo = u8(in);
    return lo | u8(in) << 8;
}

static uint32_t u32(struct input *in)
{
    uint32_t lo = u16(in);
    return lo | (uint32_t)u16(in) << 16;
}

/* Bytes nobody reads as instructions (padding after ret), from a seed. */
static void fill_pseudo(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed | 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5; /* xorshift32 */
        p[i] = (uint8_t)x;
    }
}

/* ---- the model ------------------------------------------------------------- */
struct mheap {
    wxjit_heap *h;
    bool alive;
    wxjit_backend backend;
    size_t chunk_size, max_bytes;
    uint64_t installs, frees, retried, forwarded;
};

/* A live function: its block of n granules and the bytes it must hold. */
struct mfunc {
    bool used;
    int heap;
    uint8_t *exec;
    size_t n;
    size_t size;     /* committed bytes: patches must stay inside them */
    uint8_t *bytes;  /* n * WXJ_GRANULE expected bytes */
    size_t imm_at;   /* offset of the mov's imm32, if callable */
    size_t code_end; /* bytes from here on are never executed */
    bool callable;
    int32_t value;
};

struct mres {
    bool used;
    int heap;
    wxjit_reservation r;
    bool in_place;
    size_t n;
    uint8_t *bytes; /* the r.size bytes written into the write view */
    size_t code_len, imm_at; /* code_len 0: not callable */
    int32_t value;
};

static struct mheap heaps[MAX_HEAPS];
static struct mfunc funcs[MAX_FUNCS];
static struct mres res[MAX_RES];
static wxjit_heap *dead[MAX_STALE];          /* destroyed handles */
static void *stale_ptrs[MAX_STALE];          /* freed function starts */
static wxjit_reservation stale_res[MAX_STALE]; /* consumed reservations */
static unsigned n_dead, n_stale_ptr, n_stale_res;
static size_t page;
static int32_t self_tid;
static bool trace; /* FUZZ_TRACE=1: print each call (replaying a crash) */

#define TRACE(...)                                                           \
    do {                                                                     \
        if (trace)                                                           \
            fprintf(stderr, "fuzz_api:   " __VA_ARGS__);                     \
    } while (0)
static wxjit_backend env_backend;
/* wxjit_handle_fault's per-thread memory of its last retry (fault.c, I3):
 * it outlives inputs, so the model does too. */
static uintptr_t fault_last_addr;
static uint32_t fault_last_state;

static size_t granules(size_t bytes)
{
    return (bytes + WXJ_GRANULE - 1) / WXJ_GRANULE;
}

static size_t round_page(size_t v) { return (v + page - 1) / page * page; }

typedef int (*int_fn)(void);

static int call(const void *exec)
{
    int_fn fn;
    memcpy(&fn, &exec, sizeof(fn));
    return fn();
}

static struct wxj_chunk *chunk_of(int hi, const void *p)
{
    return heaps[hi].alive ? wxj_chunk_find(heaps[hi].h, p) : NULL;
}

/* Pages [first, last] of chunk that the model's open in-place reservations
 * of heap hi hold (toggle keeps them writable, not executable). */
/* Whether an open in-place reservation of heap hi (but except) lies on a
 * page of [a, a + len). */
NO_COVERAGE static bool on_open_in_place(int hi, const uint8_t *a,
                                         size_t len, const struct mres *except)
{
    uintptr_t first = (uintptr_t)a / page, last = ((uintptr_t)a + len - 1) /
                                                  page;
    for (int i = 0; i < MAX_RES; i++) {
        const struct mres *m = &res[i];
        if (!m->used || m == except || m->heap != hi || !m->in_place)
            continue;
        uintptr_t f = (uintptr_t)m->r.exec / page,
                  l = ((uintptr_t)m->r.exec + m->r.size - 1) / page;
        if (f <= last && first <= l)
            return true;
    }
    return false;
}

/* The same, where such pages are held writable (toggle). */
NO_COVERAGE static bool held_by_reservation(int hi, const uint8_t *a,
                                            size_t len,
                                            const struct mres *except)
{
    return heaps[hi].backend == WXJIT_BACKEND_TOGGLE &&
           on_open_in_place(hi, a, len, except);
}

static struct mfunc *func_at(int hi, const uint8_t *p)
{
    for (int i = 0; i < MAX_FUNCS; i++)
        if (funcs[i].used && funcs[i].heap == hi && funcs[i].exec == p)
            return &funcs[i];
    return NULL;
}

/* The live function of heap hi whose block holds [p, p + len). */
static struct mfunc *func_holding(int hi, const uint8_t *p, size_t len)
{
    for (int i = 0; i < MAX_FUNCS; i++) {
        struct mfunc *f = &funcs[i];
        if (f->used && f->heap == hi && p >= f->exec &&
            p < f->exec + f->size &&
            len <= (size_t)(f->exec + f->size - p))
            return f;
    }
    return NULL;
}

static struct mfunc *func_slot(void)
{
    for (int i = 0; i < MAX_FUNCS; i++)
        if (!funcs[i].used)
            return &funcs[i];
    return NULL;
}

static struct mres *res_slot(void)
{
    for (int i = 0; i < MAX_RES; i++)
        if (!res[i].used)
            return &res[i];
    return NULL;
}

/* A used entry chosen by the input, or NULL when there is none. */
static struct mfunc *pick_func(unsigned sel)
{
    for (unsigned i = 0; i < MAX_FUNCS; i++)
        if (funcs[(sel + i) % MAX_FUNCS].used)
            return &funcs[(sel + i) % MAX_FUNCS];
    return NULL;
}

static struct mres *pick_open(unsigned sel)
{
    for (unsigned i = 0; i < MAX_RES; i++)
        if (res[(sel + i) % MAX_RES].used)
            return &res[(sel + i) % MAX_RES];
    return NULL;
}

static void remember_ptr(void *p)
{
    stale_ptrs[n_stale_ptr++ % MAX_STALE] = p;
}

/* A heap argument: usually a live heap (*hi its index), sometimes a
 * destroyed handle or NULL (*hi -1, unless a new heap reuses the handle). */
static wxjit_heap *pick_heap(struct input *in, int *hi)
{
    unsigned sel = u8(in);
    wxjit_heap *h = NULL;
    *hi = -1;
    if (sel % 8 < 6) {
        for (int i = 0; i < MAX_HEAPS; i++) {
            int j = (int)((sel / 8 + i) % MAX_HEAPS);
            if (heaps[j].alive) {
                *hi = j;
                return heaps[j].h;
            }
        }
    } else if (sel % 8 == 6 && n_dead) {
        h = dead[(sel / 8) % (n_dead < MAX_STALE ? n_dead : MAX_STALE)];
    }
    for (int i = 0; i < MAX_HEAPS; i++)
        if (h && heaps[i].alive && heaps[i].h == h)
            *hi = i;
    return h;
}

/* ---- checks after every step ------------------------------------------- */
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
    FUZZ_CHECK(s.faults_retried == m->retried &&
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

/* Unused and outside every pool's tail: what a search may hand out. */
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
         * the page itself, dualmap: the same memory), traps otherwise. */
        const uint8_t *exec = m->r.exec;
        if (m->in_place)
            check_bytes(exec, m->bytes, m->r.size, "in-place write view");
        else
            check_bytes(exec, NULL, m->r.size, "reserved space");
        check_bytes(exec + m->r.size, NULL,
                    m->n * WXJ_GRANULE - m->r.size, "reservation tail");
    }
    for (size_t g = 0; g < handed; g++)
        if (!covered[g])
            check_bytes(wxj_granule_addr(c, g), NULL, WXJ_GRANULE,
                        "free space");
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

    /* Page words: WRITING exactly on pages an in-place reservation holds
     * (toggle), by this thread, once; never-handed-out pages untouched. */
    for (size_t i = 0; i < c->npages; i++) {
        struct wxj_page *pg = &c->pages[i];
        uint32_t s = atomic_load(&pg->state);
        bool held = i < c->fresh_next &&
                    held_by_reservation(hi, c->base + i * page, page, NULL);
        FUZZ_CHECK(!!(s & WXJ_PAGE_WRITING) == held,
                   "page %zu: state %#x, held by a reservation: %d", i, s,
                   held);
        if (held)
            FUZZ_CHECK(atomic_load(&pg->writer) == self_tid && pg->depth == 1,
                       "page %zu: writer %d depth %u", i,
                       (int)atomic_load(&pg->writer), pg->depth);
        if (i >= c->fresh_next)
            FUZZ_CHECK(s == 0 && pg->fresh, "page %zu never handed out: "
                       "state %#x fresh %d", i, s, pg->fresh);
    }
}

/* toggle: RX where code may run, RW only where fresh or held. */
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
            bool rw = i >= c->fresh_next || c->pages[i].fresh ||
                      held_by_reservation(hi, (const void *)a, page, NULL);
            FUZZ_CHECK(!strncmp(perms, rw ? "rw-" : "r-x", 3),
                       "page %zu (%s): %s", i,
                       i >= c->fresh_next ? "never handed out"
                       : rw               ? "fresh or held"
                                          : "code",
                       perms);
        }
    }
    fclose(f);
}

NO_COVERAGE static void check_all(bool protections)
{
    for (int hi = 0; hi < MAX_HEAPS; hi++) {
        if (!heaps[hi].alive)
            continue;
        check_stats(hi);
        for (struct wxj_chunk *c = heaps[hi].h->chunks; c; c = c->next) {
            check_chunk(hi, c);
            if (protections && heaps[hi].backend == WXJIT_BACKEND_TOGGLE)
                check_protections(hi, c);
        }
    }
    /* Invariant 2: committed code runs (this thread must not run code on
     * a page it holds itself: a documented limit, skipped). */
    for (int i = 0; i < MAX_FUNCS; i++) {
        struct mfunc *f = &funcs[i];
        if (f->used && f->callable &&
            !held_by_reservation(f->heap, f->exec, f->n * WXJ_GRANULE, NULL))
            FUZZ_CHECK(call(f->exec) == f->value, "%p returned %d, not %d",
                       (void *)f->exec, call(f->exec), f->value);
    }
}

/* ---- building code ------------------------------------------------------ */
struct code {
    uint8_t *bytes;
    size_t len, code_len, imm_at; /* code_len 0: too short to call */
    int32_t value;
};

/* size bytes: k nops, mov eax, imm32, ret, then padding from a seed. */
static void make_code(struct input *in, size_t size, struct code *out)
{
    size_t k = u8(in) % 16;
    out->value = (int32_t)u32(in);
    out->bytes = malloc(size ? size : 1);
    FUZZ_CHECK(out->bytes, "malloc %zu", size);
    out->len = size;
    uint8_t full[CODE_LEN(15)];
    memset(full, NOP, k);
    full[k] = X86_MOV_EAX;
    memcpy(full + k + 1, &out->value, 4);
    full[k + 5] = X86_RET;
    size_t n = CODE_LEN(k) < size ? CODE_LEN(k) : size;
    memcpy(out->bytes, full, n);
    fill_pseudo(out->bytes + n, size - n, u8(in));
    out->code_len = CODE_LEN(k) <= size ? CODE_LEN(k) : 0;
    out->imm_at = k + 1;
}

/* Size and alignment classes; *valid says whether check_request accepts. */
static size_t pick_size(struct input *in, const struct mheap *m, bool *valid)
{
    size_t chunk = m ? round_page(m->chunk_size) : ((size_t)4 << 20);
    size_t cap = chunk < MAX_CODE ? chunk : MAX_CODE;
    unsigned sel = u8(in) % 16;
    size_t size;
    switch (sel) {
    case 0: size = 0; break;
    case 1: size = chunk + 1; break;
    case 2: size = SIZE_MAX; break;
    case 3: size = cap; break;
    case 4: size = page - 8 + u8(in) % 16; break;
    case 5: size = 1 + u16(in) % cap; break;
    default: size = 1 + u8(in) % 96; break;
    }
    *valid = size != 0 && size <= chunk;
    return size;
}

static size_t pick_align(struct input *in, bool *valid)
{
    unsigned sel = u8(in);
    size_t align;
    switch (sel % 8) {
    case 1: align = (size_t)16 << (sel / 8 % 9); break; /* 16 .. 4 KiB */
    case 2: align = 24; break;
    case 3: align = page * 2; break;
    case 4: align = (size_t)1 << (sel / 8 % 4); break; /* 1 .. 8 */
    default: align = 0; break;
    }
    *valid = (align & (align - 1)) == 0 && align <= page;
    return align;
}

/* ENOMEM is correct only when the heap's cap leaves no room. */
static void check_enomem(int hi, size_t size)
{
    wxjit_stats s;
    EXPECT(wxjit_stats_get(heaps[hi].h, &s), 0);
    FUZZ_CHECK(heaps[hi].max_bytes &&
                   s.bytes_mapped + round_page(size) > heaps[hi].max_bytes,
               "ENOMEM for %zu bytes with %llu mapped, cap %zu", size,
               (unsigned long long)s.bytes_mapped, heaps[hi].max_bytes);
}

static struct mfunc *add_func(int hi, uint8_t *exec, const uint8_t *bytes,
                              size_t used, size_t code_len, size_t imm_at,
                              int32_t value)
{
    struct mfunc *f = func_slot();
    FUZZ_CHECK(f, "function table full");
    size_t n = granules(used);
    f->bytes = malloc(n * WXJ_GRANULE);
    FUZZ_CHECK(f->bytes, "malloc");
    memcpy(f->bytes, bytes, used);
    memset(f->bytes + used, TRAP, n * WXJ_GRANULE - used);
    f->used = true;
    f->heap = hi;
    f->exec = exec;
    f->n = n;
    f->size = used;
    f->callable = code_len != 0 && used >= code_len;
    f->code_end = code_len ? code_len : 0;
    f->imm_at = imm_at;
    f->value = value;
    heaps[hi].installs++;
    return f;
}

static void drop_func(struct mfunc *f)
{
    free(f->bytes);
    memset(f, 0, sizeof(*f));
}

static void drop_res(struct mres *m)
{
    stale_res[n_stale_res++ % MAX_STALE] = m->r;
    free(m->bytes);
    memset(m, 0, sizeof(*m));
}

/* ---- operations ---------------------------------------------------------- */
enum op {
    OP_CREATE,
    OP_DESTROY,
    OP_RESERVE,
    OP_COMMIT,
    OP_ABORT,
    OP_INSTALL,
    OP_PATCH,
    OP_PATCH_ATOMIC,
    OP_FREE,
    OP_STATS,
    OP_HANDLE_FAULT,
    OP_HANDLER,
    OP_BACKEND,
    OP_COUNT
};

static void op_create(struct input *in)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    unsigned b = u8(in), c = u8(in), m = u8(in), f = u8(in);
    bool null_opts = b % 16 == 15;
    o.backend = b % 8 < 4 ? WXJIT_BACKEND_AUTO
                : b % 8 == 7 ? (wxjit_backend)(4 + b / 8 % 100)
                             : (wxjit_backend)(b % 8 - 3);
    o.chunk_size = c % 4 == 0   ? 0
                   : c % 4 == 3 ? WXJ_MAX_CHUNK + page * (1 + c / 4 % 2)
                                : page * (1 + c / 4 % SMALL_CHUNK_PAGES);
    o.max_bytes = m % 2 ? page * (m / 2 % 96) : 0;
    o.flags = f % 4 == 1   ? WXJIT_HEAP_RW_ON_DEMAND
              : f % 4 == 2 ? WXJIT_HEAP_ALLOW_RWX
              : f % 4 == 3 ? 1u << (2 + f / 4 % 30)
                           : 0;
    if (f / 4 % 16 == 15)
        o.size = sizeof(o) - 1 - f / 64;

    int want = 0;
    const unsigned known = WXJIT_HEAP_RW_ON_DEMAND | WXJIT_HEAP_ALLOW_RWX;
    if (!null_opts) {
        if (o.size < sizeof(o) || o.chunk_size > WXJ_MAX_CHUNK ||
            (o.flags & ~known) || (unsigned)o.backend >= 4)
            want = EINVAL;
        else if (o.backend == WXJIT_BACKEND_RWX &&
                 !(o.flags & WXJIT_HEAP_ALLOW_RWX))
            want = EPERM;
        else if ((o.backend != WXJIT_BACKEND_RWX &&
                  (o.flags & WXJIT_HEAP_ALLOW_RWX)) ||
                 ((o.flags & WXJIT_HEAP_RW_ON_DEMAND) &&
                  o.backend != WXJIT_BACKEND_DUALMAP &&
                  o.backend != WXJIT_BACKEND_AUTO))
            want = EINVAL;
        else if (o.backend == WXJIT_BACKEND_RWX)
            want = EACCES; /* the W^X policy refuses the probe's mapping */
    }
    int slot = -1;
    for (int i = 0; i < MAX_HEAPS && slot < 0; i++)
        if (!heaps[i].alive)
            slot = i;
    if (want == 0 && slot < 0)
        return; /* table full: only bad options are tried */
    wxjit_heap *h = NULL;
    EXPECT(wxjit_heap_create(null_opts ? NULL : &o, &h), want);
    if (want) {
        FUZZ_CHECK(h == NULL, "out-parameter written on failure");
        return;
    }
    struct mheap *mh = &heaps[slot];
    memset(mh, 0, sizeof(*mh));
    mh->h = h;
    mh->alive = true;
    mh->chunk_size = null_opts || !o.chunk_size ? WXJ_DEFAULT_CHUNK
                                                : o.chunk_size;
    mh->max_bytes = null_opts ? 0 : o.max_bytes;
    EXPECT(wxjit_heap_backend(h, &mh->backend), 0);
    wxjit_backend expect = null_opts || o.backend == WXJIT_BACKEND_AUTO
                               ? env_backend
                               : o.backend;
    FUZZ_CHECK(mh->backend == expect, "backend %d, expected %d",
               (int)mh->backend, (int)expect);
}

static void destroy_heap(int hi)
{
    /* Open reservations are given back first: their scratch buffers are
     * the caller's to end (a destroy would leak them). */
    for (int i = 0; i < MAX_RES; i++)
        if (res[i].used && res[i].heap == hi) {
            EXPECT(wxjit_abort(heaps[hi].h, &res[i].r), 0);
            drop_res(&res[i]);
        }
    EXPECT(wxjit_heap_destroy(heaps[hi].h), 0);
    for (int i = 0; i < MAX_FUNCS; i++)
        if (funcs[i].used && funcs[i].heap == hi) {
            remember_ptr(funcs[i].exec);
            drop_func(&funcs[i]);
        }
    dead[n_dead++ % MAX_STALE] = heaps[hi].h;
    if (n_dead > MAX_STALE)
        n_dead = MAX_STALE + n_dead % MAX_STALE;
    heaps[hi].alive = false;
}

static void op_destroy(struct input *in)
{
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    if (hi >= 0)
        destroy_heap(hi);
    else
        EXPECT(wxjit_heap_destroy(h), EINVAL);
}

static void op_reserve(struct input *in)
{
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    bool size_ok, align_ok;
    size_t size = pick_size(in, hi >= 0 ? &heaps[hi] : NULL, &size_ok);
    size_t align = pick_align(in, &align_ok);
    unsigned fsel = u8(in) % 8;
    unsigned flags = fsel < 5   ? 0
                     : fsel < 7 ? WXJIT_RESERVE_IN_PLACE
                                : 1u << (1 + u8(in) % 31);
    bool null_out = u8(in) % 32 == 31;
    struct mres *m = res_slot();
    bool valid = hi >= 0 && size_ok && align_ok && !null_out &&
                 !(flags & ~(unsigned)WXJIT_RESERVE_IN_PLACE);
    if (valid && !m)
        return;
    wxjit_reservation r;
    memset(&r, 0, sizeof(r));
    if (!valid) {
        EXPECT(wxjit_reserve(h, size, align, flags, null_out ? NULL : &r),
               EINVAL);
        return;
    }
    int err = wxjit_reserve(h, size, align, flags, &r);
    if (err == ENOMEM) {
        check_enomem(hi, size);
        return;
    }
    EXPECT(err, 0);
    TRACE("reserve %zu align %zu flags %#x: %p\n", size, align, flags, r.exec);
    size_t a = align > WXJ_GRANULE ? align : WXJ_GRANULE;
    FUZZ_CHECK(r.size == size && (uintptr_t)r.exec % a == 0 &&
                   chunk_of(hi, r.exec),
               "reservation %p size %zu for %zu at align %zu", r.exec,
               r.size, size, align);
    bool in_place = flags & WXJIT_RESERVE_IN_PLACE;
    if (in_place && heaps[hi].backend == WXJIT_BACKEND_TOGGLE)
        FUZZ_CHECK(r.write == r.exec, "toggle in place: write %p exec %p",
                   r.write, r.exec);
    else
        FUZZ_CHECK(r.write != r.exec, "write view is the executable page");
    /* Never on pages another open in-place reservation holds: code
     * committed there could not run when its commit returns. */
    FUZZ_CHECK(!held_by_reservation(hi, r.exec, size, NULL),
               "new reservation %p on a page held writable", r.exec);
    struct code code;
    make_code(in, size, &code);
    memcpy(r.write, code.bytes, size);
    *m = (struct mres){true, hi, r, in_place, granules(size), code.bytes,
                       code.code_len, code.imm_at, code.value};
}

/* A call that must fail with EINVAL and change nothing observable. */
#define REFUSED(h, hi, call)                                                 \
    do {                                                                     \
        wxjit_stats before_, after_;                                         \
        if ((hi) >= 0)                                                       \
            EXPECT(wxjit_stats_get((h), &before_), 0);                       \
        EXPECT((call), EINVAL);                                              \
        if ((hi) >= 0) {                                                     \
            EXPECT(wxjit_stats_get((h), &after_), 0);                        \
            FUZZ_CHECK(!memcmp(&before_, &after_, sizeof(after_)),           \
                       "refused %s changed the statistics", #call);          \
        }                                                                    \
    } while (0)

/* Could the current checks take r for an open reservation? Only when one
 * is open at r->exec with as many granules (claim_reservation in code.c
 * checks exec, granule count and that the fields agree with each other,
 * not that they are that reservation's own). Strict mode asks more. */
static bool passes_for_open(const wxjit_reservation *r)
{
    for (int i = 0; i < MAX_RES; i++)
        if (res[i].used && res[i].r.exec == r->exec &&
            (FUZZ_STRICT_RESERVATIONS
                 ? !memcmp(&res[i].r, r, sizeof(*r))
                 : granules(res[i].r.size) == granules(r->size)))
            return true;
    return false;
}

/* A reservation argument: an open one (*open set), or a forged one, a
 * stale copy of a consumed one, or NULL, which must all be refused. */
static wxjit_reservation *pick_res(struct input *in, wxjit_reservation *tmp,
                                   struct mres **open)
{
    unsigned sel = u8(in), k = sel % 16;
    struct mres *m = pick_open(sel / 16);
    *open = NULL;
    if (k >= 14)
        return NULL;
    if (k >= 10 || !m) {
        if (!n_stale_res)
            return NULL;
        *tmp = stale_res[(sel / 16) %
                         (n_stale_res < MAX_STALE ? n_stale_res : MAX_STALE)];
        return passes_for_open(tmp) ? NULL : tmp;
    }
    if (k < 7) {
        *open = m;
        return &m->r;
    }
    *tmp = m->r;
    switch (u8(in) % 5) {
    case 0: tmp->exec = (uint8_t *)tmp->exec + WXJ_GRANULE; break;
    case 1: tmp->internal[1] ^= (uintptr_t)1 << (u8(in) % 64); break;
    case 2: /* bit 0 is the in-place flag: see FUZZ_STRICT_RESERVATIONS */
        tmp->internal[0] ^= (uintptr_t)1 << (u8(in) % 64);
        break;
    case 3: tmp->size += 1 + u8(in) % 32; break;
    default: tmp->write = (uint8_t *)tmp->write + 1; break;
    }
    if (!FUZZ_STRICT_RESERVATIONS &&
        (tmp->internal[0] ^ m->r.internal[0]) == 1)
        return NULL;
    return passes_for_open(tmp) ? NULL : tmp;
}

static void op_commit(struct input *in)
{
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    wxjit_reservation tmp, *r;
    struct mres *m;
    r = pick_res(in, &tmp, &m);
    unsigned usel = u8(in) % 8;
    size_t size = r ? r->size : 0;
    size_t used = usel == 0   ? 0
                  : usel == 1 ? size + 1
                  : usel == 2 ? size
                  : usel == 3 && m && m->code_len ? m->code_len
                  : size      ? 1 + u16(in) % size
                              : 1;
    if (!m || hi != m->heap || used == 0 || used > size) {
        REFUSED(h, hi, wxjit_commit(h, r, used));
        return;
    }
    wxjit_reservation copy = *r;
    TRACE("commit %p used %zu\n", r->exec, used);
    if (!m->in_place && on_open_in_place(hi, r->exec, used, m)) {
        /* New code on the page of our own in-place window: refused on
         * every backend, the reservation stays open. */
        EXPECT(wxjit_commit(h, r, used), EDEADLK);
        FUZZ_CHECK(!memcmp(r, &copy, sizeof(copy)), "reservation changed");
        return;
    }
    EXPECT(wxjit_commit(h, r, used), 0);
    static const wxjit_reservation zero;
    FUZZ_CHECK(!memcmp(r, &zero, sizeof(zero)), "reservation not cleared");
    FUZZ_CHECK(!held_by_reservation(hi, copy.exec, used, m) ||
                   m->in_place == false,
               "in-place code committed on a page still held");
    add_func(hi, copy.exec, m->bytes, used, m->code_len, m->imm_at,
             m->value);
    m->r = copy; /* remembered as a stale copy */
    drop_res(m);
}

static void op_abort(struct input *in)
{
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    wxjit_reservation tmp, *r;
    struct mres *m;
    r = pick_res(in, &tmp, &m);
    if (!m || hi != m->heap) {
        REFUSED(h, hi, wxjit_abort(h, r));
        return;
    }
    wxjit_reservation copy = *r;
    TRACE("abort %p\n", r->exec);
    EXPECT(wxjit_abort(h, r), 0);
    static const wxjit_reservation zero;
    FUZZ_CHECK(!memcmp(r, &zero, sizeof(zero)), "reservation not cleared");
    m->r = copy;
    drop_res(m);
}

static void op_install(struct input *in)
{
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    bool size_ok, align_ok;
    size_t size = pick_size(in, hi >= 0 ? &heaps[hi] : NULL, &size_ok);
    size_t align = pick_align(in, &align_ok);
    unsigned nulls = u8(in) % 32;
    bool valid = hi >= 0 && size_ok && align_ok && nulls < 30;
    void *exec = NULL;
    if (!valid) {
        uint8_t small[16] = {0};
        /* A bad size is refused before the code is read. */
        EXPECT(wxjit_install(h, nulls == 30 ? NULL : small, size, align,
                             nulls == 31 ? NULL : &exec),
               EINVAL);
        FUZZ_CHECK(exec == NULL, "out-parameter written on failure");
        return;
    }
    if (!func_slot())
        return;
    struct code code;
    make_code(in, size, &code);
    int err = wxjit_install(h, code.bytes, size, align, &exec);
    if (err == ENOMEM) {
        check_enomem(hi, size);
        free(code.bytes);
        return;
    }
    EXPECT(err, 0);
    TRACE("install %zu align %zu: %p\n", size, align, exec);
    size_t a = align > WXJ_GRANULE ? align : WXJ_GRANULE;
    FUZZ_CHECK((uintptr_t)exec % a == 0 && chunk_of(hi, exec),
               "install at %p, align %zu", exec, align);
    FUZZ_CHECK(!held_by_reservation(hi, exec, size, NULL),
               "installed %p on a page held writable", exec);
    add_func(hi, exec, code.bytes, size, code.code_len, code.imm_at,
             code.value);
    free(code.bytes);
}

/* New bytes for [off, off + len) of f: the immediate and the bytes after
 * the code come from the input; instructions stay as they are. */
static void patch_bytes(struct input *in, const struct mfunc *f, size_t off,
                        size_t len, uint8_t *out)
{
    for (size_t i = 0; i < len; i++) {
        size_t at = off + i;
        bool imm = f->callable && at >= f->imm_at && at < f->imm_at + 4;
        bool after = !f->callable || at >= f->code_end;
        out[i] = imm || after ? (uint8_t)u8(in) : f->bytes[at];
    }
}

static void apply_patch(struct mfunc *f, size_t off, const uint8_t *b,
                        size_t len)
{
    memcpy(f->bytes + off, b, len);
    if (f->callable)
        memcpy(&f->value, f->bytes + f->imm_at, 4);
}

/* A patch target: mostly inside a live function (possibly running past
 * its end), sometimes just before one, in a reservation or freed code.
 * Whether it is valid is decided by the model afterwards. */
static uint8_t *pick_patch(struct input *in, size_t *len, size_t width,
                           size_t max_len)
{
    unsigned sel = u8(in);
    struct mfunc *f = pick_func(sel / 8);
    struct mres *m = pick_open(sel / 8);
    if (!f || sel % 8 == 7) {
        *len = width ? width : 1 + sel % 8;
        if (m && sel % 2)
            return m->r.exec;
        return n_stale_ptr ? stale_ptrs[sel % MAX_STALE] : NULL;
    }
    size_t extent = f->n * WXJ_GRANULE;
    size_t off = u16(in) % extent;
    if (width)
        off -= off % width;
    *len = width ? width : 1 + u16(in) % (extent - off);
    if (sel % 8 == 5 && !width)
        *len = extent - off + 1 + u8(in) % 16; /* past the end */
    if (*len > max_len)
        *len = max_len;
    if (sel % 8 == 6) /* just before it */
        return (uint8_t *)((uintptr_t)f->exec - width - u8(in) % 16);
    return f->exec + off;
}

static void op_patch(struct input *in)
{
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    uint8_t buf[WXJ_GRANULE * 8];
    size_t len;
    uint8_t *addr = pick_patch(in, &len, 0, sizeof(buf));
    unsigned mode = u8(in) % 16;
    struct mfunc *f = hi >= 0 ? func_holding(hi, addr, len) : NULL;
    if (!f || mode >= 13) {
        memset(buf, TRAP, sizeof(buf));
        REFUSED(h, hi,
                wxjit_patch(h, mode == 15 ? NULL : addr,
                            mode == 14 ? NULL : buf, mode == 13 ? 0 : len));
        return;
    }
    size_t off = (size_t)(addr - f->exec);
    patch_bytes(in, f, off, len, buf);
    EXPECT(wxjit_patch(h, addr, buf, len), 0);
    apply_patch(f, off, buf, len);
}

static void op_patch_atomic(struct input *in)
{
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    unsigned wsel = u8(in) % 8;
    size_t width = wsel < 4 ? (size_t)1 << wsel : wsel == 4 ? 3 : 8;
    size_t len;
    uint8_t *addr = pick_patch(in, &len, width == 3 ? 4 : width, 8);
    if (u8(in) % 8 == 7)
        addr = (uint8_t *)((uintptr_t)addr + 1); /* misaligned, unless 1 */
    struct mfunc *f = hi >= 0 && width != 3 && (uintptr_t)addr % width == 0
                          ? func_holding(hi, addr, width)
                          : NULL;
    if (!f) {
        REFUSED(h, hi, wxjit_patch_atomic(h, addr, 0xcccccccccccccccc,
                                          width));
        return;
    }
    uint8_t b[8] = {0};
    size_t off = (size_t)(addr - f->exec);
    patch_bytes(in, f, off, width, b);
    uint64_t v = 0;
    memcpy(&v, b, width); /* little-endian host */
    EXPECT(wxjit_patch_atomic(h, addr, v, width), 0);
    apply_patch(f, off, b, width);
}

static void op_free(struct input *in)
{
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    unsigned sel = u8(in);
    struct mfunc *f = pick_func(sel / 16);
    struct mres *m = pick_open(sel / 16);
    int local;
    uint8_t *p;
    switch (sel % 16) {
    case 8: p = f ? f->exec + WXJ_GRANULE * (1 + u8(in) % 4) : NULL; break;
    case 9: p = f ? f->exec + 1 + u8(in) % 15 : NULL; break;
    case 10: p = n_stale_ptr ? stale_ptrs[u8(in) % MAX_STALE] : NULL; break;
    case 11: p = m ? m->r.exec : NULL; break;
    case 12: {
        struct wxj_chunk *c = hi >= 0 ? heaps[hi].h->chunks : NULL;
        p = c ? c->base + (u16(in) % (c->size / WXJ_GRANULE)) * WXJ_GRANULE
              : NULL;
        break;
    }
    case 13: p = (uint8_t *)&local; break;
    case 14: p = NULL; break;
    default: p = f ? f->exec : NULL; break;
    }
    struct mfunc *target = hi >= 0 ? func_at(hi, p) : NULL;
    if (!target) {
        REFUSED(h, hi, wxjit_free(h, p));
        return;
    }
    TRACE("free %p\n", (void *)p);
    EXPECT(wxjit_free(h, p), 0);
    heaps[hi].frees++;
    remember_ptr(p);
    drop_func(target);
}

static void op_stats(struct input *in)
{
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    wxjit_stats s;
    bool null_out = u8(in) % 2;
    EXPECT(wxjit_stats_get(h, null_out ? NULL : &s),
           hi >= 0 && !null_out ? 0 : EINVAL);
}

/* A hand-made fault: the handler decides from the siginfo, the PC and the
 * page word alone, so the model predicts its answer exactly. */
static void op_handle_fault(struct input *in)
{
    unsigned sel = u8(in), psel = u8(in);
    siginfo_t si;
    ucontext_t uc;
    memset(&si, 0, sizeof(si));
    memset(&uc, 0, sizeof(uc));
    int sig = sel % 8 == 7 ? SIGBUS : SIGSEGV;
    si.si_signo = sig;
    si.si_code = sel / 8 % 4 == 3 ? SEGV_MAPERR
                 : sel / 8 % 4 == 2 ? SI_USER
                                    : SEGV_ACCERR;
    struct mfunc *f = pick_func(psel);
    int hi = -1;
    uint8_t *addr;
    switch (psel % 4) {
    case 0: addr = f ? f->exec : NULL; break;
    case 1: {
        wxjit_heap *h = pick_heap(in, &hi);
        struct wxj_chunk *c = hi >= 0 ? h->chunks : NULL;
        addr = c ? c->base + u16(in) % c->size : NULL;
        break;
    }
    case 2: addr = (uint8_t *)(uintptr_t)u32(in); break;
    default: addr = f ? f->exec + u8(in) % (f->n * WXJ_GRANULE) : NULL; break;
    }
    si.si_addr = addr;
    /* Fetch faults land in [pc, pc + 15); larger distances are data. */
    uintptr_t pc = (uintptr_t)addr - u8(in) % 24;
    uc.uc_mcontext.gregs[REG_RIP] = (greg_t)pc;
    unsigned nulls = u8(in) % 16;
    void *info = nulls == 14 ? NULL : &si, *ctx = nulls == 15 ? NULL : &uc;

    int want = 0;
    struct wxj_chunk *chunk = NULL;
    if (sig == SIGSEGV && info && ctx && si.si_code == SEGV_ACCERR) {
        for (int i = 0; i < MAX_HEAPS && !chunk; i++)
            if ((chunk = chunk_of(i, addr)))
                hi = i;
    }
    if (chunk) {
        struct wxj_page *pg =
            &chunk->pages[(size_t)(addr - chunk->base) / page];
        uint32_t s = atomic_load(&pg->state);
        bool fetch = (uintptr_t)addr - pc < WXJ_ARCH_MAX_INSN;
        /* Single-threaded, a WRITING page is always this thread's (I4). */
        if (fetch && s != 0 && !(s & WXJ_PAGE_WRITING) &&
            !(fault_last_addr == (uintptr_t)addr && fault_last_state == s)) {
            want = 1;
            fault_last_addr = (uintptr_t)addr;
            fault_last_state = s;
        }
        if (want)
            heaps[hi].retried++;
        else
            heaps[hi].forwarded++;
    }
    FUZZ_CHECK(wxjit_handle_fault(sig, info, ctx) == want,
               "handle_fault(%d, code %d, addr %p, pc %#lx) != %d", sig,
               si.si_code, (void *)addr, (unsigned long)pc, want);
}

static void op_handler(struct input *in)
{
    (void)in;
    struct sigaction before, after;
    sigaction(SIGSEGV, NULL, &before);
    EXPECT(wxjit_fault_handler_install(), 0);
    EXPECT(wxjit_fault_handler_uninstall(), 0);
    sigaction(SIGSEGV, NULL, &after);
    FUZZ_CHECK(before.sa_sigaction == after.sa_sigaction &&
                   before.sa_flags == after.sa_flags,
               "nested install/uninstall changed the SIGSEGV action");
}

static void op_backend(struct input *in)
{
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    unsigned sel = u8(in);
    wxjit_backend b;
    EXPECT(wxjit_heap_backend(h, sel % 8 == 7 ? NULL : &b),
           hi >= 0 && sel % 8 != 7 ? 0 : EINVAL);
    const char *name;
    wxjit_backend any = (wxjit_backend)(sel % 6);
    EXPECT(wxjit_backend_name(any, sel % 16 == 15 ? NULL : &name),
           (unsigned)any < 4 && sel % 16 != 15 ? 0 : EINVAL);
}

static const char *const op_names[OP_COUNT] = {
    "create", "destroy", "reserve", "commit", "abort", "install", "patch",
    "patch_atomic", "free", "stats", "handle_fault", "handler", "backend",
};

static void (*const ops[OP_COUNT])(struct input *) = {
    [OP_CREATE] = op_create,         [OP_DESTROY] = op_destroy,
    [OP_RESERVE] = op_reserve,       [OP_COMMIT] = op_commit,
    [OP_ABORT] = op_abort,           [OP_INSTALL] = op_install,
    [OP_PATCH] = op_patch,           [OP_PATCH_ATOMIC] = op_patch_atomic,
    [OP_FREE] = op_free,             [OP_STATS] = op_stats,
    [OP_HANDLE_FAULT] = op_handle_fault, [OP_HANDLER] = op_handler,
    [OP_BACKEND] = op_backend,
};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    page = wxj_os_page_size();
    self_tid = (int32_t)syscall(SYS_gettid);
    const char *env = getenv("WXJIT_BACKEND");
    trace = getenv("FUZZ_TRACE") && !strcmp(getenv("FUZZ_TRACE"), "1");
    env_backend = env && !strcmp(env, "toggle") ? WXJIT_BACKEND_TOGGLE
                                                : WXJIT_BACKEND_DUALMAP;
    if (env && strcmp(env, "toggle") && strcmp(env, "dualmap")) {
        fprintf(stderr, "fuzz_api: WXJIT_BACKEND must be toggle or dualmap\n");
        exit(2);
    }
    if (!env)
        setenv("WXJIT_BACKEND", "dualmap", 1);
    int err = wx_policy_enter();
    if (err == 0)
        err = wxjit_fault_handler_install();
    if (err) {
        fprintf(stderr, "fuzz_api: setup: %s\n", strerror(err));
        exit(2);
    }
    fprintf(stderr, "fuzz_api: W^X policy on, backend %s\n",
            env_backend == WXJIT_BACKEND_TOGGLE ? "toggle" : "dualmap");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, size};
    memset(heaps, 0, sizeof(heaps));
    n_dead = n_stale_ptr = n_stale_res = 0;
    /* Every input starts with a heap, so short inputs do something. */
    struct input none = {NULL, 0};
    op_create(&none);
    for (int step = 0; step < MAX_STEPS && in.left; step++) {
        unsigned op = u8(&in) % OP_COUNT;
        if (trace)
            fprintf(stderr, "fuzz_api: step %d: %s\n", step, op_names[op]);
        ops[op](&in);
        check_all(step % 16 == 15);
    }
    check_all(true);
    for (int hi = 0; hi < MAX_HEAPS; hi++)
        if (heaps[hi].alive)
            destroy_heap(hi);
    FUZZ_CHECK(wx_policy_wx_mappings() == 0, "a W+X mapping exists");
    return 0;
}
