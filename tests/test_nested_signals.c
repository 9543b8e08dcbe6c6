/* Signal handlers that run JIT code, arriving inside wxjit calls and
 * inside wxjit's own fault handler:
 * - SIGALRM storms delivered to threads inside wxjit calls, whose handler
 *   runs JIT code that another thread keeps patching;
 * - a handler calling code on a held page while its thread waits in the
 *   fault handler for another one, precisely and as a storm.
 * Scenarios that could hang run in a child under a deadline, which turns
 * a deadlock into a reported failure. */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/time.h>

#include "emit.h"
#include "held_page.h"
#include "wxtest.h"

static size_t page;

/* ---- SIGALRM storms ------------------------------------------------------
 * Installer threads run install/patch/free loops while a signaller sends
 * them SIGALRM as fast as it can. The handler calls a JIT function that a
 * patcher thread keeps rewriting (its page toggles under toggle), so
 * handlers also fault and wait, interrupting wxjit calls at any point. */
#define STORM_INSTALLERS 2
#define STORM_ROUNDS 3000

static void *storm_fn;
static _Atomic unsigned long storm_signals, storm_bad;
static atomic_bool storm_stop;

static void storm_handler(int sig)
{
    (void)sig;
    int saved = errno;
    int v = as_fn(storm_fn)();
    if (v != 100 && v != 101)
        atomic_fetch_add(&storm_bad, 1);
    atomic_fetch_add(&storm_signals, 1);
    errno = saved;
}

struct storm {
    wxjit_heap *h;
    pthread_t self;
    _Atomic bool done;
};

static void *storm_installer(void *arg)
{
    struct storm *s = arg;
    void *f[8] = {0};
    /* Not done before signals have arrived, however fast the backend. */
    const int rounds = wxtest_rounds(STORM_ROUNDS);
    for (int i = 0;
         i < rounds || atomic_load(&storm_signals) < STORM_INSTALLERS; i++) {
        int k = i % 8;
        if (f[k]) {
            CHECK_EQ(as_fn(f[k])(), k + i - 8);
            CHECK_OK(wxjit_free(s->h, f[k]));
        }
        f[k] = install_int(s->h, k);
        CHECK_OK(wxjit_patch_atomic(
            s->h, (uint8_t *)f[k] + EMIT_PATCHABLE_IMM_OFFSET,
            (uint32_t)(k + i), 4));
    }
    for (int k = 0; k < 8; k++)
        CHECK_OK(wxjit_free(s->h, f[k]));
    atomic_store(&s->done, true);
    return NULL;
}

static void *storm_patcher(void *arg)
{
    wxjit_heap *h = arg;
    uint8_t *imm = (uint8_t *)storm_fn + EMIT_PATCHABLE_IMM_OFFSET;
    for (uint32_t i = 0; !atomic_load(&storm_stop); i++)
        CHECK_OK(wxjit_patch_atomic(h, imm, 100 + i % 2, 4));
    return NULL;
}

static void test_storm(void)
{
#if defined(WXTEST_TSAN)
    /* TSan defers asynchronous signals and runs their handlers later, from
     * inside its interceptors: a handler that calls JIT code then runs at
     * points no real delivery reaches, and the run dies there. */
    wxtest_skip("SIGALRM storm during installs",
                "TSan delivers asynchronous signals at points of "
                "its own choosing");
    return;
#endif
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = storm_handler;
    sa.sa_flags = SA_RESTART;
    CHECK(sigaction(SIGALRM, &sa, NULL) == 0, "sigaction");
    wxjit_heap *h;
    CHECK_OK(wxjit_heap_create(NULL, &h));
    storm_fn = install_int(h, 100);
    atomic_store(&storm_stop, false);
    pthread_t patcher;
    CHECK(pthread_create(&patcher, NULL, storm_patcher, h) == 0, "thread");
    struct storm s[STORM_INSTALLERS];
    for (int i = 0; i < STORM_INSTALLERS; i++) {
        s[i].h = h;
        atomic_store(&s[i].done, false);
        CHECK(pthread_create(&s[i].self, NULL, storm_installer, &s[i]) == 0,
              "thread");
    }
    unsigned long sent = 0;
    for (bool all_done = false; !all_done;) {
        all_done = true;
        for (int i = 0; i < STORM_INSTALLERS; i++)
            if (!atomic_load(&s[i].done)) {
                all_done = false;
                pthread_kill(s[i].self, SIGALRM);
                sent++;
            }
    }
    for (int i = 0; i < STORM_INSTALLERS; i++)
        pthread_join(s[i].self, NULL);
    atomic_store(&storm_stop, true);
    pthread_join(patcher, NULL);
    signal(SIGALRM, SIG_DFL);
    CHECK_EQ(atomic_load(&storm_bad), 0);
    CHECK(atomic_load(&storm_signals) > 0, "no signal was handled");
    wxjit_stats st;
    CHECK_OK(wxjit_stats_get(h, &st));
    CHECK_EQ(st.bytes_live, 16);
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  SIGALRM storm: %lu sent, %lu handled inside %d installers' "
           "install/patch/free loops (%d rounds each), handlers ran code "
           "being patched: all calls succeeded, all values right\n",
           sent, atomic_load(&storm_signals), STORM_INSTALLERS,
           wxtest_rounds(STORM_ROUNDS));
}

