/* The model: what must exist (heaps, live functions with their bytes and
 * return values, open reservations and windows and the thread that owns
 * each), looked
 * up and updated by the ops, and arguments picked from it: mostly valid
 * ones, sometimes stale, forged or garbage ones that must be refused. */
#include "fuzz.h"

struct mheap heaps[MAX_HEAPS];
struct mfunc funcs[MAX_FUNCS];
struct mres res[MAX_RES];
struct mwin wins[MAX_WIN];
wxjit_heap *dead[MAX_STALE];            /* destroyed handles */
void *stale_ptrs[MAX_STALE];            /* freed function starts */
wxjit_reservation stale_res[MAX_STALE]; /* consumed reservations */
unsigned n_dead, n_stale_ptr, n_stale_res;
size_t page;
bool trace, concurrent, injecting;
int injecting_err;
wxjit_backend env_backend;
int cur;
int recover_heap = -1;

size_t granules(size_t bytes)
{
    return (bytes + WXJ_GRANULE - 1) / WXJ_GRANULE;
}

size_t round_page(size_t v) { return (v + page - 1) / page * page; }

typedef int (*int_fn)(void);

int call(const void *exec)
{
    int_fn fn;
    memcpy(&fn, &exec, sizeof(fn));
    return fn();
}

struct wxj_chunk *chunk_of(int hi, const void *p)
{
    return heaps[hi].alive ? wxj_chunk_find(heaps[hi].h, p) : NULL;
}

static bool pages_meet(const uint8_t *a, size_t len, const struct mres *m)
{
    uintptr_t first = (uintptr_t)a / page,
              last = ((uintptr_t)a + len - 1) / page;
    uintptr_t f = (uintptr_t)m->r.exec / page,
              l = ((uintptr_t)m->r.exec + m->r.size - 1) / page;
    return f <= last && first <= l;
}

/* Whether an open in-place reservation of heap hi (but except) lies on a
 * page of [a, a + len). */
NO_COVERAGE bool on_open_in_place(int hi, const uint8_t *a, size_t len,
                                  const struct mres *except)
{
    for (int i = 0; i < MAX_RES; i++) {
        const struct mres *m = &res[i];
        if (m->used && m != except && m->heap == hi && m->in_place &&
            pages_meet(a, len, m))
            return true;
    }
    return false;
}

/* The same, only thread t's own in-place reservations. */
NO_COVERAGE bool on_open_in_place_of(int hi, const uint8_t *a, size_t len,
                                     const struct mres *except, int t)
{
    for (int i = 0; i < MAX_RES; i++) {
        const struct mres *m = &res[i];
        if (m->used && m != except && m->heap == hi && m->in_place &&
            m->owner == t && pages_meet(a, len, m))
            return true;
    }
    return false;
}

static bool win_pages_meet(const uint8_t *a, size_t len, const struct mwin *w)
{
    return (uintptr_t)w->exec / page <= ((uintptr_t)a + len - 1) / page &&
           (uintptr_t)a / page <= ((uintptr_t)w->exec + w->len - 1) / page;
}

static bool win_bytes_meet(const uint8_t *a, size_t len, const struct mwin *w)
{
    return a < w->exec + w->len && w->exec < a + len;
}

/* Pages held by thread t's (t < 0: anyone's; except_t: anyone's but
 * that thread's) in-place reservations and windows, on toggle. */
NO_COVERAGE static bool held_by(int hi, const uint8_t *a, size_t len,
                                const struct mres *except, int t,
                                int except_t)
{
    if (heaps[hi].backend != WXJIT_BACKEND_TOGGLE)
        return false;
    for (int i = 0; i < MAX_RES; i++) {
        const struct mres *m = &res[i];
        if (m->used && m != except && m->heap == hi && m->in_place &&
            (t < 0 || m->owner == t) && m->owner != except_t &&
            pages_meet(a, len, m))
            return true;
    }
    for (int i = 0; i < MAX_WIN; i++) {
        const struct mwin *w = &wins[i];
        if (w->used && w->heap == hi && (t < 0 || w->owner == t) &&
            w->owner != except_t && win_pages_meet(a, len, w))
            return true;
    }
    return false;
}

NO_COVERAGE bool held_pages(int hi, const uint8_t *a, size_t len,
                            const struct mres *except)
{
    return held_by(hi, a, len, except, -1, -1);
}

/* Writing there waits until that thread ends its hold, which with ops
 * run one at a time never comes (documented: keep windows short). */
NO_COVERAGE bool held_by_other(int hi, const uint8_t *a, size_t len)
{
    return held_by(hi, a, len, NULL, -1, cur);
}

NO_COVERAGE bool own_window_over(int hi, const uint8_t *a, size_t len)
{
    for (int i = 0; i < MAX_WIN; i++)
        if (wins[i].used && wins[i].heap == hi && wins[i].owner == cur &&
            win_bytes_meet(a, len, &wins[i]))
            return true;
    return false;
}

