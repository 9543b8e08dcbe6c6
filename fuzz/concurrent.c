/* The concurrent mode's executor threads (FUZZ_MODE=concurrent): while the
 * ops run, EXECUTORS threads call, over and over, the functions published
 * in a shared set (OP_SHARE), and check each result against the values
 * the function has had since the call began. Ops never free a published
 * function, nor one an executor may still be calling after it was
 * unpublished (quiescence: every executor has finished a pass over the
 * set since); they install, free and patch other code on the same pages,
 * and patch_atomic the published ones, which changes their value under
 * the executors. A wrong value or a crash fails the input. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* REG_RIP, gettid */
#endif
#include <pthread.h>
#include <sched.h>

#include "fuzz.h"

#define EXECUTORS 2
#define SHARED 8
#define HISTORY 16 /* values remembered per published function */

struct slot {
    uint8_t *_Atomic exec;   /* NULL: not published */
    _Atomic uint32_t ver;    /* bumped before each change of value */
    _Atomic int32_t values[HISTORY];
    const struct mfunc *retiring; /* unpublished, maybe still called */
    uint64_t need[EXECUTORS];     /* passes that make it quiet */
};

static struct slot slots[SHARED];
static _Atomic uint64_t passes[EXECUTORS];
static _Atomic bool running;
/* Stops so far, and the last one each executor has seen: a stop waits
 * until every executor has parked after it (an executor that saw the
 * start just before the stop runs one more pass first). */
static _Atomic unsigned stops, parked[EXECUTORS];
static pthread_t threads[EXECUTORS];
static bool started;

static void push_value(struct slot *s, int32_t v)
{
    uint32_t next = atomic_load(&s->ver) + 1;
    atomic_store(&s->values[next % HISTORY], v);
    atomic_store(&s->ver, next); /* seq_cst: before the store to the code */
}

/* A result is right if the function held it at some point of the call:
 * the value of a version in [before - 1, after] (a patch may still be
 * landing when `before` is read; see push_value). */
NO_COVERAGE static void check_result(const struct slot *s, const uint8_t *exec,
                                     uint32_t before, uint32_t after,
                                     int32_t got)
{
    if (after - before >= HISTORY - 2)
        return; /* too many patches meanwhile to tell */
    for (uint32_t v = before - 1; v != after + 1; v++)
        if (atomic_load(&s->values[v % HISTORY]) == got)
            return;
    FUZZ_CHECK(0, "executor: %p returned %d, which it never held (versions "
                  "%u..%u, latest %d)",
               (const void *)exec, got, before, after,
               atomic_load(&s->values[after % HISTORY]));
}

NO_COVERAGE static void *executor(void *arg)
{
    int e = (int)(intptr_t)arg;
    for (;;) {
        /* Parked: every stop is acknowledged, also one whose start this
         * executor never saw. */
        while (!atomic_load(&running)) {
            atomic_store(&parked[e], atomic_load(&stops));
            sched_yield();
        }
        bool called = false;
        for (int i = 0; i < SHARED; i++) {
            struct slot *s = &slots[i];
            uint8_t *exec = atomic_load(&s->exec);
            if (!exec)
                continue;
            called = true;
            uint32_t before = atomic_load(&s->ver);
            int32_t got = call(exec);
            check_result(s, exec, before, atomic_load(&s->ver), got);
        }
        atomic_fetch_add(&passes[e], 1);
        if (!called)
            sched_yield(); /* leave the CPUs to the ops */
    }
    return NULL;
}

NO_COVERAGE void executors_start(void)
{
    memset(slots, 0, sizeof(slots));
    if (!started) {
        for (int e = 0; e < EXECUTORS; e++) {
            int err = pthread_create(&threads[e], NULL, executor,
                                     (void *)(intptr_t)e);
            FUZZ_CHECK(err == 0, "pthread_create: %s", strerror(err));
        }
        started = true;
    }
    atomic_store(&running, true);
}

