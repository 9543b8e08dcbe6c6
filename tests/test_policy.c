/* The W^X policy every other test relies on: the kernel refuses any
 * writable+executable request, while W-or-X requests still work. */
#include "wxtest.h"

static void expect_denied(const char *what, long ret)
{
    CHECK(ret == -1 && errno == EACCES, "%s: returned %ld errno %d (%s), "
          "expected EACCES", what, ret, errno, strerror(errno));
    printf("  %s: denied (EACCES)\n", what);
}

int main(void)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    wxtest_enter_wx_policy();
    printf("test_policy: seccomp W^X filter installed\n");

    void *rwx = mmap(NULL, page, PROT_READ | PROT_WRITE | PROT_EXEC,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    expect_denied("mmap RWX", rwx == MAP_FAILED ? -1 : 0);
    void *wx = mmap(NULL, page, PROT_WRITE | PROT_EXEC,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    expect_denied("mmap WX", wx == MAP_FAILED ? -1 : 0);

    uint8_t *p = mmap(NULL, page, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED, "mmap RW: %s", strerror(errno));
    expect_denied("mprotect RWX",
                  mprotect(p, page, PROT_READ | PROT_WRITE | PROT_EXEC));
    expect_denied("pkey_mprotect RWX",
                  syscall(__NR_pkey_mprotect, p, page,
                          PROT_READ | PROT_WRITE | PROT_EXEC, -1));

    /* What wxjit does is still allowed: RW, then RX. */
    p[0] = 0xc3;
    CHECK(mprotect(p, page, PROT_READ | PROT_EXEC) == 0, "mprotect RX: %s",
          strerror(errno));
    CHECK(mprotect(p, page, PROT_READ | PROT_WRITE) == 0, "mprotect RW: %s",
          strerror(errno));
    void *rx = mmap(NULL, page, PROT_READ | PROT_EXEC,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(rx != MAP_FAILED, "mmap RX: %s", strerror(errno));
    CHECK_EQ(wxtest_wx_mappings(), 0);
    printf("  RW and RX requests: allowed; W+X mappings: 0\n");
    printf("test_policy: ok\n");
    return 0;
}
