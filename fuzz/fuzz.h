/* Declarations shared by the files of the API fuzzer: limits, the check
 * macros, the model's types and tables, and each file's entry points.
 * Layout (one job per file):
 *   input.c       reading the byte stream: integers, sizes, alignments, code
 *   model.c       the model: heaps, live functions, open reservations, and
 *                 picking arguments (valid, stale, forged) from it
 *   checks.c      the invariant checks run after every op
 *   ops_code.c    ops on code: reserve, commit, batch, abort, install,
 *                 patch, free
 *   ops_window.c  write windows on live code: open, write, close
 *   ops_other.c   ops on heaps, faults, threads, fork, failure injection
 *   threads.c     the worker threads that ops run on, one op at a time
 *   concurrent.c  the executor threads of the concurrent mode
 *   fuzz_api.c    the libFuzzer entry points and the op loop */
#ifndef FUZZ_H
#define FUZZ_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/internal.h"

#define MAX_HEAPS 3
#define MAX_FUNCS 48
#define MAX_RES 6
#define MAX_STALE 8
#define MAX_WIN 8
#define MAX_STEPS 96
#define MAX_CODE 65536 /* largest valid size the harness asks for */
#define SMALL_CHUNK_PAGES 64
#define FUZZ_SEGMENT 4096u /* WXJ_SEGMENT in src/chunk.c */
/* Thread 0 is the main thread, 1..NTHREADS-1 are workers. */
#define NTHREADS 5
#define TRAP 0xcc

/* Strict mode also replays stale and forged reservations that match an
 * open reservation in everything but wxjit's own record of it (a copy of
 * a reservation committed before, whose space was reserved again; a
 * flipped in-place flag; a changed size). wxjit refuses them since its
 * reservations are recorded (src/reservations.c); 0 leaves them out. */
#ifndef FUZZ_STRICT_RESERVATIONS
#define FUZZ_STRICT_RESERVATIONS 1
#endif

/* Known defects (issue 11) whose expectation the model guards until the
 * library is fixed; 1 means "the library still has it". Each guard is
 * listed in fuzz/README.md with its regression input. */
#ifndef FUZZ_KNOWN_DEFECT_8 /* thread exit leaves its in-place window open */
#define FUZZ_KNOWN_DEFECT_8 0
#endif
#ifndef FUZZ_KNOWN_DEFECT_9 /* dualmap: another thread commits in place */
#define FUZZ_KNOWN_DEFECT_9 0
#endif


/* The checks are not what is being fuzzed: their loops would only slow
 * the fuzzer down and flood it with meaningless coverage. */
#if defined(__clang__)
#define NO_COVERAGE __attribute__((no_sanitize("coverage")))
#else
#define NO_COVERAGE
#endif

#define FUZZ_CHECK(cond, ...)                                                \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "fuzz_api: %s:%d: check failed: %s: ", __FILE__, \
                    __LINE__, #cond);                                        \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
            abort();                                                         \
        }                                                                    \
    } while (0)

#define EXPECT(call, want)                                                   \
    do {                                                                     \
        int got_ = (call), want_ = (want);                                   \
        FUZZ_CHECK(got_ == want_, "returned %d (%s), expected %d (%s)",      \
                   got_, strerror(got_), want_, strerror(want_));            \
    } while (0)

#define TRACE(...)                                                           \
    do {                                                                     \
        if (trace) {                                                         \
            fprintf(stderr, "fuzz_api:   [thread %d] ", cur);                \
            fprintf(stderr, __VA_ARGS__);                                    \
        }                                                                    \
    } while (0)

/* ---- input.c ------------------------------------------------------------- */
struct input {
    const uint8_t *p;
    size_t left;
};

struct code {
    uint8_t *bytes;
    size_t len, code_len, imm_at; /* code_len 0: too short to call */
    int32_t value;
};

unsigned u8(struct input *in);
unsigned u16(struct input *in);
uint32_t u32(struct input *in);
void make_code(struct input *in, size_t size, struct code *out);
struct mheap;
size_t pick_size(struct input *in, const struct mheap *m, bool *valid);
size_t pick_align(struct input *in, bool *valid);

/* ---- model.c --------------------------------------------------------------- */
struct mheap {
    wxjit_heap *h;
    bool alive;
    wxjit_backend backend;
    size_t chunk_size, max_bytes;
    uint64_t installs, frees, retried, forwarded;
    bool defer; /* WXJIT_HEAP_DEFER_TRAP_FILL in effect (toggle, procmem) */
    bool on_demand; /* dualmap with WXJIT_HEAP_RW_ON_DEMAND: no windows */
    bool atomic_refused; /* patch_atomic may be ENOTSUP: created while an
                            EACCES was injected (procmem) */
};

/* Code freed on a heap with deferred trap fills: its granules may keep
 * these bytes until a window over their page fills them. One per free at
 * most, so MAX_STEPS of them never run out within an input. */
struct ghost {
    int heap;
    uint8_t *exec;
    size_t n;
    uint8_t *bytes;
};

