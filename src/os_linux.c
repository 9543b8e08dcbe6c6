/* The only file that makes system calls: mappings, protections, futexes,
 * thread ids. Keeping them here is what lets a port touch one file. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* System calls made by this thread, by kind, so that operations can
 * report what they cost (pool.c adds a successful operation's share to its
 * pool's statistics). initial-exec TLS: plain accesses, also from the fault
 * handler. */
static __thread uint64_t calls[WXJ_CALL_KINDS]
    __attribute__((tls_model("initial-exec")));

/* ---- the failure-injection seam ------------------------------------------
 * Tests make calls [fail_from, fail_to) of one kind, numbered by this
 * thread's count of that kind, fail with fail_err before they reach the
 * kernel. Disarmed (fail_to == 0) it costs one predictable branch per
 * system call. Per thread, so a test's sweep is deterministic and other
 * threads' calls do not shift its numbering. */
static __thread struct {
    enum wxj_os_call kind;
    uint64_t from, to;
    int err;
} inject __attribute__((tls_model("initial-exec")));

void wxj_os_inject(enum wxj_os_call kind, uint64_t nth, uint64_t count,
                   int err)
{
    inject.kind = kind;
    inject.from = calls[kind] + nth;
    inject.to = count ? inject.from + count : 0;
    inject.err = err;
}

/* The other seam: a function this thread runs once, right after its next
 * call of a kind that creates a descriptor (WXJ_CALL_OBJECT) succeeds,
 * before wxjit publishes the descriptor: tests pause there to fork. */
static __thread struct {
    enum wxj_os_call kind;
    void (*fn)(void);
} after __attribute__((tls_model("initial-exec")));

void wxj_os_after(enum wxj_os_call kind, void (*fn)(void))
{
    after.kind = kind;
    after.fn = fn;
}

static void returned(enum wxj_os_call kind)
{
    void (*fn)(void) = after.fn;
    if (fn && after.kind == kind) {
        after.fn = NULL;
        fn();
    }
}

uint64_t wxj_os_calls_of(enum wxj_os_call kind)
{
    return calls[kind];
}

uint64_t wxj_os_calls(void)
{
    uint64_t sum = 0;
    for (int k = 0; k < WXJ_CALL_KINDS; k++)
        sum += calls[k];
    return sum;
}

/* Counts a call of kind about to be made; nonzero (the errno to fail it
 * with, errno set too) if the seam says it fails. */
static int count_call(enum wxj_os_call kind)
{
    uint64_t n = ++calls[kind];
    if (inject.to && inject.kind == kind && n >= inject.from &&
        n < inject.to) {
        errno = inject.err;
        return inject.err;
    }
    return 0;
}

/* Addresses and names need to be unguessable, not cryptographic: one
 * getrandom per thread seeds a xorshift generator. */
static unsigned long random_bits(void)
{
    static __thread uint64_t state;
    if (state == 0) {
        calls[WXJ_CALL_OTHER]++;
        if (getrandom(&state, sizeof(state), GRND_NONBLOCK) != sizeof(state))
            state = (uint64_t)(uintptr_t)&state ^ (uint64_t)clock();
        state |= 1;
    }
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (unsigned long)state;
}

size_t wxj_os_page_size(void)
{
    long size = sysconf(_SC_PAGESIZE);
    return size > 0 ? (size_t)size : 4096;
}

static int prot_bits(enum wxj_prot prot)
{
    switch (prot) {
    case WXJ_PROT_RW: return PROT_READ | PROT_WRITE;
    case WXJ_PROT_RX: return PROT_READ | PROT_EXEC;
    case WXJ_PROT_RWX: return PROT_READ | PROT_WRITE | PROT_EXEC;
    case WXJ_PROT_NONE: return PROT_NONE;
    }
    return PROT_NONE;
}

