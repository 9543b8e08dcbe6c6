/* Internal declarations shared by the wxjit sources. Nothing here is API. */
#ifndef WXJ_INTERNAL_H
#define WXJ_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "wxjit.h"

/* Code is handed out in granules: 16 bytes is the function alignment
 * x86_64 and aarch64 compilers use, and small enough that a page holds
 * hundreds of small functions. */
#define WXJ_GRANULE 16u
#define WXJ_DEFAULT_CHUNK ((size_t)4 << 20) /* few mmaps, few VMAs */
#define WXJ_MAX_CHUNK ((size_t)1 << 30)

enum wxj_prot { WXJ_PROT_RW, WXJ_PROT_RX, WXJ_PROT_RWX, WXJ_PROT_NONE };
/* Kinds of system calls, counted per thread; the ones that can fail can be
 * made to fail by the test seam below. */
enum wxj_os_call {
    WXJ_CALL_MMAP,
    WXJ_CALL_MUNMAP,
    WXJ_CALL_MPROTECT,
    WXJ_CALL_OBJECT,    /* memfd_create, shm_open, open(O_TMPFILE) */
    WXJ_CALL_FTRUNCATE,
    WXJ_CALL_PWRITE,
    WXJ_CALL_CLOSE,     /* never fails as far as wxjit cares */
    WXJ_CALL_FUTEX,     /* never fails as far as wxjit cares */
    WXJ_CALL_MEMBARRIER, /* failures fall back (wxj_os_core_sync) */
    WXJ_CALL_OTHER,     /* getrandom, shm_unlink */
    WXJ_CALL_KINDS
};
/* Ways to get an anonymous shared memory object, in fallback order. */
enum wxj_object { WXJ_OBJECT_MEMFD, WXJ_OBJECT_SHM, WXJ_OBJECT_TMPFILE };

/* ---- per-page protocol word (see fault.c for the protocol) -------------
 * bit 0  WRITING: a writer holds the page; it may be RW, not X
 * bit 1  WAITERS: someone sleeps on the futex of this word
 * bits 2-31: sequence number, bumped when WRITING is set and when it is
 * cleared, so a fault handler can tell one write window from the next.
 * A word of 0 means the page has never held code. */
#define WXJ_PAGE_WRITING 1u
#define WXJ_PAGE_WAITERS 2u
#define WXJ_PAGE_SEQ_ONE 4u

/* The writer of a page abandoned after its RX flip failed (toggle). */
#define WXJ_WRITER_STUCK (-1)

struct wxj_page {
    _Atomic uint32_t state;  /* the protocol word above */
    _Atomic int32_t writer;  /* tid holding WRITING, 0 when none */
    _Atomic uint32_t waiting; /* executors asleep in the fault handler */
    /* Holds that last from one call to another (in-place reservations,
     * windows on live code): a thread holding one of its own must not
     * wait for such a page (toggle_open), or two could wait in a cycle. */
    _Atomic uint32_t long_holds;
    uint32_t depth;          /* nested holds by the writer (writer only) */
    bool fresh;              /* never executable: still RW from the chunk
                                mapping, so writing needs no mprotect */
    bool rw;                 /* writable, not executable, now (toggle;
                                changed by the page's writer only) */
};

#define WXJ_PIN_STRIPES 64

/* A chunk: one contiguous mapping of code pages plus out-of-line metadata.
 * base/size/npages/pages never change after the chunk is registered, which
 * is what lets the fault handler read them without a lock. */
struct wxj_chunk {
    struct wxj_chunk *_Atomic next; /* heap's chunk list, append-only */
    struct wxjit_heap *heap;
    uint8_t *base;         /* executable address of page 0 */
    size_t size;           /* bytes mapped */
    size_t npages;
    size_t ngranules;
    size_t fresh_next;     /* first page never handed to a pool (heap lock) */
    size_t search_seg;     /* where the next free-run search starts (lock) */
    /* Longest free run per segment, at most, and for the whole chunk; the
     * high half counts raises (chunk.c, segment bounds). */
    _Atomic uint64_t *seg_bound;
    _Atomic uint64_t chunk_bound;
    struct wxj_page *pages;
    /* Granule bitmaps. A block [g, g + n) has used bits on all its
     * granules, a start bit on g and an end bit on g + n - 1. */
    _Atomic uint64_t *used;
    _Atomic uint64_t *start;
    _Atomic uint64_t *end;
    _Atomic uint64_t *open; /* start granule of a reservation not committed */
    /* WXJIT_HEAP_DEFER_TRAP_FILL (NULL without): granules of freed code
     * not trap-filled yet. Set by a free before the space can look free
     * (so whoever is handed it first opens a window that fills it), taken
     * only by a window holding the page, which then fills them. */
    _Atomic uint64_t *stale;
    /* Per start granule of a committed block: the bytes of its last
     * granule past its committed size (0-15), for patch range checks.
     * Written before the block is published by its start or open bit. */
    _Atomic uint8_t *slack; /* relaxed: a racing patch of a freed
                               address may read it while it is rewritten */
    int region_slot;
    _Atomic size_t stuck; /* toggle: pages abandoned writable */
    /* Patches in flight, by start granule modulo WXJ_PIN_STRIPES: a free
     * waits for them where windows do not exclude each other (code.c). */
    _Atomic uint32_t patching[WXJ_PIN_STRIPES];
    /* dualmap: the shared object (-1 once both views are mapped and it is
     * no longer needed) and the standing RW view (NULL when the RW view is
     * mapped per write window). */
    int fd;
    uint8_t *alias;
    /* procmem: a private RW copy of the chunk's address range, where
     * stable views live (not an alias: nothing written there runs until
     * a close writes it to the code). */
    uint8_t *shadow;
    size_t rx_pages; /* dualmap, procmem: pages [0, rx_pages) mapped RX,
                        in steps (wxj_rx_step_end; heap lock) */
    int fork_fd; /* dualmap: the child's copy while a fork is under way */
    void *windows; /* dualmap on demand: open RW windows */
    /* Descriptions (observe/describe.c) by start granule; NULL unless the
     * heap reports to some tool. */
    struct wxj_desc *_Atomic *desc;
};

