/* wxjit: executable memory for JIT compilers under a strict W^X policy.
 *
 * No page handed out by wxjit is ever writable and executable at the same
 * time, yet any thread may run JIT code while other threads install, patch or
 * free code. See README.md for a walk-through and DESIGN.md for the protocol.
 *
 * Conventions for every function below:
 * - Return 0 on success or a positive errno value on failure; results come
 *   back through out-parameters, which are left untouched on failure.
 * - A call that fails changes nothing: no code, no reservation, no
 *   statistic (not even the system calls it made), also when a system call
 *   inside it fails. Only capacity it prepared stays, for later calls:
 *   chunks mapped and pages handed to pools (bytes_mapped, chunks, pages).
 * - "Thread-safe" means the call may run concurrently with any other wxjit
 *   call on the same heap, except wxjit_heap_destroy.
 * - fork() is safe at any time: operations in progress finish first, and
 *   the child gets heaps of its own (a dual-mapped heap is copied); code
 *   from before the fork runs in both processes. In the child, in-place
 *   reservations of threads other than the forking one are aborted. */
#ifndef WXJIT_H
#define WXJIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Exported from the shared library (built with hidden visibility). */
#if defined(__GNUC__)
#define WXJIT_API __attribute__((visibility("default")))
#else
#define WXJIT_API
#endif

#define WXJIT_VERSION_MAJOR 0
#define WXJIT_VERSION_MINOR 1
#define WXJIT_VERSION_PATCH 0

typedef struct wxjit_heap wxjit_heap;

/* How code bytes become executable. */
typedef enum wxjit_backend {
    /* The first backend of dualmap, procmem, toggle that works on this
     * system, probed at each heap creation, each probe running code
     * written its way (an emulator may miss such writes). dualmap first:
     * the fastest (no system call, no fault per install) but with a
     * standing writable alias of the code; procmem next: no alias, one
     * system call per write, nobody waits; toggle last: two mprotect per
     * write and executors of the page wait. WXJIT_HEAP_NO_WRITABLE_ALIAS
     * leaves dualmap out. README's "Hardened systems" says which works
     * under which policy; wxjit_backend_probe tells why one does not.
     * The environment variable WXJIT_BACKEND=toggle|dualmap|procmem
     * overrides the choice without a rebuild. */
    WXJIT_BACKEND_AUTO = 0,
    /* mprotect the pages that receive code RW, copy, back to RX; threads
     * executing those pages meanwhile are held by the fault-retry handler.
     * No second mapping of code exists. Unavailable (the probe's errno)
     * where the system refuses to make a page executable again (Linux
     * PR_SET_MDWE, SELinux without execmod/execmem). */
    WXJIT_BACKEND_TOGGLE = 1,
    /* Each chunk is a shared memory object mapped twice: RX where code
     * runs, RW at an unrelated address where wxjit writes. No system call
     * and no fault per install; the RW alias is the price (see
     * WXJIT_HEAP_RW_ON_DEMAND). */
    WXJIT_BACKEND_DUALMAP = 2,
    /* Insecure baseline, one RWX mapping, for benchmarks only: refused
     * unless WXJIT_HEAP_ALLOW_RWX is also given. */
    WXJIT_BACKEND_RWX = 3,
    /* Code pages are mapped read+exec once and never change protection;
     * wxjit writes code with pwrite on a close-on-exec descriptor of
     * /proc/self/mem (opened once per process, and once in a fork child),
     * through which the kernel writes the way a debugger sets a
     * breakpoint. No writable page and no second mapping exist; one
     * system call per install, patch or free (none per free with
     * WXJIT_HEAP_DEFER_TRAP_FILL), and executors never fault or wait. Write views are scratch copies: write - exec is constant
     * within a reservation, with or without WXJIT_RESERVE_IN_PLACE.
     * wxjit_patch_atomic opens a toggle window (RW for the store; needs
     * the fault handler, as toggle does) since the kernel's copy is not
     * one store; ENOTSUP where pages cannot regain PROT_EXEC.
     * Unavailable where /proc/self/mem cannot be opened or written
     * (proc_mem.force_override=never, no /proc, a seccomp filter) or
     * anonymous memory cannot be mapped executable (SELinux execmem).
     * Closing wxjit's descriptor behind its back (closefrom) breaks it. */
    WXJIT_BACKEND_PROCMEM = 4,
} wxjit_backend;

