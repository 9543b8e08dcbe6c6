/* perf's jitdump file (tools/perf/Documentation/jitdump-specification.txt):
 * jit-<pid>.dump in $JITDUMPDIR, else the current directory. A header,
 * then per described function a JIT_CODE_LOAD record with its code bytes,
 * preceded by JIT_CODE_UNWINDING_INFO when it has unwind information (perf
 * applies that record to the next load). Timestamps are CLOCK_MONOTONIC,
 * what `perf record -k mono` stamps its samples with. `perf inject --jit`
 * finds the file through a read+exec mapping of it (the "marker") that
 * perf record saw: never writable, so W^X policies allow it.
 *
 * jitdump has no unload record, but a later load at the same address wins
 * from its timestamp on: a described function's free writes a load named
 * "wxjit:freed" over its bytes (traps), so that code later put there is
 * never sampled under the old name.
 *
 * Records are written under one lock, each description's in one write(),
 * so they are ordered by timestamp and code index, whole on disk once
 * describe (or free) returns: nothing to flush at exit. */
#define _GNU_SOURCE /* ucontext register names in arch/ */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../arch/arch.h"
#include "../internal.h"

#define JITDUMP_MAGIC 0x4a695444u /* "JiTD" as a little-endian word */
#define JITDUMP_VERSION 1
#define JIT_CODE_LOAD 0
#define JIT_CODE_UNWINDING_INFO 4
#define FREED_NAME "wxjit:freed"

struct file_header {
    uint32_t magic, version, total_size, elf_mach, pad1, pid;
    uint64_t timestamp, flags; /* flags 0: timestamps from the clock perf
                                  is told (-k mono), not the TSC */
};

struct record_header {
    uint32_t id, total_size;
    uint64_t timestamp;
};

struct code_load {
    struct record_header h;
    uint32_t pid, tid;
    uint64_t vma, code_addr, code_size, code_index;
    /* then the name, NUL-terminated, and the code bytes */
};