/* A live function: its block of n granules and the bytes it must hold. */
struct mfunc {
    bool used;
    int heap;
    int thread;      /* that installed or committed it (messages) */
    uint8_t *exec;
    size_t n;
    size_t size;     /* committed bytes: patches must stay inside them */
    uint8_t *bytes;  /* n * WXJ_GRANULE expected bytes */
    size_t imm_at;   /* offset of the mov's imm32, if callable */
    size_t code_end; /* bytes from here on are never executed */
    bool callable;
    int32_t value;
    int shared;      /* concurrent mode: slot + 1 while published */
};

struct mres {
    bool used;
    int heap;
    int owner; /* thread that reserved it, -1 once that thread exited */
    wxjit_reservation r;
    bool in_place;
    size_t n;
    uint8_t *bytes; /* the r.size bytes written into the write view */
    size_t code_len, imm_at; /* code_len 0: not callable */
    int32_t value;
};

/* An open write window on live code (wxjit_window_open). On toggle and
 * dualmap its view is the code's own memory (the page itself, the RW
 * alias), so writes through it are in the function's bytes at once; on
 * procmem the view is a shadow copy, written over the code at close. */
struct mwin {
    bool used;
    int heap;
    int owner;         /* the thread that opened it */
    struct mfunc *f;   /* the function it is over */
    uint8_t *exec;
    size_t len;
    uint8_t *write;    /* the view wxjit handed out */
    uint8_t *pending;  /* procmem: the view's len bytes until close */
};

extern struct mheap heaps[MAX_HEAPS];
extern struct mfunc funcs[MAX_FUNCS];
extern struct mres res[MAX_RES];
extern struct mwin wins[MAX_WIN];
extern wxjit_heap *dead[MAX_STALE];
extern void *stale_ptrs[MAX_STALE];
extern wxjit_reservation stale_res[MAX_STALE];
extern unsigned n_dead, n_stale_ptr, n_stale_res;
extern size_t page;
extern bool trace;         /* FUZZ_TRACE=1: print each call */
extern bool concurrent;    /* FUZZ_MODE=concurrent */
extern wxjit_backend env_backend;
extern int cur;            /* the thread running the current op */
/* Failure injection armed for the current op (ops_other.c): a call may
 * then fail with any errno, and must change nothing when it does. */
extern bool injecting;
extern int injecting_err; /* the errno injected, while injecting */
/* The heap whose injected failure may have left a page abandoned (toggle:
 * writable, held for nobody, its executors waiting); -1 if none. The
 * header's contract: the next call on the heap makes it executable. */
extern int recover_heap;

size_t granules(size_t bytes);
size_t round_page(size_t v);
int call(const void *exec);
struct wxj_chunk *chunk_of(int hi, const void *p);
bool on_open_in_place(int hi, const uint8_t *a, size_t len,
                      const struct mres *except);
bool on_open_in_place_of(int hi, const uint8_t *a, size_t len,
                         const struct mres *except, int t);
/* toggle: a page of [a, a + len) is held from one call to another, by an
 * open in-place reservation (but except) or a window on live code. */
bool held_pages(int hi, const uint8_t *a, size_t len,
                const struct mres *except);
/* toggle: the same, by a thread other than the current one. */
bool held_by_other(int hi, const uint8_t *a, size_t len);
/* Windows of heap hi: the current thread's over some of the bytes of
 * [a, a + len), or on a page of it (every backend); another thread's
 * that excludes it (toggle: on one of its pages; elsewhere: over some of
 * its bytes). */
bool own_window_over(int hi, const uint8_t *a, size_t len);
bool own_window_pages(int hi, const uint8_t *a, size_t len);
bool other_window_over(int hi, const uint8_t *a, size_t len);
/* Whether thread t holds what others may wait for: a window on live code
 * or an in-place reservation. Such a thread never waits (EDEADLK). */
bool holds_long(int t);
/* A call blocked by another thread's hold: EDEADLK for a holder, else it
 * would wait, which with one op at a time never ends (WAITS: the op is
 * left out). 0 when not blocked. */
#define WAITS (-1)
int wait_rule(bool blocked);
struct mfunc *func_at(int hi, const uint8_t *p);
struct mfunc *func_holding(int hi, const uint8_t *p, size_t len);
struct mfunc *func_slot(void);
struct mres *res_slot(void);
struct mfunc *pick_func(unsigned sel);
struct mres *pick_open(unsigned sel);
void remember_ptr(void *p);
wxjit_heap *pick_heap(struct input *in, int *hi);
wxjit_reservation *pick_res(struct input *in, wxjit_reservation *tmp,
                            struct mres **open);
struct mfunc *add_func(int hi, uint8_t *exec, const uint8_t *bytes,
                       size_t used, size_t code_len, size_t imm_at,
                       int32_t value);
void drop_func(struct mfunc *f);
/* f was freed: on a deferring heap its bytes become a ghost. */
void free_func(struct mfunc *f);
/* The bytes freed code left at granule address p that a pending trap
 * fill may keep (the newest ghost there), or NULL. */
