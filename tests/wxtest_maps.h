/* Test helpers for pages and /proc/self/maps: W+X mappings, the
 * permissions at an address, how many mappings there are, which page an
 * address is on; and descriptors (/proc/self/fd). Under checking tools only the program's own mappings
 * count. */
#ifndef WXTEST_MAPS_H
#define WXTEST_MAPS_H

#include <dirent.h>
#include <fcntl.h>

#include "wxtest_core.h"

/* Under Valgrind: whether memcheck lets the program touch the byte at
 * addr. Every mapping the program gets from mmap (wxjit's chunks and
 * views among them) is addressable from its first byte; Valgrind's own
 * mappings (code cache, its heap, the arena it serves malloc from, whose
 * first bytes are block headers) are not. */
static inline bool wxtest_client_addressable(uintptr_t addr)
{
#ifdef WXJIT_HAVE_VALGRIND_H
    unsigned char vbits;
    /* 3: not addressable (no error is reported); 1: addressable; 0: not
     * memcheck, which cannot tell: counted as the program's. */
    return VALGRIND_GET_VBITS((void *)addr, &vbits, 1) != 3;
#else
    (void)addr;
    return true;
#endif
}

/* W+X mappings in /proc/self/maps: all of them natively; under Valgrind
 * the program's own (Valgrind's are W+X by design, see above). */
static inline int wxtest_wx_mappings(void)
{
    if (!wxtest_valgrind()) {
        int n = wx_policy_wx_mappings();
        CHECK(n >= 0, "cannot read /proc/self/maps");
        return n;
    }
    FILE *f = fopen("/proc/self/maps", "r");
    CHECK(f, "open maps: %s", strerror(errno));
    char line[512], perms[8];
    unsigned long start;
    int n = 0, valgrinds = 0;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "%lx-%*x %7s", &start, perms) != 2 ||
            perms[1] != 'w' || perms[2] != 'x')
            continue;
        if (!wxtest_client_addressable(start)) {
            valgrinds++;
            continue;
        }
        fprintf(stderr, "W+X mapping of the program: %s", line);
        n++;
    }
    fclose(f);
    printf("  (W+X mappings: %d of the program, %d of Valgrind's own "
           "ignored)\n",
           n, valgrinds);
    return n;
}

/* The permissions ("r-xp", "rw-s", ...) of the mapping that holds addr in
 * /proc/self/maps, into perms; false if no mapping holds it. */
static inline bool wxtest_perms_at(const void *addr, char perms[5])
{
    FILE *f = fopen("/proc/self/maps", "r");
    CHECK(f, "open maps: %s", strerror(errno));
    char line[512], p[8];
    unsigned long start, end, a = (unsigned long)(uintptr_t)addr;
    bool found = false;
    while (!found && fgets(line, sizeof(line), f))
        if (sscanf(line, "%lx-%lx %7s", &start, &end, p) == 3 && start <= a &&
            a < end) {
            memcpy(perms, p, 4);
            perms[4] = '\0';
            found = true;
        }
    fclose(f);
    return found;
}

/* Whether the page holding addr is executable and not writable: what every
 * page of live code must be between writes, on every backend. */
static inline bool wxtest_exec_only(const void *addr, char perms[5])
{
    return wxtest_perms_at(addr, perms) && perms[0] == 'r' &&
           perms[1] == '-' && perms[2] == 'x';
}

/* Lines of /proc/self/maps, for bounds on how many mappings wxjit makes.
 * Natively all of them. Under a checking tool, whose own allocator maps
 * memory in steps as the program allocates (which says nothing about
 * wxjit), only the lines that can be wxjit's: under ASan and TSan the
 * executable or shared ones (every code mapping of wxjit is one, and a
 * split one shows as more of them), under Valgrind the program's own
 * (wxtest_client_addressable). */
static inline int wxtest_mapping_count(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    CHECK(f, "open maps: %s", strerror(errno));
    char line[512], perms[8];
    unsigned long start;
    int n = 0;
    bool valgrind = wxtest_valgrind();
    while (fgets(line, sizeof(line), f)) {
        if (!strchr(line, '\n') ||
            sscanf(line, "%lx-%*x %7s", &start, perms) != 2)
            continue;
#if defined(WXTEST_ASAN) || defined(WXTEST_TSAN)
        if (perms[2] != 'x' && perms[3] != 's')
            continue;
#endif
        if (valgrind && !wxtest_client_addressable(start))
            continue;
        n++;
    }
    fclose(f);
    return n;
}

static inline uintptr_t wxtest_page_of(const void *p)
{
    return (uintptr_t)p & ~(uintptr_t)(sysconf(_SC_PAGESIZE) - 1);
}

/* How many different pages the n addresses in f lie on. */
static inline size_t wxtest_distinct_pages(void *const *f, size_t n)
{
    size_t distinct = 0;
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (j < i && wxtest_page_of(f[j]) != wxtest_page_of(f[i]))
            j++;
        distinct += j == i;
    }
    return distinct;
}

/* Open descriptors whose target names path_part; *cloexec is cleared if
 * one of them lacks FD_CLOEXEC. */
static inline int wxtest_fds_naming(const char *path_part, bool *cloexec)
{
    DIR *d = opendir("/proc/self/fd");
    CHECK(d, "opendir: %s", strerror(errno));
    struct dirent *e;
    int n = 0;
    *cloexec = true;
    while ((e = readdir(d))) {
        char link[300], target[512];
        snprintf(link, sizeof(link), "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(link, target, sizeof(target) - 1);
        if (len <= 0)
            continue;
        target[len] = 0;
        if (!strstr(target, path_part))
            continue;
        n++;
        if (!(fcntl(atoi(e->d_name), F_GETFD) & FD_CLOEXEC))
            *cloexec = false;
    }
    closedir(d);
    return n;
}

#endif /* WXTEST_MAPS_H */
