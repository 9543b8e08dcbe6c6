/* Ops on heaps, faults and the process: heap create and destroy, stats,
 * hand-made faults for wxjit_handle_fault, handler install, backend
 * queries, and the ops that are about threads and processes rather than
 * code: a worker thread's exit (its pool is adopted by the next thread
 * that needs one), fork (the child checks the code it inherited and uses
 * its heaps), failure injection for the next op, and publishing functions
 * to the concurrent mode's executors. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* REG_RIP, gettid */
#endif
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "../src/arch/arch.h"
#include "fuzz.h"

#define FORK_CHILD_SECONDS 10

void op_create(struct input *in)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    unsigned b = u8(in), c = u8(in), m = u8(in), f = u8(in);
    bool null_opts = b % 16 == 15;
    o.backend = b % 8 < 4    ? WXJIT_BACKEND_AUTO
                : b % 8 < 7  ? (wxjit_backend)(b % 8 - 3)
                : b / 8 % 2  ? (wxjit_backend)(5 + b / 16 % 100)
                             : WXJIT_BACKEND_PROCMEM;
    o.chunk_size = c % 4 == 0   ? 0
                   : c % 4 == 3 ? WXJ_MAX_CHUNK + page * (1 + c / 4 % 2)
                                : page * (1 + c / 4 % SMALL_CHUNK_PAGES);
    o.max_bytes = m % 2 ? page * (m / 2 % 96) : 0;
    /* f % 4 == 3: one flag bit, known (NO_WRITABLE_ALIAS...) or not. */
    o.flags = f % 4 == 1   ? WXJIT_HEAP_RW_ON_DEMAND
              : f % 4 == 2 ? WXJIT_HEAP_ALLOW_RWX
              : f % 4 == 3 ? 1u << (2 + f / 4 % 30)
              : f / 4 % 2  ? WXJIT_HEAP_DEFER_TRAP_FILL
                           : 0;
    if (f / 4 % 16 == 15)
        o.size = sizeof(o) - 1 - f / 64;

    int want = 0;
    const unsigned known = WXJIT_HEAP_RW_ON_DEMAND | WXJIT_HEAP_ALLOW_RWX |
                           WXJIT_HEAP_NO_WRITABLE_ALIAS |
                           WXJIT_HEAP_DEFER_TRAP_FILL | WXJIT_HEAP_PERF_MAP |
                           WXJIT_HEAP_JITDUMP | WXJIT_HEAP_GDB |
                           WXJIT_HEAP_UNWIND;
    bool no_alias = o.flags & WXJIT_HEAP_NO_WRITABLE_ALIAS;
    wxjit_backend id =
        o.backend == WXJIT_BACKEND_AUTO ? env_backend : o.backend;
    if (!null_opts) {
        if (o.size < sizeof(o) || o.chunk_size > WXJ_MAX_CHUNK ||
            (o.flags & ~known) || (unsigned)o.backend > 4)
            want = EINVAL;
        else if (o.backend == WXJIT_BACKEND_RWX &&
                 !(o.flags & WXJIT_HEAP_ALLOW_RWX))
            want = EPERM;
        else if ((o.backend != WXJIT_BACKEND_RWX &&
                  (o.flags & WXJIT_HEAP_ALLOW_RWX)) ||
                 ((o.flags & WXJIT_HEAP_RW_ON_DEMAND) &&
                  (no_alias || (o.backend != WXJIT_BACKEND_DUALMAP &&
                                o.backend != WXJIT_BACKEND_AUTO))) ||
                 (no_alias && (id == WXJIT_BACKEND_DUALMAP ||
                               id == WXJIT_BACKEND_RWX)) ||
                 ((o.flags & WXJIT_HEAP_DEFER_TRAP_FILL) &&
                  o.backend != WXJIT_BACKEND_TOGGLE &&
                  o.backend != WXJIT_BACKEND_PROCMEM &&
                  o.backend != WXJIT_BACKEND_AUTO))
            want = EINVAL;
        else if (o.backend == WXJIT_BACKEND_RWX)
            want = EACCES; /* the W^X policy refuses the probe's mapping */
    }
    int slot = -1;
    for (int i = 0; i < MAX_HEAPS && slot < 0; i++)
        if (!heaps[i].alive)
            slot = i;
    if (want == 0 && slot < 0)
        return; /* table full: only bad options are tried */
    wxjit_heap *h = NULL;
    int err = wxjit_heap_create(null_opts ? NULL : &o, &h);
    if (err && err != want && injected(-1, NULL, err, "heap_create")) {
        FUZZ_CHECK(h == NULL, "out-parameter written on failure");
        return;
    }
    EXPECT(err, want);
    if (want) {
        FUZZ_CHECK(h == NULL, "out-parameter written on failure");
        return;
    }
    struct mheap *mh = &heaps[slot];
    memset(mh, 0, sizeof(*mh));
    mh->h = h;
    mh->alive = true;
    mh->chunk_size = null_opts || !o.chunk_size ? WXJ_DEFAULT_CHUNK
                                                : o.chunk_size;
    mh->max_bytes = null_opts ? 0 : o.max_bytes;
    EXPECT(wxjit_heap_backend(h, &mh->backend), 0);
    wxjit_backend expect = null_opts || o.backend == WXJIT_BACKEND_AUTO
                               ? env_backend
                               : o.backend;
    FUZZ_CHECK(mh->backend == expect, "backend %d, expected %d",
               (int)mh->backend, (int)expect);
    mh->defer = !null_opts && (o.flags & WXJIT_HEAP_DEFER_TRAP_FILL) &&
                (mh->backend == WXJIT_BACKEND_TOGGLE ||
                 mh->backend == WXJIT_BACKEND_PROCMEM);
    mh->on_demand = !null_opts && (o.flags & WXJIT_HEAP_RW_ON_DEMAND) &&
                    mh->backend == WXJIT_BACKEND_DUALMAP;
    /* An injected EACCES looks to the probe for atomic stores like a
     * policy that never lets written pages run (procmem): none then. Any
     * other injected failure fails the creation. */
    mh->atomic_refused = injecting && injecting_err == EACCES &&
                         mh->backend == WXJIT_BACKEND_PROCMEM;
}