const uint8_t *ghost_at(int hi, const uint8_t *p);
void drop_ghosts(int hi); /* all of heap hi's (-1: every heap's) */
void drop_res(struct mres *m);
struct mwin *win_slot(void);
struct mwin *pick_win(unsigned sel);
/* The current thread's window of heap hi at exactly [exec, exec + len). */
struct mwin *own_window(int hi, const uint8_t *exec, size_t len);
/* w closed (procmem: its view written over the code) or gone unclosed
 * (apply false: its heap destroyed). */
void drop_win(struct mwin *w, bool apply);
/* New bytes for [off, off + len) of f, from the input (ops_code.c): the
 * immediate (unless keep_imm) and the bytes after the code; instructions
 * stay as they are. apply_patch puts them into the model. */
void patch_bytes(struct input *in, const struct mfunc *f, size_t off,
                 size_t len, bool keep_imm, uint8_t *out);
void apply_patch(struct mfunc *f, size_t off, const uint8_t *b, size_t len);
void check_enomem(int hi, size_t size);
/* Statistics before a call that may fail; after it, the failure changed
 * nothing (fault counters aside in the concurrent mode). */
void stats_before(int hi, wxjit_stats *s);
void check_unchanged(int hi, const wxjit_stats *before, int err,
                     const char *what);
/* An error that only injection explains: checked and accepted. */
bool injected(int hi, const wxjit_stats *before, int err, const char *what);

/* A call that must fail with want and change nothing observable. */
#define REFUSED_WITH(hi, want, call)                                         \
    do {                                                                     \
        wxjit_stats before_;                                                 \
        stats_before((hi), &before_);                                        \
        EXPECT((call), (want));                                              \
        check_unchanged((hi), &before_, (want), #call);                      \
    } while (0)
#define REFUSED(h, hi, call) REFUSED_WITH(hi, EINVAL, call)

/* ---- checks.c ------------------------------------------------------------ */
void check_all(bool protections);
void check_calls(void); /* from the calling thread */
void check_no_overlap(int hi, const uint8_t *exec, size_t n,
                      const char *what, const void *self);

/* ---- threads.c ----------------------------------------------------------- */
void threads_init(void);
/* Runs fn(arg) on thread t and waits for it; t == cur runs it in place. */
void thread_call(int t, void (*fn)(void *), void *arg);
/* Ends worker t (its thread exits) and starts a new thread in its slot. */
void thread_restart(int t);
int32_t thread_tid(int t);
/* wxjit_handle_fault's per-thread memory of its last retry (fault.c, I3),
 * modelled per thread; a new thread starts with none. */
extern uintptr_t fault_last_addr[NTHREADS];
extern uint32_t fault_last_state[NTHREADS];
extern uint64_t fault_last_heap[NTHREADS];

/* ---- concurrent.c -------------------------------------------------------- */
void executors_start(void);
void executors_stop(void);
void share_toggle(struct mfunc *f);
/* Whether f may be freed: not published, and no executor can still be
 * calling it. */
bool share_quiet(const struct mfunc *f);
void share_patched(struct mfunc *f);
bool share_drop_heap(int hi); /* unpublish and wait; false: cannot now */

/* ---- ops ----------------------------------------------------------------- */
enum op {
    OP_CREATE,
    OP_DESTROY,
    OP_RESERVE,
    OP_COMMIT,
    OP_ABORT,
    OP_INSTALL,
    OP_PATCH,
    OP_PATCH_ATOMIC,
    OP_FREE,
    OP_STATS,
    OP_HANDLE_FAULT,
    OP_HANDLER,
    OP_BACKEND,
    OP_COMMIT_BATCH,
    OP_THREAD_EXIT,
    OP_FORK,
    OP_INJECT,
    OP_SHARE,
    OP_WINDOW_OPEN,
    OP_WINDOW_CLOSE,
    OP_COUNT
};

void op_create(struct input *in);
void op_destroy(struct input *in);
void op_reserve(struct input *in);
void op_commit(struct input *in);
void op_abort(struct input *in);
void op_install(struct input *in);
void op_patch(struct input *in);
void op_patch_atomic(struct input *in);
void op_free(struct input *in);
void op_stats(struct input *in);
void op_handle_fault(struct input *in);
void op_handler(struct input *in);
void op_backend(struct input *in);
void op_commit_batch(struct input *in);
void op_thread_exit(struct input *in);
void op_fork(struct input *in);
void fork_reset(void); /* a new input may fork once */
void op_inject(struct input *in);
void op_share(struct input *in);
void op_window_open(struct input *in);
void op_window_close(struct input *in);
/* Every open window closed by its owner (before the executors stop: they
 * may wait on a toggle window's page). */
void windows_close_all(void);
/* Thread t exited: wxjit closed its windows as they were. */
void windows_thread_exited(int t);
/* In a fork child: the forking thread's windows are still open (closed
 * here, checked), the others' were closed by the fork. */
void windows_fork_child(void);
void destroy_heap(int hi);
/* Aborts an open reservation from a thread allowed to (its owner for an
 * in-place one) and drops it from the model. */
void abort_open(struct mres *m);
/* Arms the injection op_inject asked for on this thread, if any; returns
 * whether it did. inject_disarm undoes it after the op. */
bool inject_arm(enum op op);
void inject_disarm(void);

#endif /* FUZZ_H */
