/* Open reservations are recorded per pool (src/reservations.c), so that
 * installs share no lock between threads:
 * - steady: after a warm-up, 10,000 rounds of install+free,
 *   reserve+commit+free, in-place reserve+commit+free (as sljit does for
 *   each function) and in-place reserve+abort from each of 2 threads add 0
 *   to shared_locks and no page (the rest of a page skipped after an
 *   in-place reservation is the thread's again once it ended)
 *   (with dualmap's WXJIT_HEAP_RW_ON_DEMAND: exactly 2 per write window,
 *   its window list's lock at open and close, and nothing else; a tenth
 *   of the rounds there, each window being an mmap and a munmap);
 * - cross-thread: scratch reservations committed and aborted by another
 *   thread (the slow path, 1 shared lock each), also after the reserving
 *   thread has exited, and by a thread that adopted its pool since;
 * - refused: stale copies, double commits, forged serials (an unknown
 *   pool, another pool, a changed size) with EINVAL, and of two threads
 *   racing to end the same reservation exactly one wins;
 * - adrift: a thread whose pool was let go (it used more heaps than it
 *   caches pools for) and adopted by another thread still finds its own
 *   in-place window there: EDEADLK, then both commit. */
#include <pthread.h>

#include "emit.h"
#include "wxtest.h"

#define WARMUP 1000
#define ROUNDS 10000
#define RACES 400
#define TLS_POOLS 8 /* src/pool.c: pools a thread caches, one per heap */

/* Stats after minus stats before, for the counters checked here. */
static uint64_t delta(uint64_t before, uint64_t after)
{
    return after - before;
}

/* ---- steady path ---------------------------------------------------------- */
struct churn {
    wxjit_heap *heap;
    int32_t v;
    int rounds;
    pthread_barrier_t *go;
};

static void churn_rounds(wxjit_heap *h, int32_t v, int rounds)
{
    uint8_t buf[16];
    size_t n = emit_return_int(buf, v);
    for (int i = 0; i < rounds; i++) {
        void *f;
        CHECK_OK(wxjit_install(h, buf, n, 0, &f));
        wxtest_expect_returns(f, v);
        CHECK_OK(wxjit_free(h, f));
        wxjit_reservation r;
        CHECK_OK(wxjit_reserve(h, 64, 0, 0, &r));
        memcpy(r.write, buf, n);
        void *exec = r.exec;
        CHECK_OK(wxjit_commit(h, &r, n));
        wxtest_expect_returns(exec, v);
        CHECK_OK(wxjit_free(h, exec));
        CHECK_OK(wxjit_reserve(h, 256, 0, WXJIT_RESERVE_IN_PLACE, &r));
        memcpy(r.write, buf, n);
        exec = r.exec;
        CHECK_OK(wxjit_commit(h, &r, n));
        wxtest_expect_returns(exec, v);
        CHECK_OK(wxjit_free(h, exec));
        CHECK_OK(wxjit_reserve(h, 256, 0, WXJIT_RESERVE_IN_PLACE, &r));
        CHECK_OK(wxjit_abort(h, &r));
    }
}

static void *churn_thread(void *arg)
{
    struct churn *c = arg;
    churn_rounds(c->heap, c->v, WARMUP);
    pthread_barrier_wait(c->go); /* warm: main reads the stats */
    pthread_barrier_wait(c->go);
    churn_rounds(c->heap, c->v, c->rounds);
    return NULL;
}

static void steady(const char *what, wxjit_heap *h, bool on_demand)
{
    pthread_barrier_t go;
    CHECK_OK(pthread_barrier_init(&go, NULL, 3));
    int rounds = wxtest_rounds(on_demand ? ROUNDS / 10 : ROUNDS);
    struct churn c[2] = {{h, 11, rounds, &go}, {h, 22, rounds, &go}};
    pthread_t t[2] = {wxtest_spawn(churn_thread, &c[0]),
                      wxtest_spawn(churn_thread, &c[1])};
    pthread_barrier_wait(&go);
    wxjit_stats a = wxtest_stats_of(h);
    pthread_barrier_wait(&go);
    wxtest_join(t[0]);
    wxtest_join(t[1]);
    wxjit_stats b = wxtest_stats_of(h);
    pthread_barrier_destroy(&go);
    uint64_t installs = delta(a.installs, b.installs);
    /* And one per in-place abort (its traps), a round per thread. */
    uint64_t windows = installs + delta(a.frees, b.frees) + 2 * (uint64_t)rounds;
    uint64_t shared = delta(a.shared_locks, b.shared_locks);
    CHECK_EQ(installs, 2 * 3 * rounds);
    /* Each write window of an on-demand heap maps its own RW view and
     * lists it under the backend's lock while open. */
    CHECK_EQ(shared, on_demand ? 2 * windows : 0);
    CHECK_EQ(delta(a.pages, b.pages), 0); /* no refill: the tails sufficed */
    printf("  %s: 2 threads x %d rounds of install+free, "
           "reserve+commit+free (scratch and in place) and in-place "
           "reserve+abort after a warm-up: %llu installs, %llu shared locks "
           "(%.2f per write window), no new page\n",
           what, rounds, (unsigned long long)installs,
           (unsigned long long)shared, (double)shared / (double)windows);
}