NO_COVERAGE bool own_window_pages(int hi, const uint8_t *a, size_t len)
{
    for (int i = 0; i < MAX_WIN; i++)
        if (wins[i].used && wins[i].heap == hi && wins[i].owner == cur &&
            win_pages_meet(a, len, &wins[i]))
            return true;
    return false;
}

NO_COVERAGE bool other_window_over(int hi, const uint8_t *a, size_t len)
{
    bool pages = heaps[hi].backend == WXJIT_BACKEND_TOGGLE;
    for (int i = 0; i < MAX_WIN; i++) {
        const struct mwin *w = &wins[i];
        if (w->used && w->heap == hi && w->owner != cur &&
            (pages ? win_pages_meet(a, len, w) : win_bytes_meet(a, len, w)))
            return true;
    }
    return false;
}

/* Windows of destroyed heaps are dropped from the model: wxjit no longer
 * counts them either. */
NO_COVERAGE bool holds_long(int t)
{
    for (int i = 0; i < MAX_WIN; i++)
        if (wins[i].used && wins[i].owner == t)
            return true;
    for (int i = 0; i < MAX_RES; i++)
        if (res[i].used && res[i].in_place && res[i].owner == t)
            return true;
    return false;
}

int wait_rule(bool blocked)
{
    return !blocked ? 0 : holds_long(cur) ? EDEADLK : WAITS;
}

struct mfunc *func_at(int hi, const uint8_t *p)
{
    for (int i = 0; i < MAX_FUNCS; i++)
        if (funcs[i].used && funcs[i].heap == hi && funcs[i].exec == p)
            return &funcs[i];
    return NULL;
}

/* The live function of heap hi whose block holds [p, p + len). */
struct mfunc *func_holding(int hi, const uint8_t *p, size_t len)
{
    for (int i = 0; i < MAX_FUNCS; i++) {
        struct mfunc *f = &funcs[i];
        if (f->used && f->heap == hi && p >= f->exec &&
            p < f->exec + f->size && len <= (size_t)(f->exec + f->size - p))
            return f;
    }
    return NULL;
}

struct mfunc *func_slot(void)
{
    for (int i = 0; i < MAX_FUNCS; i++)
        if (!funcs[i].used)
            return &funcs[i];
    return NULL;
}

struct mres *res_slot(void)
{
    for (int i = 0; i < MAX_RES; i++)
        if (!res[i].used)
            return &res[i];
    return NULL;
}

/* A used entry chosen by the input, or NULL when there is none. */
struct mfunc *pick_func(unsigned sel)
{
    for (unsigned i = 0; i < MAX_FUNCS; i++)
        if (funcs[(sel + i) % MAX_FUNCS].used)
            return &funcs[(sel + i) % MAX_FUNCS];
    return NULL;
}

struct mres *pick_open(unsigned sel)
{
    for (unsigned i = 0; i < MAX_RES; i++)
        if (res[(sel + i) % MAX_RES].used)
            return &res[(sel + i) % MAX_RES];
    return NULL;
}

void remember_ptr(void *p)
{
    stale_ptrs[n_stale_ptr++ % MAX_STALE] = p;
}

/* A heap argument: usually a live heap (*hi its index), sometimes a
 * destroyed handle or NULL (*hi -1, unless a new heap reuses the handle). */
