/* Signal edge cases around the fault-retry handler:
 * - a fault retried on the alternate signal stack, when the thread's own
 *   stack could not take a signal frame;
 * - a fault taken while the faulting thread holds a lock the installer
 *   needs next, and installers that take wxjit's own locks (another
 *   heap's creation, installs and destruction, handler installs) while an
 *   executor sleeps in the handler;
 * - SIGALRM storms delivered to threads inside wxjit calls, whose handler
 *   runs JIT code that another thread keeps patching;
 * - a runtime's own handler installed after wxjit's that calls
 *   wxjit_handle_fault first;
 * - repeated handler install/uninstall, while faults are retried.
 * Stalls are detected without timing: the executor is known to sleep in
 * the handler when /proc shows it blocked in futex(2). Each scenario that
 * could hang runs in a child under alarm(), which turns a deadlock into a
 * reported failure. */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/time.h>

#include "emit.h"
#include "wxtest.h"

static size_t page;

static void *install_int(wxjit_heap *h, int32_t v)
{
    uint8_t buf[32];
    void *exec;
    CHECK_OK(wxjit_install(h, buf, emit_return_int_patchable(buf, v), 0,
                           &exec));
    return exec;
}

static uint64_t retried(wxjit_heap *h)
{
    wxjit_stats s;
    CHECK_OK(wxjit_stats_get(h, &s));
    return s.faults_retried;
}

/* A function on a page the caller holds writable (toggle in place): any
 * other thread calling it sleeps in the handler until *r is committed. */
struct held {
    wxjit_heap *h;
    void *fn;
    wxjit_reservation r;
};

static void hold(struct held *x, int32_t v)
{
    x->h = wxtest_heap_of(WXJIT_BACKEND_TOGGLE);
    x->fn = install_int(x->h, v);
    CHECK_OK(wxjit_reserve(x->h, 64, 0, WXJIT_RESERVE_IN_PLACE, &x->r));
    CHECK(((uintptr_t)x->r.exec & ~(page - 1)) ==
              ((uintptr_t)x->fn & ~(page - 1)),
          "the reservation is on the function's page");
}

static void release(struct held *x)
{
    CHECK_OK(wxjit_commit(x->h, &x->r, emit_return_int(x->r.write, 1)));
}

/* ---- the alternate signal stack ----------------------------------------
 * The executor calls `trampoline`, which moves the stack pointer to the
 * top of a small region right above a guard page and calls the held
 * function from there: a signal frame pushed on that stack would run into
 * the guard and the kernel would kill the process. The fault is retried
 * only because the handler runs on the alternate stack (SA_ONSTACK). */
struct alt {
    void *trampoline;
    bool altstack;
    _Atomic pid_t tid;
    int result;
};

static void *alt_executor(void *arg)
{
    struct alt *a = arg;
    size_t size = (size_t)sysconf(_SC_SIGSTKSZ) * 4;
    stack_t ss = {.ss_sp = a->altstack ? malloc(size) : NULL,
                  .ss_size = size},
            old;
    if (a->altstack)
        CHECK(ss.ss_sp && sigaltstack(&ss, &old) == 0, "sigaltstack");
    atomic_store(&a->tid, (pid_t)syscall(SYS_gettid));
    a->result = as_fn(a->trampoline)();
    /* Give the stack back before the thread ends: sanitizer runtimes
     * tear down their own alternate stack at thread exit. */
    if (a->altstack) {
        CHECK(sigaltstack(&old, NULL) == 0, "sigaltstack");
        free(ss.ss_sp);
    }
    return NULL;
}

static void alt_run(bool altstack)
{
    struct held x;
    hold(&x, 5);
    /* 256 bytes of stack above a guard page: room for the call, not for
     * a signal frame (kilobytes with the FPU state). */
    uint8_t *stack = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(stack != MAP_FAILED && mprotect(stack, page, PROT_NONE) == 0,
          "guarded stack");
    wxjit_heap *h = wxtest_heap_of(WXJIT_BACKEND_AUTO);
    uint8_t code[128]; /* the trampoline: 80 bytes on riscv64 */
    void *tramp;
    CHECK_OK(wxjit_install(h, code,
                           emit_call_on_stack(code,
                                              (uintptr_t)stack + page + 256,
                                              (uintptr_t)x.fn),
                           0, &tramp));
    struct alt a = {tramp, altstack, 0, 0};
    pthread_t t;
    uint64_t before = retried(x.h);
    CHECK(pthread_create(&t, NULL, alt_executor, &a) == 0, "thread");
    /* never reached without the alternate stack: */
    wxtest_wait_in_futex(&a.tid);
    release(&x);
    pthread_join(t, NULL);
    CHECK_EQ(a.result, 5);
    CHECK(retried(x.h) > before, "no fault retried");
    CHECK_OK(wxjit_heap_destroy(h));
    CHECK_OK(wxjit_heap_destroy(x.h));
}

