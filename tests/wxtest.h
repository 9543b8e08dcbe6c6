/* Shared test helpers: loud assertions, the kernel-enforced W^X policy,
 * death tests in child processes, /proc/self/maps checks. */
#ifndef WXTEST_H
#define WXTEST_H


#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "emit.h"
#include "wx_policy.h"
#include "wxjit.h"

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, \
                    #cond);                                                  \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

#define CHECK_EQ(a, b)                                                       \
    do {                                                                     \
        long long a_ = (long long)(a), b_ = (long long)(b);                  \
        CHECK(a_ == b_, "%s is %lld, expected %lld", #a, a_, b_);            \
    } while (0)

/* An API call that must return err (0 for success). */
#define CHECK_RET(call, err)                                                 \
    do {                                                                     \
        int got_ = (call), want_ = (err);                                    \
        CHECK(got_ == want_, "returned %d (%s), expected %d (%s)", got_,     \
              strerror(got_), want_, strerror(want_));                       \
    } while (0)

#define CHECK_OK(call) CHECK_RET(call, 0)

typedef int (*int_fn)(void);

static inline int_fn as_fn(void *code)
{
    int_fn fn;
    memcpy(&fn, &code, sizeof(fn));
    return fn;
}

/* ---- checking tools -------------------------------------------------------
 * The same tests run natively and under ASan+UBSan, TSan and Valgrind
 * memcheck (make check-asan, check-tsan, check-valgrind). A check that a
 * tool makes impossible is skipped with its reason printed (wxtest_skip),
 * a whole test with exit status WXTEST_SKIPPED, which ctest reports as
 * "Skipped": never a silent pass. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WXTEST_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define WXTEST_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(WXTEST_ASAN)
#define WXTEST_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__) && !defined(WXTEST_TSAN)
#define WXTEST_TSAN 1
#endif
#ifdef WXJIT_HAVE_VALGRIND_H
#include <valgrind/memcheck.h>
#endif

#define WXTEST_SKIPPED 77 /* SKIP_RETURN_CODE in tests/CMakeLists.txt */

static inline bool wxtest_valgrind(void)
{
#ifdef WXJIT_HAVE_VALGRIND_H
    return RUNNING_ON_VALGRIND;
#else
    return false; /* the build has no client requests: see CMakeLists */
#endif
}

/* Under a user-mode emulator (qemu-user running a cross build, see
 * tools/wx_policy.h): what runs on what, for messages; NULL natively. */
static inline const char *wxtest_emulator(void)
{
    static char what[96];
    char kernel[32];
    if (!what[0] && wx_policy_emulated(kernel, sizeof(kernel)))
        snprintf(what, sizeof(what), "user-mode emulation (%s program, %s "
                 "kernel)", WX_POLICY_ARCH_NAME, kernel);
    return what[0] ? what : NULL;
}

/* The tool the test runs under, for messages; NULL natively. */
static inline const char *wxtest_tool(void)
{
#if defined(WXTEST_ASAN)
    return "ASan";
#elif defined(WXTEST_TSAN)
    return "TSan";
#else
    return wxtest_valgrind() ? "Valgrind" : wxtest_emulator();
#endif
}

/* ASan and TSan install a SIGSEGV handler and an alternate signal stack
 * for every thread before main: a fault wxjit forwards reaches their
 * report, not the default action, and no thread is without an alternate
 * stack. */
static inline bool wxtest_sanitizer_signals(void)
{
#if defined(WXTEST_ASAN) || defined(WXTEST_TSAN)
    return true;
#else
    return false;
#endif
}

static inline void wxtest_skip(const char *what, const char *why)
{
    printf("  SKIPPED under %s: %s: %s\n", wxtest_tool(), what, why);
}

static inline void wxtest_skip_all(const char *test, const char *why)
{
    printf("%s: SKIPPED under %s: %s\n", test, wxtest_tool(), why);
    exit(WXTEST_SKIPPED);
}

/* What the calling thread does next is an invalid access on purpose (a
 * death test's NULL dereference or jump to unmapped memory): memcheck is
 * told not to count it, or --error-exitcode would replace the exit status
 * the test checks. Only for the rest of the thread's life: call it just
 * before the access, in the child that is to die of it. */
static inline void wxtest_invalid_access_follows(void)
{
#ifdef WXJIT_HAVE_VALGRIND_H
    VALGRIND_DISABLE_ERROR_REPORTING;
#endif
}

/* ---- the W^X policy and /proc/self/maps ---------------------------------- */

/* Whether wxtest_enter_wx_policy puts the kernel-enforced policy in
 * place: everywhere but under Valgrind and user-mode emulation. */
static inline bool wxtest_policy_enforced(void)
{
    return !wxtest_valgrind() && !wxtest_emulator();
}

/* The W^X policy (tools/wx_policy.h) or a loud failure. Not under
 * Valgrind, which (3.19) does not implement seccomp(2) and, were it to,
 * would be stopped by the filter: its own translation cache and heap are
 * RWX mappings that it adds as the program runs. There the W+X checks
 * (wxtest_wx_mappings) still read /proc/self/maps. */
static inline void wxtest_enter_wx_policy(void)
{
    if (wxtest_valgrind()) {
        printf("  W^X seccomp policy NOT entered under Valgrind (no "
               "seccomp(2); Valgrind maps its own code cache RWX): W+X "
               "checks count the program's own mappings only\n");
        return;
    }
    int err = wx_policy_enter();
    if (err == WX_POLICY_EMULATED) {
        printf("  W^X seccomp policy NOT entered under %s: qemu-user "
               "refuses seccomp, and a filter for this ABI would judge the "
               "emulator's own system calls; W+X checks read the emulated "
               "/proc/self/maps\n", wxtest_emulator());
        return;
    }
    CHECK(err == 0, "entering the W^X policy: %s", strerror(err));
}

/* Under Valgrind: whether memcheck lets the program touch the byte at
 * addr. Every mapping the program gets from mmap (wxjit's chunks and
 * views among them) is addressable from its first byte; Valgrind's own
 * mappings (code cache, its heap, the arena it serves malloc from, whose
 * first bytes are block headers) are not. */
static inline bool wxtest_client_addressable(uintptr_t addr)
{
#ifdef WXJIT_HAVE_VALGRIND_H
    unsigned char vbits;
    /* 3: not addressable (no error is reported); 1: addressable; 0: not
     * memcheck, which cannot tell: counted as the program's. */
    return VALGRIND_GET_VBITS((void *)addr, &vbits, 1) != 3;
#else
    (void)addr;
    return true;
#endif
}

/* W+X mappings in /proc/self/maps: all of them natively; under Valgrind
 * the program's own (Valgrind's are W+X by design, see above). */
static inline int wxtest_wx_mappings(void)
{
    if (!wxtest_valgrind()) {
        int n = wx_policy_wx_mappings();
        CHECK(n >= 0, "cannot read /proc/self/maps");
        return n;
    }
    FILE *f = fopen("/proc/self/maps", "r");
    CHECK(f, "open maps: %s", strerror(errno));
    char line[512], perms[8];
    unsigned long start;
    int n = 0, valgrinds = 0;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "%lx-%*x %7s", &start, perms) != 2 ||
            perms[1] != 'w' || perms[2] != 'x')
            continue;
        if (!wxtest_client_addressable(start)) {
            valgrinds++;
            continue;
        }
        fprintf(stderr, "W+X mapping of the program: %s", line);
        n++;
    }
    fclose(f);
    printf("  (W+X mappings: %d of the program, %d of Valgrind's own "
           "ignored)\n", n, valgrinds);
    return n;
}

