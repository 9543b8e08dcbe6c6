/* wx-run: runs a program under the kernel-enforced W^X policy of
 * tools/wx_policy.h. The seccomp filter survives execve (no_new_privs is
 * set first) and is inherited by every thread and child, so
 *     wx-run ./pcre2_jit_test
 * runs an unmodified program, and whatever it starts, with every mmap and
 * mprotect that asks for write+exec failing with EACCES. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "wx_policy.h"

int main(int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: wx-run PROGRAM [ARG]...\n"
                        "runs PROGRAM with every W+X mapping request "
                        "refused (EACCES)\n");
        return 2;
    }
    int err = wx_policy_enter();
    if (err != 0) {
        /* Never run the program without the policy it was asked to prove
         * itself under. A negative value is not an errno: no seccomp here
         * at all (a user-mode emulator). */
        fprintf(stderr, "wx-run: cannot enter the W^X policy: %s\n",
                err > 0 ? strerror(err) : "no seccomp (user-mode emulator)");
        return 126;
    }
    execvp(argv[1], argv + 1);
    fprintf(stderr, "wx-run: %s: %s\n", argv[1], strerror(errno));
    return 127;
}