int wxj_os_map_anon(size_t size, enum wxj_prot prot, void **out)
{
    /* NORESERVE: a chunk is address space first; pages cost memory only
     * once a pool writes them. */
    if (count_call(WXJ_CALL_MMAP))
        return errno;
    void *p = mmap(NULL, size, prot_bits(prot),
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return errno;
    *out = p;
    return 0;
}

int wxj_os_map_anon_at(void *at, size_t size, enum wxj_prot prot)
{
    if (count_call(WXJ_CALL_MMAP))
        return errno;
    void *p = mmap(at, size, prot_bits(prot),
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
                   -1, 0);
    return p == MAP_FAILED ? errno : 0;
}

int wxj_os_map_shared(int fd, size_t offset, size_t size, enum wxj_prot prot,
                      void *at, bool fixed, void **out)
{
    if (count_call(WXJ_CALL_MMAP))
        return errno;
    void *p = mmap(at, size, prot_bits(prot),
                   MAP_SHARED | (fixed ? MAP_FIXED : 0), fd, (off_t)offset);
    if (p == MAP_FAILED)
        return errno;
    *out = p;
    return 0;
}

void wxj_os_unmap(void *addr, size_t size)
{
    /* Cannot fail for a range wxjit mapped; an injected failure leaves
     * the mapping in place, as a failed munmap would. */
    if (count_call(WXJ_CALL_MUNMAP) == 0)
        munmap(addr, size);
}

int wxj_os_protect_rw(void *addr, size_t size)
{
    if (count_call(WXJ_CALL_MPROTECT))
        return errno;
    return mprotect(addr, size, PROT_READ | PROT_WRITE) ? errno : 0;
}

int wxj_os_protect_rx(void *addr, size_t size)
{
    if (count_call(WXJ_CALL_MPROTECT))
        return errno;
    return mprotect(addr, size, PROT_READ | PROT_EXEC) ? errno : 0;
}

/* ---- shared memory objects for the dual mapping ----------------------- */
static int object_memfd(void)
{
    if (count_call(WXJ_CALL_OBJECT))
        return -1;
    return memfd_create("wxjit", MFD_CLOEXEC);
}

static int object_shm(void)
{
    /* A name nobody can guess or reuse, unlinked at once: the object is
     * reachable only through our descriptor. */
    char name[64];
    static _Atomic unsigned serial;
    for (int attempt = 0; attempt < 8; attempt++) {
        snprintf(name, sizeof(name), "/wxjit-%d-%u-%lx", (int)getpid(),
                 atomic_fetch_add(&serial, 1), (unsigned long)random_bits());
        if (count_call(WXJ_CALL_OBJECT))
            return -1;
        int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            calls[WXJ_CALL_OTHER]++;
            shm_unlink(name);
            return fd;
        }
        if (errno != EEXIST)
            return -1;
    }
    return -1;
}

static int object_tmpfile(void)
{
    const char *dirs[] = {getenv("TMPDIR"), "/dev/shm", "/tmp"};
    int err = ENOENT;
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        if (!dirs[i] || !*dirs[i])
            continue;
        if (count_call(WXJ_CALL_OBJECT)) {
            err = errno;
            continue;
        }
        int fd = open(dirs[i], O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0)
            return fd;
        err = errno;
    }
    errno = err;
    return -1;
}

int wxj_object_from_env(enum wxj_object *out)
{
    static const char *const names[] = {"memfd", "shm", "tmpfile"};
    const char *env = getenv("WXJIT_DUALMAP_OBJECT");
    *out = WXJ_OBJECT_MEMFD;
    if (!env || !*env)
        return 0;
    for (size_t i = 0; i < sizeof(names) / sizeof(*names); i++)
        if (!strcmp(env, names[i])) {
            *out = (enum wxj_object)i;
            return 0;
        }
    return EINVAL;
}

int wxj_os_shared_object(enum wxj_object first, size_t size, int *out)
{
    static int (*const make[])(void) = {object_memfd, object_shm,
                                       object_tmpfile};
    int err = ENOSYS;
    for (size_t m = first; m < sizeof(make) / sizeof(make[0]); m++) {
        int fd = make[m]();
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (count_call(WXJ_CALL_FTRUNCATE) ||
            ftruncate(fd, (off_t)size) != 0) {
            err = errno;
            wxj_os_close(fd);
            continue;
        }
        returned(WXJ_CALL_OBJECT);
        *out = fd;
        return 0;
    }
    return err;
}

