/* The harness of the failure-injection sweep (tests/test_inject.c, which
 * holds the operations swept): the state one point builds and the checks
 * after its call (inject_state.c), and the sweep that runs every point in
 * a child of its own (inject_sweep.c). */
#ifndef INJECT_HARNESS_H
#define INJECT_HARNESS_H

#include <pthread.h>
#include <stdatomic.h>

#include "../src/internal.h"
#include "emit.h"
#include "wxtest.h"

#define MAX_FNS 64
#define MAX_RES 4

/* Set once before any point runs. */
extern size_t page;
extern wxjit_backend backend;

/* ---- the state one point builds and checks (in its child) ------------- */
struct fn {
    uint8_t *exec;
    size_t size;
    int32_t value;
    uint8_t *bytes; /* what must be at exec */
};

struct res_meta {
    uint8_t *exec; /* as reserved: the reservation's fields are cleared
                      when it is consumed */
    size_t size, used;
    int32_t value;
    bool in_place, open;
    bool abort_it; /* closed by abort (else commit) when still open */
};

struct inject_state {
    wxjit_heap *h;
    unsigned flags;
    struct fn fns[MAX_FNS];
    size_t nfns;
    wxjit_reservation rv[MAX_RES]; /* contiguous for commit_batch */
    struct res_meta rm[MAX_RES];
    size_t nres;
    int32_t next_value;
    /* what the operation produced or aims at */
    void *installed;
    size_t target;
    int32_t new_value;
    /* WXJIT_HEAP_DEFER_TRAP_FILL: functions freed, whose bytes stay
     * until a window over their page fills them */
    struct fn ghosts[4];
    size_t nghosts;
    /* A window on live code the call opened, or failed to close: closed
     * after the checks (close_open_window), its bytes written then. */
    struct {
        bool open;
        size_t fn, off, len;
        void *write;
        uint8_t bytes[16]; /* what goes in at close */
    } win;
    /* expected statistics deltas, set by the scenario's `done` */
    int64_t d_installs, d_frees, d_live;
    /* the executor: calls fns[exec_idx] during the operation */
    size_t exec_idx;
    uint8_t *exec_fn;
    int32_t exec_want;
    pthread_t executor;
    bool executing;
    _Atomic bool exec_started, exec_stop;
    _Atomic uint64_t exec_calls, exec_bad;
};

/* The state of the point running in this process (each runs in a child). */
extern struct inject_state C;

/* ---- the operations ------------------------------------------------------
 * setup builds the state (live code first, then the executor); op is the
 * call under test; done checks what its result implies and sets the
 * expected statistics deltas. */
struct scenario {
    const char *name;
    void (*setup)(void);
    int (*op)(void);
    void (*done)(int err);
};

/* Runs the sweep of scenarios[0..nscenarios) (with a command-line argument,
 * only those whose name contains it) on the backend WXJIT_BACKEND picks;
 * returns main's exit status. */
int inject_main(const struct scenario *scenarios, size_t nscenarios, int argc,
                char **argv);

/* ---- building the state (inject_state.c) -------------------------------- */
void emit_fn(uint8_t *buf, size_t size, int32_t v);
struct fn *add_fn(void *exec, size_t size, int32_t v, const uint8_t *bytes);
void drop_fn(size_t i);
/* fns[i] was freed with its trap fill deferred: its bytes may stay. */
void ghost_fn(size_t i);
void install_fn(size_t size);
size_t reserve_fn(size_t size, unsigned flags, size_t used);
void res_committed(size_t i);
size_t granule_bytes(size_t n);
void executor_start(void);
void executor_stop(void);
void defer_a_free(void);
/* Whether p is in freed code whose trap fill is pending (and so may hold
 * its old byte, the one it must hold if so). */
bool pending_fill(const uint8_t *p);

/* ---- checking it after the call (inject_state.c) ------------------------ */
size_t call_fns(bool only_safe);
void call_all_from_another_thread(void);
void check_bytes(void);
void check_traps(void);
int check_pages(bool strict, const char *when);
void check_stats(const wxjit_stats *b, const wxjit_stats *a, bool failed,
                 uint64_t made, uint64_t made_mprotect, uint64_t made_map);
void close_open_reservations(void);
/* Opens a window over len bytes at off in fns[fn], to hold bytes once
 * closed (win); returns wxjit_window_open's result. */
int open_window(size_t fn, size_t off, const uint8_t *bytes, size_t len);
/* Makes the bytes of the open window what fns[fn] holds (its value too if
 * they are the mov's immediate); executors see them once it is closed. */
void window_written(void);
void close_open_window(void);
void check_usable(void);

#endif /* INJECT_HARNESS_H */