/* The permissions ("r-xp", "rw-s", ...) of the mapping that holds addr in
 * /proc/self/maps, into perms; false if no mapping holds it. */
static inline bool wxtest_perms_at(const void *addr, char perms[5])
{
    FILE *f = fopen("/proc/self/maps", "r");
    CHECK(f, "open maps: %s", strerror(errno));
    char line[512], p[8];
    unsigned long start, end, a = (unsigned long)(uintptr_t)addr;
    bool found = false;
    while (!found && fgets(line, sizeof(line), f))
        if (sscanf(line, "%lx-%lx %7s", &start, &end, p) == 3 &&
            start <= a && a < end) {
            memcpy(perms, p, 4);
            perms[4] = '\0';
            found = true;
        }
    fclose(f);
    return found;
}

/* Whether the page holding addr is executable and not writable: what every
 * page of live code must be between writes, on every backend. */
static inline bool wxtest_exec_only(const void *addr, char perms[5])
{
    return wxtest_perms_at(addr, perms) && perms[0] == 'r' &&
           perms[1] == '-' && perms[2] == 'x';
}

/* Lines of /proc/self/maps, for bounds on how many mappings wxjit makes.
 * Natively all of them. Under a checking tool, whose own allocator maps
 * memory in steps as the program allocates (which says nothing about
 * wxjit), only the lines that can be wxjit's: under ASan and TSan the
 * executable or shared ones (every code mapping of wxjit is one, and a
 * split one shows as more of them), under Valgrind the program's own
 * (wxtest_client_addressable). */
