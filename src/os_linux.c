/* The only file that makes system calls: mappings, protections, futexes,
 * thread ids. Keeping them here is what lets a port touch one file. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

size_t wxj_os_page_size(void)
{
    long size = sysconf(_SC_PAGESIZE);
    return size > 0 ? (size_t)size : 4096;
}

int wxj_os_map_rw(size_t size, void **out)
{
    /* NORESERVE: a chunk is address space first; pages cost memory only
     * once a pool writes them. */
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return errno;
    *out = p;
    return 0;
}

void wxj_os_unmap(void *addr, size_t size)
{
    munmap(addr, size);
}

int wxj_os_protect_rw(void *addr, size_t size)
{
    return mprotect(addr, size, PROT_READ | PROT_WRITE) ? errno : 0;
}

int wxj_os_protect_rx(void *addr, size_t size)
{
    return mprotect(addr, size, PROT_READ | PROT_EXEC) ? errno : 0;
}

/* Both futex helpers run inside the fault handler: they keep errno. */
void wxj_os_futex_wait(_Atomic uint32_t *word, uint32_t expected)
{
    int saved = errno;
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
    errno = saved;
}

void wxj_os_futex_wake_all(_Atomic uint32_t *word)
{
    int saved = errno;
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    errno = saved;
}

/* The tid is cached because every write window records it; the cache is
 * cleared in a fork child, whose only thread has a new tid. initial-exec
 * TLS is a plain memory access, safe in a signal handler. */
static __thread int32_t cached_tid __attribute__((tls_model("initial-exec")));
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void forget_tid_in_child(void)
{
    cached_tid = 0;
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, forget_tid_in_child);
}

int32_t wxj_os_tid(void)
{
    if (cached_tid == 0) {
        int saved = errno;
        cached_tid = (int32_t)syscall(SYS_gettid);
        errno = saved;
    }
    return cached_tid;
}

/* Not async-signal-safe (pthread_once): called once per heap creation so
 * that the fork hook exists before any tid is cached for a write. */
void wxj_os_init(void)
{
    pthread_once(&atfork_once, register_atfork);
}

void wxj_os_yield(void)
{
    sched_yield();
}