/* Heap flags (wxjit_heap_options.flags). */
enum {
    /* dualmap: map the RW view only for the length of each write (an mmap
     * and a munmap per install, patch or free) instead of keeping a
     * standing RW alias of all code. */
    WXJIT_HEAP_RW_ON_DEMAND = 1u << 0,
    /* Required with WXJIT_BACKEND_RWX, refused otherwise. */
    WXJIT_HEAP_ALLOW_RWX = 1u << 1,
    /* No standing writable alias of code may exist: AUTO picks procmem or
     * toggle only; refused (EINVAL) with dualmap, rwx, RW_ON_DEMAND and a
     * WXJIT_BACKEND variable naming dualmap. */
    WXJIT_HEAP_NO_WRITABLE_ALIAS = 1u << 2,
    /* toggle and procmem: wxjit_free makes no system call. Instead of
     * writing traps over the freed function (toggle: a write window, two
     * mprotect; procmem: one pwrite), it records the fill as pending.
     * The weaker guarantee: a stale call into freed code runs the old code
     * for a while (without the flag it traps at once), which is what a
     * JIT's own allocator without W^X gives, e.g. stock sljit's.
     * - toggle: the next write window that opens the page anyway (an
     *   install, a commit, an in-place reserve or abort, a patch) fills
     *   every pending fill on its pages before it writes anything else;
     *   stale calls trap from then on.
     * - procmem: the freed bytes stay until that space is written again,
     *   which may be never: by new code (its last granule gets traps past
     *   its end) or by the traps of an in-place reservation's commit or
     *   abort there; nothing else fills them, as no window takes a page
     *   from other writers on procmem.
     * Either way a call to new code at a reused address runs that code
     * only, never a mix with the old. A thread still running freed code
     * when its space is rewritten goes on in whatever is there: on toggle
     * traps or new code; on procmem, whose copy excludes no executor,
     * possibly a mix of old and new bytes while the kernel copies (as
     * when a free writes traps without the flag). A fill still pending when the heap is
     * destroyed is simply unmapped; a fork child inherits pending fills
     * like the code itself. Accepted with WXJIT_BACKEND_AUTO (applies if
     * toggle or procmem is chosen; dualmap's frees make no system call
     * anyway), refused with dualmap and rwx. */
    WXJIT_HEAP_DEFER_TRAP_FILL = 1u << 3,
    /* Profiling and debugging (README "Profiling and debugging"): where
     * the functions named with wxjit_describe are reported. Off by
     * default; when every one is off, describing validates its arguments
     * and records nothing, and commits and frees pay one branch. Each may
     * also be turned on for every heap by the environment (see
     * wxjit_heap_create). Any backend. */
    /* perf's map file /tmp/perf-<pid>.map: a "START SIZE name" line per
     * description, appended with one write(). The format has no unload:
     * after a free, perf may still give the old name to other code later
     * installed at the same address (use WXJIT_HEAP_JITDUMP there). perf
     * consults the file for anonymous executable mappings only: dualmap's
     * code is a shared memory object's, whose samples perf (6.1) gives
     * to that object instead; use WXJIT_HEAP_JITDUMP with dualmap. perf
     * (6.1) skips a line whose name is shorter than 3 bytes: such a
     * function stays unnamed in its reports (jitdump names it). */
    WXJIT_HEAP_PERF_MAP = 1u << 4,
    /* perf's jitdump file jit-<pid>.dump in $JITDUMPDIR, else the current
     * directory, for `perf record -k mono` and `perf inject --jit`: a
     * JIT_CODE_LOAD record with the code bytes per description
     * (JIT_CODE_UNWINDING_INFO before it when it has unwind information),
     * and a JIT_CODE_LOAD named "wxjit:freed" over a described function's
     * bytes at its free, so that perf never gives its name to later code
     * at that address (jitdump has no unload; a later load wins). The
     * file is created, and mapped once read+exec (never writable, allowed
     * under W^X policies) so that perf record sees it, at the process's
     * first description; where either is refused (a noexec mount: EPERM)
     * that wxjit_describe fails with its errno. */
    WXJIT_HEAP_JITDUMP = 1u << 5,
    /* gdb's JIT interface (__jit_debug_descriptor and
     * __jit_debug_register_code, defined by wxjit as gdb's manual
     * declares them): descriptions become in-memory ELF objects with the
     * functions' symbols and unwind information, so that gdb's `bt`,
     * `info symbol` and `disassemble` know JIT frames; a free replaces
     * the object by one without the function. gdb stops the program at
     * every registration (milliseconds, growing with the objects gdb
     * holds): describe many functions with one wxjit_describe_batch,
     * which registers one object per WXJIT_GDB_BATCH_MAX of them.
     * Where another library of the process defines these symbols too
     * (LLVM, wasmtime...): wxjit's are weak and protected, so in the
     * shared libwxjit its references never leave it, each library keeps
     * its own list and gdb (10 and later) reads them all. Where a static
     * link made another library's definitions win, the two could not
     * agree on a lock: wxjit leaves that list alone and heap creation
     * fails with ENOTSUP. Where the executable itself defines them, gdb
     * (13) reads the executable's list only (its rule for data symbols
     * an executable may have copied) and does not see wxjit's. */
    WXJIT_HEAP_GDB = 1u << 6,
    /* The process's own unwinder learns the unwind information of each
     * description that has some (__register_frame at describe,
     * __deregister_frame at free), so that C++ exceptions thrown through
     * JIT frames reach their handlers and _Unwind_Backtrace and
     * backtrace() continue past them. The two functions come from the
     * unwinder the process has loaded (libgcc_s, e.g. with libstdc++; or
     * LLVM's libunwind, whose one-FDE convention wxjit recognises), found
     * with dlsym when first needed: wxjit never links them. While none is
     * loaded (a C program without libgcc_s, a static executable that does
     * not export them) describing a function with unwind information
     * fails with ENOTSUP. libgcc searches
     * registered frames object by object: exceptions through processes
     * with very many registered functions may slow down (GCC 13 and
     * later keep them in a b-tree). */
    WXJIT_HEAP_UNWIND = 1u << 7,
};

