/* pcre2_threads: PCRE2's JIT on wxjit from many threads at once, under the
 * W^X policy (run it with wx-run), every match checked against PCRE2's
 * interpreter.
 *
 * Each thread owns a few slots of a shared table of compiled patterns. In
 * each round it compiles and JIT-compiles a pattern into one of its slots
 * (freeing the code that was there), then matches subjects against slots
 * of every thread, once with pcre2_jit_match and once with the interpreter
 * (PCRE2_NO_JIT), and compares the return codes and ovectors. Freed code
 * makes room that other threads' pools reuse, so new code lands on pages
 * that hold code other threads are running: the seal hook counts those
 * seals ("shared-page seals"), and with toggle the executors that hit a
 * page while it is written are held by wxjit's fault handler ("faults
 * retried").
 *
 * Build: cc -std=c11 -pthread pcre2_threads.c -I<pcre2 build> -I<this dir>
 *   libpcre2-8.a libwxjit_sljit.a libwxjit.a  (PCRE2 built on wxjit)
 * Run:   WXJIT_BACKEND=toggle wx-run ./pcre2_threads [--threads N]
 *   [--rounds R]   (exit 0 only if every result matched, every pattern was
 *   JIT-compiled, code was shared and the policy was in force) */
#define _GNU_SOURCE
#define PCRE2_CODE_UNIT_WIDTH 8
#include <errno.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <wxjit.h>

#include "wx_policy.h"
#include "wxjit_sljit.h"

#define MAX_THREADS 16
#define SLOTS_PER_THREAD 4
#define SUBJECTS_PER_SLOT 12
#define SLOTS_MATCHED 3  /* slots each round matches against */
#define MAX_FUNCS 4      /* JIT functions one compile seals (one mode) */
#define MAX_RECORDS 1024 /* live JIT functions tracked at once */

/* Patterns on which PCRE2's JIT and interpreter agree by definition (no
 * limits reached on the short subjects below). */
static const char *const patterns[] = {
    "abc",
    "a.c",
    "^(a|b)*c$",
    "(\\d+)-(\\d+)",
    "[a-f]{2,4}x?",
    "(?i)hello|world",
    "(a|b)+?c",
    "x(?=y)",
    "(?<=a)b",
    "(\\w)\\1",
    "^\\s*(\\w+)\\s*=\\s*(\\w*)",
    "(?:ab|cd|ef)+$",
    "[^aeiou ]{3}",
    "a{2,}?b",
    "(?|(a)|(b))c",
    "\\bfoo\\b",
    "(?s).*z",
    "(?m)^b",
    "(a)?(?(1)b|c)",
    "([a-c])(?1)*",
    "(?>a+)b",
    "[[:upper:]][[:lower:]]+",
    "(?i)[k-p]+",
    "ab|cd|ef|gh|ij",
    "(\\d{1,3}\\.){3}\\d{1,3}",
    "(?<n>[xyz])\\k<n>?",
    "\\d*(?:0|5)$",
    "(?:a|b|c|d|e|f|g|h|i|j|k|l|m|n|o|p){3,}",
};
#define N_PATTERNS (sizeof(patterns) / sizeof(patterns[0]))

static const char alphabet[] = "abcdefghijklmnopxyz0123456789 .-=ABCH";

/* A live JIT function: its pages and the thread that sealed it. */
struct record {
    uintptr_t first_page, last_page;
    int thread; /* -1: free */
};

struct slot {
    pthread_rwlock_t lock;
    pcre2_code *code;
    int pattern; /* index in patterns[] */
    int records[MAX_FUNCS], n_records;
};

static struct slot slots[MAX_THREADS * SLOTS_PER_THREAD];
static int n_threads = 4;
static long n_rounds = 3000;
static pthread_barrier_t start;

static pthread_mutex_t records_lock = PTHREAD_MUTEX_INITIALIZER;
static struct record records[MAX_RECORDS];
static uint64_t shared_seals, seals;
static uintptr_t page_size;

static _Thread_local int self = -1;
static _Thread_local int sealed[MAX_FUNCS], n_sealed;
static atomic_int records_full;

static atomic_ullong compiled, compared, mismatches, jit_failures;

/* Runs in the sealing thread right after wxjit_commit. */
static void on_seal(void *exec, size_t size)
{
    uintptr_t first = (uintptr_t)exec / page_size;
    uintptr_t last = ((uintptr_t)exec + size - 1) / page_size;
    bool shared = false;
    int free_rec = -1;
    pthread_mutex_lock(&records_lock);
    seals++;
    for (int i = 0; i < MAX_RECORDS; i++) {
        struct record *r = &records[i];
        if (r->thread < 0) {
            if (free_rec < 0)
                free_rec = i;
        } else if (r->thread != self && r->first_page <= last &&
                   first <= r->last_page) {
            shared = true;
        }
    }
    shared_seals += shared;
    if (free_rec >= 0 && n_sealed < MAX_FUNCS) {
        records[free_rec] = (struct record){first, last, self};
        sealed[n_sealed++] = free_rec;
    } else {
        atomic_store(&records_full, 1);
    }
    pthread_mutex_unlock(&records_lock);
}