/* ---- signal handlers running JIT code inside the fault handler -----------
 * Issue 11, defect 3. A thread asleep in wxjit's handler (waiting for a
 * page being written) takes a signal whose handler calls JIT code on a
 * page being written too: that second fault arrives while the first is
 * being handled, and must be retried like any other, not kill the
 * process. */

/* Precise: the main thread holds page P, thread V page Q (in-place
 * reservations, toggle). X calls the function on P and sleeps in the
 * handler; SIGUSR1 to X runs a handler that calls the function on Q. Q is
 * committed, the handler's call returns, then P, and X's call returns. */
struct q_holder {
    struct held q;
    pthread_barrier_t held, release;
};

static void *q_holder_main(void *arg)
{
    struct q_holder *v = arg;
    hold(&v->q, 72);
    pthread_barrier_wait(&v->held);
    pthread_barrier_wait(&v->release);
    release(&v->q);
    return NULL;
}

static void *nested_q;
static atomic_int nested_stage; /* 1: handler entered, 2: its call done */
static int nested_q_result;

static void nested_handler(int sig)
{
    (void)sig;
    int saved = errno;
    atomic_store(&nested_stage, 1);
    nested_q_result = as_fn(nested_q)();
    atomic_store(&nested_stage, 2);
    errno = saved;
}

static void nested_child(void *arg)
{
    (void)arg;
    struct held p;
    struct q_holder v;
    pthread_barrier_init(&v.held, NULL, 2);
    pthread_barrier_init(&v.release, NULL, 2);
    pthread_t vt;
    CHECK(pthread_create(&vt, NULL, q_holder_main, &v) == 0, "thread");
    hold(&p, 71);
    pthread_barrier_wait(&v.held);
    nested_q = v.q.fn;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = nested_handler;
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0, "sigaction");
    struct plain_exec x = {p.fn, 0, 0};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, plain_executor, &x) == 0, "thread");
    wxtest_wait_in_futex(&x.tid); /* X waits for P in wxjit's handler */
    CHECK(pthread_kill(t, SIGUSR1) == 0, "pthread_kill");
    while (atomic_load(&nested_stage) == 0)
        sched_yield();
    /* The handler's call faults on Q: it must sleep, not die. */
    while (!wxtest_in_futex(x.tid) && atomic_load(&nested_stage) < 2)
        sched_yield();
    CHECK(atomic_load(&nested_stage) == 1,
          "the handler's call of Q's code returned while Q was held");
    pthread_barrier_wait(&v.release); /* V commits Q */
    pthread_join(vt, NULL);
    while (atomic_load(&nested_stage) < 2)
        sched_yield();
    CHECK_EQ(nested_q_result, 72);
    release(&p);
    pthread_join(t, NULL);
    CHECK_EQ(x.result, 71);
    CHECK_OK(wxjit_heap_destroy(p.h));
    CHECK_OK(wxjit_heap_destroy(v.q.h));
    pthread_barrier_destroy(&v.held);
    pthread_barrier_destroy(&v.release);
    printf("  thread asleep in the handler for P (held by the main thread) "
           "took a signal whose handler called code on Q (held by another "
           "thread): both calls returned after the commits\n");
    fflush(stdout);
}