/* Functions per ELF object registered with gdb (WXJIT_HEAP_GDB): a batch
 * larger than this is registered as several objects. */
#define WXJIT_GDB_BATCH_MAX 256

/* Options for wxjit_heap_create. Initialise with WXJIT_HEAP_OPTIONS_INIT so
 * that fields added later get their defaults. */
typedef struct wxjit_heap_options {
    size_t size;           /* sizeof(wxjit_heap_options); set by the macro */
    wxjit_backend backend; /* WXJIT_BACKEND_AUTO by default */
    size_t chunk_size;     /* bytes mapped per step; 0: 4 MiB. Page-rounded,
                              at least one page, at most 1 GiB. It is also
                              the largest single reservation. */
    size_t max_bytes;      /* cap on code memory mapped by this heap;
                              0: no cap. Reservations that would exceed it
                              fail with ENOMEM. */
    unsigned flags;        /* WXJIT_HEAP_* */
} wxjit_heap_options;

#define WXJIT_HEAP_OPTIONS_INIT \
    { sizeof(wxjit_heap_options), WXJIT_BACKEND_AUTO, 0, 0, 0 }

/* Creates a heap of executable memory. opts may be NULL for the defaults.
 * Environment (read here, at each creation):
 *   WXJIT_BACKEND=toggle|dualmap|procmem|auto  replaces
 *     WXJIT_BACKEND_AUTO (and obeys the flags: dualmap with
 *     NO_WRITABLE_ALIAS is EINVAL);
 *   WXJIT_DUALMAP_OBJECT=memfd|shm|tmpfile  the first way dualmap tries to
 *     get a shared memory object (default memfd, then shm_open, then an
 *     O_TMPFILE file in $TMPDIR, /dev/shm or /tmp);
 *   WXJIT_PERF=map|jitdump|map,jitdump|off  adds WXJIT_HEAP_PERF_MAP and/or
 *     WXJIT_HEAP_JITDUMP to the flags (off or empty: nothing added), so a
 *     JIT that describes its functions can be profiled without a rebuild;
 *   WXJIT_GDB=1|0  adds WXJIT_HEAP_GDB (0 or empty: nothing added);
 *   WXJIT_UNWIND=1|0  adds WXJIT_HEAP_UNWIND.
 * Errors: EINVAL  out is NULL, opts->size is too small, an unknown flag or
 *                 backend, chunk_size above 1 GiB, RW_ON_DEMAND with a
 *                 backend other than dualmap or AUTO or with
 *                 NO_WRITABLE_ALIAS, NO_WRITABLE_ALIAS with dualmap or
 *                 rwx, DEFER_TRAP_FILL with a backend other than toggle,
 *                 procmem or AUTO, ALLOW_RWX without the rwx backend, a bad value
 *                 in an environment variable;
 *         ENOTSUP WXJIT_HEAP_GDB where another library's gdb JIT symbols
 *                 replaced wxjit's at link time (see that flag);
 *         EPERM   WXJIT_BACKEND_RWX without WXJIT_HEAP_ALLOW_RWX;
 *         other   the errno that makes the requested backend unusable here
 *                 (EACCES: the system forbids RWX; ENOSYS: no way to get
 *                 a shared memory object), from probing it (AUTO: of the
 *                 last backend tried; wxjit_backend_probe says why);
 *         ENOMEM  out of memory.
 * Thread-safe. Not async-signal-safe. */
WXJIT_API int wxjit_heap_create(const wxjit_heap_options *opts, wxjit_heap **out);

/* Whether backend works on this system, without creating a heap: 0, or
 * the errno of the check that failed, with *reason (if reason is not NULL)
 * set to a short static string naming that check, e.g. "mprotect adding
 * PROT_EXEC refused", "shared memory object cannot be mapped executable",
 * "/proc/self/mem not writable"; NULL on success. Every probe also runs
 * code written the backend's way (ENOTSUP if it does not run). dualmap's
 * starts at the object WXJIT_DUALMAP_OBJECT names, as its heaps do
 * (EINVAL for a bad value, as wxjit_heap_create). AUTO: 0 if
 * some backend works (the one a heap would get; WXJIT_BACKEND is not
 * read), else the last errno with "no backend works here".
 * Errors: EINVAL unknown backend; others as above.
 * Thread-safe. Not async-signal-safe. The tool wxjit-probe prints it for
 * every backend, with the policies it detects. */
