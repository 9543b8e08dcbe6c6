/* pcre2_fallback: a pattern whose JIT code is larger than a wxjit chunk
 * (4 MiB by default) makes PCRE2 on wxjit fall back to its interpreter,
 * with every match still right, and its JIT keeps working afterwards.
 *
 * The pattern is (*UTF) and 60,000 copies of \R: about 87 bytes of x86-64
 * JIT code each, 5.2 MB in all, within PCRE2's 64 KiB limit on the
 * compiled pattern. The same source built on stock PCRE2 shows that the
 * pattern does JIT-compile there, to more than a chunk:
 *
 *   pcre2_fallback --expect jit       stock PCRE2: pcre2_jit_compile
 *                                     succeeds, JIT size above 4 MiB
 *   pcre2_fallback --expect fallback  PCRE2 on wxjit (under wx-run):
 *                                     PCRE2_ERROR_NOMEMORY, no JIT code
 * In both, pcre2_match (the JIT code or the interpreter) must match a
 * subject of 60,000 line breaks and reject one of 59,999, and a small
 * pattern must then JIT-compile and match. Exit status 0 only if all
 * hold; tools/check-pcre2.sh runs both. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COPIES 60000
#define WXJIT_CHUNK ((size_t)4 << 20) /* wxjit_heap_options.chunk_size 0 */

static int failures;

static void expect(bool ok, const char *what)
{
    printf("  %s: %s\n", ok ? "ok" : "FAILED", what);
    failures += !ok;
}

static pcre2_code *compile(const char *pattern)
{
    int err;
    PCRE2_SIZE at;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern,
                                   PCRE2_ZERO_TERMINATED, 0, &err, &at, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        printf("  pcre2_compile: %s at %zu\n", (char *)msg, (size_t)at);
    }
    return re;
}

static size_t jit_size(const pcre2_code *re)
{
    size_t size = 0;
    pcre2_pattern_info(re, PCRE2_INFO_JITSIZE, &size);
    return size;
}

/* pcre2_match of breaks line feeds after an 'x': the match's start. */
static int match_breaks(const pcre2_code *re, size_t breaks)
{
    char *subject = malloc(breaks + 2);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!subject || !md) {
        free(subject);
        pcre2_match_data_free(md);
        return PCRE2_ERROR_NOMEMORY;
    }
    subject[0] = 'x';
    memset(subject + 1, '\n', breaks);
    subject[breaks + 1] = '\0';
    int rc = pcre2_match(re, (PCRE2_SPTR)subject, breaks + 1, 0, 0, md,
                         NULL);
    int start = rc > 0 ? (int)pcre2_get_ovector_pointer(md)[0] : rc;
    pcre2_match_data_free(md);
    free(subject);
    return start;
}

static bool small_pattern_jits(void)
{
    pcre2_code *re = compile("a+b");
    if (!re)
        return false;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    bool ok = md && pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0 &&
              jit_size(re) > 0 &&
              pcre2_jit_match(re, (PCRE2_SPTR) "xaab", 4, 0, 0, md, NULL) ==
                  1 &&
              pcre2_get_ovector_pointer(md)[0] == 1;
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return ok;
}

int main(int argc, char **argv)
{
    bool want_jit = argc == 3 && strcmp(argv[1], "--expect") == 0 &&
                    strcmp(argv[2], "jit") == 0;
    if (argc != 3 || strcmp(argv[1], "--expect") != 0 ||
        (!want_jit && strcmp(argv[2], "fallback") != 0)) {
        fprintf(stderr, "usage: %s --expect jit|fallback\n", argv[0]);
        return 2;
    }
    char *pattern = malloc(sizeof "(*UTF)" + 2 * COPIES);
    if (!pattern)
        return 1;
    strcpy(pattern, "(*UTF)");
    for (size_t i = 0; i < COPIES; i++)
        memcpy(pattern + strlen("(*UTF)") + 2 * i, "\\R", 3);
    pcre2_code *re = compile(pattern);
    free(pattern);
    expect(re != NULL, "the pattern compiles");
    if (!re)
        return 1;

    int rc = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    size_t size = jit_size(re);
    printf("  pcre2_jit_compile: %d, JIT code %zu bytes (a wxjit chunk: "
           "%zu)\n",
           rc, size, WXJIT_CHUNK);
    if (want_jit)
        expect(rc == 0 && size > WXJIT_CHUNK,
               "stock PCRE2 JIT-compiles it, to more than a wxjit chunk");
    else
        expect(rc == PCRE2_ERROR_NOMEMORY && size == 0,
               "PCRE2 on wxjit: PCRE2_ERROR_NOMEMORY, no JIT code");
    expect(match_breaks(re, COPIES) == 1,
           "pcre2_match finds the 60,000 line breaks");
    expect(match_breaks(re, COPIES - 1) == PCRE2_ERROR_NOMATCH,
           "pcre2_match rejects 59,999");
    pcre2_code_free(re);
    expect(small_pattern_jits(), "a small pattern then JIT-compiles and "
                                 "pcre2_jit_match runs it");
    printf("pcre2_fallback: %s\n", failures ? "FAILED" : "ok");
    return failures != 0;
}
