/* libFuzzer harness for the whole API, multi-threaded and model-based.
 * The input is read as a sequence of ops (API calls with valid, stale,
 * forged and garbage arguments, write windows on live code, and thread
 * exits, forks, failure injection) on up to MAX_HEAPS heaps, each run on
 * the thread its op byte names, one at a time. A model of what must
 * exist predicts every result, and after every op the harness checks
 * (checks.c) that
 *   - each call returned what the model predicts (the documented errno for
 *     bad arguments and another thread's in-place reservation, and then
 *     nothing changed: same statistics, same bits);
 *   - no two live functions or open reservations overlap;
 *   - each open window's view holds what was written through it;
 *   - every live function returns its value when called from the op's
 *     thread, and every CALL_ALL_EVERY ops from every worker;
 *   - the heap's metadata (granule bitmaps, page words, free-space hints,
 *     counters) describes exactly the model's blocks;
 *   - every byte of every page handed out is live code, the write view of
 *     an open reservation, or a trap byte;
 *   - (toggle, every few ops and after an injected failure) each page has
 *     the protection it should.
 *
 * Modes (environment, read once): FUZZ_MODE=serial (default) runs the ops
 * alone; FUZZ_MODE=concurrent also runs executor threads that call the
 * published functions nonstop while the ops run (concurrent.c). The
 * backend is WXJIT_BACKEND (make fuzz runs each); an input may also ask
 * for one explicitly.
 *
 * Input format: a byte stream, consumed as
 *     op-byte operand-bytes op-byte operand-bytes ...
 * where op = op-byte % OP_COUNT (enum op in fuzz.h) and the thread that
 * runs it is op-byte / OP_COUNT % NTHREADS (0 the main thread, so op bytes
 * below OP_COUNT run there as in the single-threaded harness); each op
 * reads the operand bytes it needs (input.c); reading past the end yields
 * zeros and ends the sequence after that op. At most MAX_STEPS ops run
 * per input. At the end every open reservation is aborted and every heap
 * destroyed, so inputs are independent (worker threads and the fault
 * handler's per-thread memory of its last retry live on, and are
 * modelled). Seeds in fuzz/corpus/ were made by fuzz/make_seeds.py.
 *
 * Built with fuzz/CMakeLists.txt (clang, -fsanitize=fuzzer,address,
 * undefined); `make fuzz` runs it per backend and mode.
 * tests/test_fuzz_replay.c builds the same files with any compiler to
 * replay fuzz/corpus/ and fuzz/regressions/ under ctest. */
#include "../tools/wx_policy.h"
#include "fuzz.h"

#define CALL_ALL_EVERY 8
#define PROTECTIONS_EVERY 16

static const char *const op_names[OP_COUNT] = {
    "create",       "destroy", "reserve",      "commit",
    "abort",        "install", "patch",        "patch_atomic",
    "free",         "stats",   "handle_fault", "handler",
    "backend",      "commit_batch", "thread_exit", "fork",
    "inject",       "share",   "window_open",  "window_close",
};

static void (*const ops[OP_COUNT])(struct input *) = {
    [OP_CREATE] = op_create,         [OP_DESTROY] = op_destroy,
    [OP_RESERVE] = op_reserve,       [OP_COMMIT] = op_commit,
    [OP_ABORT] = op_abort,           [OP_INSTALL] = op_install,
    [OP_PATCH] = op_patch,           [OP_PATCH_ATOMIC] = op_patch_atomic,
    [OP_FREE] = op_free,             [OP_STATS] = op_stats,
    [OP_HANDLE_FAULT] = op_handle_fault, [OP_HANDLER] = op_handler,
    [OP_BACKEND] = op_backend,       [OP_COMMIT_BATCH] = op_commit_batch,
    [OP_THREAD_EXIT] = op_thread_exit, [OP_FORK] = op_fork,
    [OP_INJECT] = op_inject,         [OP_SHARE] = op_share,
    [OP_WINDOW_OPEN] = op_window_open, [OP_WINDOW_CLOSE] = op_window_close,
};

struct step {
    enum op op;
    struct input *in;
    bool injected;
};

/* On the op's thread: the op, under the injection armed for it, and the
 * calls from that thread. */