/* An open reservation as wxjit recorded it (reservations.c). */
struct wxj_open_rec {
    uintptr_t exec; /* 0: an empty slot */
    uint8_t *write;
    size_t size;
    uint64_t serial; /* handed to the caller in internal[0] */
    bool in_place;
    int32_t owner; /* the reserving thread; an in-place window is its own */
};

/* The open reservations made through one pool. Its lock is taken by the
 * pool's owner, and by other threads only on slow paths (a commit or
 * abort of a reservation made through another pool, a thread's exit). */
struct wxj_open_table {
    pthread_mutex_t lock;
    struct wxj_open_rec *slots;
    size_t cap, count;
    uint64_t serial; /* reservations made through the pool so far */
};

/* A serial is the pool's count of reservations, shifted, and the pool's
 * index: unique per heap without a shared counter, and the index leads a
 * commit from another thread straight to the record. 22 bits:
 * PID_MAX_LIMIT (2^22 on 64-bit Linux) bounds the threads alive at once,
 * and a heap has no more pools than that; 42 bits of count wrap after
 * 4.4e12 reservations through one pool. */
#define WXJ_POOL_INDEX_BITS 22
#define WXJ_MAX_POOLS ((uint32_t)1 << WXJ_POOL_INDEX_BITS)

/* A thread's pool: its tail range, appended to without a lock. Pools are
 * allocated cache-line aligned and never share a line: the owner writes
 * its pool on every operation. */
struct wxj_pool {
    struct wxj_pool *next;    /* heap->pools (heap lock) */
    uint32_t index;           /* unique in the heap, never changes */
    bool owned;               /* a live thread uses it (heap lock) */
    _Atomic int busy;         /* the owner is inside an operation */
    uint64_t calls_at_begin[WXJ_CALL_KINDS]; /* when it began */
    uint64_t locks_at_begin;  /* wxj_shared_locks_taken() then */
    /* Statistics of the operations run through this pool: written by its
     * owner alone (no read-modify-write needed), summed by stats_get. A
     * failed operation adds nothing. */
    _Atomic uint64_t installs, frees, syscalls, mprotect_calls, map_calls,
        shared_locks, core_syncs;
    _Atomic int64_t granules_live;
    struct wxj_chunk *chunk;  /* tail chunk; NULL when there is no tail */
    size_t tail_start;        /* [tail_start, limit): excluded from reuse */
    size_t cursor;            /* next free granule (owner thread only) */
    size_t limit;
    struct wxj_open_table open; /* reservations made through this pool */
};

/* A write window over pages [first, last] of a chunk. view is where the
 * first byte of page `first` is written: the page itself (toggle, rwx) or
 * its alias in a second mapping (dualmap). */
/* What a window's view starts as, on a backend whose views are copies
 * (procmem): scratch (traps, in a buffer of its own), or at the chunk's
 * stable view, where a write address handed out stays valid: traps over
 * [exec, exec + len) (an in-place reservation) or the code's current bytes
 * there (a window on live code). */
enum wxj_view {
    WXJ_VIEW_SCRATCH,
    WXJ_VIEW_STABLE_TRAPS,
    WXJ_VIEW_STABLE_LIVE,
};

struct wxj_window {
    struct wxj_chunk *chunk;
    size_t first, last;
    uint8_t *view;
    enum wxj_view kind;
    const uint8_t *exec; /* the bytes asked for (wxj_window_over) */
    size_t len;
};

/* Who writes the traps over a function freed with deferred trap fill. */
enum wxj_deferral {
    WXJ_FILL_AT_FREE,       /* the free itself: nothing is deferred */
    WXJ_FILL_IN_PAGE_WINDOW,/* the next window opening its page (toggle) */
    WXJ_FILL_ON_REUSE,      /* the next write into that space (procmem) */
};

