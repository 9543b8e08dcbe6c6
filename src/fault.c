/* The region registry and the fault-retry handler.
 *
 * Protocol (writer side in backend_toggle.c): a writer sets WRITING in a
 * page's word (seq++), flips the page RW, copies, flips it RX, flushes the
 * icache, clears WRITING (seq++) and wakes waiters. A thread that fetches an
 * instruction from the page in between takes SIGSEGV. The handler below
 * retries exactly those faults and declines every other one, keeping:
 *   I1 no mprotect, no lock, no allocation: async-signal-safe, and it adds
 *      no way to make memory writable and executable;
 *   I2 a declined fault is untouched, so whoever handles it next sees what
 *      the kernel delivered;
 *   I3 no endless retry: a fetch fault that repeats at the same address,
 *      from the same stack pointer, in the same heap, while the page word
 *      is unchanged and not WRITING is declined (a retried instruction
 *      faults again with the same stack pointer; a signal handler that ran
 *      JIT code on top of a fault still to be delivered did not; a heap
 *      created again at the same address starts its page words afresh);
 *   I4 no self-deadlock: a thread never waits for a page it holds itself;
 *   I5 nesting: the handler runs with SIGSEGV unblocked (SA_NODEFER), so a
 *      signal handler that interrupts a wait and faults on another page
 *      being written is retried too, not killed by the kernel; every
 *      counter it raises it lowers before it returns. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "arch/arch.h"
#include "code_changed.h"
#include "internal.h"

/* ---- region registry ----------------------------------------------------
 * A fixed table keeps lookup lock-free and allocation-free: 4096 chunks of
 * the default 4 MiB cover 16 GiB of code, far beyond any JIT's needs. */
#define MAX_REGIONS 4096

static struct wxj_chunk *_Atomic regions[MAX_REGIONS];
static _Atomic size_t regions_high; /* slots [0, high) may be in use */
/* Handlers looking a fault up in the table, and, per slot, handlers that
 * found that slot's chunk and use it (possibly asleep, waiting for one of
 * its pages). Two counts so that a handler asleep on one heap's page does
 * not hold up the destruction of another heap, which may be what the
 * page's writer is doing before it commits. */
static _Atomic uint32_t handlers_inside;
static _Atomic uint32_t handlers_using[MAX_REGIONS];
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;


int wxj_region_register(struct wxj_chunk *chunk)
{
    wxj_lock_shared(&registry_lock); /* a new chunk, inside an operation */
    size_t high = atomic_load_explicit(&regions_high, memory_order_relaxed);
    size_t slot = 0;
    while (slot < high && atomic_load_explicit(&regions[slot],
                                               memory_order_relaxed))
        slot++;
    if (slot == MAX_REGIONS) {
        pthread_mutex_unlock(&registry_lock);
        return ENOMEM;
    }
    chunk->region_slot = (int)slot;
    /* release: a handler that finds the chunk sees its fields. */
    atomic_store_explicit(&regions[slot], chunk, memory_order_release);
    if (slot == high)
        atomic_store_explicit(&regions_high, high + 1, memory_order_release);
    pthread_mutex_unlock(&registry_lock);
    return 0;
}

void wxj_region_unregister(struct wxj_chunk *chunk)
{
    pthread_mutex_lock(&registry_lock);
    atomic_store(&regions[chunk->region_slot], NULL);
    pthread_mutex_unlock(&registry_lock);
    /* The chunk's metadata is freed next: wait until no handler can still
     * be reading it. A handler enters (seq_cst) before loading any slot, so
     * one that entered after the store above cannot find this chunk; one
     * that found it counted itself as its user before leaving the lookup
     * (seq_cst too), so it is seen below once the lookups have drained. */
    while (atomic_load(&handlers_inside) != 0)
        wxj_os_yield();
    while (atomic_load(&handlers_using[chunk->region_slot]) != 0)
        wxj_os_yield();
}

void wxj_registry_lock(void)
{
    pthread_mutex_lock(&registry_lock);
}

/* The threads asleep in the parent's handlers do not exist in a fork
 * child, and their counts would hold its wxj_region_unregister forever.
 * The only thread there cannot be destroying a heap from a signal handler
 * stacked on a fault handler of its own (heap destruction is not
 * async-signal-safe), so none of the child's handlers needs counting;
 * one that was running at the fork lowers the counts on its way out, which
 * stop at zero (leave()). */
void wxj_registry_after_fork(void)
{
    atomic_store(&handlers_inside, 0);
    for (size_t i = 0; i < MAX_REGIONS; i++)
        atomic_store(&handlers_using[i], 0);
}

