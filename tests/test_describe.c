/* wxjit_describe and what it writes for perf: argument checks, the
 * unwind information it accepts and how it re-encodes it, perf's map and
 * jitdump files read back record by record while threads describe and
 * free concurrently, address reuse, a free racing a batch, fork. Run once
 * per backend, under the W^X policy. */
#include <dlfcn.h>
#include <inttypes.h>
#include <sched.h>
#include <sys/auxv.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "emit_frames.h"
#include "tool_files.h"
#include "wxtest.h"

static char map_path[64], dump_path[128];

static wxjit_heap *heap_with(unsigned flags)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    wxjit_heap *h;
    o.flags = flags;
    CHECK_OK(wxjit_heap_create(&o, &h));
    return h;
}

/* A frame-pointer function that spins count times and returns 0. */
static void *install_spin(wxjit_heap *h, uint32_t count, size_t *size)
{
    uint8_t buf[64];
    void *exec;
    *size = emit_frame_spin(buf, count);
    CHECK_OK(wxjit_install(h, buf, *size, 0, &exec));
    return exec;
}

static wxjit_code_info named(const char *name, unsigned flags)
{
    wxjit_code_info info = WXJIT_CODE_INFO_INIT;
    info.name = name;
    info.flags = flags;
    return info;
}

/* ---- arguments ------------------------------------------------------------ */
static void test_arguments(void)
{
    wxjit_heap *off = heap_with(0), *h = heap_with(WXJIT_HEAP_PERF_MAP);
    size_t size;
    uint8_t *f = install_spin(h, 1, &size);
    void *plain = wxtest_install_int(h, 7);
    wxjit_code_info ok = named("wxjit_test_arg", WXJIT_DESCRIBE_FRAME_POINTER);
    wxjit_stats before = wxtest_stats_of(h);

    wxjit_code_info bad = ok;
    CHECK_RET(wxjit_describe(NULL, f, &ok), EINVAL);
    CHECK_RET(wxjit_describe(h, NULL, &ok), EINVAL);
    CHECK_RET(wxjit_describe(h, f, NULL), EINVAL);
    bad.size = sizeof(bad) - 1;
    CHECK_RET(wxjit_describe(h, f, &bad), EINVAL);
    const char *names[] = {NULL, "", "tab\there", "new\nline", "del\x7f"};
    for (size_t i = 0; i < sizeof(names) / sizeof(*names); i++) {
        bad = ok;
        bad.name = names[i];
        CHECK_RET(wxjit_describe(h, f, &bad), EINVAL);
    }
    char *longest = malloc(WXJIT_NAME_MAX + 2);
    memset(longest, 'n', WXJIT_NAME_MAX + 1);
    longest[WXJIT_NAME_MAX + 1] = 0;
    bad = ok;
    bad.name = longest;
    CHECK_RET(wxjit_describe(h, f, &bad), EINVAL);
    bad = ok;
    bad.flags = 2;
    CHECK_RET(wxjit_describe(h, f, &bad), EINVAL);
    bad = ok;
    bad.eh_frame = f; /* with FRAME_POINTER */
    bad.eh_frame_size = 8;
    CHECK_RET(wxjit_describe(h, f, &bad), EINVAL);
    bad.flags = 0;
    bad.eh_frame_size = 0; /* bytes without a size */
    CHECK_RET(wxjit_describe(h, f, &bad), EINVAL);
    /* Not the start of a live function. */
    int local;
    CHECK_RET(wxjit_describe(h, f + 16, &ok), EINVAL);
    CHECK_RET(wxjit_describe(h, f + 1, &ok), EINVAL);
    CHECK_RET(wxjit_describe(h, &local, &ok), EINVAL);
    CHECK_RET(wxjit_describe(off, f, &ok), EINVAL); /* another heap's */
    wxjit_reservation r;
    CHECK_OK(wxjit_reserve(h, 64, 0, 0, &r));
    CHECK_RET(wxjit_describe(h, r.exec, &ok), EINVAL);
    CHECK_OK(wxjit_abort(h, &r));
    /* The prologue is checked. */
    CHECK_RET(wxjit_describe(h, plain, &ok), EINVAL);
    wxjit_stats after = wxtest_stats_of(h);
    wxtest_check_stats_same("failed describes", &before, &after, false);

    longest[WXJIT_NAME_MAX] = 0;
    wxjit_code_info longest_ok = named(longest, 0);
    CHECK_OK(wxjit_describe(h, plain, &longest_ok));
    CHECK_OK(wxjit_describe(h, f, &ok));
    CHECK_RET(wxjit_describe(h, f, &ok), EBUSY);
    CHECK_OK(wxjit_free(h, f));
    CHECK_RET(wxjit_describe(h, f, &ok), EINVAL); /* freed */

    /* No tool on: checked, nothing kept (twice is fine). */
    uint8_t *g = install_spin(off, 1, &size);
    CHECK_OK(wxjit_describe(off, g, &ok));
    CHECK_OK(wxjit_describe(off, g, &ok));
    CHECK_RET(wxjit_describe(off, wxtest_install_int(off, 1), &ok), EINVAL);
    free(longest);
    CHECK_OK(wxjit_heap_destroy(h));
    CHECK_OK(wxjit_heap_destroy(off));
    printf("  arguments: bad ones EINVAL with statistics unchanged, a second "
           "describe EBUSY, none kept without a tool\n");
}