/* How bytes become executable: one table per backend (backend_*.c). */
struct wxj_backend {
    const char *name;
    wxjit_backend id;
    /* Where WXJIT_HEAP_DEFER_TRAP_FILL leaves a free's trap fill
     * (recorded in chunk->stale); WXJ_FILL_AT_FREE: the flag is refused. */
    enum wxj_deferral deferral;
    /* open takes the window's pages from every other writer until close
     * (toggle): a write checked inside the window cannot be overtaken. */
    bool exclusive_windows;
    /* A window's view of a page is at the same place every time (toggle:
     * the page; dualmap: its standing alias), so a write address an
     * emitter kept from its reservation stays valid for live windows. */
    bool stable_views;
    /* close writes only [flush, flush + flush_len) of the view, which is a
     * buffer of traps, not the code: a window's writes must form that one
     * range (other threads may change the rest of the pages meanwhile),
     * and the view holds no old bytes to read. */
    bool exact_writes;
    /* 0 if the backend works on this system, else the errno why not and
     * a static string naming the check that failed. With run_code, also
     * that code written the backend's way runs (dualmap skips that
     * otherwise; procmem always runs it). */
    int (*probe)(bool run_code, const char **reason);
    int (*chunk_map)(struct wxjit_heap *heap, struct wxj_chunk *chunk);
    void (*chunk_unmap)(struct wxjit_heap *heap, struct wxj_chunk *chunk);
    /* Fills pages never handed out before with traps. */
    int (*fill_fresh)(struct wxjit_heap *heap, struct wxj_window *w);
    /* Makes the window writable and sets w->view. */
    int (*open)(struct wxjit_heap *heap, struct wxj_window *w);
    /* Makes the window's pages executable again and flushes the
     * instruction cache over [flush, flush + flush_len). On failure the
     * window stays open (still writable, still held). */
    int (*close)(struct wxjit_heap *heap, struct wxj_window *w,
                 const void *flush, size_t flush_len);
    /* After a failed close, for a window nobody will close: its pages stay
     * unexecutable, held for nobody (executors wait), until a later window
     * takes them over and closes them. NULL where close cannot fail. */
    void (*abandon)(struct wxjit_heap *heap, struct wxj_window *w);
    /* At the start of every operation: retries what abandon left (toggle:
     * makes abandoned pages executable again if it can). Optional. */
    void (*recover)(struct wxjit_heap *heap);
    /* Sets *out to the backend whose windows make a single aligned store
     * atomic for concurrent executors (wxjit_patch_atomic), NULL if the
     * system's policy allows none; returns the errno of a failure that
     * says nothing about the policy (the heap's creation then fails).
     * Absent: this one. Asked once per heap. */
    int (*atomic_stores)(const struct wxj_backend **out);
    /* fork(), each optional (fork.c): before, with every operation
     * stopped; after, in the parent; after, in the child, where only the
     * thread that was parent_tid lives on. */
    void (*fork_prepare)(struct wxjit_heap *heap, struct wxj_chunk *chunk);
    void (*fork_parent)(struct wxjit_heap *heap, struct wxj_chunk *chunk);
    void (*fork_child)(struct wxjit_heap *heap, struct wxj_chunk *chunk,
                       int32_t parent_tid);
};

extern const struct wxj_backend wxj_backend_toggle;
extern const struct wxj_backend wxj_backend_dualmap;
extern const struct wxj_backend wxj_backend_rwx;
extern const struct wxj_backend wxj_backend_procmem;

/* Heap-wide counters; the per-operation ones live in the pools. */
struct wxj_counters {
    _Atomic uint64_t bytes_mapped, pages, chunks, faults_retried,
        faults_forwarded;
};

/* Write windows on live code (live_window.c). */
struct wxj_live_window;
struct wxj_live_windows {
    pthread_mutex_t lock;
    pthread_cond_t changed;        /* a window closed or a wait ended */
    struct wxj_live_window *list;  /* open windows and waiters (lock) */
    _Atomic unsigned open;         /* how many are open: frees check it */
};

struct wxjit_heap {
    _Atomic uint32_t magic;       /* WXJ_HEAP_ALIVE while usable */
    uint64_t id;                  /* unique per creation (heap registry) */
    const struct wxj_backend *backend;
    const struct wxj_backend *atomic; /* for atomic stores; NULL: none */
    size_t page_size, chunk_size, max_bytes;
    unsigned flags;               /* WXJIT_HEAP_* */
    unsigned sinks;               /* WXJ_SINK_*: tools told of code */
    enum wxj_object object_first; /* dualmap: first way to get an object */
    pthread_mutex_t lock;         /* chunks list growth, pools, reuse */
    struct wxj_chunk *_Atomic chunks;
    struct wxj_pool *_Atomic pools;
    uint32_t npools;              /* pools created (heap lock) */
    struct wxj_counters count;
    struct wxj_live_windows windows;
    struct wxjit_heap *recycle_next; /* dead heap handles, see heap.c */
    struct wxjit_heap *live_next;    /* live heaps, for fork.c */
};