static void records_drop(const int *idx, int n)
{
    pthread_mutex_lock(&records_lock);
    for (int i = 0; i < n; i++)
        records[idx[i]].thread = -1;
    pthread_mutex_unlock(&records_lock);
}

static uint64_t next_rand(uint64_t *s)
{
    /* xorshift64*: a fixed, seedable sequence per thread. */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static size_t make_subject(uint64_t *rng, char *buf, size_t cap)
{
    static const char *const fixed[] = {
        "abc",         "aac",     "ababc", "12-345", "hello World",
        "aaab",        "xy",      "ab",    "xxyy",   "  key = value",
        "abcdef",      "foo bar", "zz\nb", "bc",     "Hello",
        "192.168.0.1", "ijkl",    "100",   "aabbcc",
    };
    uint64_t r = next_rand(rng);
    if (r % 3 == 0) {
        const char *f = fixed[(r >> 8) % (sizeof(fixed) / sizeof(fixed[0]))];
        size_t n = strlen(f);
        memcpy(buf, f, n);
        return n;
    }
    size_t n = (r >> 8) % cap;
    for (size_t i = 0; i < n; i++)
        buf[i] = alphabet[next_rand(rng) % (sizeof(alphabet) - 1)];
    return n;
}

/* Compares one subject: JIT against interpreter, same compiled pattern. */
static void compare(pcre2_code *code, const char *subj, size_t len,
                    pcre2_match_data *mj, pcre2_match_data *mi,
                    const char *pattern)
{
    int rj = pcre2_jit_match(code, (PCRE2_SPTR)subj, len, 0, 0, mj, NULL);
    int ri =
        pcre2_match(code, (PCRE2_SPTR)subj, len, 0, PCRE2_NO_JIT, mi, NULL);
    bool same = rj == ri;
    if (same && rj >= 0) {
        uint32_t pairs = rj == 0 ? pcre2_get_ovector_count(mj) : (uint32_t)rj;
        PCRE2_SIZE *oj = pcre2_get_ovector_pointer(mj);
        PCRE2_SIZE *oi = pcre2_get_ovector_pointer(mi);
        same = memcmp(oj, oi, 2 * pairs * sizeof(PCRE2_SIZE)) == 0;
    }
    atomic_fetch_add(&compared, 1);
    if (!same && atomic_fetch_add(&mismatches, 1) < 10)
        fprintf(stderr, "MISMATCH /%s/ on \"%.*s\": jit %d, interpreter %d\n",
                pattern, (int)len, subj, rj, ri);
}

static void *worker(void *arg)
{
    self = (int)(intptr_t)arg;
    uint64_t rng = 0x9e3779b97f4a7c15ull * (uint64_t)(self + 1);
    pcre2_match_data *mj = pcre2_match_data_create(16, NULL);
    pcre2_match_data *mi = pcre2_match_data_create(16, NULL);
    char subj[48];
    pthread_barrier_wait(&start);
    for (long round = 0; round < n_rounds; round++) {
        /* Replace the code in one of this thread's slots. */
        int pi = (int)(next_rand(&rng) % N_PATTERNS);
        int err;
        PCRE2_SIZE off;
        pcre2_code *code =
            pcre2_compile((PCRE2_SPTR)patterns[pi], PCRE2_ZERO_TERMINATED, 0,
                          &err, &off, NULL);
        if (!code) {
            fprintf(stderr, "pattern %d does not compile\n", pi);
            exit(1);
        }
        n_sealed = 0;
        size_t jit_size = 0;
        if (pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) != 0 ||
            pcre2_pattern_info(code, PCRE2_INFO_JITSIZE, &jit_size) != 0 ||
            jit_size == 0)
            atomic_fetch_add(&jit_failures, 1);
        atomic_fetch_add(&compiled, 1);
        struct slot *mine =
            &slots[self * SLOTS_PER_THREAD + round % SLOTS_PER_THREAD];
        pthread_rwlock_wrlock(&mine->lock);
        pcre2_code *old = mine->code;
        int old_records[MAX_FUNCS], n_old = mine->n_records;
        memcpy(old_records, mine->records, sizeof(old_records));
        mine->code = code;
        mine->pattern = pi;
        memcpy(mine->records, sealed, sizeof(sealed));
        mine->n_records = n_sealed;
        pthread_rwlock_unlock(&mine->lock);
        if (old) {
            records_drop(old_records, n_old);
            pcre2_code_free(old);
        }
        /* Run code of any thread, this one's included. */
        for (int k = 0; k < SLOTS_MATCHED; k++) {
            struct slot *s = &slots[next_rand(&rng) %
                                    ((size_t)n_threads * SLOTS_PER_THREAD)];
            pthread_rwlock_rdlock(&s->lock);
            for (int j = 0; s->code && j < SUBJECTS_PER_SLOT; j++) {
                size_t len = make_subject(&rng, subj, sizeof(subj));
                compare(s->code, subj, len, mj, mi, patterns[s->pattern]);
            }
            pthread_rwlock_unlock(&s->lock);
        }
    }
    pcre2_match_data_free(mj);
    pcre2_match_data_free(mi);
    return NULL;
}