void destroy_heap(int hi)
{
    /* Open reservations are given back first, each by a thread allowed
     * to: their scratch buffers are the caller's to end (a destroy would
     * leak them). */
    for (int i = 0; i < MAX_RES; i++)
        if (res[i].used && res[i].heap == hi)
            abort_open(&res[i]);
    /* Windows may stay open: the heap takes them with it, and their
     * threads hold nothing any more (no EDEADLK from them). */
    for (int i = 0; i < MAX_WIN; i++)
        if (wins[i].used && wins[i].heap == hi)
            drop_win(&wins[i], false);
    EXPECT(wxjit_heap_destroy(heaps[hi].h), 0);
    for (int i = 0; i < MAX_FUNCS; i++)
        if (funcs[i].used && funcs[i].heap == hi) {
            remember_ptr(funcs[i].exec);
            drop_func(&funcs[i]);
        }
    drop_ghosts(hi);
    dead[n_dead++ % MAX_STALE] = heaps[hi].h;
    if (n_dead > MAX_STALE)
        n_dead = MAX_STALE + n_dead % MAX_STALE;
    heaps[hi].alive = false;
}

void op_destroy(struct input *in)
{
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    if (hi < 0)
        EXPECT(wxjit_heap_destroy(h), EINVAL);
    else if (share_drop_heap(hi))
        destroy_heap(hi);
}

void op_stats(struct input *in)
{
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    wxjit_stats s;
    bool null_out = u8(in) % 2;
    EXPECT(wxjit_stats_get(h, null_out ? NULL : &s),
           hi >= 0 && !null_out ? 0 : EINVAL);
}

/* A hand-made fault: the handler decides from the siginfo, the PC and the
 * page word alone, so the model predicts its answer exactly. */