#define WXJ_HEAP_ALIVE 0x77786a68u /* "wxjh" */
#define WXJ_HEAP_DEAD 0x64656164u  /* "dead" */

/* Adds to a counter that only the calling thread writes. */
static inline void wxj_count_own(_Atomic uint64_t *counter, uint64_t n)
{
    atomic_store_explicit(
        counter, atomic_load_explicit(counter, memory_order_relaxed) + n,
        memory_order_relaxed);
}

static inline bool wxj_heap_ok(const struct wxjit_heap *heap)
{
    return heap && atomic_load_explicit(&heap->magic, memory_order_acquire) ==
                       WXJ_HEAP_ALIVE;
}

static inline void wxj_count(_Atomic uint64_t *counter, uint64_t n)
{
    /* Statistics only: no ordering with anything else is needed. */
    atomic_fetch_add_explicit(counter, n, memory_order_relaxed);
}

/* ---- os_linux.c: every system call lives there ------------------------ */

size_t wxj_os_page_size(void);
int wxj_os_map_anon(size_t size, enum wxj_prot prot, void **out);
/* Maps fd at `at`: exactly there (fixed) or as a hint the kernel may
 * ignore (NULL for none). */
int wxj_os_map_shared(int fd, size_t offset, size_t size, enum wxj_prot prot,
                      void *at, bool fixed, void **out);
/* Replaces [at, at + size) with a new private anonymous mapping. */
int wxj_os_map_anon_at(void *at, size_t size, enum wxj_prot prot);
/* A CLOEXEC read-write descriptor of /proc/self/mem. */
int wxj_os_open_self_mem(int *fd);
/* Writes len bytes from src, repeat times over, at address at through the
 * descriptor of wxj_os_open_self_mem; *done: the bytes written, also when
 * it fails part-way. */
int wxj_os_write_mem(int fd, void *at, const void *src, size_t len,
                     size_t repeat, size_t *done);
/* A page-aligned address hint unrelated to anything else mapped. */
void *wxj_os_random_hint(void);
int wxj_os_copy_to(int fd, const void *src, size_t len);
void wxj_os_unmap(void *addr, size_t size);
int wxj_os_protect_rw(void *addr, size_t size);
int wxj_os_protect_rx(void *addr, size_t size);
/* A CLOEXEC, unlinked object of size bytes, trying `first` and then the
 * fallbacks after it. */
int wxj_os_shared_object(enum wxj_object first, size_t size, int *fd);
/* WXJIT_DUALMAP_OBJECT: the first kind of object dualmap tries (its probe
 * and its heaps alike). EINVAL for an unknown name. */
int wxj_object_from_env(enum wxj_object *out);
void wxj_os_close(int fd);
void wxj_os_futex_wait(_Atomic uint32_t *word, uint32_t expected);
void wxj_os_futex_wake_all(_Atomic uint32_t *word);
int32_t wxj_os_tid(void); /* async-signal-safe */
uint64_t wxj_os_calls(void); /* system calls made by this thread so far */
uint64_t wxj_os_calls_of(enum wxj_os_call kind); /* the same, of one kind */
/* Test seam: makes this thread's calls of kind numbered [nth, nth + count)
 * from now on (nth = 1: the next one) fail with err without reaching the
 * kernel; count 0 disarms. Not API: tests link the static library. */
void wxj_os_inject(enum wxj_os_call kind, uint64_t nth, uint64_t count,
                   int err);
/* Test seam: fn runs once, in this thread, right after its next successful
 * call of kind (WXJ_CALL_OBJECT: a descriptor was made, not yet kept). */
void wxj_os_after(enum wxj_os_call kind, void (*fn)(void));
void wxj_os_forget_tid(void); /* in a fork child */
int wxj_os_pid(void);
/* The tools' files (observe/): one opened for appending records (created
 * 0644, close-on-exec, emptied if truncate; EACCES where the name holds
 * anything but a regular file of this user with no other name); a record
 * in one write (EIO if the kernel took only part of it); a read+exec
 * private mapping of a file's first size bytes (never writable: jitdump's
 * marker for perf). */
int wxj_os_open_record_file(const char *path, bool truncate, int *fd);
int wxj_os_write_record(int fd, const void *buf, size_t len);
int wxj_os_map_marker(int fd, size_t size, void **out);
void wxj_os_yield(void);
/* Every other thread of the process synchronises its instruction stream
 * (a core-serialising event) before it runs user code again: membarrier's
 * PRIVATE_EXPEDITED_SYNC_CORE (registered on first use), else its GLOBAL
 * command (kernels before 4.16), else nothing (before 4.3).
 * The choice is the process's, kept (a fork child inherits it and the
 * registration); a lasting refusal moves down the ladder for good, a
 * failure of the moment (ENOMEM) makes that one sync GLOBAL. GLOBAL is not
 * documented to serialise cores (membarrier(2) promises memory barriers;
 * in practice each running CPU takes an interrupt or a context switch),
 * and waits for an RCU grace period: hundreds of microseconds at least. */