/* Whether the W^X policy is in force: an anonymous RWX mapping must fail. */
static bool policy_enforced(void)
{
    void *p = mmap(NULL, (size_t)page_size, PROT_READ | PROT_WRITE | PROT_EXEC,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return errno == EACCES;
    munmap(p, (size_t)page_size);
    return false;
}

int main(int argc, char **argv)
{
    bool need_policy = true;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            n_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            n_rounds = atol(argv[++i]);
        else if (!strcmp(argv[i], "--no-policy"))
            need_policy = false;
        else {
            fprintf(stderr,
                    "usage: %s [--threads N (1-%d)] [--rounds R] "
                    "[--no-policy]\n",
                    argv[0], MAX_THREADS);
            return 2;
        }
    }
    if (n_threads < 1 || n_threads > MAX_THREADS || n_rounds < 1) {
        fprintf(stderr, "bad --threads or --rounds\n");
        return 2;
    }
    page_size = (uintptr_t)sysconf(_SC_PAGESIZE);
    bool enforced = policy_enforced();
    if (need_policy && !enforced) {
        fprintf(stderr, "the W^X policy is not in force: run under wx-run "
                        "(or pass --no-policy)\n");
        return 1;
    }
    for (int i = 0; i < MAX_RECORDS; i++)
        records[i].thread = -1;
    for (size_t i = 0; i < sizeof(slots) / sizeof(slots[0]); i++)
        pthread_rwlock_init(&slots[i].lock, NULL);
    int herr;
    struct wxjit_heap *heap = wxjit_sljit_heap(&herr);
    if (!heap) {
        fprintf(stderr, "no wxjit heap: %s\n", strerror(herr));
        return 1;
    }
    wxjit_sljit_set_seal_hook(on_seal);

    pthread_t tid[MAX_THREADS];
    pthread_barrier_init(&start, NULL, (unsigned)n_threads);
    for (int i = 0; i < n_threads; i++)
        if (pthread_create(&tid[i], NULL, worker, (void *)(intptr_t)i)) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    for (int i = 0; i < n_threads; i++)
        pthread_join(tid[i], NULL);
    for (size_t i = 0; i < sizeof(slots) / sizeof(slots[0]); i++)
        pcre2_code_free(slots[i].code);

    wxjit_backend backend;
    const char *name = "?";
    wxjit_stats st = {0};
    wxjit_heap_backend(heap, &backend);
    wxjit_backend_name(backend, &name);
    wxjit_stats_get(heap, &st);
    int wx = wx_policy_wx_mappings();
    printf("pcre2_threads: backend %s, %d threads x %ld rounds\n", name,
           n_threads, n_rounds);
    printf("  patterns JIT-compiled  %llu (JIT failures: %llu)\n",
           (unsigned long long)compiled, (unsigned long long)jit_failures);
    printf("  matches compared       %llu (JIT vs interpreter; wrong: %llu)\n",
           (unsigned long long)compared, (unsigned long long)mismatches);
    printf("  seals                  %llu, onto pages with other threads' "
           "live code: %llu\n",
           (unsigned long long)seals, (unsigned long long)shared_seals);
    printf("  faults retried         %llu\n",
           (unsigned long long)st.faults_retried);
    printf("  code pages             %llu, mprotect calls %llu\n",
           (unsigned long long)st.pages,
           (unsigned long long)st.mprotect_calls);
    printf("  W^X policy             %s; W+X mappings seen: %d\n",
           enforced ? "enforced" : "NOT enforced", wx);
    bool ok = mismatches == 0 && jit_failures == 0 && compiled > 0 &&
              shared_seals > 0 && wx == 0 && !atomic_load(&records_full);
    if (atomic_load(&records_full))
        printf("  (seal records overflowed: raise MAX_RECORDS)\n");
    if (shared_seals == 0)
        printf("  no seal shared a page with another thread's code: "
               "the check did not exercise what it is for\n");
    printf("pcre2_threads: %s\n", ok ? "PASS" : "FAIL");
    return ok ? 0 : 1;
}