wxjit_heap *pick_heap(struct input *in, int *hi)
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
wxjit_reservation *pick_res(struct input *in, wxjit_reservation *tmp,
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

struct mfunc *add_func(int hi, uint8_t *exec, const uint8_t *bytes,
                       size_t used, size_t code_len, size_t imm_at,
                       int32_t value)
{
    struct mfunc *f = func_slot();
    FUZZ_CHECK(f, "function table full");
    size_t n = granules(used);
    /* Invariant 2, at the moment it would break: say who holds the space. */
    check_no_overlap(hi, exec, n, "new function", NULL);
    f->bytes = malloc(n * WXJ_GRANULE);
    FUZZ_CHECK(f->bytes, "malloc");
    memcpy(f->bytes, bytes, used);
    memset(f->bytes + used, TRAP, n * WXJ_GRANULE - used);
    f->used = true;
    f->heap = hi;
    f->thread = cur;
    f->exec = exec;
    f->n = n;
    f->size = used;
    f->callable = code_len != 0 && used >= code_len;
    f->code_end = code_len ? code_len : 0;
    f->imm_at = imm_at;
    f->value = value;
    f->shared = 0;
    heaps[hi].installs++;
    return f;
}

void drop_func(struct mfunc *f)
{
    free(f->bytes);
    memset(f, 0, sizeof(*f));
}

static struct ghost ghosts[MAX_STEPS];
static unsigned n_ghosts;

void free_func(struct mfunc *f)
{
    if (heaps[f->heap].defer) {
        FUZZ_CHECK(n_ghosts < MAX_STEPS, "more frees than steps");
        ghosts[n_ghosts++] = (struct ghost){f->heap, f->exec, f->n, f->bytes};
        f->bytes = NULL; /* the ghost's now */
    }
    drop_func(f);
}

NO_COVERAGE const uint8_t *ghost_at(int hi, const uint8_t *p)
{
    for (unsigned i = n_ghosts; i-- > 0;) {
        const struct ghost *g = &ghosts[i];
        if (g->heap == hi && p >= g->exec && p < g->exec + g->n * WXJ_GRANULE)
            return g->bytes + (p - g->exec);
    }
    return NULL;
}

void drop_ghosts(int hi)
{
    unsigned kept = 0;
    for (unsigned i = 0; i < n_ghosts; i++) {
        if (hi < 0 || ghosts[i].heap == hi)
            free(ghosts[i].bytes);
        else
            ghosts[kept++] = ghosts[i];
    }
    n_ghosts = kept;
}

struct mwin *win_slot(void)
{
    for (int i = 0; i < MAX_WIN; i++)
        if (!wins[i].used)
            return &wins[i];
    return NULL;
}

struct mwin *pick_win(unsigned sel)
{
    for (unsigned i = 0; i < MAX_WIN; i++)
        if (wins[(sel + i) % MAX_WIN].used)
            return &wins[(sel + i) % MAX_WIN];
    return NULL;
}

struct mwin *own_window(int hi, const uint8_t *exec, size_t len)
{
    for (int i = 0; i < MAX_WIN; i++)
        if (wins[i].used && wins[i].heap == hi && wins[i].owner == cur &&
            wins[i].exec == exec && wins[i].len == len)
            return &wins[i];
    return NULL;
}

void drop_win(struct mwin *w, bool apply)
{
    if (apply && w->pending) {
        apply_patch(w->f, (size_t)(w->exec - w->f->exec), w->pending, w->len);
        share_patched(w->f);
    }
    free(w->pending);
    memset(w, 0, sizeof(*w));
}

void drop_res(struct mres *m)
{
    stale_res[n_stale_res++ % MAX_STALE] = m->r;
    free(m->bytes);
    memset(m, 0, sizeof(*m));
}

/* ENOMEM is correct only when the heap's cap leaves no room. */
void check_enomem(int hi, size_t size)
{
    wxjit_stats s;
    EXPECT(wxjit_stats_get(heaps[hi].h, &s), 0);
    FUZZ_CHECK(heaps[hi].max_bytes &&
                   s.bytes_mapped + round_page(size) > heaps[hi].max_bytes,
               "ENOMEM for %zu bytes with %llu mapped, cap %zu", size,
               (unsigned long long)s.bytes_mapped, heaps[hi].max_bytes);
}

void stats_before(int hi, wxjit_stats *s)
{
    memset(s, 0, sizeof(*s));
    if (hi >= 0 && heaps[hi].alive)
        EXPECT(wxjit_stats_get(heaps[hi].h, s), 0);
}

NO_COVERAGE void check_unchanged(int hi, const wxjit_stats *before, int err,
                                 const char *what)
{
    if (hi < 0 || !heaps[hi].alive)
        return;
    wxjit_stats after;
    EXPECT(wxjit_stats_get(heaps[hi].h, &after), 0);
    if (concurrent) /* executors' faults are retried meanwhile */
        after.faults_retried = before->faults_retried;
    if (injecting) {
        /* A failed call keeps the capacity it mapped (the header's
         * conventions): chunks and pages handed to pools. */
        after.bytes_mapped = before->bytes_mapped;
        after.chunks = before->chunks;
        after.pages = before->pages;
    }
    const uint64_t *a = (const uint64_t *)before, *b = (const uint64_t *)&after;
    static const char *const names[] = {
        "installs", "frees", "bytes_live", "bytes_mapped", "pages", "chunks",
        "mprotect_calls", "map_calls", "syscalls", "faults_retried",
        "faults_forwarded"};
    for (size_t i = 0; i < sizeof(after) / sizeof(uint64_t); i++)
        FUZZ_CHECK(a[i] == b[i],
                   "%s failed (%d, %s) but changed %s: %llu -> %llu", what,
                   err, strerror(err), names[i], (unsigned long long)a[i],
                   (unsigned long long)b[i]);
}

bool injected(int hi, const wxjit_stats *before, int err, const char *what)
{
    if (!injecting || err == 0)
        return false;
    FUZZ_CHECK(err > 0 && err != EINVAL, "%s: injected failure gave %d",
               what, err);
    TRACE("%s failed by injection: %s\n", what, strerror(err));
    check_unchanged(hi, before, err, what);
    if (hi >= 0)
        recover_heap = hi;
    return true;
}