static void test_steady(wxjit_backend backend)
{
    wxjit_heap *h = wxtest_heap_of(WXJIT_BACKEND_AUTO);
    const char *name;
    CHECK_OK(wxjit_backend_name(backend, &name));
    steady(name, h, false);
    CHECK_OK(wxjit_heap_destroy(h));
    if (backend != WXJIT_BACKEND_DUALMAP)
        return;
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    o.backend = WXJIT_BACKEND_DUALMAP;
    o.flags = WXJIT_HEAP_RW_ON_DEMAND;
    CHECK_OK(wxjit_heap_create(&o, &h));
    steady("dualmap, RW on demand", h, true);
    CHECK_OK(wxjit_heap_destroy(h));
}

/* ---- cross-thread commit and abort ---------------------------------------- */
struct reserver {
    wxjit_heap *heap;
    wxjit_reservation r[3];
    int32_t v;
    pthread_barrier_t *done; /* NULL: exit at once */
};

static void *reserve_three(void *arg)
{
    struct reserver *s = arg;
    for (int i = 0; i < 3; i++) {
        CHECK_OK(wxjit_reserve(s->heap, 64, 0, 0, &s->r[i]));
        emit_return_int(s->r[i].write, s->v + i);
    }
    if (s->done) {
        pthread_barrier_wait(s->done); /* reserved */
        pthread_barrier_wait(s->done); /* ended by main: exit */
    }
    return NULL;
}

/* Commits r[0] and aborts r[1] of another thread's from this one. */
static void end_from_here(wxjit_heap *h, struct reserver *s, const char *what)
{
    uint8_t buf[16];
    size_t n = emit_return_int(buf, 0);
    wxjit_stats a = wxtest_stats_of(h);
    void *f = s->r[0].exec;
    CHECK_OK(wxjit_commit(h, &s->r[0], n));
    wxtest_expect_returns(f, s->v);
    CHECK_OK(wxjit_abort(h, &s->r[1]));
    wxjit_stats b = wxtest_stats_of(h);
    /* One other pool's lock each; the caller's own pool needs no refill. */
    CHECK_EQ(delta(a.shared_locks, b.shared_locks), 2);
    CHECK_OK(wxjit_free(h, f));
    printf("  %s: commit and abort from another thread: ok, 1 shared lock "
           "each\n",
           what);
}

static void *commit_third(void *arg)
{
    struct reserver *s = arg;
    uint8_t buf[16];
    size_t n = emit_return_int(buf, 0);
    void *f = s->r[2].exec;
    CHECK_OK(wxjit_commit(s->heap, &s->r[2], n));
    wxtest_expect_returns(f, s->v + 2);
    CHECK_OK(wxjit_free(s->heap, f));
    return NULL;
}

static void test_cross_thread(void)
{
    wxjit_heap *h = wxtest_heap_of(WXJIT_BACKEND_AUTO);
    CHECK_OK(wxjit_free(h, wxtest_install_int(h, 1))); /* main's pool, warm */
    pthread_barrier_t done;
    CHECK_OK(pthread_barrier_init(&done, NULL, 2));
    struct reserver alive = {h, {{0}}, 30, &done};
    pthread_t t = wxtest_spawn(reserve_three, &alive);
    pthread_barrier_wait(&done);
    end_from_here(h, &alive, "reserving thread alive");
    pthread_barrier_wait(&done);
    wxtest_join(t);
    pthread_barrier_destroy(&done);

    /* Its pool is free for adoption now, with r[2] still recorded there. */
    struct reserver gone = {h, {{0}}, 40, NULL};
    wxtest_join(wxtest_spawn(reserve_three, &gone));
    end_from_here(h, &gone, "reserving thread exited");
    wxtest_join(wxtest_spawn(commit_third, &gone));
    wxtest_join(wxtest_spawn(commit_third, &alive));
    printf("  reservations left in exited threads' pools: committed by the "
           "threads that adopted the pools, and run\n");
    CHECK_OK(wxjit_heap_destroy(h));
}