void wxj_os_core_sync(void);
/* core_sync.c: at an operation's end, syncs the other cores if its code
 * changes need it on this CPU (WXJ_ARCH_CORE_SYNC). */
void wxj_core_sync_changes(void);
/* Forgets the changes noted without syncing: in a fork child, whose only
 * thread is the caller. */
void wxj_core_sync_forget(void);
uint64_t wxj_os_now_ns(void); /* CLOCK_MONOTONIC: vDSO, no system call */

/* ---- chunk.c: chunks and their granule bitmaps ------------------------ */
int wxj_chunk_create(struct wxjit_heap *heap, size_t size,
                     struct wxj_chunk **out);
void wxj_chunk_destroy(struct wxjit_heap *heap, struct wxj_chunk *chunk);
struct wxj_chunk *wxj_chunk_find(struct wxjit_heap *heap, const void *addr);
size_t wxj_granule_of(const struct wxj_chunk *chunk, const void *addr);
uint8_t *wxj_granule_addr(const struct wxj_chunk *chunk, size_t granule);
void wxj_block_mark(struct wxj_chunk *chunk, size_t g, size_t n, bool open);
void wxj_block_unmark(struct wxj_chunk *chunk, size_t g, size_t n);
void wxj_block_shrink(struct wxj_chunk *chunk, size_t g, size_t n, size_t m);
size_t wxj_block_extent(struct wxj_chunk *chunk, size_t g);
bool wxj_block_find_start(struct wxj_chunk *chunk, size_t g, size_t *start);
bool wxj_bit_get(_Atomic uint64_t *map, size_t g);
/* Whether the block starting at granule g is live: started, not an open
 * reservation. */
bool wxj_block_live(struct wxj_chunk *chunk, size_t g);
bool wxj_bit_clear(_Atomic uint64_t *map, size_t g); /* true if it was set */
void wxj_bit_set(_Atomic uint64_t *map, size_t g);
/* The freed block [g, g + n) keeps its code until the backend's deferral
 * fills it (WXJIT_HEAP_DEFER_TRAP_FILL); before wxj_block_unmark. */
void wxj_block_defer_traps(struct wxj_chunk *chunk, size_t g, size_t n);
/* Granules [g, g + n) were written whole: no fill is pending there. */
void wxj_block_rewritten(struct wxj_chunk *chunk, size_t g, size_t n);
/* No granule of [g, g + n) is in use. */
bool wxj_chunk_unused(struct wxj_chunk *chunk, size_t g, size_t n);
/* Granules [g, g + n) became free (unmarked, or left by a tail). */
void wxj_chunk_note_free(struct wxj_chunk *chunk, size_t g, size_t n);
/* Where the executable frontier of a chunk mapped in steps (dualmap,
 * procmem) must move to for pages up to last to be mapped: rx_pages if
 * they are, else a whole step (or more) further, within the chunk. */
size_t wxj_rx_step_end(const struct wxj_chunk *chunk, size_t last);
/* self: the searching thread's pool (pages of its in-place reservations
 * are skipped). */
bool wxj_chunk_find_run(struct wxj_chunk *chunk, size_t n, size_t align,
                        const struct wxj_pool *pools, struct wxj_pool *self,
                        size_t *run_start, size_t *run_len);

/* ---- window.c: writing code through a backend's windows ---------------- */
/* Writes len bytes at dst, inside a window; nonzero (an errno): it wrote
 * nothing and the write is called off. */
typedef int (*wxj_fill_fn)(uint8_t *dst, size_t len, const void *arg);
size_t wxj_page_of(const struct wxjit_heap *heap,
                   const struct wxj_chunk *chunk, const void *p);
/* The window over the pages of [exec, exec + len); view set by open. */
struct wxj_window wxj_window_over(const struct wxjit_heap *heap,
                                  struct wxj_chunk *chunk, const void *exec,
                                  size_t len);
/* Where the byte that executes at exec is written through window w. */
uint8_t *wxj_window_at(const struct wxjit_heap *heap,
                       const struct wxj_window *w, const void *exec);
/* wxj_write_code: how */
#define WXJ_WRITE_OVER_CODE 1u /* live code is overwritten (else traps) */
#define WXJ_WRITE_ATOMIC 2u    /* executors must see old or new, never a
                                  mix: through heap->atomic (ENOTSUP if
                                  none) */
/* Writes fill(arg) over [exec, exec + len) through a window. If the close
 * fails, the old bytes are put back (traps, or the code saved first) and
 * the window abandoned: the call then changed nothing. */
int wxj_write_code(struct wxjit_heap *heap, struct wxj_chunk *chunk,
                   void *exec, size_t len, wxj_fill_fn fill, const void *arg,
                   unsigned how);
/* Closes the window an in-place reservation opened (commit). */
int wxj_close_in_place(struct wxjit_heap *heap, struct wxj_chunk *chunk,
                       const void *exec, void *write, size_t len);
