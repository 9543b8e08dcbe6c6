/* Reading back what wxjit writes for profilers: perf's map file and
 * jitdump (tools/perf/Documentation/jitdump-specification.txt), strictly,
 * so that a test fails on any malformed record, with what it saw. */
#ifndef WXTEST_TOOL_FILES_H
#define WXTEST_TOOL_FILES_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "wxtest_core.h"

/* The whole of a file from offset from on; *len its length. */
static inline uint8_t *tool_file_read(const char *path, long from,
                                      size_t *len)
{
    FILE *f = fopen(path, "rb");
    CHECK(f, "cannot open %s: %s", path, strerror(errno));
    CHECK(fseek(f, 0, SEEK_END) == 0, "seek %s", path);
    long end = ftell(f);
    CHECK(end >= from, "%s is %ld bytes, expected at least %ld", path, end,
          from);
    *len = (size_t)(end - from);
    uint8_t *buf = malloc(*len + 1);
    CHECK(buf, "out of memory");
    CHECK(fseek(f, from, SEEK_SET) == 0, "seek %s", path);
    CHECK(fread(buf, 1, *len, f) == *len, "short read of %s", path);
    buf[*len] = 0;
    fclose(f);
    return buf;
}

static inline long tool_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/* ---- perf map: "START SIZE name\n", hexadecimal without 0x ----------- */
struct map_line {
    uintptr_t start;
    size_t size;
    char name[1100];
};

/* Parses text into at most max lines; fails on any malformed one. */
static inline size_t perf_map_parse(char *text, struct map_line *out,
                                    size_t max)
{
    size_t n = 0;
    for (char *line = text, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        CHECK(nl, "perf map: last line not terminated: \"%s\"", line);
        *nl = 0;
        CHECK(n < max, "perf map: more than %zu lines", max);
        int used = 0;
        CHECK(sscanf(line, "%" SCNxPTR " %zx %n", &out[n].start,
                     &out[n].size, &used) == 2 &&
                  used > 0 && line[used] && strlen(line + used) < 1100,
              "perf map: malformed line \"%s\"", line);
        CHECK(line[used - 1] == ' ' && line[used] != ' ',
              "perf map: malformed spacing in \"%s\"", line);
        strcpy(out[n].name, line + used);
        n++;
    }
    return n;
}

/* ---- jitdump -------------------------------------------------------------- */
#define JD_MAGIC 0x4a695444u
#define JD_CODE_LOAD 0
#define JD_UNWINDING_INFO 4

struct jd_header {
    uint32_t magic, version, total_size, elf_mach, pad1, pid;
    uint64_t timestamp, flags;
};

struct jd_prefix {
    uint32_t id, total_size;
    uint64_t timestamp;
};

struct jd_load {
    struct jd_prefix h;
    uint32_t pid, tid;
    uint64_t vma, code_addr, code_size, code_index;
};

struct jd_unwind {
    struct jd_prefix h;
    uint64_t unwinding_size, eh_frame_hdr_size, mapped_size;
};

/* One record as read: its kind, its fixed part (copied: records are not
 * aligned in the file), and where its other parts are in the buffer. */
struct jd_record {
    uint32_t id;
    uint64_t timestamp;
    const struct jd_load *load;     /* JD_CODE_LOAD: &load_copy */
    const char *name;
    const uint8_t *code;
    const struct jd_unwind *unwind; /* JD_UNWINDING_INFO: &unwind_copy */
    const uint8_t *unwind_data;
    struct jd_load load_copy;
    struct jd_unwind unwind_copy;
};

/* Splits buf (records only, no file header) into records; fails on a
 * record that runs past the end, a kind wxjit does not write, or a load
 * whose parts do not add up to its size. */
static inline size_t jitdump_records(const uint8_t *buf, size_t len,
                                     struct jd_record *out, size_t max)
{
    size_t n = 0, off = 0;
    while (off < len) {
        struct jd_prefix p;
        CHECK(len - off >= sizeof(p), "jitdump: truncated record at %zu",
              off);
        memcpy(&p, buf + off, sizeof(p));
        CHECK(p.total_size >= sizeof(p) && p.total_size <= len - off,
              "jitdump: record at %zu of size %u, %zu bytes left", off,
              p.total_size, len - off);
        CHECK(n < max, "jitdump: more than %zu records", max);
        struct jd_record *rec = &out[n];
        struct jd_record r;
        memset(&r, 0, sizeof(r));
        r.id = p.id;
        r.timestamp = p.timestamp;
        if (p.id == JD_CODE_LOAD) {
            CHECK(p.total_size > sizeof(struct jd_load), "jitdump: load");
            memcpy(&r.load_copy, buf + off, sizeof(r.load_copy));
            r.load = &rec->load_copy;
            r.name = (const char *)(buf + off + sizeof(struct jd_load));
            size_t room = p.total_size - sizeof(struct jd_load);
            size_t name_len = strnlen(r.name, room) + 1;
            CHECK(name_len <= room && sizeof(struct jd_load) + name_len +
                                              r.load_copy.code_size ==
                                          p.total_size,
                  "jitdump: load at %zu: name and %llu code bytes do not "
                  "fill its %u bytes",
                  off, (unsigned long long)r.load_copy.code_size,
                  p.total_size);
            r.code = (const uint8_t *)r.name + name_len;
        } else if (p.id == JD_UNWINDING_INFO) {
            memcpy(&r.unwind_copy, buf + off, sizeof(r.unwind_copy));
            r.unwind = &rec->unwind_copy;
            r.unwind_data = buf + off + sizeof(struct jd_unwind);
            CHECK(p.total_size % 8 == 0 &&
                      sizeof(struct jd_unwind) +
                              r.unwind_copy.unwinding_size <=
                          p.total_size &&
                      r.unwind_copy.eh_frame_hdr_size <
                          r.unwind_copy.unwinding_size,
                  "jitdump: unwinding record at %zu: sizes %u, %llu, %llu",
                  off, p.total_size,
                  (unsigned long long)r.unwind_copy.unwinding_size,
                  (unsigned long long)r.unwind_copy.eh_frame_hdr_size);
        } else {
            CHECK(0, "jitdump: record kind %u at %zu", p.id, off);
        }
        *rec = r;
        n++;
        off += p.total_size;
    }
    return n;
}

#endif /* WXTEST_TOOL_FILES_H */