/* Why a signal handler cannot nest inside wxjit's fault handler under the
 * checking tool in use; NULL natively. */
static const char *nesting_impossible(void)
{
#if defined(WXTEST_TSAN)
    return "TSan delivers asynchronous signals at points of its own "
           "choosing, not while the thread sleeps in a signal handler";
#endif
    if (wxtest_valgrind())
        return "under Valgrind wxjit installs its handler without "
               "SA_NODEFER (Valgrind 3.19 mishandles it; README)";
    return NULL;
}

static void test_nested_precise(void)
{
    const char *why = nesting_impossible();
    if (why) {
        wxtest_skip("signal handler faulting while its thread waits in "
                    "wxjit's handler", why);
        return;
    }
    wxtest_expect_exit_within("signal handler faulting on a held page while "
                              "its thread waits in wxjit's handler",
                              nested_child, NULL, 10, 0);
}

/* Storm: two patchers keep rewriting the functions on pages P and Q, and
 * install and free code of their own; two executors keep calling both
 * functions, so they are often asleep in wxjit's handler, and install and
 * free code of their own too. A 100 us SIGALRM timer and a SIGUSR1 storm
 * interrupt the executors (the patchers block both: a handler calling
 * code on a page its own thread is patching would break the documented
 * rule that a thread never runs code on a page it holds), and the
 * handlers call both functions: an executor asleep for P runs a handler
 * that faults on P or Q while they are being patched. */
#define NESTED_STORM_MS 1000

static void *nstorm_f[2];
static atomic_bool nstorm_stop;
static _Atomic unsigned long nstorm_handled, nstorm_bad;

static bool nstorm_ok(int which, int v)
{
    return v == 200 + 10 * which || v == 201 + 10 * which;
}

static void nstorm_handler(int sig)
{
    (void)sig;
    int saved = errno;
    for (int k = 0; k < 2; k++)
        if (!nstorm_ok(k, as_fn(nstorm_f[k])()))
            atomic_fetch_add(&nstorm_bad, 1);
    atomic_fetch_add(&nstorm_handled, 1);
    errno = saved;
}

struct nstorm_worker {
    wxjit_heap *h;
    int which;    /* the function a patcher rewrites */
    bool patcher; /* else an executor of both */
    unsigned long rounds;
};

static void nstorm_own_code(wxjit_heap *h, uint32_t i)
{
    void *g = install_int(h, (int32_t)i);
    CHECK_EQ(as_fn(g)(), (int32_t)i);
    CHECK_OK(wxjit_free(h, g));
}

static void *nstorm_main(void *arg)
{
    struct nstorm_worker *w = arg;
    uint8_t *imm = (uint8_t *)nstorm_f[w->which] + EMIT_PATCHABLE_IMM_OFFSET;
    for (uint32_t i = 0; !atomic_load(&nstorm_stop); i++) {
        if (w->patcher) {
            CHECK_OK(
                wxjit_patch_atomic(w->h, imm, 200 + 10 * w->which + i % 2, 4));
        } else {
            for (int k = 0; k < 2; k++) {
                int v = as_fn(nstorm_f[k])();
                CHECK(nstorm_ok(k, v), "function %d returned %d", k, v);
            }
        }
        nstorm_own_code(w->h, i);
        w->rounds++;
    }
    return NULL;
}