/* Trap-fills an open in-place reservation, closes its window and unmarks
 * its block; the caller gives the space back. If the close fails: with
 * give_up the window is abandoned and the block unmarked anyway (its
 * owner is gone), else the errno is returned with the window still open. */
int wxj_in_place_abort(struct wxjit_heap *heap, struct wxj_chunk *chunk,
                       const void *exec, void *write, size_t len,
                       bool give_up);

/* ---- pool.c: per-thread pools and the operation gate ------------------ */
int wxj_op_begin(struct wxjit_heap *heap, struct wxj_pool **pool);
/* err: the operation's result; a failed one adds nothing to statistics. */
void wxj_op_end(struct wxjit_heap *heap, struct wxj_pool *pool, int err);
/* Around a sleep inside an operation (waiting for another writer's page):
 * a fork may proceed meanwhile. */
void wxj_op_pause(void);
void wxj_op_resume(void);
int wxj_pool_alloc(struct wxjit_heap *heap, struct wxj_pool *pool,
                   size_t ngranules, size_t align_granules,
                   struct wxj_chunk **chunk, size_t *granule);
void wxj_pool_give_back(struct wxj_pool *pool, struct wxj_chunk *chunk,
                        size_t g, size_t n);
void wxj_pool_end_tail_page(struct wxjit_heap *heap, struct wxj_pool *pool,
                            struct wxj_chunk *chunk, size_t end_granule);
/* The pool's cursor leaves pages [first, last] of chunk if it is on one
 * (the calling thread opened a window there). */
void wxj_pool_leave_pages(struct wxjit_heap *heap, struct wxj_pool *pool,
                          struct wxj_chunk *chunk, size_t first, size_t last);
/* The in-place reservation ending at end_granule is over (committed or
 * aborted, before its space is given back): the rest of the page skipped
 * after it is the tail's again, if nothing after it is in use. */
void wxj_pool_in_place_ended(struct wxj_pool *pool, struct wxj_chunk *chunk,
                             size_t end_granule);
void wxj_pools_forget_heap(struct wxjit_heap *heap);
/* for fork.c: close the gate, wait for operations, clean up in the child */
void wxj_ops_close(void);
void wxj_ops_reopen(void);
void wxj_ops_wait_idle(struct wxjit_heap *heap);
void wxj_pools_after_fork(struct wxjit_heap *heap);

/* ---- backend_choice.c ----------------------------------------------------- */
/* Checks the options' backend and flags against each other and the
 * environment, and picks a backend that works here. */
int wxj_choose_backend(const wxjit_heap_options *o,
                       const struct wxj_backend **out);

/* ---- heap registry (heap.c) ------------------------------------------- */
/* For pools retired at thread exit: the heap, locked, if it still lives. */
struct wxjit_heap *wxj_heap_lock_if_alive(struct wxjit_heap *heap,
                                          uint64_t id);
/* For fork.c: hold the registry still and walk the live heaps. */
struct wxjit_heap *wxj_heaps_lock_all(void);
void wxj_heaps_unlock_all(void);
/* At thread exit: aborts the thread's open in-place reservations in every
 * live heap. */
void wxj_heaps_abort_in_place_of(int32_t tid);
/* The same for the write windows on live code it holds open. */
void wxj_heaps_close_windows_of(int32_t tid);
/* Makes a heap refuse every call from now on (a fork child that could not
 * get a private copy of it). */
void wxj_heap_disable(struct wxjit_heap *heap);

/* ---- fork.c ------------------------------------------------------------ */
void wxj_fork_init(void); /* once per process, from heap creation */
/* Around fork() (procmem's descriptor): prepare holds the lock its first
 * open takes; parent releases it; after_fork, in the child, also drops
 * the parent's descriptor. */
void wxj_procmem_fork_prepare(void);
void wxj_procmem_fork_parent(void);
void wxj_procmem_after_fork(void);

/* ---- reservations.c: open reservations, recorded per pool -------------- */
void wxj_open_init(struct wxj_pool *pool);
void wxj_open_forget(struct wxj_pool *pool);
/* Records rec in the calling thread's own pool and sets rec->serial.
 * ENOMEM if the table cannot grow. */
int wxj_open_add(struct wxj_pool *pool, struct wxj_open_rec *rec);
/* Takes out the record matching res exactly (exec, write, size and the
 * serial in both internal words); EINVAL if there is none, EPERM (and
 * nothing taken) for an in-place one of another thread. pool is the
 * caller's; *from is the pool the record was in (pool itself unless it
 * was reserved through another one: the slow path). */
int wxj_open_take(struct wxjit_heap *heap, struct wxj_pool *pool,
                  const wxjit_reservation *res, struct wxj_open_rec *out,
                  struct wxj_pool **from);
/* Puts a taken record back where it was (pool: the caller's). */
void wxj_open_put_back(struct wxj_pool *pool, struct wxj_pool *from,
                       const struct wxj_open_rec *rec);
/* In-place reservations the calling thread has open, in every heap. */
unsigned wxj_open_own_in_place(void);
/* The calling thread lets pool go (least recently used, heap lock held):
 * in-place records of its own that stay there are looked for elsewhere
 * from now on. */