static void alt_child(void *arg)
{
    (void)arg;
    alarm(10);
    alt_run(false);
}

static void test_altstack(void)
{
    if (wxtest_valgrind()) {
        wxtest_skip("fault on the alternate signal stack", "Valgrind "
                    "delivers signals on stacks of its own");
        return;
    }
    alt_run(true);
    printf("  fault on a 256-byte stack above a guard page: retried on the "
           "alternate signal stack, call returned its value\n");
    if (wxtest_sanitizer_signals())
        wxtest_skip("the same without an alternate stack dies",
                    "the sanitizer runtime gives every thread an alternate "
                    "signal stack of its own");
    else
        wxtest_expect_signal("the same without an alternate stack",
                             wxtest_in_child(alt_child, NULL), SIGSEGV);
}

/* ---- locks ---------------------------------------------------------------
 * The executor takes the JIT's lock, then calls a function whose page the
 * installer holds, and sleeps in the handler with the lock held. The
 * installer, meanwhile, goes through wxjit's own locks and waits (another
 * heap created, installed into, destroyed: the heap registry, the region
 * registry and its wait for fault handlers; handler install/uninstall),
 * commits without needing the JIT's lock, and only then takes it. */
static pthread_mutex_t jit_lock = PTHREAD_MUTEX_INITIALIZER;

struct locked {
    void *fn;
    _Atomic pid_t tid;
    int result;
};

static void *locked_executor(void *arg)
{
    struct locked *l = arg;
    pthread_mutex_lock(&jit_lock);
    atomic_store(&l->tid, (pid_t)syscall(SYS_gettid));
    l->result = as_fn(l->fn)();
    pthread_mutex_unlock(&jit_lock);
    return NULL;
}

static void locks_child(void *arg)
{
    (void)arg;
    alarm(10); /* a deadlock dies of SIGALRM, reported below */
    struct held x;
    hold(&x, 6);
    struct locked l = {x.fn, 0, 0};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, locked_executor, &l) == 0, "thread");
    wxtest_wait_in_futex(&l.tid);

    wxjit_heap *other;
    CHECK_OK(wxjit_heap_create(NULL, &other));
    CHECK_EQ(as_fn(install_int(other, 8))(), 8);
    CHECK_OK(wxjit_heap_destroy(other));
    CHECK_OK(wxjit_fault_handler_install());
    CHECK_OK(wxjit_fault_handler_uninstall());
    CHECK(wxtest_in_futex(l.tid), "the executor left the handler early");

    release(&x);
    pthread_mutex_lock(&jit_lock); /* the executor finishes first */
    pthread_mutex_unlock(&jit_lock);
    pthread_join(t, NULL);
    CHECK_EQ(l.result, 6);
    CHECK_OK(wxjit_heap_destroy(x.h));
}