static inline int wxtest_mapping_count(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    CHECK(f, "open maps: %s", strerror(errno));
    char line[512], perms[8];
    unsigned long start;
    int n = 0;
    bool valgrind = wxtest_valgrind();
    while (fgets(line, sizeof(line), f)) {
        if (!strchr(line, '\n') ||
            sscanf(line, "%lx-%*x %7s", &start, perms) != 2)
            continue;
#if defined(WXTEST_ASAN) || defined(WXTEST_TSAN)
        if (perms[2] != 'x' && perms[3] != 's')
            continue;
#endif
        if (valgrind && !wxtest_client_addressable(start))
            continue;
        n++;
    }
    fclose(f);
    return n;
}

static inline wxjit_heap *wxtest_heap_of(wxjit_backend backend)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    wxjit_heap *h;
    o.backend = backend;
    CHECK_OK(wxjit_heap_create(&o, &h));
    return h;
}

static inline wxjit_stats wxtest_stats_of(wxjit_heap *h)
{
    wxjit_stats s;
    CHECK_OK(wxjit_stats_get(h, &s));
    return s;
}

/* Fails naming every counter that differs between a and b, optionally
 * leaving out the ones a new chunk moves (bytes_mapped, chunks, pages). */
static inline void wxtest_check_stats_same(const char *what,
                                           const wxjit_stats *a,
                                           const wxjit_stats *b,
                                           bool except_mapping)
{
#define WXTEST_STAT(f) {#f, a->f, b->f, false}
#define WXTEST_MAPSTAT(f) {#f, a->f, b->f, true}
    const struct {
        const char *name;
        uint64_t was, now;
        bool mapping;
    } fields[] = {WXTEST_STAT(installs),       WXTEST_STAT(frees),
                  WXTEST_STAT(bytes_live),     WXTEST_MAPSTAT(bytes_mapped),
                  WXTEST_MAPSTAT(pages),       WXTEST_MAPSTAT(chunks),
                  WXTEST_STAT(mprotect_calls), WXTEST_STAT(map_calls),
                  WXTEST_STAT(syscalls),       WXTEST_STAT(faults_retried),
                  WXTEST_STAT(faults_forwarded)};
#undef WXTEST_STAT
#undef WXTEST_MAPSTAT
    bool same = true;
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        if (fields[i].was != fields[i].now &&
            !(except_mapping && fields[i].mapping)) {
            fprintf(stderr, "  %s: stats.%s %llu -> %llu\n", what,
                    fields[i].name, (unsigned long long)fields[i].was,
                    (unsigned long long)fields[i].now);
            same = false;
        }
    CHECK(same, "%s changed statistics (listed above)", what);
}

static inline uintptr_t wxtest_page_of(const void *p)
{
    return (uintptr_t)p & ~(uintptr_t)(sysconf(_SC_PAGESIZE) - 1);
}

/* How many different pages the n addresses in f lie on. */
static inline size_t wxtest_distinct_pages(void *const *f, size_t n)
{
    size_t distinct = 0;
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (j < i && wxtest_page_of(f[j]) != wxtest_page_of(f[i]))
            j++;
        distinct += j == i;
    }
    return distinct;
}

/* Which backend AUTO (and the WXJIT_BACKEND environment variable) picks,
 * for the log. */
static inline void wxtest_print_backend(void)
{
    wxjit_heap *h;
    wxjit_backend b;
    const char *name;
    CHECK_OK(wxjit_heap_create(NULL, &h));
    CHECK_OK(wxjit_heap_backend(h, &b));
    CHECK_OK(wxjit_heap_destroy(h));
    CHECK_OK(wxjit_backend_name(b, &name));
    printf("  backend: %s\n", name);
}

/* ---- death tests --------------------------------------------------------- */

