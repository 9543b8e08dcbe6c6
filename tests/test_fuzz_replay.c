/* Replays the fuzzer's inputs, fuzz/corpus/ (seeds and what fuzzing kept)
 * and fuzz/regressions/ (inputs that once found a bug), through the same
 * harness and its model checks, built with the test compiler and without
 * libFuzzer, so every `make test` runs them on both backends. */
#include <dirent.h>
#ifdef WXJIT_HAVE_VALGRIND_H
#include <valgrind/valgrind.h>
#endif

#include "../fuzz/fuzz_api.c"

static int replay_dir(const char *root, const char *sub)
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
        if (e->d_name[0] == '.')
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
    printf("  fuzz/%s: %d inputs replayed, every check held\n", sub, count);
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
    int n = replay_dir(root, "corpus") + replay_dir(root, "regressions");
    if (n == 0) {
        fprintf(stderr, "test_fuzz_replay: no inputs found\n");
        return 1;
    }
    printf("test_fuzz_replay: ok\n");
    return 0;
}