/* ---- environment -------------------------------------------------------- */
static void test_environment(void)
{
    wxjit_heap *h;
    setenv("WXJIT_PERF", "map,bogus", 1);
    CHECK_RET(wxjit_heap_create(NULL, &h), EINVAL);
    setenv("WXJIT_PERF", "map", 1);
    CHECK_OK(wxjit_heap_create(NULL, &h));
    long from = tool_file_size(map_path);
    size_t size;
    void *f = install_spin(h, 1, &size);
    wxjit_code_info info = named("wxjit_test_from_env", 0);
    CHECK_OK(wxjit_describe(h, f, &info));
    size_t len;
    char *text = (char *)tool_file_read(map_path, from, &len);
    char want[128];
    snprintf(want, sizeof(want), "%" PRIxPTR " %zx wxjit_test_from_env\n",
             (uintptr_t)f, size);
    CHECK(!strcmp(text, want), "perf map has \"%s\", expected \"%s\"", text,
          want);
    free(text);
    CHECK_OK(wxjit_heap_destroy(h));
    setenv("WXJIT_PERF", "off", 1);
    CHECK_OK(wxjit_heap_create(NULL, &h));
    f = install_spin(h, 1, &size);
    from = tool_file_size(map_path);
    CHECK_OK(wxjit_describe(h, f, &info));
    CHECK_EQ(tool_file_size(map_path), from);
    CHECK_OK(wxjit_heap_destroy(h));
    unsetenv("WXJIT_PERF");
    printf("  environment: WXJIT_PERF=map turns the map on, off and unset "
           "do not, a bad value is EINVAL\n");
}

/* ---- unwind information given as .eh_frame bytes -------------------------- */
struct eh {
    uint8_t b[128];
    size_t n;
};

static void eh_put(struct eh *e, uint64_t v, size_t bytes)
{
    for (size_t i = 0; i < bytes; i++)
        e->b[e->n++] = (uint8_t)(v >> (8 * i));
}

/* A CIE (augmentation aug, FDE pointers in enc) and an FDE for
 * [begin, begin + range) from the function, as a compiler lays them out. */
static struct eh eh_make(const char *aug, uint8_t enc, size_t width,
                         uint64_t begin, uint64_t range)
{
    static const uint8_t cie_insns[] = {0x0c, 0x07, 0x08}; /* def_cfa */
    static const uint8_t fde_insns[] = {0x41, 0x0e, 0x10}; /* advance... */
    struct eh e = {{0}, 0};
    size_t cie = e.n;
    eh_put(&e, 0, 4);
    eh_put(&e, 0, 4); /* CIE id */
    eh_put(&e, 1, 1);
    memcpy(e.b + e.n, aug, strlen(aug) + 1);
    e.n += strlen(aug) + 1;
    eh_put(&e, 1, 1);    /* code alignment */
    eh_put(&e, 0x78, 1); /* data alignment -8 */
    eh_put(&e, 16, 1);   /* return address column */
    if (aug[0] == 'z') {
        eh_put(&e, 1, 1);
        eh_put(&e, enc, 1);
    }
    memcpy(e.b + e.n, cie_insns, sizeof(cie_insns));
    e.n += sizeof(cie_insns);
    uint32_t len = (uint32_t)(e.n - cie - 4);
    memcpy(e.b + cie, &len, 4);
    size_t fde = e.n;
    eh_put(&e, 0, 4);
    eh_put(&e, fde + 4 - cie, 4);
    eh_put(&e, begin, width);
    eh_put(&e, range, width);
    if (aug[0] == 'z')
        eh_put(&e, 0, 1);
    memcpy(e.b + e.n, fde_insns, sizeof(fde_insns));
    e.n += sizeof(fde_insns);
    len = (uint32_t)(e.n - fde - 4);
    memcpy(e.b + fde, &len, 4);
    return e;
}

static int describe_eh(wxjit_heap *h, void *f, const struct eh *e)
{
    wxjit_code_info info = named("wxjit_test_eh", 0);
    info.eh_frame = e->b;
    info.eh_frame_size = e->n;
    return wxjit_describe(h, f, &info);
}

