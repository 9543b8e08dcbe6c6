/* Open reservations, recorded by wxjit itself: commit and abort trust
 * nothing in the caller's wxjit_reservation but what they can compare with
 * this record. A stale copy (committed or aborted before, even if the same
 * space has been reserved again since), a changed size, write view or
 * in-place flag is refused instead of freeing or writing the wrong memory.
 * Each pool keeps the records of the reservations made through it, in a
 * small open-addressing table keyed by executable address, under a lock
 * of its own: a thread that reserves and commits its own reservations
 * takes no lock another thread takes (installs share no lock). A commit
 * or abort from another thread finds the pool by the index in the serial
 * and takes that pool's lock: the slow path, counted (shared_locks). */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

/* In-place records the calling thread owns, in every heap: while there
 * are none, neither new code nor a thread's exit needs to look for them.
 * Only the owner changes its own count (adds, takes, puts back, and the
 * orphan aborts at its exit); the forking thread's count carries over
 * into the child with its records. */
static __thread unsigned own_in_place;
/* Of those, the ones in pools the thread no longer uses (let go, below):
 * while there are none, the thread's pool for a heap holds all its
 * in-place records in that heap. An upper bound: a record found again
 * in a pool the thread adopts anew still counts here until the thread
 * has no in-place records left, which only costs a slower search. */
static __thread unsigned own_adrift;

unsigned wxj_open_own_in_place(void)
{
    return own_in_place;
}

/* A record of the calling thread's own in-place window came (by > 0) or
 * went; adrift: into or out of a pool that is not the thread's own. */
static void count_own(const struct wxj_open_rec *rec, int by, bool adrift)
{
    if (!rec->in_place || rec->owner != wxj_os_tid())
        return;
    own_in_place += (unsigned)by;
    if (adrift && (by > 0 || own_adrift))
        own_adrift += (unsigned)by;
    if (own_adrift > own_in_place)
        own_adrift = own_in_place;
}

static size_t home(const struct wxj_open_table *t, uintptr_t exec)
{
    /* Granule-aligned addresses: mix the bits before masking. */
    return (size_t)((exec >> 4) * 0x9e3779b97f4a7c15u) & (t->cap - 1);
}

static void insert(struct wxj_open_table *t, const struct wxj_open_rec *rec)
{
    size_t i = home(t, rec->exec);
    while (t->slots[i].exec)
        i = (i + 1) & (t->cap - 1);
    t->slots[i] = *rec;
    t->count++;
}

/* Keeps the table at most half full so probes stay short. */
static int make_room(struct wxj_open_table *t)
{
    if (2 * (t->count + 1) <= t->cap)
        return 0;
    size_t old_cap = t->cap;
    struct wxj_open_rec *old = t->slots;
    size_t cap = old_cap ? 2 * old_cap : 64;
    struct wxj_open_rec *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return ENOMEM;
    t->slots = slots;
    t->cap = cap;
    t->count = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].exec)
            insert(t, &old[i]);
    free(old);
    return 0;
}

int wxj_open_add(struct wxj_pool *pool, struct wxj_open_rec *rec)
{
    struct wxj_open_table *t = &pool->open;
    pthread_mutex_lock(&t->lock);
    int err = make_room(t);
    if (err == 0) {
        rec->serial = ++t->serial << WXJ_POOL_INDEX_BITS | pool->index;
        insert(t, rec);
        count_own(rec, 1, false);
    }
    pthread_mutex_unlock(&t->lock);
    return err;
}

/* Linear-probing deletion: later entries of the same probe run move up
 * into the hole, unless their home lies cyclically in (hole, entry]. */
static void remove_at(struct wxj_open_table *t, size_t hole)
{
    size_t mask = t->cap - 1;
    for (size_t j = (hole + 1) & mask; t->slots[j].exec; j = (j + 1) & mask) {
        size_t k = home(t, t->slots[j].exec);
        bool stays = hole <= j ? hole < k && k <= j : hole < k || k <= j;
        if (!stays) {
            t->slots[hole] = t->slots[j];
            hole = j;
        }
    }
    t->slots[hole] = (struct wxj_open_rec){0};
    t->count--;
}

/* The pool of heap with this index; NULL if there is none. Pools are
 * only freed with the heap, and published with release (pool.c). */
static struct wxj_pool *pool_at(struct wxjit_heap *heap, uint64_t index)
{
    struct wxj_pool *p =
        atomic_load_explicit(&heap->pools, memory_order_acquire);
    while (p && p->index != index)
        p = p->next;
    return p;
}

/* The caller's own pool's lock is its own; any other pool's is shared
 * with that pool's owner, and counted. */
static void lock_table(struct wxj_pool *pool, struct wxj_pool *own)
{
    if (pool == own)
        pthread_mutex_lock(&pool->open.lock);
    else
        wxj_lock_shared(&pool->open.lock);
}