void wxj_os_close(int fd)
{
    calls[WXJ_CALL_CLOSE]++;
    close(fd);
}

int wxj_os_copy_to(int fd, const void *src, size_t len)
{
    const uint8_t *p = src;
    for (size_t done = 0; done < len;) {
        if (count_call(WXJ_CALL_PWRITE))
            return errno;
        ssize_t n = pwrite(fd, p + done, len - done, (off_t)done);
        if (n < 0 && errno != EINTR)
            return errno;
        done += n > 0 ? (size_t)n : 0;
    }
    return 0;
}

/* ---- the process's own memory file (procmem) --------------------------- */
int wxj_os_open_self_mem(int *fd)
{
    if (count_call(WXJ_CALL_OBJECT))
        return errno;
    int f = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
    if (f < 0)
        return errno;
    returned(WXJ_CALL_OBJECT);
    *fd = f;
    return 0;
}

/* ---- the tools' files (observe/): perf's map and jitdump ------------- */
/* EACCES unless f is a regular file of this user with no other name: what
 * another user planted at the name first (a FIFO, whose full buffer would
 * block every record for ever while fs.protected_fifos is 0; a file of
 * theirs; a hard link to one of ours, which the records would overwrite)
 * is not written to. */
static int record_file_ours(int f)
{
    struct stat st;
    if (count_call(WXJ_CALL_OTHER))
        return errno;
    if (fstat(f, &st))
        return errno;
    return S_ISREG(st.st_mode) && st.st_uid == geteuid() && st.st_nlink == 1
               ? 0
               : EACCES;
}

int wxj_os_open_record_file(const char *path, bool truncate, int *fd)
{
    if (count_call(WXJ_CALL_OTHER))
        return errno;
    /* O_APPEND: every record lands at the end, from any thread, in one
     * write; 0644, as perf reads these files as another user may;
     * O_NOFOLLOW: perf's names in /tmp are predictable, and a symbolic
     * link planted there must not make wxjit write elsewhere; O_NONBLOCK:
     * nor may a FIFO or device planted there block the open. Truncated
     * only once known to be ours. */
    int f =
        open(path,
             O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK,
             0644);
    if (f < 0)
        return errno;
    int err = record_file_ours(f);
    if (err == 0 && truncate && (err = count_call(WXJ_CALL_OTHER)) == 0 &&
        ftruncate(f, 0))
        err = errno;
    if (err) {
        wxj_os_close(f);
        return err;
    }
    *fd = f;
    return 0;
}

int wxj_os_write_record(int fd, const void *buf, size_t len)
{
    if (count_call(WXJ_CALL_OTHER))
        return errno;
    ssize_t n;
    do
        n = write(fd, buf, len);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno;
    return (size_t)n == len ? 0 : EIO; /* a full disk, at most */
}

int wxj_os_map_marker(int fd, size_t size, void **out)
{
    if (count_call(WXJ_CALL_MMAP))
        return errno;
    void *p = mmap(NULL, size, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED)
        return errno;
    *out = p;
    return 0;
}

int wxj_os_pid(void)
{
    return (int)getpid();
}

/* iovecs per pwritev: 64 KiB of 4 KiB pages, a step of fresh pages. */
#define MEM_IOV 16

int wxj_os_write_mem(int fd, void *at, const void *src, size_t len,
                     size_t repeat, size_t *done)
{
    size_t total = len * repeat;
    *done = 0;
    while (*done < total) {
        struct iovec iov[MEM_IOV];
        int n = 0;
        for (size_t off = *done; off < total && n < MEM_IOV; n++) {
            size_t in = off % len;
            iov[n].iov_base = (uint8_t *)src + in;
            iov[n].iov_len = len - in;
            off += len - in;
        }
        if (count_call(WXJ_CALL_PWRITE))
            return errno;
        /* The offset is the address: the kernel writes through its own
         * mapping of the page, whatever its protection here. */
        ssize_t w = pwritev(fd, iov, n, (off_t)((uintptr_t)at + *done));
        if (w < 0 && errno != EINTR)
            return errno;
        if (w == 0)
            return EIO; /* no progress: the page is not there */
        *done += w > 0 ? (size_t)w : 0;
    }
    return 0;
}