static int32_t read_s32(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* The jitdump unwinding record wxjit wrote for a function of size bytes
 * described with eh_make("zR", ..., 0, size): perf inject's layout puts
 * .eh_frame at the code's size rounded up to 8 and the header after it;
 * every pc-relative pointer must land where it says. */
static void check_unwinding(const struct jd_record *u, size_t size)
{
    const uint8_t *d = u->unwind_data;
    uint64_t eh = (size + 7) & ~(size_t)7;
    size_t eh_len = u->unwind->unwinding_size - u->unwind->eh_frame_hdr_size;
    uint32_t cie_len;
    memcpy(&cie_len, d, 4);
    CHECK(cie_len % 8 == 4 && cie_len + 4 < eh_len, "CIE length %u",
          cie_len);
    CHECK(!memcmp(d + 8, "\x01zR", 4), "CIE version and augmentation");
    const uint8_t *fde = d + 4 + cie_len;
    CHECK_EQ(read_s32(fde + 4), 4 + cie_len + 4); /* back to the CIE */
    /* pc_begin, pc-relative from its own place: the code at 0. */
    CHECK_EQ((int64_t)eh + 4 + cie_len + 8 + read_s32(fde + 8), 0);
    CHECK_EQ(read_s32(fde + 12), (int32_t)size);
    const uint8_t *hdr = d + eh_len;
    uint64_t at = eh + eh_len;
    CHECK(hdr[0] == 1 && hdr[1] == 0x1b && hdr[2] == 0x03 && hdr[3] == 0x3b,
          "eh_frame_hdr encodings %02x %02x %02x %02x", hdr[0], hdr[1],
          hdr[2], hdr[3]);
    CHECK_EQ((int64_t)at + 4 + read_s32(hdr + 4), (int64_t)eh);
    CHECK_EQ(read_s32(hdr + 8), 1);
    CHECK_EQ((int64_t)at + read_s32(hdr + 12), 0);
    CHECK_EQ((int64_t)at + read_s32(hdr + 16), (int64_t)eh + 4 + cie_len);
    CHECK_EQ(read_s32(d + eh_len - 4), 0); /* the terminator */
}

static void test_eh_frame(void)
{
    wxjit_heap *h = heap_with(WXJIT_HEAP_JITDUMP);
    size_t size;
    void *f = install_spin(h, 1, &size);
    struct eh e;
    /* Malformed or not for this function. */
    e = eh_make("zR", 0x00, 8, 0, size + 1);
    CHECK_RET(describe_eh(h, f, &e), EINVAL);
    e = eh_make("zR", 0x00, 8, 1, size);
    CHECK_RET(describe_eh(h, f, &e), EINVAL);
    e = eh_make("zR", 0x1b, 4, 0, size); /* pc-relative */
    CHECK_RET(describe_eh(h, f, &e), EINVAL);
    e = eh_make("zPLR", 0x00, 8, 0, size);
    CHECK_RET(describe_eh(h, f, &e), EINVAL);
    e = eh_make("zR", 0x00, 8, 0, size);
    e.b[4] = 1; /* CIE id of .debug_frame */
    CHECK_RET(describe_eh(h, f, &e), EINVAL);
    e = eh_make("zR", 0x00, 8, 0, size);
    for (size_t cut = 1; cut < e.n; cut++) {
        struct eh t = e;
        t.n = cut;
        CHECK_RET(describe_eh(h, f, &t), EINVAL);
    }
    e.n += 4; /* a terminator or anything else after the FDE */
    CHECK_RET(describe_eh(h, f, &e), EINVAL);
    /* Accepted: other widths, no augmentation; then read back. */
    e = eh_make("zR", 0x0b, 4, 0, size);
    CHECK_OK(describe_eh(h, f, &e));
    void *g = install_spin(h, 2, &size);
    e = eh_make("", 0, 8, 0, size);
    long from = tool_file_size(dump_path);
    CHECK_OK(describe_eh(h, g, &e));
    size_t len;
    uint8_t *buf = tool_file_read(dump_path, from, &len);
    struct jd_record rec[2];
    CHECK_EQ(jitdump_records(buf, len, rec, 2), 2);
    CHECK(rec[0].unwind && rec[1].load, "an unwinding record, then a load");
    check_unwinding(&rec[0], size);
    free(buf);
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  eh_frame: malformed CIE/FDE bytes EINVAL; jitdump's copy "
           "re-encoded pc-relative for perf inject's layout, with its "
           "header\n");
}

/* ---- threads describing and freeing, files read back ---------------------- */
#define THREADS 4
#define PER_THREAD 300

struct described {
    uint8_t *exec;
    size_t size;
    char name[40];
    uint8_t code[64];
    bool unwind, freed;
};

static struct described all[THREADS][PER_THREAD];
static wxjit_heap *shared_heap;

/* Each thread installs, describes (half with unwind information), calls,
 * and frees every third function at once, so that later ones reuse its
 * space. */