/* Every open in-place reservation must be closed first: an executor may
 * be waiting for one of its pages. */
NO_COVERAGE void executors_stop(void)
{
    if (!started)
        return;
    for (int i = 0; i < SHARED; i++)
        atomic_store(&slots[i].exec, NULL);
    unsigned stop = atomic_fetch_add(&stops, 1) + 1;
    atomic_store(&running, false); /* seq_cst: after the count */
    for (int e = 0; e < EXECUTORS; e++)
        while (atomic_load(&parked[e]) != stop)
            sched_yield();
    for (int i = 0; i < MAX_FUNCS; i++)
        funcs[i].shared = 0;
    memset(slots, 0, sizeof(slots));
}

static bool slot_quiet(const struct slot *s)
{
    for (int e = 0; e < EXECUTORS; e++)
        if (atomic_load(&passes[e]) < s->need[e])
            return false;
    return true;
}

/* Publishes f, or unpublishes it if it is published. */
void share_toggle(struct mfunc *f)
{
    if (!concurrent || !f->callable)
        return;
    if (f->shared) {
        struct slot *s = &slots[f->shared - 1];
        atomic_store(&s->exec, NULL); /* seq_cst: before reading passes */
        for (int e = 0; e < EXECUTORS; e++)
            s->need[e] = atomic_load(&passes[e]) + 1;
        s->retiring = f;
        f->shared = 0;
        TRACE("unpublished %p\n", (void *)f->exec);
        return;
    }
    for (int i = 0; i < SHARED; i++) {
        struct slot *s = &slots[i];
        if (atomic_load(&s->exec) || (s->retiring && !slot_quiet(s)))
            continue;
        s->retiring = NULL;
        push_value(s, f->value);
        push_value(s, f->value);
        atomic_store(&s->exec, f->exec);
        f->shared = i + 1;
        TRACE("published %p (value %d)\n", (void *)f->exec, f->value);
        return;
    }
}

bool share_quiet(const struct mfunc *f)
{
    if (f->shared)
        return false;
    for (int i = 0; i < SHARED; i++)
        if (slots[i].retiring == f && !slot_quiet(&slots[i]))
            return false;
    return true;
}

/* f's value is about to change (or, after a failed patch, is the old one
 * again): executors accept the new one from now on, also those still in
 * a call through a slot f was unpublished from. */
void share_patched(struct mfunc *f)
{
    for (int i = 0; i < SHARED; i++)
        if (f->shared == i + 1 ||
            (slots[i].retiring == f && !slot_quiet(&slots[i])))
            push_value(&slots[i], f->value);
}

/* Before heap hi is destroyed: unpublishes its functions and waits until
 * no executor can be calling them. false, with nothing done, when an
 * in-place reservation or a window is open (toggle): an executor may be
 * waiting for its page, which no op can release while this one waits. */
NO_COVERAGE bool share_drop_heap(int hi)
{
    if (!concurrent)
        return true;
    bool any = false;
    for (int i = 0; i < MAX_FUNCS; i++)
        any |= funcs[i].used && funcs[i].heap == hi &&
               (funcs[i].shared || !share_quiet(&funcs[i]));
    if (!any)
        return true;
    for (int i = 0; i < MAX_RES; i++)
        if (res[i].used && res[i].in_place &&
            heaps[res[i].heap].backend == WXJIT_BACKEND_TOGGLE)
            return false;
    for (int i = 0; i < MAX_WIN; i++)
        if (wins[i].used && heaps[wins[i].heap].backend == WXJIT_BACKEND_TOGGLE)
            return false;
    for (int i = 0; i < MAX_FUNCS; i++)
        if (funcs[i].used && funcs[i].heap == hi && funcs[i].shared)
            share_toggle(&funcs[i]);
    for (int i = 0; i < MAX_FUNCS; i++)
        while (funcs[i].used && funcs[i].heap == hi && !share_quiet(&funcs[i]))
            sched_yield();
    return true;
}