/* ---- refused: stale, double, forged ----------------------------------------
 */
static void *reserve_one(void *arg)
{
    struct reserver *s = arg;
    CHECK_OK(wxjit_reserve(s->heap, 64, 0, 0, &s->r[0]));
    return NULL;
}

static void test_refused(void)
{
    wxjit_heap *h = wxtest_heap_of(WXJIT_BACKEND_AUTO);
    uint8_t buf[16];
    size_t n = emit_return_int(buf, 5);
    wxjit_reservation r, copy, forged;
    CHECK_OK(wxjit_reserve(h, 64, 0, 0, &r));
    memcpy(r.write, buf, n);

    /* Index bits: the low ones, below the pool's count (src/internal.h). */
    const uintptr_t index_mask = ((uintptr_t)1 << 22) - 1;
    forged = r;
    forged.internal[0] ^= index_mask; /* a pool that does not exist */
    forged.internal[1] = ~forged.internal[0];
    CHECK_RET(wxjit_commit(h, &forged, n), EINVAL);
    struct reserver other = {h, {{0}}, 0, NULL};
    pthread_t t = wxtest_spawn(reserve_one, &other);
    wxtest_join(t);
    forged = r; /* the other thread's pool's index */
    forged.internal[0] = (r.internal[0] & ~index_mask) |
                         (other.r[0].internal[0] & index_mask);
    forged.internal[1] = ~forged.internal[0];
    CHECK(forged.internal[0] != r.internal[0], "setup: same pool index");
    CHECK_RET(wxjit_commit(h, &forged, n), EINVAL);
    forged = r;
    forged.size = 48;
    CHECK_RET(wxjit_commit(h, &forged, n), EINVAL);
    CHECK_OK(wxjit_abort(h, &other.r[0]));

    /* The same space reserved again: the old copy stays refused. */
    copy = r;
    CHECK_OK(wxjit_abort(h, &r));
    CHECK_OK(wxjit_reserve(h, 64, 0, 0, &r));
    memcpy(r.write, buf, n);
    CHECK_RET(wxjit_commit(h, &copy, n), EINVAL);
    CHECK_RET(wxjit_abort(h, &copy), EINVAL);
    copy = r;
    void *f = r.exec;
    CHECK_OK(wxjit_commit(h, &r, n));
    CHECK_RET(wxjit_commit(h, &r, n), EINVAL); /* consumed */
    CHECK_RET(wxjit_commit(h, &copy, n), EINVAL);
    CHECK_RET(wxjit_abort(h, &copy), EINVAL);
    wxtest_expect_returns(f, 5);
    printf("  forged serials (unknown pool, another pool), a changed size, "
           "stale copies and a double commit: EINVAL\n");
    CHECK_OK(wxjit_heap_destroy(h));
}

/* ---- two threads race to end one reservation ------------------------------ */
struct race {
    wxjit_heap *heap;
    pthread_barrier_t start, end;
    wxjit_reservation r, copy[2];
    int result[2];
    size_t used;
};

struct racer {
    struct race *race;
    int id;
};

static void *racer_thread(void *arg)
{
    struct racer *me = arg;
    struct race *race = me->race;
    for (int round = 0; round < RACES; round++) {
        /* Even rounds: racer 0 reserved it itself (its fast path against
         * racer 1's slow one); odd rounds: the main thread did. */
        if (round % 2 == 0 && me->id == 0) {
            CHECK_OK(wxjit_reserve(race->heap, 64, 0, 0, &race->r));
            race->used = emit_return_int(race->r.write, round);
        }
        pthread_barrier_wait(&race->start);
        pthread_barrier_wait(&race->start); /* copies handed out */
        wxjit_reservation *mine = &race->copy[me->id];
        race->result[me->id] = me->id == 1 && round % 4 == 3
                                   ? wxjit_abort(race->heap, mine)
                                   : wxjit_commit(race->heap, mine, race->used);
        pthread_barrier_wait(&race->end);
    }
    return NULL;
}