static void *describer(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int i = 0; i < PER_THREAD; i++) {
        struct described *d = &all[t][i];
        d->exec = install_spin(shared_heap, (uint32_t)(i + 1), &d->size);
        emit_frame_spin(d->code, (uint32_t)(i + 1));
        snprintf(d->name, sizeof(d->name), "wxjit_test_t%d_f%d", t, i);
        d->unwind = i % 2;
        wxjit_code_info info =
            named(d->name, d->unwind ? WXJIT_DESCRIBE_FRAME_POINTER : 0);
        CHECK_OK(wxjit_describe(shared_heap, d->exec, &info));
        wxtest_expect_returns(d->exec, 0);
        if (i % 3 == 0) {
            CHECK_OK(wxjit_free(shared_heap, d->exec));
            d->freed = true;
        }
    }
    return NULL;
}

static struct described *find_name(const char *name)
{
    int t, i;
    if (sscanf(name, "wxjit_test_t%d_f%d", &t, &i) != 2 || t < 0 ||
        t >= THREADS || i < 0 || i >= PER_THREAD)
        return NULL;
    return strcmp(all[t][i].name, name) ? NULL : &all[t][i];
}

static void check_map(long from)
{
    static struct map_line lines[THREADS * PER_THREAD + 1];
    static bool seen[THREADS][PER_THREAD];
    size_t len;
    char *text = (char *)tool_file_read(map_path, from, &len);
    size_t n = perf_map_parse(text, lines, THREADS * PER_THREAD + 1);
    CHECK_EQ(n, THREADS * PER_THREAD);
    for (size_t k = 0; k < n; k++) {
        struct described *d = find_name(lines[k].name);
        CHECK(d, "perf map: unexpected name \"%s\"", lines[k].name);
        bool *s = &seen[(d - &all[0][0]) / PER_THREAD][(d - &all[0][0]) %
                                                       PER_THREAD];
        CHECK(!*s, "perf map: %s twice", d->name);
        *s = true;
        CHECK(lines[k].start == (uintptr_t)d->exec && lines[k].size == d->size,
              "perf map: %s at %" PRIxPTR " size %zx, installed at %p size "
              "%zx",
              d->name, lines[k].start, lines[k].size, (void *)d->exec,
              d->size);
    }
    free(text);
}

/* Every load is one description or one retraction ("wxjit:freed", at the
 * free or the heap's destruction), in code index and time order; an
 * unwinding record comes right before exactly the loads described with
 * unwind information. */
static void check_dump(long from, uint64_t first_index)
{
    static struct jd_record recs[4 * THREADS * PER_THREAD];
    static uint64_t loaded_at[THREADS][PER_THREAD];
    size_t len, freed = 0;
    uint8_t *buf = tool_file_read(dump_path, from, &len);
    size_t n = jitdump_records(buf, len, recs, 4 * THREADS * PER_THREAD);
    uint64_t index = first_index, last_time = 0;
    for (size_t k = 0; k < n; k++) {
        const struct jd_record *r = &recs[k];
        CHECK(r->timestamp >= last_time, "jitdump: record %zu goes back in "
              "time", k);
        last_time = r->timestamp;
        if (r->unwind) {
            CHECK(k + 1 < n && recs[k + 1].load,
                  "jitdump: unwinding record %zu not before a load", k);
            continue;
        }
        const struct jd_load *l = r->load;
        CHECK_EQ(l->code_index, index++);
        CHECK_EQ(l->pid, getpid());
        CHECK_EQ(l->vma, l->code_addr);
        bool unwound = k > 0 && recs[k - 1].unwind;
        if (!strcmp(r->name, "wxjit:freed")) {
            CHECK(!unwound, "jitdump: unwinding before a freed record");
            /* The traps as at the code's address (aarch64 and riscv64
             * fill by alignment). */
            for (uint64_t i = 0; i < l->code_size; i++)
                CHECK(r->code[i] ==
                          emit_trap_byte((const uint8_t *)(uintptr_t)l->vma +
                                         i),
                      "jitdump: freed record without traps at byte %llu",
                      (unsigned long long)i);
            /* Its description's load came first, at that address. */
            bool found = false;
            for (int t = 0; t < THREADS && !found; t++)
                for (int i = 0; i < PER_THREAD && !found; i++)
                    if (loaded_at[t][i] && (uintptr_t)all[t][i].exec ==
                                               l->vma &&
                        all[t][i].size == l->code_size) {
                        loaded_at[t][i] = 0; /* retracted once */
                        found = true;
                    }
            CHECK(found, "jitdump: freed %llx without a live description",
                  (unsigned long long)l->vma);
            freed++;
            continue;
        }
        struct described *d = find_name(r->name);
        CHECK(d, "jitdump: unexpected name \"%s\"", r->name);
        /* No live description may overlap it: reused space was retracted
         * first. */
        for (int t = 0; t < THREADS; t++)
            for (int i = 0; i < PER_THREAD; i++)
                CHECK(!loaded_at[t][i] ||
                          (uintptr_t)all[t][i].exec + all[t][i].size <=
                              l->vma ||
                          l->vma + l->code_size <= (uintptr_t)all[t][i].exec,
                      "jitdump: %s loaded over %s, not retracted", d->name,
                      all[t][i].name);
        uint64_t *at = &loaded_at[(d - &all[0][0]) / PER_THREAD]
                                  [(d - &all[0][0]) % PER_THREAD];
        CHECK(!*at, "jitdump: %s loaded twice", d->name);
        *at = l->code_index + 1;
        CHECK(l->vma == (uintptr_t)d->exec && l->code_size == d->size &&
                  !memcmp(r->code, d->code, d->size),
              "jitdump: %s at %llx size %llu (bytes %s), installed at %p "
              "size %zu",
              d->name, (unsigned long long)l->vma,
              (unsigned long long)l->code_size,
              memcmp(r->code, d->code, d->size) ? "differ" : "same",
              (void *)d->exec, d->size);
        CHECK(unwound == d->unwind, "jitdump: %s %s unwinding record",
              d->name, unwound ? "with an unexpected" : "without its");
        if (unwound)
            check_unwinding(&recs[k - 1], d->size);
    }
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < PER_THREAD; i++)
            CHECK(!loaded_at[t][i], "jitdump: %s never retracted",
                  all[t][i].name);
    CHECK_EQ(freed, THREADS * PER_THREAD);
    free(buf);
}