WXJIT_API int wxjit_backend_probe(wxjit_backend backend, const char **reason);

/* Destroys a heap and unmaps all its code. No thread may execute its code
 * or call into it during or after the call. Later calls that pass the
 * destroyed heap fail with EINVAL (the handle stays recognisable as dead
 * until a new heap happens to reuse its memory, like any freed pointer).
 * Errors: EINVAL heap is NULL or already destroyed.
 * Not thread-safe with respect to other calls on the same heap. */
WXJIT_API int wxjit_heap_destroy(wxjit_heap *heap);

/* Reports which backend a heap uses (never WXJIT_BACKEND_AUTO).
 * Errors: EINVAL heap is NULL or destroyed, out is NULL. Thread-safe. */
WXJIT_API int wxjit_heap_backend(const wxjit_heap *heap, wxjit_backend *out);

/* The name of a backend ("auto", "toggle", "dualmap", "rwx", "procmem").
 * Errors: EINVAL unknown backend or out NULL. Thread-safe. */
WXJIT_API int wxjit_backend_name(wxjit_backend backend, const char **out);

/* Reservation flags. */
enum {
    /* The bytes are written at their final location, with no copy at
     * commit: for JITs that emit straight into place. With toggle the
     * write view is the executable address itself, its pages kept
     * writable and not executable from reserve to commit or abort: threads
     * executing other code on those pages wait meanwhile (fault retry), so
     * keep the window short; the reserving thread must not execute code on
     * those pages until commit (not from a signal handler either). With
     * dualmap the write view is the RW alias of the executable address
     * (write - exec is constant within a reservation) and nobody waits.
     * On every backend alike: only the reserving thread may commit or
     * abort it (EPERM otherwise); while it is open, that thread's commits
     * of other reservations onto the same pages fail with EDEADLK; if the
     * thread exits or is cancelled first, the reservation is aborted.
     * While it is open the thread's next code goes to another page; once
     * it ends (commit or abort) the rest of its page is the thread's again
     * unless the thread needed new space meanwhile, so a JIT that
     * compiles, runs and frees in turn reuses the same bytes. */
    WXJIT_RESERVE_IN_PLACE = 1u << 0,
};

/* A reservation: space for code at its final executable address. */
typedef struct wxjit_reservation {
    void *exec;   /* final executable address; emit code for this address */
    void *write;  /* write the bytes here (scratch buffer, or exec itself
                     with WXJIT_RESERVE_IN_PLACE) */
    size_t size;  /* bytes reserved (as requested) */
    uintptr_t internal[2]; /* owned by wxjit; do not touch */
} wxjit_reservation;

/* Reserves size bytes of code space aligned to align (0 means 16; a power
 * of two at most the page size; blocks are always at least 16-aligned).
 * The space comes from the calling thread's own pool, so threads do not
 * contend. Nothing there is executable until wxjit_commit.
 * Errors: EINVAL heap NULL/destroyed, out NULL, size 0 or larger than the
 *                heap's chunk size, align not a power of two or above the
 *                page size, unknown flags;
 *         ENOMEM the heap's max_bytes would be exceeded, or the system is
 *                out of memory or mappings (vm.max_map_count);
 *         EMFILE, ENFILE  dualmap: no file descriptor for the shared
 *                memory object of a new chunk (RLIMIT_NOFILE); space in
 *                existing chunks is still handed out;
 *         EDEADLK toggle (in place, or wxjit_install): the calling thread holds a window on live code
 *                or an in-place reservation, and the call would have to
 *                wait for a page another thread holds that way (it never
 *                waits then: close yours, then retry);
 * Thread-safe. Not async-signal-safe. */
WXJIT_API int wxjit_reserve(wxjit_heap *heap, size_t size, size_t align, unsigned flags,
                  wxjit_reservation *out);

/* Makes the first `used` bytes of a reservation executable (copying them
 * from the write view when it is a scratch buffer); the unused tail goes
 * back to the pool and is filled with trap instructions. Once this returns,
 * res->exec can be called from every thread. The reservation is consumed
 * (its fields are cleared).
 * Errors: EINVAL  heap NULL/destroyed, res NULL or not an open reservation
 *                 of this heap, used 0 or larger than res->size;
 *         EPERM   an in-place reservation committed by another thread;
 *         EDEADLK a scratch reservation on a page where the calling thread
 *                 has an in-place reservation or a window on live code
 *                 open (its code could not run until that one ends): end
 *                 that one first; or, as wxjit_reserve, a page another
 *                 thread holds;
 *         other   errno of a failed mprotect (ENOMEM at vm.max_map_count,
 *                 after retries): the reservation stays open, to commit
 *                 again or abort; an in-place one keeps its write view
 *                 (its bytes past `used` are traps already).
 * Thread-safe. The reserving thread's commit takes no lock another thread
 * takes; a scratch reservation committed by another thread (even after the
 * reserving thread exited) takes one: the reserving pool's (counted in
 * stats shared_locks). Not async-signal-safe. */