static void nstorm_child(void *arg)
{
    (void)arg;
    wxjit_heap *h = wxtest_heap_of(WXJIT_BACKEND_AUTO);
    /* Each function fills a page of its own: no thread's own code goes on
     * P or Q (an executor interrupted while installing there would hold
     * the page its handler calls). */
    uint8_t *buf = malloc(page);
    CHECK(buf, "malloc");
    for (int k = 0; k < 2; k++) {
        size_t n = emit_return_int_patchable(buf, 200 + 10 * k);
        for (size_t i = n; i < page; i++)
            buf[i] = emit_trap_byte(buf + i);
        CHECK_OK(wxjit_install(h, buf, page, page, &nstorm_f[k]));
    }
    free(buf);
    CHECK(wxtest_page_of(nstorm_f[0]) != wxtest_page_of(nstorm_f[1]),
          "setup: both functions on one page");
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = nstorm_handler;
    sa.sa_flags = SA_RESTART;
    CHECK(sigaction(SIGALRM, &sa, NULL) == 0 &&
              sigaction(SIGUSR1, &sa, NULL) == 0,
          "sigaction");
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGALRM);
    sigaddset(&block, SIGUSR1);
    /* Patchers and this thread block the signals; executors do not. */
    struct nstorm_worker w[4] = {
        {h, 0, true, 0}, {h, 1, true, 0}, {h, 0, false, 0}, {h, 0, false, 0}};
    pthread_t t[4];
    for (int k = 0; k < 4; k++) {
        CHECK(pthread_sigmask(w[k].patcher ? SIG_BLOCK : SIG_UNBLOCK, &block,
                              NULL) == 0,
              "sigmask");
        CHECK(pthread_create(&t[k], NULL, nstorm_main, &w[k]) == 0, "thread");
    }
    CHECK(pthread_sigmask(SIG_BLOCK, &block, NULL) == 0, "sigmask");
    struct itimerval timer = {{0, 100}, {0, 100}}, off = {{0, 0}, {0, 0}};
    CHECK(setitimer(ITIMER_REAL, &timer, NULL) == 0, "setitimer");
    struct timespec start, now, gap = {0, 50000}; /* 50 us */
    clock_gettime(CLOCK_MONOTONIC, &start);
    unsigned long sent = 0;
    do {
        for (int k = 2; k < 4; k++, sent++)
            pthread_kill(t[k], SIGUSR1);
        nanosleep(&gap, NULL);
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((now.tv_sec - start.tv_sec) * 1000 +
                 (now.tv_nsec - start.tv_nsec) / 1000000 <
             NESTED_STORM_MS);
    atomic_store(&nstorm_stop, true);
    CHECK(setitimer(ITIMER_REAL, &off, NULL) == 0, "setitimer");
    for (int k = 0; k < 4; k++)
        pthread_join(t[k], NULL);
    CHECK_EQ(atomic_load(&nstorm_bad), 0);
    CHECK(atomic_load(&nstorm_handled) > 0, "no signal was handled");
    wxjit_stats st = wxtest_stats_of(h);
    printf("  %d ms of SIGALRM every 100 us and %lu SIGUSR1 to 2 executors "
           "of 2 pages being patched, handlers calling both: %lu handled; "
           "rounds: patchers %lu + %lu, executors %lu + %lu; %llu faults "
           "retried; process alive\n",
           NESTED_STORM_MS, sent, atomic_load(&nstorm_handled), w[0].rounds,
           w[1].rounds, w[2].rounds, w[3].rounds,
           (unsigned long long)st.faults_retried);
    fflush(stdout);
    CHECK_OK(wxjit_heap_destroy(h));
}

static void test_nested_storm(void)
{
    const char *why = nesting_impossible();
    if (why) {
        wxtest_skip("signal storm nested in the fault handler", why);
        return;
    }
    wxtest_expect_exit_within("SIGALRM timer and SIGUSR1 storm whose "
                              "handlers call code being patched",
                              nstorm_child, NULL, 20, 0);
}

int main(int argc, char **argv)
{
    wxtest_enter_wx_policy();
    page = (size_t)sysconf(_SC_PAGESIZE);
    CHECK_OK(wxjit_fault_handler_install());
    printf("test_nested_signals: faults held by toggle pages; other heaps "
           "use the backend WXJIT_BACKEND picks\n");
    if (wxtest_selected(argc, argv, "storm"))
        test_storm();
    if (wxtest_selected(argc, argv, "nested_precise"))
        test_nested_precise();
    if (wxtest_selected(argc, argv, "nested_storm"))
        test_nested_storm();
    CHECK_EQ(wxtest_wx_mappings(), 0);
    CHECK_OK(wxjit_fault_handler_uninstall());
    printf("test_nested_signals: ok\n");
    return 0;
}