static uint64_t next_code_index(void)
{
    size_t len;
    uint8_t *buf = tool_file_read(dump_path, sizeof(struct jd_header), &len);
    static struct jd_record recs[1 << 14];
    size_t n = jitdump_records(buf, len, recs, 1 << 14);
    uint64_t next = 0;
    for (size_t k = 0; k < n; k++)
        if (recs[k].load)
            next = recs[k].load->code_index + 1;
    free(buf);
    return next;
}

static void test_threads(void)
{
    shared_heap = heap_with(WXJIT_HEAP_PERF_MAP | WXJIT_HEAP_JITDUMP);
    long map_from = tool_file_size(map_path);
    long dump_from = tool_file_size(dump_path);
    uint64_t first_index = next_code_index();
    pthread_t threads[THREADS];
    for (int t = 0; t < THREADS; t++)
        threads[t] = wxtest_spawn(describer, (void *)(intptr_t)t);
    for (int t = 0; t < THREADS; t++)
        wxtest_join(threads[t]);
    size_t reused = 0;
    for (int t = 0; t < THREADS; t++)
        for (int i = 1; i < PER_THREAD; i++)
            reused += all[t][i].exec == all[t][i - 1].exec;
    CHECK(reused > 0, "no address was reused: the test checks nothing");
    /* The rest are retracted when the heap goes. */
    CHECK_OK(wxjit_heap_destroy(shared_heap));
    check_map(map_from);
    check_dump(dump_from, first_index);
    printf("  threads: %d threads x %d functions described (half with "
           "unwind information), a third freed at once (%zu addresses "
           "reused): every map line and jitdump record as installed, each "
           "description retracted once\n",
           THREADS, PER_THREAD, reused);
}

/* ---- a free racing a batch that describes its function ------------------
 * A batch is long (a record per function): the function it describes
 * first, or last, is freed meanwhile by another thread, whose next
 * install takes the same space at once (its tail's last block). */
#define OTHERS 4000

struct racing_batch {
    wxjit_heap *h;
    void *exec[OTHERS + 1];
    wxjit_code_info info[OTHERS + 1];
    char names[OTHERS][24];
    _Atomic int done;
};

static void *describe_racing_batch(void *arg)
{
    struct racing_batch *b = arg;
    CHECK_OK(wxjit_describe_batch(b->h, b->exec, b->info, OTHERS + 1));
    atomic_store(&b->done, 1);
    return NULL;
}

/* The name of the last jitdump load over addr from offset from on. */
static char *last_load_at(long from, uintptr_t addr)
{
    size_t len;
    uint8_t *buf = tool_file_read(dump_path, from, &len);
    size_t max = len / sizeof(struct jd_prefix) + 1;
    struct jd_record *recs = malloc(max * sizeof(*recs));
    size_t n = jitdump_records(buf, len, recs, max);
    char *name = NULL;
    for (size_t k = 0; k < n; k++)
        if (recs[k].load && recs[k].load->vma <= addr &&
            addr < recs[k].load->vma + recs[k].load->code_size) {
            free(name);
            name = strdup(recs[k].name);
        }
    free(recs);
    free(buf);
    return name;
}

/* Installs the others, then f (the calling thread's last install, so
 * that its next one reuses f's space), starts the batch with f first (or
 * last) and returns once the batch has written a record, with the batch
 * under way (true) or over. */