/* Runs fn(arg) in a child without core dumps; returns its wait status. */
static inline int wxtest_in_child(void (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        fn(arg);
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
    return status;
}

static inline const char *wxtest_describe(int status, char *buf, size_t len)
{
    if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    return buf;
}

static inline void wxtest_expect_signal(const char *what, int status, int sig)
{
    char buf[96];
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == sig,
          "%s: child %s, expected signal %d (%s)", what,
          wxtest_describe(status, buf, sizeof(buf)), sig, strsignal(sig));
    printf("  %s: killed by %s, as expected\n", what, strsignal(sig));
}

static inline void wxtest_expect_exit(const char *what, int status, int code)
{
    char buf[96];
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == code,
          "%s: child %s, expected exit %d", what,
          wxtest_describe(status, buf, sizeof(buf)), code);
    printf("  %s: exited %d, as expected\n", what, code);
}

/* ---- choosing scenarios --------------------------------------------------
 * `test_x name...` runs only the named scenarios of a test program (to
 * see each one fail or pass on its own); with no argument, all of them. */
static inline bool wxtest_selected(int argc, char **argv, const char *name)
{
    if (argc < 2)
        return true;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], name))
            return true;
    return false;
}

/* ---- hangs become failures ---------------------------------------------
 * A deadlock must fail the test, not stall ctest: the parent polls the
 * child and kills it with SIGKILL once `seconds` have passed. Not alarm():
 * the child may run SIGALRM timers of its own. */
static inline int wxtest_in_child_within(void (*fn)(void *), void *arg,
                                         unsigned seconds, bool *hung)
{
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        fn(arg);
        fflush(NULL);
        _exit(0);
    }
    struct timespec now, deadline, tick = {0, 1000000}; /* 1 ms */
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += seconds;
    int status;
    *hung = false;
    for (;;) {
        pid_t got = waitpid(pid, &status, WNOHANG);
        CHECK(got >= 0, "waitpid: %s", strerror(errno));
        if (got == pid)
            return status;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > deadline.tv_sec ||
            (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec))
            break;
        nanosleep(&tick, NULL);
    }
    *hung = true;
    kill(pid, SIGKILL);
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
    return status;
}

/* fn(arg) in a child must exit with code within `seconds`; a child still
 * running then is reported as hung. */
static inline void wxtest_expect_exit_within(const char *what,
                                             void (*fn)(void *), void *arg,
                                             unsigned seconds, int code)
{
    bool hung;
    int status = wxtest_in_child_within(fn, arg, seconds, &hung);
    CHECK(!hung, "%s: hung (child still running after %u s, killed)", what,
          seconds);
    wxtest_expect_exit(what, status, code);
}

/* ---- threads asleep in the fault handler --------------------------------
 * Known without timing: an executor whose only system call is the fault
 * handler's wait shows futex(2) in /proc/self/task/<tid>/syscall. */
static inline pid_t wxtest_gettid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

static inline long wxtest_kernel_futex_nr(void);

/* True once thread tid sleeps in futex(2). */
static inline bool wxtest_in_futex(pid_t tid)
{
    char path[64];
    long nr = -1;
    snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", (int)tid);
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%ld", &nr) != 1)
            nr = -1;
        fclose(f);
    }
    return nr == wxtest_kernel_futex_nr();
}

/* Waits until *tid is published and that thread sleeps in futex(2). */
static inline void wxtest_wait_in_futex(_Atomic pid_t *tid)
{
    while (atomic_load(tid) == 0)
        sched_yield();
    while (!wxtest_in_futex(atomic_load(tid)))
        sched_yield();
}

/* The number the kernel gives futex(2) in /proc/<pid>/task/<tid>/syscall:
 * this CPU's natively; under emulation the host kernel's, since the
 * emulator makes the call (x86_64 202, the generic table's 98 elsewhere);
 * -1 for a host this does not know. */
static inline long wxtest_kernel_futex_nr(void)
{
    char kernel[32];
    if (!wx_policy_emulated(kernel, sizeof(kernel)))
        return SYS_futex;
    if (!strcmp(kernel, "x86_64"))
        return 202;
    if (!strcmp(kernel, "aarch64") || !strcmp(kernel, "riscv64"))
        return 98;
    return -1;
}