void op_handle_fault(struct input *in)
{
    unsigned sel = u8(in), psel = u8(in);
    siginfo_t si;
    ucontext_t uc;
    memset(&si, 0, sizeof(si));
    memset(&uc, 0, sizeof(uc));
    int sig = sel % 8 == 7 ? SIGBUS : SIGSEGV;
    si.si_signo = sig;
    si.si_code = sel / 8 % 4 == 3 ? SEGV_MAPERR
                 : sel / 8 % 4 == 2 ? SI_USER
                                    : SEGV_ACCERR;
    struct mfunc *f = pick_func(psel);
    int hi = -1;
    uint8_t *addr;
    switch (psel % 4) {
    case 0: addr = f ? f->exec : NULL; break;
    case 1: {
        wxjit_heap *h = pick_heap(in, &hi);
        struct wxj_chunk *c = hi >= 0 ? h->chunks : NULL;
        addr = c ? c->base + u16(in) % c->size : NULL;
        break;
    }
    case 2: addr = (uint8_t *)(uintptr_t)u32(in); break;
    default: addr = f ? f->exec + u8(in) % (f->n * WXJ_GRANULE) : NULL; break;
    }
    si.si_addr = addr;
    /* Fetch faults land in [pc, pc + 15); larger distances are data. */
    uintptr_t pc = (uintptr_t)addr - u8(in) % 24;
    uc.uc_mcontext.gregs[REG_RIP] = (greg_t)pc;
    unsigned nulls = u8(in) % 16;
    void *info = nulls == 14 ? NULL : &si, *ctx = nulls == 15 ? NULL : &uc;

    int want = 0;
    struct wxj_chunk *chunk = NULL;
    if (sig == SIGSEGV && info && ctx && si.si_code == SEGV_ACCERR) {
        for (int i = 0; i < MAX_HEAPS && !chunk; i++)
            if ((chunk = chunk_of(i, addr)))
                hi = i;
    }
    if (chunk) {
        struct wxj_page *pg =
            &chunk->pages[(size_t)(addr - chunk->base) / page];
        uint32_t s = atomic_load(&pg->state);
        bool fetch = (uintptr_t)addr - pc < WXJ_ARCH_MAX_INSN;
        /* A page another thread holds: the handler would wait for it, and
         * no op comes to release it. One this thread holds: declined (I4). */
        if (fetch && (s & WXJ_PAGE_WRITING) &&
            atomic_load(&pg->writer) != thread_tid(cur))
            return;
        if (fetch && s != 0 && !(s & WXJ_PAGE_WRITING) &&
            !(fault_last_addr[cur] == (uintptr_t)addr &&
              fault_last_state[cur] == s &&
              fault_last_heap[cur] == chunk->heap->id)) {
            want = 1;
            fault_last_addr[cur] = (uintptr_t)addr;
            fault_last_state[cur] = s;
            fault_last_heap[cur] = chunk->heap->id;
        }
        if (want)
            heaps[hi].retried++;
        else
            heaps[hi].forwarded++;
    }
    FUZZ_CHECK(wxjit_handle_fault(sig, info, ctx) == want,
               "handle_fault(%d, code %d, addr %p, pc %#lx) != %d", sig,
               si.si_code, (void *)addr, (unsigned long)pc, want);
}

void op_handler(struct input *in)
{
    (void)in;
    struct sigaction before, after;
    sigaction(SIGSEGV, NULL, &before);
    EXPECT(wxjit_fault_handler_install(), 0);
    EXPECT(wxjit_fault_handler_uninstall(), 0);
    sigaction(SIGSEGV, NULL, &after);
    FUZZ_CHECK(before.sa_sigaction == after.sa_sigaction &&
                   before.sa_flags == after.sa_flags,
               "nested install/uninstall changed the SIGSEGV action");
}

void op_backend(struct input *in)
{
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    unsigned sel = u8(in);
    wxjit_backend b;
    EXPECT(wxjit_heap_backend(h, sel % 8 == 7 ? NULL : &b),
           hi >= 0 && sel % 8 != 7 ? 0 : EINVAL);
    const char *name;
    wxjit_backend any = (wxjit_backend)(sel % 6);
    EXPECT(wxjit_backend_name(any, sel % 16 == 15 ? NULL : &name),
           (unsigned)any < 5 && sel % 16 != 15 ? 0 : EINVAL);
}

/* Worker t exits; a new thread takes its slot. Its pool is retired, and
 * adopted by the next thread that needs a pool of that heap. Its scratch
 * reservations stay open for any thread to commit or abort. */
void op_thread_exit(struct input *in)
{
    int t = cur ? cur : 1 + (int)(u8(in) % (NTHREADS - 1));
    cur = 0; /* from the main thread: a thread cannot join itself */
    for (int i = 0; i < MAX_RES; i++) {
        struct mres *m = &res[i];
        if (!m->used || m->owner != t)
            continue;
        if (!m->in_place)
            m->owner = -1;
        else if (FUZZ_KNOWN_DEFECT_8)
            abort_open(m); /* else its pages stay held forever */
    }
    TRACE("thread %d exits\n", t);
    thread_restart(t);
    windows_thread_exited(t);
    for (int i = 0; i < MAX_RES; i++)
        if (!FUZZ_KNOWN_DEFECT_8 && res[i].used && res[i].owner == t &&
            res[i].in_place)
            drop_res(&res[i]); /* aborted by wxjit at the thread's exit */
}

/* The fork child: the forking thread's windows are still open and close,
 * other threads' are closed; what was live runs, the heaps take a new
 * function and free it, and are destroyed. Pages the forking thread
 * holds stay held (its own in-place reservations); others' are released
 * (fork.c). */
