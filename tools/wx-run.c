/* wx-run: runs a program under the kernel-enforced W^X policy of
 * tools/wx_policy.h. The seccomp filter survives execve (no_new_privs is
 * set first) and is inherited by every thread and child, so
 *     wx-run ./pcre2_jit_test
 * runs an unmodified program, and whatever it starts, with every mmap and
 * mprotect that asks for write+exec failing with EACCES. Each
 *     --policy NAME
 * adds one hardening policy of tools/wx_hardening.h first (MDWE, systemd's
 * MemoryDenyWriteExecute, no /proc, ...), to see how a program fares on
 * such a system. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "wx_hardening.h"
#include "wx_policy.h"

static int usage(void)
{
    fprintf(stderr, "usage: wx-run [--policy NAME]... PROGRAM [ARG]...\n"
                    "runs PROGRAM with every W+X mapping request refused "
                    "(EACCES), after the\nhardening policies named:\n");
    for (size_t i = 0; i < WX_HARDENINGS; i++)
        fprintf(stderr, "  %-14s %s\n", wx_hardenings[i].name,
                wx_hardenings[i].what);
    return 2;
}

int main(int argc, char **argv)
{
    int i = 1;
    for (; i + 1 < argc && !strcmp(argv[i], "--policy"); i += 2) {
        const struct wx_hardening *h = wx_hardening_named(argv[i + 1]);
        const char *why = "";
        if (!h)
            return usage();
        int err = h->enter(&why);
        if (err) {
            fprintf(stderr, "wx-run: cannot enter policy %s: %s%s%s\n",
                    h->name, why, err > 0 ? ": " : "",
                    err > 0 ? strerror(err) : "");
            return 126;
        }
    }
    if (i >= argc || argv[i][0] == '-')
        return usage();
    int err = wx_policy_enter();
    if (err != 0) {
        /* Never run the program without the policy it was asked to prove
         * itself under. A negative value is not an errno: no seccomp here
         * at all (a user-mode emulator). */
        fprintf(stderr, "wx-run: cannot enter the W^X policy: %s\n",
                err > 0 ? strerror(err) : "no seccomp (user-mode emulator)");
        return 126;
    }
    execvp(argv[i], argv + i);
    fprintf(stderr, "wx-run: %s: %s\n", argv[i], strerror(errno));
    return 127;
}