WXJIT_API int wxjit_commit(wxjit_heap *heap, wxjit_reservation *res, size_t used);

/* Gives a reservation back without making anything executable. The
 * reservation is consumed (its fields are cleared).
 * Errors: EINVAL heap NULL/destroyed, res NULL or not an open reservation
 *                of this heap;
 *         EPERM  an in-place reservation aborted by another thread;
 *         other  toggle, in place: errno of a failed mprotect; the
 *                reservation stays open (its bytes are traps now): abort
 *                or commit it again.
 * Thread-safe; from another thread than the reserving one, as for
 * wxjit_commit. Not async-signal-safe. */
WXJIT_API int wxjit_abort(wxjit_heap *heap, wxjit_reservation *res);

/* Commits count reservations at once: as count calls of wxjit_commit with
 * used[i] for res[i], but each run of adjacent pages they touch is made
 * writable and executable once for the whole batch (toggle: at most two
 * mprotect calls per run instead of two per function). All reservations
 * are checked before anything changes; a bad one fails the whole call.
 * Errors: EINVAL heap NULL/destroyed, res or used NULL, count 0, a
 *                used[i] of 0 or above res[i].size, a res[i] that is not an
 *                open reservation of this heap, the same one twice;
 *         EPERM  an in-place reservation of another thread;
 *         EDEADLK a scratch reservation on a page of an in-place
 *                reservation the calling thread has open and that is not
 *                in the batch;
 *         other  errno of a failed mprotect: the in-place reservations and
 *                the page runs before the failing one (in address order)
 *                are committed and cleared (res[i].exec == NULL), and
 *                count as installs; the others stay open. The system
 *                calls of such a call are not counted.
 * Thread-safe. Not async-signal-safe. */
WXJIT_API int wxjit_commit_batch(wxjit_heap *heap, wxjit_reservation *res,
                                 const size_t *used, size_t count);

/* Installs a finished, position-independent blob in one call: reserve,
 * copy, commit. *exec receives its executable address.
 * Errors: as wxjit_reserve, plus EINVAL if code or exec is NULL.
 * Thread-safe. Not async-signal-safe. */
WXJIT_API int wxjit_install(wxjit_heap *heap, const void *code, size_t size,
                  size_t align, void **exec);

/* Rewrites size bytes of live (committed, not freed) code at addr, which
 * must lie within the committed bytes of one function installed in this
 * heap. Threads executing that page wait until the new bytes are in place
 * (toggle) and the instruction cache is flushed. Not atomic for concurrent
 * executors of the patched bytes: use wxjit_patch_atomic for a store an
 * executor may race with. A patch racing a wxjit_free of the same function
 * either lands before the free (and is trapped over with the rest) or
 * fails with EINVAL; it never writes into freed space.
 * Errors: EINVAL heap NULL/destroyed, addr or bytes NULL, size 0, the range
 *                is not entirely inside the committed bytes of one live
 *                function of this heap;
 *         EBUSY  procmem: the caller's own window (wxjit_window_open) is
 *                open over those bytes (its close would undo the patch);
 *         EDEADLK another thread's window is over them (toggle: on their
 *                page) and the caller holds a window or in-place
 *                reservation;
 *         other  errno of a failed mprotect or pwrite (nothing changed;
 *                toggle: threads executing other code on that page may
 *                wait until the next call on this heap makes it executable
 *                again).
 * Thread-safe. Not async-signal-safe. */
WXJIT_API int wxjit_patch(wxjit_heap *heap, void *addr, const void *bytes, size_t size);

/* Stores the low `width` bytes of value (1, 2, 4 or 8, host byte order) at
 * addr with a single atomic store; addr must be aligned to width and lie in
 * live code of this heap.
 * Errors: as wxjit_patch, plus EINVAL for a bad width or misaligned addr;
 *         ENOTSUP procmem where no page may regain PROT_EXEC (see
 *                 WXJIT_BACKEND_PROCMEM): no atomic store exists there.
 * Thread-safe. Not async-signal-safe. */
WXJIT_API int wxjit_patch_atomic(wxjit_heap *heap, void *addr, uint64_t value,
                       size_t width);