static void test_race(void)
{
    struct race race = {.heap = wxtest_heap_of(WXJIT_BACKEND_AUTO)};
    CHECK_OK(pthread_barrier_init(&race.start, NULL, 3));
    CHECK_OK(pthread_barrier_init(&race.end, NULL, 3));
    struct racer racers[2] = {{&race, 0}, {&race, 1}};
    pthread_t t[2] = {wxtest_spawn(racer_thread, &racers[0]),
                      wxtest_spawn(racer_thread, &racers[1])};
    int commits = 0, aborts = 0;
    for (int round = 0; round < RACES; round++) {
        if (round % 2) {
            CHECK_OK(wxjit_reserve(race.heap, 64, 0, 0, &race.r));
            race.used = emit_return_int(race.r.write, round);
        }
        pthread_barrier_wait(&race.start);
        race.copy[0] = race.copy[1] = race.r;
        void *f = race.r.exec;
        pthread_barrier_wait(&race.start);
        pthread_barrier_wait(&race.end);
        int won = (race.result[0] == 0) + (race.result[1] == 0);
        CHECK(won == 1,
              "round %d: results %d and %d, expected exactly one 0 and one "
              "EINVAL",
              round, race.result[0], race.result[1]);
        int lost = race.result[0] ? race.result[0] : race.result[1];
        CHECK_EQ(lost, EINVAL);
        if (round % 4 == 3 && race.result[1] == 0) {
            aborts++;
            continue;
        }
        commits++;
        wxtest_expect_returns(f, round);
        CHECK_OK(wxjit_free(race.heap, f));
    }
    wxtest_join(t[0]);
    wxtest_join(t[1]);
    pthread_barrier_destroy(&race.start);
    pthread_barrier_destroy(&race.end);
    printf("  %d races to end one reservation (commit against commit, or "
           "against abort): exactly one won each time (%d commits, %d "
           "aborts)\n",
           RACES, commits, aborts);
    CHECK_OK(wxjit_heap_destroy(race.heap));
}

/* ---- a free racing the commit of the same reservation --------------------
 * A free of the address a commit is making live fails (EINVAL) until the
 * commit has returned: the block is an open reservation until then.
 * (It once passed mid-commit, freed the whole reserved extent, and both
 * calls returned 0: bytes_live drifted and the commit shrank a block that
 * no longer existed.) */
#define FREE_RACE_ROUNDS 20000

struct freer {
    wxjit_heap *heap;
    void *_Atomic target;
    _Atomic bool stop;
    _Atomic int freed;
    _Atomic uint64_t laps;
};

static void *free_target(void *arg)
{
    struct freer *fr = arg;
    while (!atomic_load(&fr->stop)) {
        void *t = atomic_load(&fr->target);
        if (t && wxjit_free(fr->heap, t) == 0)
            atomic_fetch_add(&fr->freed, 1);
        atomic_fetch_add(&fr->laps, 1);
    }
    return NULL;
}

static void test_free_vs_commit(void)
{
    struct freer fr = {.heap = wxtest_heap_of(WXJIT_BACKEND_AUTO)};
    /* Live all along: a free that took more than the commit kept shows as
     * bytes_live below this. */
    void *ballast = wxtest_install_int(fr.heap, 1);
    uint64_t ballast_bytes = wxtest_stats_of(fr.heap).bytes_live;
    pthread_t t = wxtest_spawn(free_target, &fr);
    int rounds = wxtest_rounds(FREE_RACE_ROUNDS);
    for (int i = 0; i < rounds; i++) {
        wxjit_reservation r;
        CHECK_OK(wxjit_reserve(fr.heap, 256, 0, 0, &r));
        size_t used = emit_return_int(r.write, i);
        void *exec = r.exec;
        int before = atomic_load(&fr.freed);
        atomic_store(&fr.target, exec);
        CHECK_OK(wxjit_commit(fr.heap, &r, used)); /* 15 granules back */
        /* Stop the other thread trying, and let it finish a lap that
         * began after that: it freed the function once, or not at all. */
        atomic_store(&fr.target, NULL);
        uint64_t lap = atomic_load(&fr.laps);
        while (atomic_load(&fr.laps) < lap + 2)
            sched_yield();
        if (atomic_load(&fr.freed) == before)
            CHECK_OK(wxjit_free(fr.heap, exec));
        wxjit_stats s = wxtest_stats_of(fr.heap);
        CHECK(s.bytes_live == ballast_bytes && s.installs == s.frees + 1,
              "round %d: bytes_live %llu (expected %llu), %llu installs, "
              "%llu frees",
              i, (unsigned long long)s.bytes_live,
              (unsigned long long)ballast_bytes,
              (unsigned long long)s.installs, (unsigned long long)s.frees);
    }
    atomic_store(&fr.stop, true);
    wxtest_join(t);
    wxtest_expect_returns(ballast, 1);
    printf("  %d frees racing the commit of the same reservation: none got "
           "in before the commit returned (%d after it)\n",
           rounds, atomic_load(&fr.freed));
    CHECK_OK(wxjit_heap_destroy(fr.heap));
}