static bool start_batch(struct racing_batch *b, bool first, uint8_t **f,
                        size_t *size, pthread_t *t)
{
    size_t at = first ? 0 : OTHERS;
    for (int i = 0; i < OTHERS; i++) {
        size_t other;
        b->exec[i + first] = install_spin(b->h, 1, &other);
        snprintf(b->names[i], sizeof(b->names[i]), "wxjit_test_other%d", i);
        b->info[i + first] = named(b->names[i], 0);
    }
    *f = install_spin(b->h, 3, size);
    b->exec[at] = *f;
    b->info[at] = named("wxjit_test_racing", WXJIT_DESCRIBE_FRAME_POINTER);
    atomic_store(&b->done, 0);
    long before = tool_file_size(dump_path);
    *t = wxtest_spawn(describe_racing_batch, b);
    while (tool_file_size(dump_path) == before && !atomic_load(&b->done))
        sched_yield();
    return !atomic_load(&b->done);
}

static void free_others(struct racing_batch *b, bool first)
{
    for (int i = 0; i < OTHERS; i++)
        CHECK_OK(wxjit_free(b->h, b->exec[i + first]));
}

static void test_free_racing_batch(void)
{
    static struct racing_batch b;
    b.h = heap_with(WXJIT_HEAP_JITDUMP);
    size_t size;
    wxjit_code_info info = named("wxjit_test_first", 0);
    CHECK_OK(wxjit_describe(b.h, install_spin(b.h, 1, &size), &info));
    long from = tool_file_size(dump_path);
    pthread_t t;

    /* Freed once the batch has written its record: the free waits for
     * the batch, and the freed record comes before anything of the code
     * that reuses the space (once, a later "wxjit:freed" named it). */
    uint8_t *f;
    bool raced_first = start_batch(&b, true, &f, &size, &t);
    CHECK_OK(wxjit_free(b.h, f));
    uint8_t *g = install_spin(b.h, 4, &size);
    CHECK(g == f, "the space was not reused (%p, %p)", (void *)g, (void *)f);
    info = named("wxjit_test_reuser", WXJIT_DESCRIBE_FRAME_POINTER);
    CHECK_OK(wxjit_describe(b.h, g, &info));
    wxtest_join(t);
    char *last = last_load_at(from, (uintptr_t)g);
    CHECK(last && !strcmp(last, "wxjit_test_reuser"),
          "jitdump names the new code \"%s\", not wxjit_test_reuser", last);
    free(last);
    CHECK_OK(wxjit_free(b.h, g));
    free_others(&b, true);

    /* Freed after the batch checked it, before its record: the batch
     * describes it as it was, and the free retracts that before its
     * space goes to smaller code (once, the batch gave the new code the
     * freed function's name and size, over the next function). */
    bool raced_last = start_batch(&b, false, &f, &size, &t);
    CHECK_OK(wxjit_free(b.h, f));
    uint8_t *small = wxtest_install_int(b.h, 5);
    uint8_t *next = wxtest_install_int(b.h, 6);
    CHECK(small == f && next < f + size, "the space was not reused");
    wxtest_join(t);
    last = last_load_at(from, (uintptr_t)next);
    CHECK(!last || strcmp(last, "wxjit_test_racing"),
          "jitdump names the function after the new code \"%s\"", last);
    free(last);
    CHECK_OK(wxjit_free(b.h, small));
    CHECK_OK(wxjit_free(b.h, next));
    free_others(&b, false);
    CHECK_OK(wxjit_heap_destroy(b.h));
    printf("  free racing a batch: the free waits for the batch (%s), "
           "freed space reused only after its description is retracted\n",
           raced_first && raced_last ? "both frees during the batch"
                                     : "a batch ended first: not raced");
}

/* ---- WXJIT_HEAP_UNWIND in a C program --------------------------------- */
/* This program is C: no unwinder is loaded until it loads one, and then
 * registration works without a new heap. */
static void test_unwinder(void)
{
    wxjit_heap *h = heap_with(WXJIT_HEAP_UNWIND);
    size_t size;
    void *f = install_spin(h, 1, &size), *g = install_spin(h, 2, &size);
    wxjit_code_info plain = named("wxjit_test_no_unwind", 0);
    wxjit_code_info fp = named("wxjit_test_unwind",
                               WXJIT_DESCRIBE_FRAME_POINTER);
    CHECK_OK(wxjit_describe(h, f, &plain)); /* nothing to register */
    bool loaded = dlsym(RTLD_DEFAULT, "__register_frame") != NULL;
    if (!loaded)
        CHECK_RET(wxjit_describe(h, g, &fp), ENOTSUP);
    /* No program interpreter: a static executable has no loader to load
     * libgcc_s with (the full-system aarch64 run's programs). */
    bool can_load = getauxval(AT_BASE) != 0;
    if (can_load) {
        CHECK(dlopen("libgcc_s.so.1", RTLD_NOW | RTLD_GLOBAL),
              "dlopen libgcc_s.so.1: %s", dlerror());
        CHECK_OK(wxjit_describe(h, g, &fp));
    } else {
        wxtest_skip("unwind registration once libgcc_s is loaded",
                    "a statically linked program cannot load it");
    }
    CHECK_OK(wxjit_free(h, g));
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  unwinder: %s%s\n",
           loaded ? "libgcc_s was loaded already"
                  : "ENOTSUP while no unwinder is loaded",
           can_load ? "; registered once libgcc_s is loaded" : "");
}