static void test_locks(void)
{
    wxtest_expect_exit("executor asleep in the handler holding the JIT's "
                       "lock; installer creates, uses and destroys another "
                       "heap, then commits",
                       wxtest_in_child(locks_child, NULL), 0);
}

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
    for (int i = 0;
         i < STORM_ROUNDS || atomic_load(&storm_signals) < STORM_INSTALLERS;
         i++) {
        int k = i % 8;
        if (f[k]) {
            CHECK_EQ(as_fn(f[k])(), k + i - 8);
            CHECK_OK(wxjit_free(s->h, f[k]));
        }
        f[k] = install_int(s->h, k);
        CHECK_OK(wxjit_patch_atomic(s->h,
                                    (uint8_t *)f[k] + EMIT_PATCHABLE_IMM_OFFSET,
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
    wxtest_skip("SIGALRM storm during installs", "TSan delivers "
                "asynchronous signals at points of its own choosing");
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
           STORM_ROUNDS);
}

/* ---- a runtime's handler in front of wxjit's ----------------------------
 * Installed after wxjit_fault_handler_install, as Mono or a JVM would: it
 * asks wxjit_handle_fault first and forwards what it does not handle to
 * the handler it replaced (wxjit's, which forwards to the default). */
static struct sigaction runtime_prev;
static _Atomic unsigned long runtime_calls;

static void runtime_handler(int sig, siginfo_t *info, void *uc)
{
    atomic_fetch_add(&runtime_calls, 1);
    if (wxjit_handle_fault(sig, info, uc))
        return;
    runtime_prev.sa_sigaction(sig, info, uc); /* chain */
}

struct plain_exec {
    void *fn;
    _Atomic pid_t tid;
    int result;
};

static void *plain_executor(void *arg)
{
    struct plain_exec *e = arg;
    atomic_store(&e->tid, (pid_t)syscall(SYS_gettid));
    e->result = as_fn(e->fn)();
    return NULL;
}

/* A jump to address 0. Through a volatile: a call through a literal
 * NULL is undefined, and compilers drop it and what follows. */
static void call_null(void)
{
    void *volatile nowhere = NULL;
    wxtest_invalid_access_follows();
    as_fn(nowhere)();
}

static void null_call_child(void *arg)
{
    (void)arg;
    call_null();
}

static void test_runtime_after(void)
{
    struct sigaction sa, now;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = runtime_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    CHECK(sigaction(SIGSEGV, &sa, &runtime_prev) == 0, "sigaction");
    CHECK(runtime_prev.sa_flags & SA_SIGINFO, "wxjit's handler was there");

    /* wxjit's handler is no longer the installed one: uninstall refuses
     * and changes nothing. */
    CHECK_RET(wxjit_fault_handler_uninstall(), EBUSY);
    CHECK(sigaction(SIGSEGV, NULL, &now) == 0 &&
              now.sa_sigaction == runtime_handler,
          "the runtime's handler was replaced");

    struct held x;
    hold(&x, 9);
    struct plain_exec e = {x.fn, 0, 0};
    pthread_t t;
    uint64_t before = retried(x.h);
    CHECK(pthread_create(&t, NULL, plain_executor, &e) == 0, "thread");
    wxtest_wait_in_futex(&e.tid);
    release(&x);
    pthread_join(t, NULL);
    CHECK_EQ(e.result, 9);
    CHECK(retried(x.h) > before && atomic_load(&runtime_calls) > 0,
          "the fault went through the runtime's handler and was retried");
    CHECK_OK(wxjit_heap_destroy(x.h));
    /* A fault that is not wxjit's: runtime -> wxjit -> default action. */
    if (wxtest_sanitizer_signals())
        wxtest_skip("NULL call through the runtime's handler dies",
                    "the handler before wxjit's is the sanitizer's, which "
                    "reports and exits");
    else if (wxtest_valgrind())
        wxtest_skip("NULL call through the runtime's handler dies",
                    "Valgrind stops with an internal error on the siginfo "
                    "wxjit re-queues for the default action");
    else if (wxtest_emulator_loses_requeued_fault())
        wxtest_skip("NULL call through the runtime's handler dies",
                    wxtest_emulator_loses_requeued_fault());
    else
        wxtest_expect_signal("NULL call through the runtime's handler",
                             wxtest_in_child(null_call_child, NULL),
                             SIGSEGV);

    CHECK(sigaction(SIGSEGV, &runtime_prev, NULL) == 0, "sigaction");
    CHECK_OK(wxjit_fault_handler_uninstall());
    CHECK_OK(wxjit_fault_handler_install());
    printf("  runtime handler installed after wxjit's: fault retried "
           "through wxjit_handle_fault (%lu call(s)); foreign fault chained "
           "to the default death; uninstall refused (EBUSY) while the "
           "runtime's handler is in front\n",
           atomic_load(&runtime_calls));
}

/* ---- repeated install/uninstall ------------------------------------------ */
static void sigaction_same(const struct sigaction *a,
                           const struct sigaction *b, const char *what)
{
    CHECK(a->sa_sigaction == b->sa_sigaction && a->sa_flags == b->sa_flags,
          "%s: SIGSEGV action %p/%#x, expected %p/%#x", what,
          (void *)a->sa_sigaction, a->sa_flags, (void *)b->sa_sigaction,
          b->sa_flags);
}

static void prev_handler(int sig, siginfo_t *info, void *uc)
{
    (void)info;
    (void)uc;
    _exit(sig == SIGSEGV ? 42 : 43);
}

struct cycler {
    atomic_bool stop;
    unsigned long cycles;
};

static void *cycler_main(void *arg)
{
    struct cycler *c = arg;
    while (!atomic_load(&c->stop)) {
        CHECK_OK(wxjit_fault_handler_install());
        CHECK_OK(wxjit_fault_handler_uninstall());
        c->cycles++;
    }
    return NULL;
}

static void reinstall_child(void *arg)
{
    (void)arg;
    struct sigaction prev, now;
    memset(&prev, 0, sizeof(prev));
    prev.sa_sigaction = prev_handler;
    prev.sa_flags = SA_SIGINFO;
    CHECK_OK(wxjit_fault_handler_uninstall()); /* the parent's install */
    CHECK(sigaction(SIGSEGV, &prev, NULL) == 0, "sigaction");
    CHECK(sigaction(SIGSEGV, NULL, &prev) == 0, "sigaction");
    for (int i = 0; i < 1000; i++) {
        CHECK_OK(wxjit_fault_handler_install());
        CHECK_OK(wxjit_fault_handler_install());
        CHECK_OK(wxjit_fault_handler_uninstall());
        CHECK(sigaction(SIGSEGV, NULL, &now) == 0, "sigaction");
        CHECK(now.sa_sigaction != prev.sa_sigaction, "removed too early");
        CHECK_OK(wxjit_fault_handler_uninstall());
        CHECK(sigaction(SIGSEGV, NULL, &now) == 0, "sigaction");
        sigaction_same(&now, &prev, "after install/uninstall");
    }
    CHECK_RET(wxjit_fault_handler_uninstall(), EINVAL);

    /* With one install held, a thread cycles install/uninstall while
     * faults are retried: the handler in place never changes. */
    CHECK_OK(wxjit_fault_handler_install());
    struct cycler c = {false, 0};
    pthread_t cyc;
    CHECK(pthread_create(&cyc, NULL, cycler_main, &c) == 0, "thread");
    for (int round = 0; round < 20; round++) {
        struct held x;
        hold(&x, round);
        struct plain_exec e = {x.fn, 0, 0};
        pthread_t t;
        CHECK(pthread_create(&t, NULL, plain_executor, &e) == 0, "thread");
        wxtest_wait_in_futex(&e.tid);
        release(&x);
        pthread_join(t, NULL);
        CHECK_EQ(e.result, round);
        CHECK_OK(wxjit_heap_destroy(x.h));
    }
    atomic_store(&c.stop, true);
    pthread_join(cyc, NULL);
    CHECK(c.cycles > 0, "the cycler never ran");
    CHECK_OK(wxjit_fault_handler_uninstall());
    printf("  1000 nested install/uninstall pairs restored the previous "
           "handler each time; 20 retried faults during %lu concurrent "
           "install/uninstall cycles\n", c.cycles);
    fflush(stdout);
    /* The previous handler still gets foreign faults. */
    call_null();
}

static void test_reinstall(void)
{
    wxtest_expect_exit("repeated install/uninstall, then a NULL call reaches "
                       "the previous handler",
                       wxtest_in_child(reinstall_child, NULL), 42);
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

static void test_nested_precise(void)
{
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
            CHECK_OK(wxjit_patch_atomic(w->h, imm,
                                        200 + 10 * w->which + i % 2, 4));
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
#if defined(WXTEST_TSAN)
    wxtest_skip("signal storm nested in the fault handler", "TSan delivers "
                "asynchronous signals at points of its own choosing");
    return;
#endif
    wxtest_expect_exit_within("SIGALRM timer and SIGUSR1 storm whose "
                              "handlers call code being patched",
                              nstorm_child, NULL, 20, 0);
}

int main(int argc, char **argv)
{
    wxtest_enter_wx_policy();
    page = (size_t)sysconf(_SC_PAGESIZE);
    CHECK_OK(wxjit_fault_handler_install());
    printf("test_signals: faults held by toggle pages; other heaps use "
           "the backend WXJIT_BACKEND picks\n");
    if (wxtest_selected(argc, argv, "altstack"))
        test_altstack();
    if (wxtest_selected(argc, argv, "locks"))
        test_locks();
    if (wxtest_selected(argc, argv, "storm"))
        test_storm();
    if (wxtest_selected(argc, argv, "runtime_after"))
        test_runtime_after();
    if (wxtest_selected(argc, argv, "reinstall"))
        test_reinstall();
    if (wxtest_selected(argc, argv, "nested_precise"))
        test_nested_precise();
    if (wxtest_selected(argc, argv, "nested_storm"))
        test_nested_storm();
    CHECK_EQ(wxtest_wx_mappings(), 0);
    CHECK_OK(wxjit_fault_handler_uninstall());
    printf("test_signals: ok\n");
    return 0;
}
