/* gdb itself reads what wxjit registers through its JIT interface:
 * `gdb -batch` runs this program (as `test_gdb target`, under the W^X
 * policy), which calls C -> JIT -> JIT -> C with the two JIT functions
 * described in one batch; stopped in the C callee, `bt` must show both JIT
 * frames by name and unwind on to main, `info symbol` and `x/i` must know
 * them; once they are freed, gdb must no longer name their addresses.
 * Skipped, with the reason, where gdb is missing or cannot run a program
 * (no ptrace). Once per backend. */
#include <sys/wait.h>

#include "emit_frames.h"
#include "wxtest.h"

/* ---- the target ------------------------------------------------------------- */
void *jit_outer_addr, *jit_inner_addr; /* read by gdb */

/* gdb stops here, under two JIT frames. */
__attribute__((noinline)) int c_callee(void)
{
    __asm__ __volatile__("" ::: "memory");
    return 5;
}

/* gdb stops here once the JIT functions are freed. */
__attribute__((noinline)) void after_free(void)
{
    __asm__ __volatile__("" ::: "memory");
}

__attribute__((noinline)) int call_jit(void *fn)
{
    int r = as_fn(fn)();
    __asm__ __volatile__("" ::: "memory"); /* not a tail call */
    return r;
}

static int target(void)
{
    wxtest_enter_wx_policy();
    CHECK_OK(wxjit_fault_handler_install());
    wxjit_heap_options o = WXJIT_HEAP_OPTIONS_INIT;
    wxjit_heap *h;
    o.flags = WXJIT_HEAP_GDB;
    CHECK_OK(wxjit_heap_create(&o, &h));
    uint8_t buf[64];
    size_t n = emit_frame_call(buf, (uintptr_t)c_callee, 1);
    CHECK_OK(wxjit_install(h, buf, n, 0, &jit_inner_addr));
    n = emit_frame_call(buf, (uintptr_t)jit_inner_addr, 10);
    CHECK_OK(wxjit_install(h, buf, n, 0, &jit_outer_addr));
    void *exec[2] = {jit_outer_addr, jit_inner_addr};
    wxjit_code_info info[2] = {WXJIT_CODE_INFO_INIT, WXJIT_CODE_INFO_INIT};
    info[0].name = "wxjit_gdb_outer";
    info[1].name = "wxjit_gdb_inner";
    info[0].flags = info[1].flags = WXJIT_DESCRIBE_FRAME_POINTER;
    CHECK_OK(wxjit_describe_batch(h, exec, info, 2));
    CHECK_EQ(call_jit(jit_outer_addr), 16);
    CHECK_OK(wxjit_free(h, jit_outer_addr));
    CHECK_OK(wxjit_free(h, jit_inner_addr));
    after_free();
    CHECK_OK(wxjit_heap_destroy(h));
    return 0;
}

/* ---- the driver ------------------------------------------------------------- */
static char out_path[] = "/tmp/wxjit-gdb-XXXXXX";

static char *run_gdb(const char *self, const char *commands)
{
    static char text[1 << 16];
    char cmd[4096];
    snprintf(cmd, sizeof(cmd),
             "gdb -batch -nx -q -ex 'set pagination off' "
             "-ex 'set confirm off' %s --args %s target > %s 2>&1",
             commands, self, out_path);
    int status = system(cmd);
    FILE *f = fopen(out_path, "r");
    CHECK(f, "%s: %s", out_path, strerror(errno));
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = 0;
    fclose(f);
    CHECK(WIFEXITED(status), "gdb died: %#x\n%s", status, text);
    return text;
}

/* The text between two echoed markers. */
static char *section(char *text, const char *from, const char *to)
{
    char *a = strstr(text, from), *b = a ? strstr(a, to) : NULL;
    CHECK(a && b, "gdb output lacks %s ... %s:\n%s", from, to, text);
    *b = 0;
    return a + strlen(from);
}