/* Opens [exec, exec + size) of a live function for writing with ordinary
 * stores (call-site and jump patching, inline caches, constants), until
 * wxjit_window_close with the same exec and size. *write receives where
 * to write: at the same distance from exec as the function's reservation
 * had (toggle: exec itself; dualmap: its RW alias; procmem: the chunk's
 * private shadow copy), so an emitter's stored executable offset stays
 * valid; the view shows the current bytes. While it is open: toggle makes
 * its pages writable and not executable (executors of those pages wait in
 * the fault handler, as for an install); dualmap's stores are seen by
 * executors as they are made; procmem writes the bytes at close (one
 * pwrite, which the kernel copies, not one store). Where other threads
 * run the very bytes being rewritten, use toggle, or wxjit_patch_atomic
 * for aligned words.
 * Windows of one thread may nest over different bytes; a window that
 * overlaps another thread's (on toggle: shares a page with it) waits for
 * it to close, unless the caller holds a window or an in-place
 * reservation itself: then EDEADLK, so that no two threads ever wait for
 * each other (close yours, then retry). A free of the function waits for
 * another thread's window over it the same way (EDEADLK for the caller's
 * own). On procmem a patch of bytes under another thread's window waits
 * for it too (its close would write back the old bytes). A thread must
 * not run code on a page another thread's window holds (toggle) while it
 * holds a window itself. A thread that exits closes its windows as they
 * are; a fork child keeps only the forking thread's.
 * Errors: EINVAL  heap NULL/destroyed, exec or write NULL, size 0, the
 *                 range not inside one live function's committed bytes;
 *         EBUSY   the caller has a window open over some of these bytes;
 *         EDEADLK another thread's window is in the way and the caller
 *                 holds a window or an in-place reservation;
 *         ENOTSUP dualmap with WXJIT_HEAP_RW_ON_DEMAND (its views are
 *                 mapped anew each time: no stable write address);
 *         ENOMEM  out of memory, or the caller has windows open in 8
 *                 other heaps at once;
 *         other   the errno of a failed mprotect (toggle).
 * Thread-safe. Not async-signal-safe. */
WXJIT_API int wxjit_window_open(wxjit_heap *heap, void *exec, size_t size,
                                void **write);

/* Closes the calling thread's window opened with the same exec and size:
 * the bytes are executable from every thread, instruction caches synced
 * (toggle: once no other window of the thread holds their page).
 * Errors: EINVAL no such window of the calling thread (or heap invalid);
 *         the errno of a failed mprotect (toggle) or pwrite (procmem):
 *         the window stays open with what was written in it (procmem:
 *         executors still run the old bytes), for a retry.
 * Thread-safe. Not async-signal-safe. */
WXJIT_API int wxjit_window_close(wxjit_heap *heap, void *exec, size_t size);

/* The executable address of addr, which is either one (returned as is)
 * or a write address wxjit handed out for this heap's code (an in-place
 * reservation's or a window's: dualmap's standing alias, procmem's
 * shadow). For emitters that keep write addresses and later need the
 * code's (sljit's set_jump_addr).
 * Errors: EINVAL heap NULL/destroyed, addr or exec NULL, addr neither.
 * Thread-safe. Async-signal-safe. */
WXJIT_API int wxjit_exec_of(wxjit_heap *heap, const void *addr, void **exec);

/* Frees the function that starts at exec (an address returned by
 * wxjit_install or a committed reservation). Its bytes are filled with trap
 * instructions at once (int3, brk #0, c.ebreak), so a stale call traps
 * deterministically with SIGTRAP, and the space is reused later. With
 * WXJIT_HEAP_DEFER_TRAP_FILL on toggle or procmem the fill waits (see that
 * flag) and the call makes no system call.
 * Errors: EINVAL heap NULL/destroyed, exec NULL, not the start of a live
 *                function of this heap (foreign pointer, interior pointer,
 *                open reservation, double free);
 *         EDEADLK the caller's own window on live code is over it, or
 *                another thread's window (toggle: one on its pages) and
 *                the caller holds a window or in-place reservation
 *                (nothing changed: the function stays live);
 *         other  errno of a failed mprotect (nothing changed; as for
 *                wxjit_patch).
 * Thread-safe (a free of a function that another thread is describing
 * waits for that wxjit_describe to return). Not async-signal-safe. */
WXJIT_API int wxjit_free(wxjit_heap *heap, void *exec);

/* ---- describing code: profilers, debuggers, unwinders ----------------- */

/* Longest name wxjit_describe accepts, in bytes without the NUL. */
#define WXJIT_NAME_MAX 1024

