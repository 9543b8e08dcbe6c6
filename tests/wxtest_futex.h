/* Test helpers that know, without timing, when threads are asleep in the
 * fault handler: an executor whose only system call is the fault
 * handler's wait shows futex(2) in /proc/self/task/<tid>/syscall. */
#ifndef WXTEST_FUTEX_H
#define WXTEST_FUTEX_H

#include <sched.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "wxtest_core.h"

static inline pid_t wxtest_gettid(void)
{
    return (pid_t)syscall(SYS_gettid);
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

#endif /* WXTEST_FUTEX_H */
