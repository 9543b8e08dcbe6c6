/* The W^X policy every other test relies on: the kernel refuses any
 * writable+executable request, while W-or-X requests still work. First
 * the filter program itself is run, in a small classic-BPF evaluator, on
 * this CPU's system call numbers and audit arch: that part needs no
 * kernel, so it also runs under qemu-user, where seccomp is unavailable. */
#include "wxtest.h"

/* Runs a seccomp filter on d the way the kernel does, for the opcodes
 * wx_policy_filter uses (any other fails the test). */
static uint32_t bpf_run(const struct sock_filter *f, size_t n,
                        const struct seccomp_data *d)
{
    uint32_t a = 0;
    for (size_t pc = 0; pc < n; pc++) {
        const struct sock_filter *i = &f[pc];
        switch (i->code) {
        case BPF_LD | BPF_W | BPF_ABS:
            CHECK(i->k + 4 <= sizeof(*d), "load at %u", i->k);
            memcpy(&a, (const char *)d + i->k, 4);
            break;
        case BPF_ALU | BPF_AND | BPF_K:
            a &= i->k;
            break;
        case BPF_JMP | BPF_JEQ | BPF_K:
            pc += a == i->k ? i->jt : i->jf;
            break;
        case BPF_JMP | BPF_JGE | BPF_K:
            pc += a >= i->k ? i->jt : i->jf;
            break;
        case BPF_RET | BPF_K:
            return i->k;
        default:
            CHECK(0, "opcode %#x at %zu not understood", i->code, pc);
        }
    }
    CHECK(0, "the filter runs off its end");
    return 0;
}

static void expect_verdict(const char *what, uint32_t arch, int nr,
                           uint64_t prot, bool denied)
{
    struct sock_filter f[WX_POLICY_FILTER_MAX];
    size_t n = wx_policy_filter(f);
    struct seccomp_data d;
    memset(&d, 0, sizeof(d));
    d.arch = arch;
    d.nr = nr;
    d.args[2] = prot;
    uint32_t got = bpf_run(f, n, &d);
    uint32_t want = denied ? WX_POLICY_DENY : SECCOMP_RET_ALLOW;
    CHECK(got == want, "%s (nr %d, prot %#llx): filter returns %#x, "
          "expected %#x", what, nr, (unsigned long long)prot, got, want);
}

static void test_filter_program(void)
{
    const uint64_t rwx = PROT_READ | PROT_WRITE | PROT_EXEC;
    const uint64_t rw = PROT_READ | PROT_WRITE, rx = PROT_READ | PROT_EXEC;
    const uint32_t me = WX_POLICY_AUDIT_ARCH;
    expect_verdict("mmap RWX", me, __NR_mmap, rwx, true);
    expect_verdict("mmap WX", me, __NR_mmap, PROT_WRITE | PROT_EXEC, true);
    expect_verdict("mmap RWX, high bits set", me, __NR_mmap,
                   rwx | (uint64_t)1 << 40, true);
    expect_verdict("mmap RW", me, __NR_mmap, rw, false);
    expect_verdict("mmap RX", me, __NR_mmap, rx, false);
    expect_verdict("mprotect RWX", me, __NR_mprotect, rwx, true);
    expect_verdict("mprotect RX", me, __NR_mprotect, rx, false);
    expect_verdict("pkey_mprotect RWX", me, __NR_pkey_mprotect, rwx, true);
    expect_verdict("pkey_mprotect RW", me, __NR_pkey_mprotect, rw, false);
    expect_verdict("write with RWX-like third argument", me, __NR_write, rwx,
                   false);
    expect_verdict("any call from another ABI", AUDIT_ARCH_I386, __NR_write,
                   0, true);
#if defined(__x86_64__)
    expect_verdict("x32 mmap RW", me, __NR_mmap | 0x40000000, rw, true);
#endif
    printf("  filter program for %s (audit arch %#x; mmap %d, mprotect %d, "
           "pkey_mprotect %d): W+X denied, RW and RX allowed, other ABIs "
           "denied\n", WX_POLICY_ARCH_NAME, me, __NR_mmap, __NR_mprotect,
           __NR_pkey_mprotect);
}

static void expect_denied(const char *what, long ret)
{
    CHECK(ret == -1 && errno == EACCES, "%s: returned %ld errno %d (%s), "
          "expected EACCES", what, ret, errno, strerror(errno));
    printf("  %s: denied (EACCES)\n", what);
}

int main(void)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    printf("test_policy:\n");
    test_filter_program();
    if (wxtest_valgrind())
        wxtest_skip_all("test_policy", "the kernel-enforced W^X policy "
                        "cannot be entered: Valgrind (3.19) does not "
                        "implement seccomp(2), and its own code cache and "
                        "heap are RWX mappings that such a filter would "
                        "refuse (checked above: the filter program for "
                        "this CPU)");
    if (wx_policy_enter() == WX_POLICY_EMULATED) {
        errno = 0;
        long r = syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0,
                         &(uint32_t){SECCOMP_RET_ERRNO});
        printf("  (seccomp(2) here: %ld, %s)\n", r, strerror(errno));
        wxtest_skip_all("test_policy", "the kernel-enforced W^X policy "
                        "cannot be entered: the emulator does not pass "
                        "seccomp to the kernel (checked above: the filter "
                        "program for this CPU)");
    }
    wxtest_enter_wx_policy();
    printf("  seccomp W^X filter installed\n");

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