void *wxj_os_random_hint(void)
{
    /* Somewhere in [4 GiB, 64 TiB): inside the user address space of
     * x86_64 and aarch64 (47/48-bit); the kernel ignores a hint that is out
     * of range (riscv64 Sv39) or collides with a mapping, and then picks
     * the address itself. */
    uintptr_t page = wxj_os_page_size();
    uintptr_t lo = (uintptr_t)1 << 32, hi = (uintptr_t)1 << 46;
    return (void *)((lo + random_bits() % (hi - lo)) & ~(page - 1));
}

/* membarrier(2) commands (linux/membarrier.h, spelt out for older
 * headers). */
enum {
    MEMBARRIER_GLOBAL = 1,
    MEMBARRIER_SYNC_CORE = 32,          /* PRIVATE_EXPEDITED_SYNC_CORE */
    MEMBARRIER_REGISTER_SYNC_CORE = 64, /* REGISTER_PRIVATE_... */
};

static int membarrier(int cmd)
{
    int err = count_call(WXJ_CALL_MEMBARRIER);
    if (err)
        return err;
    return syscall(SYS_membarrier, cmd, 0, 0) == 0 ? 0 : errno;
}

/* A failure of the moment, not of the system: membarrier(2) may return
 * ENOMEM. EINVAL and ENOSYS stay until reboot (the system call promises
 * it), and a policy's refusal (seccomp, with any errno: EPERM, EACCES,
 * ENOSYS...) for the process's life. */
static bool transient(int err)
{
    return err == ENOMEM || err == EAGAIN || err == EINTR;
}

void wxj_os_core_sync(void)
{
    /* What this kernel offers, found on first use and kept, so that a
     * refused command is not asked again on every operation. A fork child
     * inherits the registration (and this choice). */
    enum { SYNC_CORE, GLOBAL, NONE };
    static _Atomic int how = SYNC_CORE;
    int saved = errno;
    int now = atomic_load_explicit(&how, memory_order_relaxed);
    if (now == SYNC_CORE) {
        int err = membarrier(MEMBARRIER_SYNC_CORE);
        if (err == EPERM && !membarrier(MEMBARRIER_REGISTER_SYNC_CORE))
            err = membarrier(MEMBARRIER_SYNC_CORE);
        if (err == 0) {
            errno = saved;
            return;
        }
        /* GLOBAL from now on; or, for a failure of the moment, this once. */
        if (!transient(err)) {
            atomic_store_explicit(&how, GLOBAL, memory_order_relaxed);
            now = GLOBAL;
        }
    }
    if (now != NONE) {
        int err = membarrier(MEMBARRIER_GLOBAL);
        if (err && now == GLOBAL && !transient(err))
            atomic_store_explicit(&how, NONE, memory_order_relaxed);
    }
    errno = saved;
}

/* Both futex helpers run inside the fault handler: they keep errno. */
void wxj_os_futex_wait(_Atomic uint32_t *word, uint32_t expected)
{
    int saved = errno;
    calls[WXJ_CALL_FUTEX]++;
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
    errno = saved;
}

void wxj_os_futex_wake_all(_Atomic uint32_t *word)
{
    int saved = errno;
    calls[WXJ_CALL_FUTEX]++;
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    errno = saved;
}

/* The tid is cached because every write window records it; fork.c clears
 * the cache in a fork child, whose only thread has a new tid. initial-exec
 * TLS is a plain memory access, safe in a signal handler. */
static __thread int32_t cached_tid __attribute__((tls_model("initial-exec")));

int32_t wxj_os_tid(void)
{
    if (cached_tid == 0) {
        int saved = errno;
        cached_tid = (int32_t)syscall(SYS_gettid);
        errno = saved;
    }
    return cached_tid;
}

void wxj_os_forget_tid(void)
{
    cached_tid = 0;
}

void wxj_os_yield(void)
{
    sched_yield();
}

uint64_t wxj_os_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