/* seq_cst, as the increments (see unregister); never below zero. */
static void leave(_Atomic uint32_t *count)
{
    uint32_t n = atomic_load(count);
    while (n && !atomic_compare_exchange_weak(count, &n, n - 1))
        ;
}

void wxj_registry_unlock(void)
{
    pthread_mutex_unlock(&registry_lock);
}

static struct wxj_chunk *region_find(uintptr_t addr)
{
    size_t high = atomic_load_explicit(&regions_high, memory_order_acquire);
    for (size_t i = 0; i < high; i++) {
        struct wxj_chunk *c =
            atomic_load_explicit(&regions[i], memory_order_acquire);
        if (c && addr - (uintptr_t)c->base < c->size)
            return c;
    }
    return NULL;
}

/* ---- the retry decision -------------------------------------------------- */
static _Atomic uint64_t total_retried, total_declined;

/* The last fault this thread retried on a page that was not WRITING (I3).
 * initial-exec TLS: a plain access, safe in a signal handler. */
static __thread uintptr_t last_addr __attribute__((tls_model("initial-exec")));
static __thread uint32_t last_state
    __attribute__((tls_model("initial-exec")));
static __thread uintptr_t last_sp __attribute__((tls_model("initial-exec")));
static __thread uint64_t last_heap __attribute__((tls_model("initial-exec")));

/* Sleeps while the page is WRITING; returns the word that ended the wait.
 * Counted in pg->waiting meanwhile, so that the writer lets us run before
 * it takes the page again (backend_toggle.c, let_waiters_run). */
static uint32_t wait_while_writing(struct wxj_page *pg, uint32_t s)
{
    atomic_fetch_add_explicit(&pg->waiting, 1, memory_order_relaxed);
    while (s & WXJ_PAGE_WRITING) {
        if ((s & WXJ_PAGE_WAITERS) ||
            atomic_compare_exchange_strong_explicit(
                &pg->state, &s, s | WXJ_PAGE_WAITERS, memory_order_acquire,
                memory_order_acquire))
            wxj_os_futex_wait(&pg->state, s | WXJ_PAGE_WAITERS);
        /* acquire: pairs with the writer's release, so the retried fetch
         * comes after the RX flip and the icache flush. */
        s = atomic_load_explicit(&pg->state, memory_order_acquire);
    }
    atomic_fetch_sub_explicit(&pg->waiting, 1, memory_order_relaxed);
    return s;
}

/* Decides for a fault inside chunk; true means "retry the instruction". */
static bool retry_fault(struct wxj_chunk *chunk, uintptr_t addr,
                        uintptr_t sp)
{
    struct wxj_page *pg =
        &chunk->pages[(addr - (uintptr_t)chunk->base) /
                      chunk->heap->page_size];
    uint32_t s = atomic_load_explicit(&pg->state, memory_order_acquire);
    if (s == 0)
        return false; /* the page never held code: not a write window */
    if (s & WXJ_PAGE_WRITING) {
        if (atomic_load_explicit(&pg->writer, memory_order_relaxed) ==
            wxj_os_tid())
            return false; /* I4: we hold it; waiting would never end */
        s = wait_while_writing(pg, s);
    } else if (last_addr == addr && last_state == s && last_sp == sp &&
               last_heap == chunk->heap->id) {
        return false; /* I3: retried once already with nothing changed */
    }
    /* Either we waited for a window to close, or the writer closed it
     * between the fault and our load (the page is RX now): one retry. */
    last_addr = addr;
    last_state = s;
    last_sp = sp;
    last_heap = chunk->heap->id;
    return true;
}

int wxjit_handle_fault(int sig, void *siginfo, void *ucontext)
{
    siginfo_t *info = siginfo;
    /* Only a protection fault on a present page can be a write window:
     * Linux reports those as SIGSEGV/SEGV_ACCERR. */
    if (sig != SIGSEGV || !info || !ucontext || info->si_code != SEGV_ACCERR)
        return 0;
    uintptr_t addr = (uintptr_t)info->si_addr;
    uintptr_t pc = wxj_arch_pc((const ucontext_t *)ucontext);
    /* An instruction fetch faults at its own address, or on the next page
     * when it straddles a page boundary; any other address is data. */
    bool fetch = addr - pc < WXJ_ARCH_MAX_INSN;

    atomic_fetch_add(&handlers_inside, 1); /* seq_cst: see unregister */
    struct wxj_chunk *chunk = region_find(addr);
    int slot = chunk ? chunk->region_slot : -1;
    if (chunk)
        atomic_fetch_add(&handlers_using[slot], 1);
    leave(&handlers_inside);
    bool retry = fetch && chunk &&
                 retry_fault(chunk, addr,
                             wxj_arch_sp((const ucontext_t *)ucontext));
    if (chunk) {
        wxj_count(retry ? &chunk->heap->count.faults_retried
                        : &chunk->heap->count.faults_forwarded,
                  1);
        leave(&handlers_using[slot]);
    }

    wxj_count(retry ? &total_retried : &total_declined, 1);
    return retry;
}

