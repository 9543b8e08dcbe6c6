/* Locks shared between threads, counted: the statistic shared_locks says
 * how often an operation took a lock another thread may hold, which on the
 * steady path should be never (installs share no lock). Counted per thread
 * like the system calls in os_linux.c, so pool.c can charge a successful
 * operation with what it took, and a failed one with nothing. */
#include "internal.h"

static __thread uint64_t taken __attribute__((tls_model("initial-exec")));

void wxj_lock_shared(pthread_mutex_t *lock)
{
    taken++;
    pthread_mutex_lock(lock);
}

uint64_t wxj_shared_locks_taken(void)
{
    return taken;
}
