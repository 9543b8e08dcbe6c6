/* pcre2_compile_rate: the regex-server case, compile-heavy. N threads
 * each compile a pattern, JIT-compile it, match it once and free it, in a
 * loop for a fixed time; prints the compiles per second of all threads.
 *
 * It uses PCRE2's API only, so the same source is linked with stock PCRE2
 * (sljit's RWX allocator) and with PCRE2 on wxjit (WXJIT_BACKEND picks the
 * backend; WXJIT_SLJIT_STATS=1 prints wxjit's counters at exit): the
 * compile rates compare side by side (tools/check-pcre2.sh).
 *
 * Build: cc -std=c11 -O2 -pthread pcre2_compile_rate.c -I<pcre2 build>
 *   libpcre2-8.a [libwxjit_sljit.a libwxjit.a]
 * Run:   ./pcre2_compile_rate [--threads N] [--seconds S]
 * Prints: compile_rate: threads=N seconds=S compiles=C per_s=R
 *   cpu_s=T per_cpu_s=P jit_bytes_mean=B failures=F  (exit 1 if a pattern
 *   failed to JIT-compile or to match). per_cpu_s divides by the CPU time
 *   the process used (user and system): on a machine shared with other
 *   work it compares the variants where per_s measures the share of the
 *   CPUs they got; it leaves out time spent waiting (toggle's executors
 *   and writers), which per_s includes. */
#define _GNU_SOURCE
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define MAX_THREADS 64

/* What a log processor, a web application firewall or a search server
 * compiles from its users' rules: anchored field extractors, alternations
 * of keywords, character classes with counted repeats. Their JIT code is
 * about 1.5 KiB on average on x86_64 (jit_bytes_mean says on this build),
 * as the sizes wxjit-bench draws from (bench/measure.c). */
static const char *const patterns[] = {
    "^(\\S+) \\S+ (\\S+) \\[([^\\]]+)\\] \"([A-Z]+) ([^ \"]+) "
    "HTTP/[0-9.]+\" (\\d{3}) (\\d+|-)",
    "[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}",
    "https?://([^/:\\s]+)(:\\d+)?(/[^?#\\s]*)?(\\?[^#\\s]*)?",
    "(\\d{4})-(\\d{2})-(\\d{2})T(\\d{2}):(\\d{2}):(\\d{2})(?:\\.\\d+)?"
    "(Z|[+-]\\d{2}:\\d{2})",
    "\\b(\\d{1,3})\\.(\\d{1,3})\\.(\\d{1,3})\\.(\\d{1,3})\\b",
    "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    "(?i)\\b(select|insert|update|delete|drop|union)\\b.*"
    "\\b(from|into|table|where)\\b",
    "(?i)<script[^>]*>.*?</script>",
    "(\\w+)=(\"[^\"]*\"|[^\\s,]*)",
    "(?i)\\b(?:error|warn(?:ing)?|fatal|critical|panic)\\b",
    "\\+?\\d{1,3}[-. ]?\\(?\\d{3}\\)?[-. ]?\\d{3}[-. ]?\\d{4}",
    "^v?(\\d+)\\.(\\d+)\\.(\\d+)(?:-([0-9A-Za-z.-]+))?"
    "(?:\\+([0-9A-Za-z.-]+))?$",
    "(?m)^\\s*#.*$",
    "(\\w+)\\s*\\(\\s*([^)]*)\\)",
    "(?i)(?:user(?:name)?|login)\\s*[:=]\\s*(\\w+)",
    "\\b[A-Z]{2}\\d{2}[A-Z0-9]{11,30}\\b",
};
#define N_PATTERNS (sizeof(patterns) / sizeof(patterns[0]))

static const char subject[] =
    "127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] \"GET "
    "/apache_pb.gif?user=frank HTTP/1.0\" 200 2326 "
    "2000-10-10T13:55:36.120Z warning: select name from users where "
    "id=42; mail frank@example.com, see https://example.com:8080/a/b?c=d "
    "call f(x, y) v1.2.3-rc.1";

static atomic_bool stop;
static atomic_ullong compiles, jit_bytes, failures;
static pthread_barrier_t start;

static void *worker(void *arg)
{
    size_t next = (size_t)(uintptr_t)arg; /* threads start apart */
    pcre2_match_data *md = pcre2_match_data_create(16, NULL);
    unsigned long long mine = 0, bytes = 0, failed = 0;
    pthread_barrier_wait(&start);
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        int err;
        PCRE2_SIZE off;
        size_t size = 0;
        pcre2_code *code =
            pcre2_compile((PCRE2_SPTR)patterns[next], PCRE2_ZERO_TERMINATED, 0,
                          &err, &off, NULL);
        next = (next + 1) % N_PATTERNS;
        if (!code || pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) != 0 ||
            pcre2_pattern_info(code, PCRE2_INFO_JITSIZE, &size) != 0 ||
            size == 0 ||
            pcre2_jit_match(code, (PCRE2_SPTR)subject, sizeof(subject) - 1, 0,
                            0, md, NULL) < PCRE2_ERROR_NOMATCH)
            failed++;
        pcre2_code_free(code);
        mine++;
        bytes += size;
    }
    atomic_fetch_add(&compiles, mine);
    atomic_fetch_add(&jit_bytes, bytes);
    atomic_fetch_add(&failures, failed);
    pcre2_match_data_free(md);
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv)
{
    int threads = 4;
    double seconds = 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--threads N (1-%d)] [--seconds S]\n",
                    argv[0], MAX_THREADS);
            return 2;
        }
    }
    if (threads < 1 || threads > MAX_THREADS || !(seconds > 0)) {
        fprintf(stderr, "bad --threads or --seconds\n");
        return 2;
    }
    pthread_t tid[MAX_THREADS];
    pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++)
        if (pthread_create(&tid[i], NULL, worker,
                           (void *)(uintptr_t)((size_t)i * N_PATTERNS /
                                               (size_t)threads))) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    pthread_barrier_wait(&start);
    double t0 = now_s(), c0 = cpu_s();
    struct timespec nap = {(time_t)seconds,
                           (long)((seconds - (double)(time_t)seconds) * 1e9)};
    nanosleep(&nap, NULL);
    atomic_store(&stop, true);
    for (int i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    double elapsed = now_s() - t0, cpu = cpu_s() - c0;
    unsigned long long n = atomic_load(&compiles);
    printf("compile_rate: threads=%d seconds=%.3f compiles=%llu per_s=%.0f "
           "cpu_s=%.3f per_cpu_s=%.0f jit_bytes_mean=%llu failures=%llu\n",
           threads, elapsed, n, (double)n / elapsed, cpu, (double)n / cpu,
           n ? atomic_load(&jit_bytes) / n : 0, atomic_load(&failures));
    return atomic_load(&failures) || n == 0;
}