/* wxjit_code_info.flags */
enum {
    /* Unwind information is generated for the standard frame-pointer
     * prologue, which the function must start with, on this CPU:
     *   x86_64   push %rbp; mov %rsp,%rbp          (55 48 89 e5)
     *   aarch64  stp x29, x30, [sp, #-16]!; mov x29, sp
     *                                  (a9bf7bfd 910003fd)
     *   riscv64  addi sp,sp,-16; sd ra,8(sp); sd s0,0(sp); addi s0,sp,16
     *            (uncompressed: ff010113 00113423 00813023 01010413)
     * and the frame pointer must stay put until the epilogue. From the
     * prologue's end on, the return address and caller's frame are found
     * through the frame pointer. Not described: the epilogue's last
     * instructions after the frame pointer is restored (a profiler sample
     * there may lose one frame; exceptions and debuggers never stop
     * there). wxjit checks the prologue's bytes (EINVAL otherwise). */
    WXJIT_DESCRIBE_FRAME_POINTER = 1u << 0,
};

/* What wxjit_describe tells the tools about one function. Initialise with
 * WXJIT_CODE_INFO_INIT so that fields added later get their defaults. */
typedef struct wxjit_code_info {
    size_t size;      /* sizeof(wxjit_code_info); set by the macro */
    const char *name; /* required: 1 to WXJIT_NAME_MAX bytes, no control
                         characters (perf's map is line-based); copied */
    unsigned flags;   /* WXJIT_DESCRIBE_* */
    /* Optional unwind information in .eh_frame form: one CIE, then one
     * FDE for this function (no terminator), as a compiler emits it, with
     * the FDE's initial location the function's offset from exec
     * (normally 0) and its address range at most the committed bytes.
     * The CIE's augmentation is "" or "zR" (FDE pointers absptr or
     * udata/sdata 2/4/8, not pc-relative: wxjit re-encodes them for each
     * tool); no personality or LSDA (frames of JIT code catch nothing).
     * Copied; NULL and 0 when there is none. Not with
     * WXJIT_DESCRIBE_FRAME_POINTER. */
    const void *eh_frame;
    size_t eh_frame_size;
} wxjit_code_info;

#define WXJIT_CODE_INFO_INIT { sizeof(wxjit_code_info), NULL, 0, NULL, 0 }

/* Names the live function that starts at exec (committed or installed, not
 * freed) for the tools the heap reports to (WXJIT_HEAP_PERF_MAP,
 * WXJIT_HEAP_JITDUMP, WXJIT_HEAP_GDB, WXJIT_HEAP_UNWIND, or their
 * environment variables), optionally with its unwind information. Call it once per function, after its commit; the
 * tools see it once this returns. Everything recorded is released or
 * retracted when the function is freed (wxjit_free), so an address reused
 * by later code never carries this name where the tool allows it (see each
 * flag). With no tool turned on for the heap, the arguments are checked
 * and nothing else happens: a JIT may call it unconditionally.
 * Errors: EINVAL  heap NULL/destroyed, info NULL or info->size too small,
 *                 exec not the start of a live function of this heap, a
 *                 bad name, unknown flags, eh_frame malformed, not for
 *                 this function or with FRAME_POINTER, FRAME_POINTER on a
 *                 function that does not start with the prologue;
 *         EBUSY   the function was described already (a tool is on);
 *         ENOTSUP WXJIT_HEAP_UNWIND, with unwind information, while the
 *                 process has no unwinder loaded (see that flag);
 *         ENOMEM  out of memory;
 *         other   the errno of creating, mapping (jitdump's marker: EPERM
 *                 on a noexec mount) or writing a tool's file (nothing
 *                 kept; a jitdump load already written is followed by
 *                 its "wxjit:freed" record, a perf map line stays).
 * Thread-safe: many threads may describe and free concurrently (a
 * describe racing the free of the same function either fails with EINVAL
 * or is retracted by that free, which waits for it to finish so that the
 * space is reused only once the description is whole and retracted; like
 * any call that names freed code, one that comes after the space was
 * reused names the new function, and makes its describe EBUSY meanwhile).
 * Not async-signal-safe. */
WXJIT_API int wxjit_describe(wxjit_heap *heap, void *exec,
                             const wxjit_code_info *info);

/* Describes count functions at once, exec[i] with info[i]: as count calls
 * of wxjit_describe, but registered with gdb (WXJIT_HEAP_GDB) as one ELF
 * object per WXJIT_GDB_BATCH_MAX functions, so gdb stops once for them,
 * not once each, and a program with 100,000 functions starts under gdb in
 * seconds (BENCHMARKS.md). All are checked before any is described; on
 * any error none is (those written to perf's files before a failed
 * write are retracted there as at a free).
 * Errors: as wxjit_describe, for any of them (EBUSY also for the same
 *         function twice); EINVAL also for exec or info NULL, count 0.
 * Thread-safe. Not async-signal-safe. */
WXJIT_API int wxjit_describe_batch(wxjit_heap *heap, void *const *exec,
                                   const wxjit_code_info *info,
                                   size_t count);

/* Counters of one heap, read without stopping other threads (each field is
 * exact, the set is not a single snapshot under concurrent use). */
