/* wxjit-probe: which wxjit backends work on this system and, for those
 * that do not, the errno and the check that failed (wxjit_backend_probe);
 * then the W^X policies it can see, and what a heap created with
 * WXJIT_BACKEND_AUTO gets. Exit status 0 if some backend works. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/statvfs.h>

#include "wxjit.h"

/* <linux/prctl.h> of Linux 6.3 (memory-deny-write-execute). */
#ifndef PR_GET_MDWE
#define PR_GET_MDWE 66
#endif
#ifndef PR_MDWE_REFUSE_EXEC_GAIN
#define PR_MDWE_REFUSE_EXEC_GAIN 1
#endif

/* "EACCES (Permission denied)" */
static const char *errno_text(int err)
{
    static char buf[96];
#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 32)
    snprintf(buf, sizeof(buf), "%s, %s", strerrorname_np(err), strerror(err));
#else
    snprintf(buf, sizeof(buf), "errno %d, %s", err, strerror(err));
#endif
    return buf;
}

/* The first line of path, without its newline, or NULL if unreadable. */
static const char *first_line(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    const char *got = fgets(buf, (int)len, f);
    fclose(f);
    if (got)
        buf[strcspn(buf, "\n")] = 0;
    return got;
}

/* The value of "key:" in /proc/self/status, or NULL. */
static const char *status_field(const char *key, char *buf, size_t len)
{
    char line[256];
    size_t klen = strlen(key);
    const char *found = NULL;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return NULL;
    while (!found && fgets(line, sizeof(line), f))
        if (!strncmp(line, key, klen) && line[klen] == ':') {
            snprintf(buf, len, "%s",
                     line + klen + 1 + strspn(line + klen + 1, " \t"));
            buf[strcspn(buf, "\n")] = 0;
            found = buf;
        }
    fclose(f);
    return found;
}

static void print_policies(void)
{
    char buf[64], more[64];
    const char *s;
    printf("Policies seen:\n");
    int mdwe = prctl(PR_GET_MDWE, 0, 0, 0, 0);
    printf("  %-24s %s\n", "PR_GET_MDWE",
           mdwe < 0 ? "unknown to this kernel (before 6.3)"
           : mdwe & PR_MDWE_REFUSE_EXEC_GAIN
               ? "refuse-exec-gain (no W+X, no mapping gains exec)"
               : "off");
    s = status_field("Seccomp", buf, sizeof(buf));
    const char *filters = status_field("Seccomp_filters", more, sizeof(more));
    bool filter = s && !strcmp(s, "2");
    printf("  %-24s %s%s%s\n", "seccomp",
           !s                ? "unknown (no /proc/self/status)"
           : !strcmp(s, "0") ? "off"
           : !strcmp(s, "1") ? "strict"
           : filter          ? "filter"
                             : s,
           filter && filters ? ", filters: " : "",
           filter && filters ? filters : "");
    s = first_line("/sys/fs/selinux/enforce", buf, sizeof(buf));
    printf("  %-24s %s\n", "SELinux",
           !s                ? "not present or not readable"
           : !strcmp(s, "1") ? "enforcing"
                             : "permissive");
    if (s) {
        s = first_line("/sys/fs/selinux/booleans/deny_execmem", buf,
                       sizeof(buf));
        printf("  %-24s %s\n", "SELinux deny_execmem",
               !s            ? "not readable"
               : s[0] == '1' ? "on"
                             : "off");
    }
    s = first_line("/proc/sys/vm/memfd_noexec", buf, sizeof(buf));
    printf("  %-24s %s\n", "vm.memfd_noexec", s ? s : "not present");
    /* Where dualmap's shared memory objects live when memfd_create does
     * not work: shm_open, then O_TMPFILE in these. */
    const char *dirs[] = {"/dev/shm", "/tmp", getenv("TMPDIR")};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        struct statvfs st;
        if (!dirs[i] || !*dirs[i])
            continue;
        snprintf(buf, sizeof(buf), "%s", dirs[i]);
        printf("  %-24s %s\n", buf,
               statvfs(dirs[i], &st) != 0 ? "not there"
               : st.f_flag & ST_NOEXEC    ? "mounted noexec"
                                          : "executable mappings allowed");
    }
}

/* What wxjit_heap_create gives with AUTO and these flags (WXJIT_BACKEND,
 * if set, decides as it would for any heap). */
static void print_auto(const char *label, unsigned flags)
{
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    wxjit_heap *h;
    wxjit_backend b;
    const char *name;
    o.flags = flags;
    int err = wxjit_heap_create(&o, &h);
    if (err) {
        printf("  %-24s none (%s)\n", label, errno_text(err));
        return;
    }
    wxjit_heap_backend(h, &b);
    wxjit_backend_name(b, &name);
    wxjit_heap_destroy(h);
    printf("  %-24s %s\n", label, name);
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        int help = !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h");
        fprintf(help ? stdout : stderr,
                "usage: wxjit-probe\n"
                "Prints which wxjit backends work on this system (or the "
                "errno and the check\nthat failed), the W^X policies in "
                "force, and the backend a heap created\nwith "
                "WXJIT_BACKEND_AUTO gets. Exit status 0 if some backend "
                "works, 1 if none.\n");
        return help ? 0 : 2;
    }
    const wxjit_backend all[] = {WXJIT_BACKEND_AUTO, WXJIT_BACKEND_TOGGLE,
                                 WXJIT_BACKEND_DUALMAP, WXJIT_BACKEND_PROCMEM,
                                 WXJIT_BACKEND_RWX};
    int auto_err = 0;
    printf("Backends:\n");
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        const char *name, *why;
        wxjit_backend_name(all[i], &name);
        int err = wxjit_backend_probe(all[i], &why);
        if (all[i] == WXJIT_BACKEND_AUTO)
            auto_err = err;
        if (err)
            printf("  %-10s refused: %s (%s)\n", name, why, errno_text(err));
        else
            printf("  %-10s works\n", name);
    }
    print_policies();
    const char *env = getenv("WXJIT_BACKEND");
    printf("WXJIT_BACKEND_AUTO gives%s%s%s:\n", env ? " (WXJIT_BACKEND=" : "",
           env ? env : "", env ? ")" : "");
    print_auto("by default", 0);
    print_auto("NO_WRITABLE_ALIAS", WXJIT_HEAP_NO_WRITABLE_ALIAS);
    return auto_err == 0 ? 0 : 1;
}
