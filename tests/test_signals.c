/* Signal edge cases around the fault-retry handler, and its place among
 * the process's signal handlers:
 * - a fault retried on the alternate signal stack, when the thread's own
 *   stack could not take a signal frame;
 * - a fault taken while the faulting thread holds a lock the installer
 *   needs next, and installers that take wxjit's own locks (another
 *   heap's creation, installs and destruction, handler installs) while an
 *   executor sleeps in the handler;
 * - a runtime's own handler installed after wxjit's that calls
 *   wxjit_handle_fault first;
 * - repeated handler install/uninstall, while faults are retried.
 * Signal handlers that run JIT code themselves: test_nested_signals.c.
 * Stalls are detected without timing: the executor is known to sleep in
 * the handler when /proc shows it blocked in futex(2). Each scenario that
 * could hang runs in a child under alarm(), which turns a deadlock into a
 * reported failure. */
#include <pthread.h>
#include <stdatomic.h>

#include "emit.h"
#include "held_page.h"
#include "wxtest.h"

static size_t page;

static uint64_t retried(wxjit_heap *h)
{
    wxjit_stats s;
    CHECK_OK(wxjit_stats_get(h, &s));
    return s.faults_retried;
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
    stack_t ss = {.ss_sp = a->altstack ? malloc(size) : NULL, .ss_size = size},
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
    CHECK_OK(
        wxjit_install(h, code,
                      emit_call_on_stack(code, (uintptr_t)stack + page + 256,
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
        wxtest_skip("fault on the alternate signal stack",
                    "Valgrind delivers signals on stacks of its own");
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
                             wxtest_in_child(null_call_child, NULL), SIGSEGV);

    CHECK(sigaction(SIGSEGV, &runtime_prev, NULL) == 0, "sigaction");
    CHECK_OK(wxjit_fault_handler_uninstall());
    CHECK_OK(wxjit_fault_handler_install());
    printf("  runtime handler installed after wxjit's: fault retried "
           "through wxjit_handle_fault (%lu call(s)); foreign fault chained "
           "to the default death; uninstall refused (EBUSY) while the "
           "runtime's handler is in front\n",
           atomic_load(&runtime_calls));
}

/* ---- repeated install/uninstall ----------------------------------------- */
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
           "install/uninstall cycles\n",
           c.cycles);
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
    if (wxtest_selected(argc, argv, "runtime_after"))
        test_runtime_after();
    if (wxtest_selected(argc, argv, "reinstall"))
        test_reinstall();
    CHECK_EQ(wxtest_wx_mappings(), 0);
    CHECK_OK(wxjit_fault_handler_uninstall());
    printf("test_signals: ok\n");
    return 0;
}