struct unwinding_info {
    struct record_header h;
    uint64_t unwinding_size, eh_frame_hdr_size, mapped_size;
    /* then .eh_frame, .eh_frame_hdr, padding to 8 bytes */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int dump_fd = -1;
static int dump_pid;        /* the process the file is for (lock) */
static uint64_t code_index; /* loads written so far (lock) */

static uint64_t align8(uint64_t n)
{
    return (n + 7) & ~(uint64_t)7;
}

/* Lock held. At the process's first record: a heap that never describes
 * leaves no file behind. */
static int open_file(void)
{
    char path[4096];
    const char *dir = getenv("JITDUMPDIR");
    int pid = wxj_os_pid(), fd, err;
    void *marker;
    if (snprintf(path, sizeof(path), "%s/jit-%d.dump", dir && *dir ? dir : ".",
                 pid) >= (int)sizeof(path))
        return ENAMETOOLONG;
    if ((err = wxj_os_open_record_file(path, true, &fd)))
        return err;
    struct file_header h = {JITDUMP_MAGIC, JITDUMP_VERSION, sizeof(h),
                            WXJ_ARCH_ELF_MACHINE, 0, (uint32_t)pid,
                            wxj_os_now_ns(), 0};
    /* The marker stays mapped for the life of the process: perf needs
     * only the mmap event, but an unmapped range could be reused by code
     * that perf would then attribute to this file. */
    if ((err = wxj_os_write_record(fd, &h, sizeof(h))) ||
        (err = wxj_os_map_marker(fd, wxj_os_page_size(), &marker))) {
        wxj_os_close(fd);
        return err;
    }
    dump_fd = fd;
    dump_pid = pid;
    code_index = 0;
    return 0;
}

/* The unwinding record for d at out (NULL: only measured), laid out as
 * perf inject places it in the ELF file it makes: the code at 0,
 * .eh_frame at the code's size rounded up to 8, .eh_frame_hdr after. */
static size_t unwinding_record(const struct wxj_desc *d, uint8_t *out)
{
    uint64_t eh = align8(d->size);
    size_t eh_len = wxj_eh_frame_build(d->cfi, 0, true, eh, NULL);
    size_t data = eh_len + WXJ_EH_FRAME_HDR_SIZE;
    if (out) {
        uint8_t *p = out + sizeof(struct unwinding_info);
        wxj_eh_frame_build(d->cfi, 0, true, eh, p);
        uint32_t cie_len;
        memcpy(&cie_len, p, 4);
        wxj_eh_frame_hdr_build(eh + eh_len, eh, eh + 4 + cie_len,
                               d->cfi->pc_offset, p + eh_len);
        memset(p + data, 0, align8(data) - data);
        struct unwinding_info u = {
            {JIT_CODE_UNWINDING_INFO,
             (uint32_t)(sizeof(u) + align8(data)), wxj_os_now_ns()},
            data, WXJ_EH_FRAME_HDR_SIZE, align8(data)};
        memcpy(out, &u, sizeof(u));
    }
    return sizeof(struct unwinding_info) + align8(data);
}

/* The traps wxjit writes over [exec, exec + n), at dst: the fill's
 * pattern depends on the address (aarch64 and riscv64 fill by alignment),
 * and repeats every 16 bytes on every CPU. */
static void traps_as_at(const uint8_t *exec, uint8_t *dst, size_t n)
{
    _Alignas(16) uint8_t pattern[16];
    wxj_arch_trap_fill(pattern, sizeof(pattern));
    for (size_t i = 0; i < n; i++)
        dst[i] = pattern[((uintptr_t)exec + i) % sizeof(pattern)];
}

/* A load record of d's range named name at out (lock held: the index);
 * code NULL: trap bytes. */
static size_t load_record(const struct wxj_desc *d, const char *name,
                          const uint8_t *code, uint8_t *out)
{
    size_t name_len = strlen(name) + 1;
    struct code_load r = {
        {JIT_CODE_LOAD, (uint32_t)(sizeof(r) + name_len + d->size),
         wxj_os_now_ns()},
        (uint32_t)dump_pid, (uint32_t)wxj_os_tid(),
        (uintptr_t)d->exec, (uintptr_t)d->exec, d->size, code_index++};
    memcpy(out, &r, sizeof(r));
    memcpy(out + sizeof(r), name, name_len);
    if (code)
        memcpy(out + sizeof(r) + name_len, code, d->size);
    else
        traps_as_at(d->exec, out + sizeof(r) + name_len, d->size);
    return sizeof(r) + name_len + d->size;
}

/* Writes d's records (code NULL: the freed one) in one write. */
static int write_load(const struct wxj_desc *d, const char *name,
                      const uint8_t *code)
{
    size_t unwind = code && d->cfi ? unwinding_record(d, NULL) : 0;
    size_t len = unwind + sizeof(struct code_load) + strlen(name) + 1 +
                 d->size;
    uint8_t *buf = malloc(len);
    if (!buf)
        return ENOMEM;
    pthread_mutex_lock(&lock);
    int err = dump_fd < 0 ? open_file() : 0;
    if (err == 0) {
        if (unwind)
            unwinding_record(d, buf);
        load_record(d, name, code, buf + unwind);
        if ((err = wxj_os_write_record(dump_fd, buf, len)))
            code_index--; /* that load is not in the file */
    }
    pthread_mutex_unlock(&lock);
    free(buf);
    return err;
}

int wxj_jitdump_load(const struct wxj_desc *d)
{
    return write_load(d, d->name, d->exec);
}

void wxj_jitdump_freed(const struct wxj_desc *d)
{
    /* The free has happened; a record lost to a full disk costs only a
     * stale name in perf's report. */
    write_load(d, FREED_NAME, NULL);
}

/* Around fork(), as perf_map.c. */
void wxj_jitdump_fork_prepare(void)
{
    pthread_mutex_lock(&lock);
}

void wxj_jitdump_fork_parent(void)
{
    pthread_mutex_unlock(&lock);
}

void wxj_jitdump_after_fork(void)
{
    if (dump_fd >= 0)
        wxj_os_close(dump_fd);
    dump_fd = -1;
    pthread_mutex_unlock(&lock);
}