void wxj_open_let_go(struct wxj_pool *pool);
/* Aborts the open in-place reservations of thread tid (others: of every
 * thread but tid), whose owners are gone: at thread exit, in a fork
 * child. Heap lock held. Other threads' operations may run meanwhile (at
 * a thread's exit), but none may end those reservations (EPERM). */
void wxj_open_abort_orphans(struct wxjit_heap *heap, int32_t tid,
                            bool others);
/* Whether the calling thread, whose pool is pool, has an in-place
 * reservation open on a page of [lo, hi]. */
bool wxj_open_holds_pages(struct wxjit_heap *heap, struct wxj_pool *pool,
                          uintptr_t lo, uintptr_t hi);
/* In a fork child: the forking thread's reservations are its own under
 * its new tid. */
void wxj_open_after_fork(struct wxjit_heap *heap, int32_t parent_tid,
                         int32_t self);

/* ---- shared_lock.c: locks other threads take too, counted ------------- */
/* Takes lock and counts it for this thread (statistic shared_locks). */
void wxj_lock_shared(pthread_mutex_t *lock);
uint64_t wxj_shared_locks_taken(void); /* by this thread so far */

/* ---- fault.c: region registry ----------------------------------------- */
int wxj_region_register(struct wxj_chunk *chunk);
void wxj_region_unregister(struct wxj_chunk *chunk);
void wxj_registry_lock(void);
void wxj_registry_unlock(void);
/* In a fork child: handlers counted in use are the forking thread's own. */
void wxj_registry_after_fork(void);

/* ---- live_window.c: write windows on live code --------------------------- */
void wxj_live_windows_init(struct wxj_live_windows *lw);
void wxj_live_windows_destroy(struct wxj_live_windows *lw);
/* Whether the calling thread has a window open over [block, block+len). */
int wxj_live_windows_own_over(struct wxjit_heap *heap, const uint8_t *block,
                              size_t len);
/* Whether a free of the block [start, start + n) by a thread that holds a
 * window or in-place reservation would have to wait for another thread's
 * (and so must be refused, EDEADLK, before it claims the function);
 * writes: the free writes traps (toggle: through the block's pages). */
bool wxj_live_windows_free_would_wait(struct wxjit_heap *heap,
                                      struct wxj_chunk *chunk, size_t start,
                                      size_t n, bool writes);
/* A free of the block at granule start, len bytes (claimed already), may
 * go on: 0 once no other thread's window is open over it; EDEADLK where
 * the caller may not wait (it holds a window or in-place reservation). */
int wxj_live_windows_before_free(struct wxjit_heap *heap,
                                 struct wxj_chunk *chunk, size_t start,
                                 size_t len);
/* procmem: a patch of [at, at + len) holds off windows over those bytes
 * until patch_end (a window's close would write back what it saw). out
 * is NULL elsewhere. EBUSY: the caller's own window is over them. */
struct wxj_live_window;
int wxj_live_windows_patch_begin(struct wxjit_heap *heap, uint8_t *at,
                                 size_t len, struct wxj_live_window **out);
void wxj_live_windows_patch_end(struct wxjit_heap *heap,
                                struct wxj_live_window *rec);
/* Whether the calling thread has a window open on a page of [lo, hi]. */
bool wxj_live_windows_own_pages(struct wxjit_heap *heap, uintptr_t lo,
                                uintptr_t hi);
/* Whether the calling thread holds a window on live code (in a live heap)
 * or an in-place reservation: then it may not wait for another thread's
 * long hold (EDEADLK instead). */
bool wxj_thread_holds_long(void);
/* Windows the calling thread opened and has not closed (any heap). */
unsigned wxj_live_windows_own(void);
/* tid is going away: its windows close (their bytes as written). */
void wxj_live_windows_close_own(struct wxjit_heap *heap, int32_t tid);
/* In a fork child: only the forking thread's windows stay open. */
void wxj_live_windows_after_fork(struct wxjit_heap *heap, int32_t parent_tid,
                                 int32_t self);

/* ---- observe/: describing code to profilers and debuggers -------------
 * Off unless a heap asks (flags or WXJIT_PERF): then each chunk has a
 * description slot per start granule, and a free retracts what its
 * function's slot holds. */
#define WXJ_SINK_PERF_MAP 1u
#define WXJ_SINK_JITDUMP 2u
#define WXJ_SINK_GDB 4u
#define WXJ_SINK_UNWIND 8u

/* Unwind information, normalised from the JIT's .eh_frame or made for the
 * frame-pointer prologue (eh_frame.c): re-encoded for each tool. */
struct wxj_cfi {
    uint64_t code_align, ra_reg;
    int64_t data_align;
    uint64_t pc_offset, pc_range; /* the FDE's range, from the function */
    size_t cie_len, fde_len;      /* instructions, in insns[] */
    uint8_t insns[];              /* the CIE's, then the FDE's */
};