int wxjit_fault_counts(uint64_t *retried, uint64_t *declined)
{
    if (retried)
        *retried = atomic_load_explicit(&total_retried, memory_order_relaxed);
    if (declined)
        *declined =
            atomic_load_explicit(&total_declined, memory_order_relaxed);
    return 0;
}

/* ---- the process-wide handler and forwarding ---------------------------- */
static pthread_mutex_t install_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned install_depth;
/* Written only while wxjit's handler is not installed, read by it. */
static struct sigaction previous;

/* Delivers a declined fault as if wxjit had never been there (I2). */
static void forward(int sig, siginfo_t *info, void *ucontext)
{
    struct sigaction prev = previous;
    bool from_kernel = info->si_code > 0; /* a real fault, not kill(2) */

    if (prev.sa_flags & SA_SIGINFO || (prev.sa_handler != SIG_DFL &&
                                       prev.sa_handler != SIG_IGN)) {
        /* Run it with the mask the kernel would have given it: its
         * sa_mask, plus the signal unless it asked for SA_NODEFER. Ours
         * runs with nothing more blocked than the thread had (I5). */
        sigset_t saved, mask = prev.sa_mask;
        if (!(prev.sa_flags & SA_NODEFER))
            sigaddset(&mask, sig);
        pthread_sigmask(SIG_BLOCK, &mask, &saved);
        if (prev.sa_flags & SA_RESETHAND)
            previous.sa_handler = SIG_DFL, previous.sa_flags = 0;
        if (prev.sa_flags & SA_SIGINFO)
            prev.sa_sigaction(sig, info, ucontext);
        else
            prev.sa_handler(sig);
        pthread_sigmask(SIG_SETMASK, &saved, NULL);
        return;
    }
    if (prev.sa_handler == SIG_IGN && !from_kernel)
        return; /* an ignored kill(2) SIGSEGV stays ignored */
    /* Default action (the kernel forces it for an ignored fault too). The
     * same siginfo is queued to this thread with SIG_DFL in place; it is
     * delivered as the handler returns (blocked until then: ours runs
     * with SA_NODEFER), before the instruction could run again: the same
     * death, core dump and exit status, even if another thread changed
     * the page meanwhile. */
    struct sigaction dfl;
    sigset_t block;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, NULL);
    sigemptyset(&block);
    sigaddset(&block, sig);
    pthread_sigmask(SIG_BLOCK, &block, NULL);
    syscall(SYS_rt_tgsigqueueinfo, getpid(), wxj_os_tid(), sig, info);
}

static void fault_handler(int sig, siginfo_t *info, void *ucontext)
{
    if (!wxjit_handle_fault(sig, info, ucontext))
        forward(sig, info, ucontext);
}

int wxjit_fault_handler_install(void)
{
    int err = 0;
    pthread_mutex_lock(&install_lock);
    if (install_depth == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_sigaction = fault_handler;
        sigemptyset(&sa.sa_mask);
        /* SA_ONSTACK: a fault on a thread with an alternate stack (stack
         * overflow handling in runtimes) must not need the main stack.
         * SA_NODEFER: see I5; not under Valgrind (3.19), which then blocks
         * the signal in the handler and stops delivering fetch faults. */
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART |
                      (wxj_under_valgrind() ? 0 : SA_NODEFER);
        if (sigaction(SIGSEGV, NULL, &previous) != 0 ||
            sigaction(SIGSEGV, &sa, NULL) != 0)
            err = errno;
    }
    if (err == 0)
        install_depth++;
    pthread_mutex_unlock(&install_lock);
    return err;
}

int wxjit_fault_handler_uninstall(void)
{
    int err = 0;
    pthread_mutex_lock(&install_lock);
    if (install_depth == 0) {
        err = EINVAL;
    } else if (install_depth == 1) {
        struct sigaction now;
        if (sigaction(SIGSEGV, NULL, &now) != 0)
            err = errno;
        else if (!(now.sa_flags & SA_SIGINFO) ||
                 now.sa_sigaction != fault_handler)
            err = EBUSY;
        else if (sigaction(SIGSEGV, &previous, NULL) != 0)
            err = errno;
    }
    if (err == 0)
        install_depth--;
    pthread_mutex_unlock(&install_lock);
    return err;
}
