/* Replays the fuzzer's inputs, fuzz/corpus/ (seeds and what fuzzing kept)
 * and fuzz/regressions/ (inputs that once found a bug), through the same
 * harness and its model checks (the fuzz/ sources, built into this test
 * with the test compiler and without libFuzzer), so every `make test` runs
 * them on both backends: everything in the serial mode, the regressions
 * and seeds also in the concurrent mode. */
#include <dirent.h>
#ifdef WXJIT_HAVE_VALGRIND_H
#include <valgrind/valgrind.h>
#endif

#include "../fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* prefix: replay only the files whose name starts with it ("" for all). */
static int replay_dir(const char *root, const char *sub, const char *prefix)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/fuzz/%s", root, sub);
    DIR *dir = opendir(path);
    if (!dir) {
        fprintf(stderr, "test_fuzz_replay: cannot open %s\n", path);
        exit(1);
    }
    int count = 0;
    for (struct dirent *e; (e = readdir(dir));) {
        if (e->d_name[0] == '.' ||
            strncmp(e->d_name, prefix, strlen(prefix)))
            continue;
        snprintf(path, sizeof(path), "%s/fuzz/%s/%s", root, sub, e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) {
            fprintf(stderr, "test_fuzz_replay: cannot open %s\n", path);
            exit(1);
        }
        static uint8_t data[1 << 20];
        size_t n = fread(data, 1, sizeof(data), f);
        fclose(f);
        LLVMFuzzerTestOneInput(data, n);
        count++;
    }
    closedir(dir);
    printf("  fuzz/%s%s%s: %d inputs replayed (%s mode), every check held\n",
           sub, *prefix ? "/" : "", *prefix ? prefix : "", count,
           concurrent ? "concurrent" : "serial");
    return count;
}

int main(int argc, char **argv)
{
#ifdef WXJIT_HAVE_VALGRIND_H
    if (RUNNING_ON_VALGRIND) {
        printf("test_fuzz_replay: SKIPPED under Valgrind: the harness "
               "enters the seccomp W^X policy (Valgrind has no seccomp) and "
               "checks every code mapping's protection (Valgrind maps RWX "
               "memory of its own); make fuzz replays the corpus under ASan "
               "and UBSan\n");
        return 77; /* SKIP_RETURN_CODE */
    }
#endif
    /* The source tree: this file is <root>/tests/test_fuzz_replay.c. */
    char root[4096];
    snprintf(root, sizeof(root), "%s", __FILE__);
    for (int up = 0; up < 2; up++) {
        char *slash = strrchr(root, '/');
        if (!slash) {
            fprintf(stderr, "test_fuzz_replay: run from a build whose "
                            "__FILE__ is a path (%s)\n", __FILE__);
            return 1;
        }
        *slash = '\0';
    }
    LLVMFuzzerInitialize(&argc, &argv);
    printf("test_fuzz_replay: the fuzz harness on its saved inputs\n");
    int n = replay_dir(root, "corpus", "") +
            replay_dir(root, "regressions", "");
    concurrent = true;
    n += replay_dir(root, "corpus", "seed-") +
         replay_dir(root, "regressions", "");
    if (n == 0) {
        fprintf(stderr, "test_fuzz_replay: no inputs found\n");
        return 1;
    }
    printf("test_fuzz_replay: ok\n");
    return 0;
}