/* ---- user-mode emulation: code written through a second mapping --------
 * qemu-user caches translations of guest code and drops them when it sees
 * the code change: a write through the same mapping, an mprotect or munmap
 * of it, and (aarch64, qemu 8.1 and later) an ic ivau. A write through a
 * second mapping of the same memory, which is how the dualmap backend
 * writes, is none of these: qemu 7.2 (Debian 12) goes on running the old
 * code, for aarch64 and riscv64 alike (no qemu acts on riscv64's fence.i or
 * riscv_flush_icache). Checked here, not assumed: one shared page mapped
 * RW and RX, code run, rewritten through the RW view, flushed as wxjit
 * flushes, run again. */
static inline bool wxtest_alias_writes_run(void)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    int fd = memfd_create("wxtest-alias-probe", MFD_CLOEXEC);
    CHECK(fd >= 0 && ftruncate(fd, (off_t)page) == 0, "memfd: %s",
          strerror(errno));
    uint8_t *rw = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    uint8_t *rx = mmap(NULL, page, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
    CHECK(rw != MAP_FAILED && rx != MAP_FAILED, "mmap: %s", strerror(errno));
    close(fd);
    int got[2];
    for (int i = 0; i < 2; i++) {
        size_t n = emit_return_int(rw, i + 1);
        __builtin___clear_cache((char *)rx, (char *)rx + n);
        got[i] = as_fn(rx)();
    }
    munmap(rw, page);
    munmap(rx, page);
    CHECK(got[0] == 1, "dual-mapped probe returned %d, expected 1", got[0]);
    return got[1] == 2;
}

/* Under emulation, when the heaps this test creates by default are
 * dual-mapped and the emulator keeps running code that was replaced
 * through the RW view, every check of rewritten code (reuse after free,
 * patches, fork children installing over freed space) would fail for the
 * emulator's sake: the test exits WXTEST_SKIPPED saying so. Natively this
 * never skips. */
static inline void wxtest_require_alias_writes_run(const char *test)
{
    wxjit_heap *h;
    wxjit_backend b;
    if (!wxtest_emulator())
        return;
    CHECK_OK(wxjit_heap_create(NULL, &h));
    CHECK_OK(wxjit_heap_backend(h, &b));
    CHECK_OK(wxjit_heap_destroy(h));
    if (b == WXJIT_BACKEND_DUALMAP && !wxtest_alias_writes_run())
        wxtest_skip_all(test, "dualmap writes code through a second (RW) "
                        "mapping, and this emulator kept running the old "
                        "code after such a write and an icache flush (probe: "
                        "one page mapped RW and RX, rewritten, returned the "
                        "old value); qemu-user only sees writes through the "
                        "executable mapping");
}

/* ---- user-mode emulation: a fault signal queued again ------------------
 * wxjit forwards a fault it declines to the default action by queueing the
 * kernel's siginfo to the faulting thread again (rt_tgsigqueueinfo) with
 * SIG_DFL in place. qemu-user (7.2) takes that signal, whose si_code says
 * "fault", for a fault in its own code and aborts ("assertion failed:
 * (cpu == current_cpu)", exit 127) instead of dying by SIGSEGV. Checked,
 * not assumed, by a child that does only that. */
static inline void wxtest_requeue_handler(int sig, siginfo_t *info, void *uc)
{
    (void)uc;
    signal(sig, SIG_DFL);
    syscall(SYS_rt_tgsigqueueinfo, getpid(), (pid_t)syscall(SYS_gettid), sig,
            info);
}

static inline void wxtest_requeue_child(void *arg)
{
    (void)arg;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = wxtest_requeue_handler;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    int *volatile nowhere = NULL;
    *nowhere = 1;
}

/* Under emulation, why a fault forwarded to the default action cannot be
 * watched (the death test would see the emulator's abort); NULL where it
 * can, and always natively. Probed once. */
static inline const char *wxtest_emulator_loses_requeued_fault(void)
{
    static int lost = -1;
    if (lost < 0) {
        int status = 0;
        if (wxtest_emulator())
            status = wxtest_in_child(wxtest_requeue_child, NULL);
        lost = wxtest_emulator() &&
               !(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
    }
    return lost ? "the emulator does not survive a thread queueing a "
                  "fault's siginfo to itself again (rt_tgsigqueueinfo, how "
                  "wxjit forwards a fault to the default action): a child "
                  "doing only that did not die by SIGSEGV"
                : NULL;
}

#endif /* WXTEST_H */