int wxj_open_take(struct wxjit_heap *heap, struct wxj_pool *pool,
                  const wxjit_reservation *res, struct wxj_open_rec *out,
                  struct wxj_pool **from)
{
    uint64_t index = res->internal[0] & (WXJ_MAX_POOLS - 1);
    struct wxj_pool *p = index == pool->index ? pool : pool_at(heap, index);
    if (!p)
        return EINVAL;
    struct wxj_open_table *t = &p->open;
    uintptr_t exec = (uintptr_t)res->exec;
    int err = EINVAL;
    lock_table(p, pool);
    for (size_t i = t->cap ? home(t, exec) : 0; t->cap && t->slots[i].exec;
         i = (i + 1) & (t->cap - 1)) {
        const struct wxj_open_rec *rec = &t->slots[i];
        if (rec->exec != exec)
            continue;
        if (rec->write == res->write && rec->size == res->size &&
            rec->serial == res->internal[0] &&
            ~rec->serial == res->internal[1]) {
            /* Refused in place: out of the table even for a moment, the
             * record would be missed by its owner's commit or exit. */
            if (rec->in_place && rec->owner != wxj_os_tid()) {
                err = EPERM;
                break;
            }
            *out = *rec;
            remove_at(t, i);
            count_own(out, -1, p != pool);
            *from = p;
            err = 0;
        }
        break;
    }
    pthread_mutex_unlock(&t->lock);
    return err;
}

void wxj_open_put_back(struct wxj_pool *pool, struct wxj_pool *from,
                       const struct wxj_open_rec *rec)
{
    lock_table(from, pool);
    /* Room exists: the record was taken out a moment ago. */
    insert(&from->open, rec);
    count_own(rec, 1, from != pool);
    pthread_mutex_unlock(&from->open.lock);
}

void wxj_open_init(struct wxj_pool *pool)
{
    pthread_mutex_init(&pool->open.lock, NULL);
    pool->open.slots = NULL;
    pool->open.cap = pool->open.count = 0;
    pool->open.serial = 0;
}

void wxj_open_forget(struct wxj_pool *pool)
{
    free(pool->open.slots);
    pthread_mutex_destroy(&pool->open.lock);
}

/* Whether rec is an in-place window of tid on a page of [lo, hi]. */
static bool on_pages(const struct wxj_open_rec *rec, int32_t tid,
                     uintptr_t lo, uintptr_t hi, size_t page)
{
    return rec->exec && rec->in_place && rec->owner == tid &&
           rec->exec / page <= hi / page &&
           lo / page <= (rec->exec + rec->size - 1) / page;
}

/* The caller holds t's lock. */
static bool table_holds(const struct wxj_open_table *t, int32_t tid,
                        uintptr_t lo, uintptr_t hi, size_t page)
{
    for (size_t i = 0; i < t->cap; i++)
        if (on_pages(&t->slots[i], tid, lo, hi, page))
            return true;
    return false;
}

bool wxj_open_holds_pages(struct wxjit_heap *heap, struct wxj_pool *pool,
                          uintptr_t lo, uintptr_t hi)
{
    if (!own_in_place)
        return false;
    int32_t self = wxj_os_tid();
    pthread_mutex_lock(&pool->open.lock);
    bool found = table_holds(&pool->open, self, lo, hi, heap->page_size);
    pthread_mutex_unlock(&pool->open.lock);
    /* Records left in pools the thread let go: the slow path. */
    for (struct wxj_pool *p = atomic_load_explicit(&heap->pools,
                                                   memory_order_acquire);
         p && !found && own_adrift; p = p->next) {
        if (p == pool)
            continue;
        wxj_lock_shared(&p->open.lock);
        found = table_holds(&p->open, self, lo, hi, heap->page_size);
        pthread_mutex_unlock(&p->open.lock);
    }
    return found;
}

void wxj_open_let_go(struct wxj_pool *pool)
{
    if (!own_in_place)
        return;
    int32_t self = wxj_os_tid();
    const struct wxj_open_table *t = &pool->open;
    pthread_mutex_lock(&pool->open.lock);
    for (size_t i = 0; i < t->cap; i++)
        own_adrift += t->slots[i].exec && t->slots[i].in_place &&
                      t->slots[i].owner == self;
    pthread_mutex_unlock(&pool->open.lock);
    if (own_adrift > own_in_place)
        own_adrift = own_in_place;
}

/* Takes out one in-place record of tid (or of anyone else) from pool;
 * false if none. */
static bool take_orphan(struct wxj_pool *pool, int32_t tid, bool others,
                        struct wxj_open_rec *out)
{
    struct wxj_open_table *t = &pool->open;
    bool found = false;
    wxj_lock_shared(&t->lock);
    for (size_t i = 0; i < t->cap && !found; i++) {
        const struct wxj_open_rec *rec = &t->slots[i];
        if (rec->exec && rec->in_place && (rec->owner == tid) != others) {
            *out = *rec;
            remove_at(t, i);
            count_own(out, -1, false);
            found = true;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return found;
}

void wxj_open_abort_orphans(struct wxjit_heap *heap, int32_t tid,
                            bool others)
{
    struct wxj_open_rec rec;
    for (struct wxj_pool *p = heap->pools; p; p = p->next)
        while (take_orphan(p, tid, others, &rec)) {
            struct wxj_chunk *chunk = wxj_chunk_find(heap, (void *)rec.exec);
            size_t g = wxj_granule_of(chunk, (void *)rec.exec);
            size_t n = wxj_block_extent(chunk, g);
            wxj_in_place_abort(heap, chunk, (void *)rec.exec, rec.write,
                               rec.size, true);
            wxj_chunk_note_free(chunk, g, n);
        }
}

void wxj_open_after_fork(struct wxjit_heap *heap, int32_t parent_tid,
                         int32_t self)
{
    for (struct wxj_pool *p = heap->pools; p; p = p->next)
        for (size_t i = 0; i < p->open.cap; i++)
            if (p->open.slots[i].exec && p->open.slots[i].owner == parent_tid)
                p->open.slots[i].owner = self;
}
