/* Test helpers for user-mode emulation (qemu-user running a cross build):
 * what the emulator cannot run, probed rather than assumed, so that a test
 * skips it saying why. Natively nothing here skips. */
#ifndef WXTEST_EMU_H
#define WXTEST_EMU_H

#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "emit.h"
#include "wxtest_child.h"
#include "wxtest_core.h"

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
        wxtest_skip_all(test,
                        "dualmap writes code through a second (RW) "
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

#endif /* WXTEST_EMU_H */