static void run_step(void *p)
{
    struct step *s = p;
    s->injected = inject_arm(s->op);
    ops[s->op](s->in);
    if (s->injected)
        inject_disarm();
    if (recover_heap >= 0 && heaps[recover_heap].alive) {
        /* Any call on the heap, even one refused: a foreign free. */
        EXPECT(wxjit_free(heaps[recover_heap].h, (void *)page), EINVAL);
    }
    recover_heap = -1;
    check_calls();
}

static void calls_here(void *unused)
{
    (void)unused;
    check_calls();
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    page = wxj_os_page_size();
    const char *env = getenv("WXJIT_BACKEND"), *mode = getenv("FUZZ_MODE");
    trace = getenv("FUZZ_TRACE") && !strcmp(getenv("FUZZ_TRACE"), "1");
    env_backend = !env                         ? WXJIT_BACKEND_DUALMAP
                  : !strcmp(env, "toggle")  ? WXJIT_BACKEND_TOGGLE
                  : !strcmp(env, "dualmap") ? WXJIT_BACKEND_DUALMAP
                  : !strcmp(env, "procmem") ? WXJIT_BACKEND_PROCMEM
                                            : WXJIT_BACKEND_AUTO;
    if (env_backend == WXJIT_BACKEND_AUTO) {
        fprintf(stderr, "fuzz_api: WXJIT_BACKEND must be toggle, dualmap "
                        "or procmem\n");
        exit(2);
    }
    if (mode && strcmp(mode, "serial") && strcmp(mode, "concurrent")) {
        fprintf(stderr, "fuzz_api: FUZZ_MODE must be serial or concurrent\n");
        exit(2);
    }
    concurrent = mode && !strcmp(mode, "concurrent");
    if (!env)
        setenv("WXJIT_BACKEND", "dualmap", 1);
    int err = wx_policy_enter();
    if (err == 0)
        err = wxjit_fault_handler_install();
    if (err) {
        fprintf(stderr, "fuzz_api: setup: %s\n", strerror(err));
        exit(2);
    }
    threads_init();
    fprintf(stderr, "fuzz_api: W^X policy on, backend %s, %s mode, %d "
                    "threads\n",
            getenv("WXJIT_BACKEND"),
            concurrent ? "concurrent" : "serial", NTHREADS);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, size};
    memset(heaps, 0, sizeof(heaps));
    drop_ghosts(-1);
    n_dead = n_stale_ptr = n_stale_res = 0;
    cur = 0;
    inject_disarm();
    fork_reset();
    if (concurrent)
        executors_start();
    /* Every input starts with a heap, so short inputs do something. */
    struct input none = {NULL, 0};
    op_create(&none);
    for (int n = 0; n < MAX_STEPS && in.left; n++) {
        unsigned b = u8(&in);
        struct step s = {(enum op)(b % OP_COUNT), &in, false};
        int t = (int)(b / OP_COUNT % NTHREADS);
        if (trace)
            fprintf(stderr, "fuzz_api: step %d: %s on thread %d\n", n,
                    op_names[s.op], t);
        cur = 0;
        if (s.op == OP_THREAD_EXIT) {
            cur = t;
            op_thread_exit(&in);
            cur = 0;
        } else {
            thread_call(t, run_step, &s);
        }
        check_all(n % PROTECTIONS_EVERY == PROTECTIONS_EVERY - 1 ||
                  s.injected);
        if (n % CALL_ALL_EVERY == CALL_ALL_EVERY - 1)
            for (int w = 1; w < NTHREADS; w++)
                thread_call(w, calls_here, NULL);
    }
    cur = 0;
    /* Executors may wait on a page an in-place reservation or a window
     * holds. */
    windows_close_all();
    for (int i = 0; i < MAX_RES; i++)
        if (res[i].used)
            abort_open(&res[i]);
    executors_stop();
    check_all(true);
    check_calls();
    for (int hi = 0; hi < MAX_HEAPS; hi++)
        if (heaps[hi].alive)
            destroy_heap(hi);
    FUZZ_CHECK(wx_policy_wx_mappings() == 0, "a W+X mapping exists");
    return 0;
}