/* ---- the jitdump marker ------------------------------------------------- */
/* Mapped at the process's first description, once (test_eh_frame and
 * test_threads may have described already). */
static void test_marker(void)
{
    wxjit_heap *h = heap_with(WXJIT_HEAP_JITDUMP);
    size_t size;
    wxjit_code_info info = named("wxjit_test_marker", 0);
    CHECK_OK(wxjit_describe(h, install_spin(h, 1, &size), &info));
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4096], name[64];
    int marked = 0;
    snprintf(name, sizeof(name), "/jit-%d.dump", getpid());
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = 0;
        size_t n = strlen(line), k = strlen(name);
        if (n > k && !strcmp(line + n - k, name)) {
            CHECK(strstr(line, " r-xp "), "marker mapped as: %s", line);
            marked++;
        }
    }
    fclose(f);
    CHECK_EQ(marked, 1);
    CHECK_EQ(wxtest_wx_mappings(), 0);
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  marker: jit-%d.dump mapped once, r-xp, no W+X mapping\n",
           getpid());
}

/* ---- fork ------------------------------------------------------------------ */
static void test_fork(void)
{
    wxjit_heap *h = heap_with(WXJIT_HEAP_PERF_MAP | WXJIT_HEAP_JITDUMP);
    size_t size;
    void *f = install_spin(h, 1, &size);
    wxjit_code_info before = named("wxjit_test_before_fork", 0);
    CHECK_OK(wxjit_describe(h, f, &before));
    long parent_map = tool_file_size(map_path);
    pid_t child = fork();
    CHECK(child >= 0, "fork: %s", strerror(errno));
    if (child == 0) {
        void *g = install_spin(h, 2, &size);
        wxjit_code_info in_child = named("wxjit_test_in_child", 0);
        CHECK_OK(wxjit_describe(h, g, &in_child));
        _exit(0);
    }
    int status;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) &&
              WEXITSTATUS(status) == 0,
          "child status %#x", status);
    CHECK_EQ(tool_file_size(map_path), parent_map);
    char path[160];
    snprintf(path, sizeof(path), "/tmp/perf-%d.map", (int)child);
    size_t len;
    char *text = (char *)tool_file_read(path, 0, &len);
    CHECK(strstr(text, " wxjit_test_before_fork\n") &&
              strstr(text, " wxjit_test_in_child\n") &&
              !strstr(text, "wxjit_test_t0"),
          "child's map:\n%s", text);
    free(text);
    unlink(path);
    snprintf(path, sizeof(path), "%s/jit-%d.dump", getenv("JITDUMPDIR"),
             (int)child);
    uint8_t *dump = tool_file_read(path, 0, &len);
    struct jd_header hd;
    memcpy(&hd, dump, sizeof(hd));
    CHECK(hd.magic == JD_MAGIC && hd.pid == (uint32_t)child,
          "child's jitdump header: magic %x pid %u", hd.magic, hd.pid);
    struct jd_record recs[4];
    size_t n = jitdump_records(dump + sizeof(hd), len - sizeof(hd), recs, 4);
    CHECK(n == 2 && !strcmp(recs[0].name, "wxjit_test_before_fork") &&
              !strcmp(recs[1].name, "wxjit_test_in_child") &&
              recs[0].load->code_index == 0,
          "child's jitdump: %zu records", n);
    free(dump);
    unlink(path);
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  fork: the child's map and jitdump are its own, with the "
           "description it inherited first\n");
}

/* ---- what another user may plant at the files' names ---------------------
 * /tmp/perf-<pid>.map is a predictable name in a world-writable directory:
 * a FIFO there (allowed while fs.protected_fifos is 0) once blocked every
 * describe for ever when its buffer filled; a hard link to a file of ours
 * had it overwritten (jitdump truncates). Both are EACCES, promptly. In a
 * child: its files are opened at its first description. */