struct wxj_gdb_object;
struct wxj_desc {
    const uint8_t *exec;
    size_t size;          /* committed bytes */
    char *name;
    struct wxj_cfi *cfi;  /* NULL: no unwind information */
    struct wxj_chunk *chunk;
    size_t granule;       /* its slot in chunk->desc */
    struct wxj_gdb_object *gdb; /* the object gdb has it in (gdb_jit.c) */
    size_t gdb_index;
    uint8_t *eh_frame;    /* registered with the unwinder (unwind_reg.c) */
};

/* describe.c */
/* The tools heap_create turns on: from the flags and the environment;
 * EINVAL for a bad value. */
int wxj_sinks_choose(unsigned flags, unsigned *sinks);
/* A free has claimed the block at granule g of chunk: it waits until no
 * describer has the block's slot pending (the function stays put until
 * its description is whole or given up). */
void wxj_describe_wait(struct wxj_chunk *chunk, size_t g);
/* A free of the block at granule g of chunk succeeded: its description
 * (if any) goes. */
void wxj_describe_retract(struct wxjit_heap *heap, struct wxj_chunk *chunk,
                          size_t g);
/* The slot table of a new chunk (NULL slots), and its release (with any
 * description still in it: the heap is being destroyed). */
int wxj_desc_table_new(struct wxj_chunk *chunk);
void wxj_desc_table_free(struct wxj_chunk *chunk);
/* Around fork(): the tools' locks are held across it; in the child the
 * files are the parent's, and the child writes its own, starting with the
 * descriptions it inherited. */
void wxj_observe_fork_prepare(void);
void wxj_observe_fork_parent(void);
void wxj_observe_after_fork(struct wxjit_heap *heaps);

/* eh_frame.c */
/* Checks the JIT's .eh_frame bytes for a function of size bytes and
 * normalises them; EINVAL if malformed or not for it. */
int wxj_cfi_parse(const uint8_t *eh, size_t len, size_t size,
                  struct wxj_cfi **out);
/* CFI for a function of size bytes at exec that starts with this CPU's
 * frame-pointer prologue; EINVAL if it does not. */
int wxj_cfi_frame_pointer(const uint8_t *exec, size_t size,
                          struct wxj_cfi **out);
/* Bytes of .eh_frame (CIE, FDE, zero terminator) for cfi with the
 * function at pc, written to out (NULL: only measured). pcrel: FDE
 * pointers pc-relative 4-byte, as if the bytes were at address at
 * (perf's jitdump layout); else absolute 8-byte. Returns the length. */
size_t wxj_eh_frame_build(const struct wxj_cfi *cfi, uint64_t pc, bool pcrel,
                          uint64_t at, uint8_t *out);
/* An .eh_frame_hdr at address at for one FDE at fde, for a function at pc
 * whose .eh_frame starts at eh (perf's jitdump): WXJ_EH_FRAME_HDR_SIZE. */
#define WXJ_EH_FRAME_HDR_SIZE 20
void wxj_eh_frame_hdr_build(uint64_t at, uint64_t eh, uint64_t fde,
                            uint64_t pc, uint8_t *out);

/* perf_map.c, jitdump.c: each writes one description's records (the
 * process's file opened at its first); 0 or the errno of the open, the
 * mapping or the write. */
int wxj_perf_map_load(const struct wxj_desc *d);
int wxj_jitdump_load(const struct wxj_desc *d);
/* A described function was freed: its range gets a neutral name. */
void wxj_jitdump_freed(const struct wxj_desc *d);
/* gdb_jit.c: 0, or ENOTSUP where another library's gdb JIT symbols won
 * the link; descriptions registered as objects of at most
 * WXJIT_GDB_BATCH_MAX (sets d->gdb), and removed one by one: with
 * rebuild, gdb is told at once (the object is replaced by one without
 * d); without, only when the object's last description goes (a heap's
 * destruction, which removes them all). */
int wxj_gdb_usable(void);
int wxj_gdb_register(struct wxj_desc *const *d, size_t n);
void wxj_gdb_remove(struct wxj_desc *d, bool rebuild);
void wxj_gdb_fork_prepare(void);
void wxj_gdb_fork_release(void); /* in the parent and in the child */
/* unwind_reg.c: d's unwind information (d->cfi) registered with the
 * process's unwinder (ENOTSUP while none is loaded), and deregistered. */
int wxj_unwind_register(struct wxj_desc *d);
void wxj_unwind_deregister(struct wxj_desc *d);
/* elf_image.c: a relocatable ELF object naming the non-NULL d[i], for gdb
 * (malloc'd). */
int wxj_elf_image_build(struct wxj_desc *const *d, size_t n, uint8_t **out,
                        size_t *size);

void wxj_perf_map_fork_prepare(void);
void wxj_perf_map_fork_parent(void);
void wxj_perf_map_after_fork(void);
void wxj_jitdump_fork_prepare(void);
void wxj_jitdump_fork_parent(void);
void wxj_jitdump_after_fork(void);

#endif /* WXJ_INTERNAL_H */
