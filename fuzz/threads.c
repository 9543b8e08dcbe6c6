/* The threads that ops run on: thread 0 is the main (libFuzzer) thread,
 * 1..NTHREADS-1 are workers. An op is handed to its thread and the caller
 * waits until it is done (serving jobs for itself meanwhile, so an op on
 * one thread can have another do its part), so ops run one at a time, in
 * input order, on real threads: per-thread pools, pool adoption after a thread exits and
 * per-thread ownership are exercised deterministically and replayably.
 * A worker that does not finish an op within WATCHDOG_SECONDS is reported
 * as a deadlock instead of being left to libFuzzer's timeout. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* REG_RIP, gettid */
#endif
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "fuzz.h"

#define WATCHDOG_SECONDS 20

struct worker {
    pthread_t th;
    void (*fn)(void *);
    void *arg;
    bool done, quit;
    _Atomic int32_t tid;
};

static struct worker workers[NTHREADS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static int32_t main_tid;
uintptr_t fault_last_addr[NTHREADS];
uint32_t fault_last_state[NTHREADS];
uint64_t fault_last_heap[NTHREADS];

/* Lock held. Runs the job posted to thread me, if any. */
static bool serve(int me)
{
    struct worker *w = &workers[me];
    if (!w->fn)
        return false;
    void (*fn)(void *) = w->fn;
    void *arg = w->arg;
    w->fn = NULL; /* taken: not served again by a wait inside it */
    pthread_mutex_unlock(&lock);
    fn(arg);
    pthread_mutex_lock(&lock);
    w->done = true;
    pthread_cond_broadcast(&wake);
    return true;
}

NO_COVERAGE static void *worker_main(void *p)
{
    struct worker *w = p;
    atomic_store(&w->tid, (int32_t)syscall(SYS_gettid));
    pthread_mutex_lock(&lock);
    while (!w->quit)
        if (!serve((int)(w - workers)))
            pthread_cond_wait(&wake, &lock);
    pthread_mutex_unlock(&lock);
    return NULL; /* wxjit retires this thread's pools (pool.c) */
}

NO_COVERAGE static void start(int t)
{
    struct worker *w = &workers[t];
    w->fn = NULL;
    w->quit = w->done = false;
    atomic_store(&w->tid, 0);
    int err = pthread_create(&w->th, NULL, worker_main, w);
    FUZZ_CHECK(err == 0, "pthread_create: %s", strerror(err));
    while (!atomic_load(&w->tid))
        sched_yield();
    fault_last_addr[t] = 0;
    fault_last_state[t] = 0;
    fault_last_heap[t] = 0;
}

NO_COVERAGE void threads_init(void)
{
    main_tid = (int32_t)syscall(SYS_gettid);
    for (int t = 1; t < NTHREADS; t++)
        start(t);
}

int32_t thread_tid(int t)
{
    return t == 0 ? main_tid : atomic_load(&workers[t].tid);
}

struct hop {
    int to;
    void (*fn)(void *);
    void *arg;
};

/* Runs on the target thread: the op sees which thread it is on. */
static void hop(void *p)
{
    struct hop *h = p;
    int from = cur;
    cur = h->to;
    h->fn(h->arg);
    cur = from;
}

NO_COVERAGE void thread_call(int t, void (*fn)(void *), void *arg)
{
    if (t == cur) {
        fn(arg);
        return;
    }
    int from = cur;
    struct hop h = {t, fn, arg};
    struct worker *w = &workers[t];
    FUZZ_CHECK(t >= 0 && t < NTHREADS, "thread %d", t);
    pthread_mutex_lock(&lock);
    FUZZ_CHECK(!w->fn, "thread %d is busy", t);
    w->done = false;
    w->arg = &h;
    w->fn = hop;
    pthread_cond_broadcast(&wake);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += WATCHDOG_SECONDS;
    while (!w->done) {
        /* A waiting thread serves jobs for itself meanwhile (the op on t
         * may need one done by us: an abort by its owner). */
        if (serve(from))
            continue;
        int err = pthread_cond_timedwait(&wake, &lock, &until);
        FUZZ_CHECK(err != ETIMEDOUT,
                   "an op on thread %d has not finished in %d s: it waits "
                   "for something no op will do (deadlock)",
                   t, WATCHDOG_SECONDS);
    }
    pthread_mutex_unlock(&lock);
    cur = from;
}

NO_COVERAGE void thread_restart(int t)
{
    struct worker *w = &workers[t];
    FUZZ_CHECK(t > 0 && t < NTHREADS && t != cur, "restart %d from %d", t,
               cur);
    pthread_mutex_lock(&lock);
    w->quit = true;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);
    /* Thread-specific data destructors (wxjit's thread exit) have run
     * once the join returns. */
    int err = pthread_join(w->th, NULL);
    FUZZ_CHECK(err == 0, "pthread_join: %s", strerror(err));
    start(t);
}