static void record_files_child(void)
{
    char path[160], own[160];
    alarm(10); /* a blocked write: killed by SIGALRM */
    snprintf(path, sizeof(path), "/tmp/perf-%d.map", getpid());
    unlink(path);
    CHECK(mkfifo(path, 0666) == 0, "mkfifo: %s", strerror(errno));
    wxjit_heap *h = heap_with(WXJIT_HEAP_PERF_MAP);
    wxjit_code_info info = named("wxjit_test_planted", 0);
    size_t size;
    void *f = install_spin(h, 1, &size);
    CHECK_RET(wxjit_describe(h, f, &info), EACCES);
    unlink(path);
    CHECK_OK(wxjit_describe(h, f, &info)); /* now its own file */
    unlink(path);
    CHECK_OK(wxjit_heap_destroy(h));

    snprintf(path, sizeof(path), "%s/jit-%d.dump", getenv("JITDUMPDIR"),
             getpid());
    snprintf(own, sizeof(own), "%s/own-%d", getenv("JITDUMPDIR"), getpid());
    FILE *o = fopen(own, "w");
    CHECK(o && fputs("keep\n", o) >= 0 && fclose(o) == 0, "%s", own);
    CHECK(link(own, path) == 0, "link: %s", strerror(errno));
    h = heap_with(WXJIT_HEAP_JITDUMP);
    f = install_spin(h, 1, &size);
    CHECK_RET(wxjit_describe(h, f, &info), EACCES);
    CHECK_EQ(tool_file_size(own), 5);
    unlink(path);
    unlink(own);
    CHECK_OK(wxjit_describe(h, f, &info));
    CHECK_OK(wxjit_heap_destroy(h));
    unlink(path);
    _exit(0);
}

static void test_record_files(void)
{
    pid_t child = fork();
    CHECK(child >= 0, "fork: %s", strerror(errno));
    if (child == 0)
        record_files_child();
    int status;
    CHECK(waitpid(child, &status, 0) == child, "waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %s %d",
          WIFEXITED(status) ? "exited" : "killed by signal",
          WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    printf("  planted files: a FIFO at the perf map's name, a hard link at "
           "jitdump's: EACCES, nothing blocked or overwritten\n");
}

/* A fork child finds the descriptions it replays through the start bits,
 * not by reading every slot: with a 1 GiB chunk the slot table is 512 MiB
 * that were never touched, 131,072 pages to fault in (seconds, at every
 * fork). Counted as the child's page faults, not timed. */
static void test_fork_scan(void)
{
    if (wxtest_valgrind()) {
        wxtest_skip("fork scan with a 1 GiB chunk",
                    "Valgrind's calloc fills the 512 MiB slot table (1.7 GB "
                    "resident, 13 s), so the child would fault nothing in");
        return;
    }
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    wxjit_heap *h;
    o.chunk_size = (size_t)1 << 30;
    o.flags = WXJIT_HEAP_PERF_MAP;
    CHECK_OK(wxjit_heap_create(&o, &h));
    size_t size;
    wxjit_code_info info = named("wxjit_test_fork_scan", 0);
    CHECK_OK(wxjit_describe(h, install_spin(h, 1, &size), &info));
    pid_t child = fork();
    CHECK(child >= 0, "fork: %s", strerror(errno));
    if (child == 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        _exit(ru.ru_minflt > 20000 ? 1 : 0);
    }
    int status;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status),
          "child status %#x", status);
    CHECK(WEXITSTATUS(status) == 0,
          "the child faulted in over 20,000 pages after the fork (the "
          "whole slot table?)");
    char path[64];
    snprintf(path, sizeof(path), "/tmp/perf-%d.map", (int)child);
    unlink(path);
    CHECK_OK(wxjit_heap_destroy(h));
    printf("  fork scan: a child of a heap with a 1 GiB chunk reads no "
           "untouched slot table\n");
}

int main(int argc, char **argv)
{
    static char dir[] = "/tmp/wxjit-describe-XXXXXX";
    wxtest_enter_wx_policy();
    wxtest_print_backend();
    CHECK(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
    setenv("JITDUMPDIR", dir, 1);
    unsetenv("WXJIT_PERF");
    snprintf(map_path, sizeof(map_path), "/tmp/perf-%d.map", getpid());
    snprintf(dump_path, sizeof(dump_path), "%s/jit-%d.dump", dir, getpid());
    unlink(map_path); /* a file of an earlier process with this pid */
    if (wxtest_selected(argc, argv, "arguments"))
        test_arguments();
    if (wxtest_selected(argc, argv, "environment"))
        test_environment();
    if (wxtest_selected(argc, argv, "eh_frame"))
        test_eh_frame();
    if (wxtest_selected(argc, argv, "threads"))
        test_threads();
    if (wxtest_selected(argc, argv, "free_racing_batch"))
        test_free_racing_batch();
    if (wxtest_selected(argc, argv, "marker"))
        test_marker();
    if (wxtest_selected(argc, argv, "unwinder"))
        test_unwinder();
    if (wxtest_selected(argc, argv, "fork"))
        test_fork();
    if (wxtest_selected(argc, argv, "fork_scan"))
        test_fork_scan();
    if (wxtest_selected(argc, argv, "record_files"))
        test_record_files();
    unlink(map_path);
    unlink(dump_path);
    rmdir(dir);
    printf("test_describe: all passed\n");
    return 0;
}
