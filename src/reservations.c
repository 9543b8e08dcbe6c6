/* Open reservations, recorded by wxjit itself: commit and abort trust
 * nothing in the caller's wxjit_reservation but what they can compare with
 * this record. A stale copy (committed or aborted before, even if the same
 * space has been reserved again since), a changed size, write view or
 * in-place flag is refused instead of freeing or writing the wrong memory.
 * A small open-addressing table per heap, keyed by executable address. */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

/* In-place records the calling thread owns, in every table: while there
 * are none, neither new code nor a thread's exit needs to look for them.
 * Only the owner changes its own count (adds, takes, puts back, and the
 * orphan aborts at its exit); the forking thread's count carries over
 * into the child with its records. */
static __thread unsigned own_in_place;

unsigned wxj_open_own_in_place(void)
{
    return own_in_place;
}

static void count_own(const struct wxj_open_rec *rec, int by)
{
    if (rec->in_place && rec->owner == wxj_os_tid())
        own_in_place += (unsigned)by;
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

int wxj_open_add(struct wxj_open_table *t, struct wxj_open_rec *rec)
{
    pthread_mutex_lock(&t->lock);
    int err = make_room(t);
    if (err == 0) {
        rec->serial = ++t->serial;
        insert(t, rec);
        count_own(rec, 1);
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

int wxj_open_take(struct wxj_open_table *t, const wxjit_reservation *res,
                  struct wxj_open_rec *out)
{
    uintptr_t exec = (uintptr_t)res->exec;
    int err = EINVAL;
    pthread_mutex_lock(&t->lock);
    for (size_t i = t->cap ? home(t, exec) : 0; t->cap && t->slots[i].exec;
         i = (i + 1) & (t->cap - 1)) {
        const struct wxj_open_rec *rec = &t->slots[i];
        if (rec->exec != exec)
            continue;
        if (rec->write == res->write && rec->size == res->size &&
            rec->serial == res->internal[0] &&
            ~rec->serial == res->internal[1]) {
            *out = *rec;
            remove_at(t, i);
            count_own(out, -1);
            err = 0;
        }
        break;
    }
    pthread_mutex_unlock(&t->lock);
    return err;
}

void wxj_open_put_back(struct wxj_open_table *t,
                       const struct wxj_open_rec *rec)
{
    pthread_mutex_lock(&t->lock);
    /* Room exists: the record was taken out a moment ago. */
    insert(t, rec);
    count_own(rec, 1);
    pthread_mutex_unlock(&t->lock);
}

void wxj_open_init(struct wxj_open_table *t)
{
    pthread_mutex_init(&t->lock, NULL);
    t->slots = NULL;
    t->cap = t->count = 0;
    t->serial = 0;
}

void wxj_open_forget(struct wxj_open_table *t)
{
    free(t->slots);
    pthread_mutex_destroy(&t->lock);
}

/* Takes out one in-place record of tid (or of anyone else); false if none. */
static bool take_orphan(struct wxj_open_table *t, int32_t tid, bool others,
                        struct wxj_open_rec *out)
{
    bool found = false;
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < t->cap && !found; i++) {
        const struct wxj_open_rec *rec = &t->slots[i];
        if (rec->exec && rec->in_place && (rec->owner == tid) != others) {
            *out = *rec;
            remove_at(t, i);
            count_own(out, -1);
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
    while (take_orphan(&heap->open, tid, others, &rec)) {
        struct wxj_chunk *chunk = wxj_chunk_find(heap, (void *)rec.exec);
        size_t g = wxj_granule_of(chunk, (void *)rec.exec);
        size_t n = wxj_block_extent(chunk, g);
        wxj_in_place_abort(heap, chunk, (void *)rec.exec, rec.write,
                           rec.size, true);
        wxj_chunk_note_free(chunk, g, n);
    }
}

void wxj_open_after_fork(struct wxj_open_table *t, int32_t parent_tid,
                         int32_t self)
{
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].exec && t->slots[i].owner == parent_tid)
            t->slots[i].owner = self;
}

bool wxj_open_holds_pages(struct wxj_open_table *t, int32_t tid,
                          uintptr_t lo, uintptr_t hi, size_t page)
{
    bool found = false;
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < t->cap && !found; i++) {
        const struct wxj_open_rec *rec = &t->slots[i];
        found = rec->exec && rec->in_place && rec->owner == tid &&
                rec->exec / page <= hi / page &&
                lo / page <= (rec->exec + rec->size - 1) / page;
    }
    pthread_mutex_unlock(&t->lock);
    return found;
}