/* ---- in-place records in a pool the owner let go -------------------------- */
struct adopter {
    wxjit_heap *heap;
    pthread_barrier_t *step;
};

static void *adopt_and_hold(void *arg)
{
    struct adopter *a = arg;
    pthread_barrier_wait(a->step); /* the owner let its pool go */
    CHECK_OK(wxjit_free(a->heap, wxtest_install_int(a->heap, 3)));
    pthread_barrier_wait(a->step); /* adopted: hold it until told */
    pthread_barrier_wait(a->step);
    return NULL;
}

static void test_adrift(void)
{
    wxjit_heap *h = wxtest_heap_of(WXJIT_BACKEND_AUTO), *others[TLS_POOLS];
    pthread_barrier_t step;
    CHECK_OK(pthread_barrier_init(&step, NULL, 2));
    struct adopter a = {h, &step};
    pthread_t t = wxtest_spawn(adopt_and_hold, &a);
    wxjit_reservation r1, r2;
    CHECK_OK(wxjit_reserve(h, 64, 0, 0, &r1));
    size_t n1 = emit_return_int(r1.write, 61);
    CHECK_OK(wxjit_reserve(h, 64, 0, WXJIT_RESERVE_IN_PLACE, &r2));
    size_t n2 = emit_return_int(r2.write, 62);
    CHECK(wxtest_page_of(r1.exec) == wxtest_page_of(r2.exec),
          "setup: r1 (%p) and r2 (%p) on different pages", r1.exec, r2.exec);
    /* More heaps than the thread caches pools for: h's pool is let go. */
    for (int i = 0; i < TLS_POOLS; i++) {
        others[i] = wxtest_heap_of(WXJIT_BACKEND_AUTO);
        CHECK_OK(wxjit_free(others[i], wxtest_install_int(others[i], i)));
    }
    pthread_barrier_wait(&step);
    pthread_barrier_wait(&step); /* another thread owns it now */
    void *f1 = r1.exec, *f2 = r2.exec;
    CHECK_RET(wxjit_commit(h, &r1, n1), EDEADLK);
    CHECK_OK(wxjit_commit(h, &r2, n2));
    CHECK_OK(wxjit_commit(h, &r1, n1));
    wxtest_expect_returns(f1, 61);
    wxtest_expect_returns(f2, 62);
    pthread_barrier_wait(&step);
    wxtest_join(t);
    pthread_barrier_destroy(&step);
    printf("  in-place window recorded in a pool let go and adopted by "
           "another thread: a scratch commit on its page EDEADLK, then both "
           "commit and run\n");
    for (int i = 0; i < TLS_POOLS; i++)
        CHECK_OK(wxjit_heap_destroy(others[i]));
    CHECK_OK(wxjit_heap_destroy(h));
}

int main(int argc, char **argv)
{
    wxtest_enter_wx_policy();
    /* Runs code installed where freed code was (a freed block's space is
     * reused at once): not under an emulator that misses dualmap's
     * writes. */
    wxtest_require_alias_writes_run("test_reservations");
    /* Threads run code while other threads write other pages. */
    CHECK_OK(wxjit_fault_handler_install());
    printf("test_reservations:\n");
    wxtest_print_backend();
    wxjit_heap *h = wxtest_heap_of(WXJIT_BACKEND_AUTO);
    wxjit_backend backend;
    CHECK_OK(wxjit_heap_backend(h, &backend));
    CHECK_OK(wxjit_heap_destroy(h));
    if (wxtest_selected(argc, argv, "steady"))
        test_steady(backend);
    if (wxtest_selected(argc, argv, "cross_thread"))
        test_cross_thread();
    if (wxtest_selected(argc, argv, "refused"))
        test_refused();
    if (wxtest_selected(argc, argv, "race"))
        test_race();
    if (wxtest_selected(argc, argv, "adrift"))
        test_adrift();
    if (wxtest_selected(argc, argv, "free_vs_commit"))
        test_free_vs_commit();
    CHECK_OK(wxjit_fault_handler_uninstall());
    CHECK_EQ(wxtest_wx_mappings(), 0);
    printf("test_reservations: ok\n");
    return 0;
}