/* Where gdb cannot run a program here, the reason; NULL if it can. */
static const char *gdb_unusable(const char *self)
{
    static char why[600];
    char *text = run_gdb(self, "-ex 'break after_free' -ex run "
                               "-ex 'echo GDB-RAN\\n'");
    if (strstr(text, "GDB-RAN") && strstr(text, "Breakpoint 1, "))
        return NULL;
    snprintf(why, sizeof(why), "gdb cannot run the program: %.500s", text);
    return why;
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "target"))
        return target();
    if (wxtest_valgrind() || wxtest_emulator() || wxtest_sanitizer_signals())
        wxtest_skip_all("test_gdb", "gdb runs the program natively only");
    int fd = mkstemp(out_path);
    CHECK(fd >= 0, "mkstemp: %s", strerror(errno));
    close(fd);
    if (system("gdb --version > /dev/null 2>&1") != 0) {
        unlink(out_path);
        printf("test_gdb: SKIPPED: gdb is not installed (Debian: apt-get "
               "install gdb)\n");
        return WXTEST_SKIPPED;
    }
    const char *why = gdb_unusable(argv[0]);
    if (why) {
        unlink(out_path);
        printf("test_gdb: SKIPPED: %s\n", why);
        return WXTEST_SKIPPED;
    }
    wxtest_print_backend();
    char *text = run_gdb(argv[0],
                         "-ex 'break c_callee' -ex 'break after_free' -ex run "
                         "-ex 'echo BT-BEGIN\\n' -ex bt -ex 'echo BT-END\\n' "
                         "-ex 'info symbol jit_outer_addr' "
                         "-ex 'info symbol jit_inner_addr' "
                         "-ex 'x/i jit_inner_addr' -ex 'echo SYM-END\\n' "
                         "-ex continue -ex 'echo FREED-BEGIN\\n' "
                         "-ex 'info symbol jit_outer_addr' "
                         "-ex 'info symbol jit_inner_addr' "
                         "-ex 'echo FREED-END\\n' -ex continue");
    char *copy = strdup(text);
    char *bt = section(copy, "BT-BEGIN\n", "BT-END");
    char *inner = strstr(bt, " in wxjit_gdb_inner ");
    char *outer = inner ? strstr(inner, " in wxjit_gdb_outer ") : NULL;
    char *caller = outer ? strstr(outer, " in call_jit ") : NULL;
    char *top = caller ? strstr(caller, " main ") : NULL;
    CHECK(strstr(bt, "#0  c_callee") && inner && outer && caller && top &&
              !strstr(bt, "??") && !strstr(bt, "Backtrace stopped"),
          "bt does not show c_callee, wxjit_gdb_inner, wxjit_gdb_outer, "
          "call_jit, main in order:\n%s",
          bt);
    free(copy);
    copy = strdup(text);
    char *sym = section(copy, "BT-END\n", "SYM-END");
    CHECK(strstr(sym, "wxjit_gdb_outer in section .text") &&
              strstr(sym, "wxjit_gdb_inner in section .text") &&
              strstr(sym, "<wxjit_gdb_inner>:"),
          "info symbol / x/i do not name the JIT functions:\n%s", sym);
    free(copy);
    copy = strdup(text);
    char *freed = section(copy, "FREED-BEGIN\n", "FREED-END");
    CHECK(strstr(freed, "No symbol matches jit_outer_addr") &&
              strstr(freed, "No symbol matches jit_inner_addr"),
          "gdb still names freed JIT functions:\n%s", freed);
    free(copy);
    CHECK(strstr(text, "exited normally"), "the target failed:\n%s", text);
    unlink(out_path);
    printf("  bt: c_callee <- wxjit_gdb_inner <- wxjit_gdb_outer <- call_jit "
           "<- main; info symbol and x/i name both; after the free gdb names "
           "neither\n");
    printf("test_gdb: all passed\n");
    return 0;
}
