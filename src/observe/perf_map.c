/* perf's map file, /tmp/perf-<pid>.map (tools/perf/Documentation/
 * jit-interface.txt): one "START SIZE symbolname" line, hexadecimal
 * without 0x, per described function. Each line is one write() on an
 * O_APPEND descriptor, so lines from many threads never interleave and a
 * line is whole on disk once describe returns: nothing to flush at exit,
 * nothing lost if the process dies. The path is perf's convention and
 * cannot move. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "../internal.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int map_fd = -1; /* opened at the first description (lock) */

static int fd_of_process(int *fd)
{
    int err = 0;
    pthread_mutex_lock(&lock);
    if (map_fd < 0) {
        char path[64];
        snprintf(path, sizeof(path), "/tmp/perf-%d.map", wxj_os_pid());
        err = wxj_os_open_record_file(path, false, &map_fd);
    }
    *fd = map_fd;
    pthread_mutex_unlock(&lock);
    return err;
}

int wxj_perf_map_load(const struct wxj_desc *d)
{
    /* Two 16-digit numbers, two spaces, the name, a newline. */
    char line[WXJIT_NAME_MAX + 40];
    int fd, err = fd_of_process(&fd);
    if (err)
        return err;
    int n = snprintf(line, sizeof(line), "%" PRIxPTR " %zx %s\n",
                     (uintptr_t)d->exec, d->size, d->name);
    return wxj_os_write_record(fd, line, (size_t)n);
}

/* Around fork(): the lock is held, so that the child's copy of it is
 * free; the child's file is its own, opened at its first line. */
void wxj_perf_map_fork_prepare(void)
{
    pthread_mutex_lock(&lock);
}

void wxj_perf_map_fork_parent(void)
{
    pthread_mutex_unlock(&lock);
}

void wxj_perf_map_after_fork(void)
{
    if (map_fd >= 0)
        wxj_os_close(map_fd);
    map_fd = -1;
    pthread_mutex_unlock(&lock);
}