NO_COVERAGE static void fork_child(void)
{
    windows_fork_child();
    for (int i = 0; i < MAX_FUNCS; i++) {
        struct mfunc *f = &funcs[i];
        size_t len = f->n * WXJ_GRANULE;
        bool own_held = f->used &&
                        held_pages(f->heap, f->exec, len, NULL) &&
                        !held_by_other(f->heap, f->exec, len);
        if (f->used && f->callable && !own_held) {
            int got = call(f->exec);
            FUZZ_CHECK(got == f->value, "fork child: %p returned %d, not %d",
                       (void *)f->exec, got, f->value);
        }
    }
    static const uint8_t code[] = {0xb8, 0x2a, 0, 0, 0, 0xc3}; /* ret 42 */
    for (int hi = 0; hi < MAX_HEAPS; hi++) {
        if (!heaps[hi].alive)
            continue;
        void *exec = NULL;
        int err = wxjit_install(heaps[hi].h, code, sizeof(code), 0, &exec);
        FUZZ_CHECK(err == 0 || (err == ENOMEM && heaps[hi].max_bytes),
                   "fork child: install: %s", strerror(err));
        if (err == 0) {
            FUZZ_CHECK(call(exec) == 42, "fork child: new code");
            EXPECT(wxjit_free(heaps[hi].h, exec), 0);
        }
        EXPECT(wxjit_heap_destroy(heaps[hi].h), 0);
    }
    _exit(0);
}

/* One fork per input at most, and only for one operand value in four: a
 * fork costs milliseconds (a sanitized process's page tables, dualmap's
 * copy of every chunk), hundreds of ops' worth. */
static bool forked;

void fork_reset(void)
{
    forked = false;
}

NO_COVERAGE void op_fork(struct input *in)
{
    if (u8(in) % 4 || forked)
        return;
    forked = true;
    TRACE("fork\n");
    fflush(stderr);
    pid_t pid = fork();
    FUZZ_CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0)
        fork_child();
    int status = 0;
    long waited_us = 0;
    for (long nap = 20;; nap = nap < 5000 ? nap * 2 : nap) {
        pid_t got = waitpid(pid, &status, WNOHANG);
        FUZZ_CHECK(got >= 0, "waitpid: %s", strerror(errno));
        if (got == pid)
            break;
        if (waited_us > FORK_CHILD_SECONDS * 1000000L) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            FUZZ_CHECK(0, "fork child hung for %d s", FORK_CHILD_SECONDS);
        }
        struct timespec ts = {0, nap * 1000};
        nanosleep(&ts, NULL);
        waited_us += nap;
    }
    FUZZ_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
               "fork child: status %#x (%s)", status,
               WIFSIGNALED(status) ? strsignal(WTERMSIG(status)) : "exit");
}

/* ---- failure injection ----------------------------------------------------
 * OP_INJECT makes the thread of the next op that calls into wxjit fail a
 * system call of a kind (the nth from now, once or from then on) with an
 * errno; the op then accepts "failed and changed nothing" or "succeeded". */
static struct {
    bool armed;
    enum wxj_os_call kind;
    unsigned nth, count;
    int err;
} pending;

void op_inject(struct input *in)
{
    static const enum wxj_os_call kinds[] = {
        WXJ_CALL_MMAP, WXJ_CALL_MPROTECT, WXJ_CALL_OBJECT,
        WXJ_CALL_FTRUNCATE, WXJ_CALL_PWRITE};
    static const int errs[] = {ENOMEM, EACCES, EMFILE, EAGAIN, ENOSPC, EIO};
    unsigned k = u8(in), e = u8(in);
    pending.armed = true;
    pending.kind = kinds[k % 5];
    pending.nth = 1 + k / 5 % 4;
    pending.count = k / 20 % 2 ? 1000 : 1;
    pending.err = errs[e % 6];
}

bool inject_arm(enum op op)
{
    switch (op) {
    case OP_CREATE: case OP_RESERVE: case OP_COMMIT: case OP_ABORT:
    case OP_INSTALL: case OP_PATCH: case OP_PATCH_ATOMIC: case OP_FREE:
    case OP_COMMIT_BATCH: case OP_WINDOW_OPEN: case OP_WINDOW_CLOSE:
        break;
    default:
        return false;
    }
    if (!pending.armed)
        return false;
    pending.armed = false;
    TRACE("inject: call %u (x%u) of kind %d fails with %s\n", pending.nth,
          pending.count, (int)pending.kind, strerror(pending.err));
    wxj_os_inject(pending.kind, pending.nth, pending.count, pending.err);
    injecting = true;
    injecting_err = pending.err;
    return true;
}

void inject_disarm(void)
{
    wxj_os_inject(WXJ_CALL_MMAP, 0, 0, 0);
    injecting = false;
    pending.armed = false;
}

void op_share(struct input *in)
{
    struct mfunc *f = pick_func(u8(in));
    if (f)
        share_toggle(f);
}