typedef struct wxjit_stats {
    uint64_t installs;         /* successful commits and installs */
    uint64_t frees;            /* successful frees */
    uint64_t bytes_live;       /* bytes of live code (16-byte granules) */
    uint64_t bytes_mapped;     /* bytes of code address space mapped */
    uint64_t pages;            /* pages handed out to pools so far */
    uint64_t chunks;           /* chunks mapped */
    uint64_t mprotect_calls;   /* permission changes made (toggle) */
    uint64_t map_calls;        /* mmap/munmap calls made (chunks, dualmap's
                                  RW windows and executable steps) */
    uint64_t syscalls;         /* every system call made inside this
                                  heap's operations (mprotect, mmap,
                                  munmap, futex, memfd_create, ...) */
    uint64_t faults_retried;   /* fetch faults on this heap's pages that
                                  were retried by the fault handler */
    uint64_t faults_forwarded; /* faults on this heap's pages that were not
                                  wxjit's and were passed on */
    uint64_t shared_locks;     /* acquisitions of locks shared between
                                  threads (heap lock at refills, other
                                  threads' pools, dualmap's window list
                                  with WXJIT_HEAP_RW_ON_DEMAND...) inside
                                  this heap's operations; 0 per install on
                                  the steady path */
    uint64_t core_syncs;       /* membarrier calls made so that every other
                                  thread's CPU runs the changed code, not
                                  instructions it fetched before: on
                                  aarch64 one per operation that changes
                                  code, on x86_64 one per patch or window
                                  close on live code, on riscv64 none (its
                                  icache flush reaches every hart); README,
                                  "Instruction caches and other cores".
                                  System calls, not syncs: the process's
                                  first makes up to 3 (registration), and
                                  where the kernel or a policy refuses
                                  membarrier the first one or two calls
                                  fail and count, then none is made. As
                                  every counter here, only those of
                                  operations that succeed: a failed one
                                  may sync (it may have written code) and
                                  adds nothing */
} wxjit_stats;

/* Reads a heap's counters.
 * Errors: EINVAL heap NULL/destroyed, out NULL.
 * Thread-safe. Not async-signal-safe. */
WXJIT_API int wxjit_stats_get(wxjit_heap *heap, wxjit_stats *out);

/* Installs wxjit's SIGSEGV handler for the whole process, remembering the
 * handler that was there before; faults that are not wxjit's own reach that
 * handler (SA_SIGINFO or not) or the default action exactly as they would
 * without wxjit. Calls nest: each successful install needs one uninstall.
 * The handler runs on the alternate signal stack when the thread has one,
 * and with SA_NODEFER: a signal handler that interrupts a thread waiting
 * in it and faults on another page being written is retried too.
 * Runtimes that own SIGSEGV call wxjit_handle_fault instead.
 * Errors: none beyond sigaction's (EINVAL). Thread-safe (serialised).
 * Not async-signal-safe. */
WXJIT_API int wxjit_fault_handler_install(void);

/* Undoes one wxjit_fault_handler_install; the last one restores the
 * previous handler.
 * Errors: EINVAL not installed;
 *         EBUSY  someone replaced wxjit's handler since (restoring would
 *                remove theirs); nothing is changed.
 * Thread-safe (serialised). Not async-signal-safe. */
WXJIT_API int wxjit_fault_handler_uninstall(void);

/* For runtimes with their own SIGSEGV handler (Mono, .NET, JVMs): call it
 * first with the handler's arguments (info is the siginfo_t *, ucontext the
 * ucontext_t * of an SA_SIGINFO handler; void * keeps this header free of
 * POSIX feature macros). Returns 1 when the fault was an
 * instruction fetch from a wxjit page that was momentarily writable: the
 * handler should then return at once so the instruction is retried.
 * Returns 0 for every other fault, which the runtime handles as usual.
 * Async-signal-safe; never calls mprotect and never takes a lock. May wait
 * (futex) until the page's writer has finished. The runtime's handler
 * must be installed with SA_NODEFER (else a nested fault while a thread
 * waits here, from a signal handler that runs JIT code, is fatal: the
 * kernel kills a thread that faults with SIGSEGV blocked), must leave
 * other signals unblocked that may need to run meanwhile, and must not
 * longjmp out of a wait here (the wait is counted until it returns). */
WXJIT_API int wxjit_handle_fault(int sig, void *info, void *ucontext);

/* Process-wide fault counters: faults retried by wxjit_handle_fault, and
 * faults it declined (including those outside any heap, such as NULL
 * dereferences). Either pointer may be NULL. Never fails; returns 0.
 * Thread-safe and async-signal-safe. */
WXJIT_API int wxjit_fault_counts(uint64_t *retried, uint64_t *declined);

#ifdef __cplusplus
}
#endif

#endif /* WXJIT_H */
