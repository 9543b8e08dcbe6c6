/* The init (pid 1) of the full-system run (tools/check-arm64-system.sh):
 * mounts what the tests need, runs every test of the manifest
 * /wxsys/manifest once, a few at a time, prints each output line prefixed
 * with its test's name and one result line per test on the console, and
 * powers the machine off. Built statically for the guest; the host reads
 * the console.
 *
 * Manifest (written on the host from ctest's own list, so that the guest
 * runs exactly ctest's command lines): "jobs N" once, then per test the
 * lines "test NAME", "timeout SECONDS" (required), "serial 0|1", "cwd DIR", any
 * number of "env K=V" and "arg ARG" (argv in order), and "run".
 *
 * Console lines, all starting "wxsys: ":
 *   wxsys: kernel RELEASE MACHINE cpus N uptime SECONDS
 *   wxsys: out NAME SECONDS| LINE        (the test's stdout/stderr, and
 *                                         when since it started)
 *   wxsys: result NAME passed|skipped|failed|timeout DETAIL SECONDS
 *   wxsys: done N tests in SECONDS s
 *   wxsys: error WHAT                          (init itself failed) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MANIFEST "/wxsys/manifest"
#define MAX_TESTS 256
#define MAX_ARGS 32
#define MAX_ENV 16
#define MAX_JOBS 8
#define LINE_MAX_LEN 4096
/* tests/wxtest_core.h's WXTEST_SKIPPED: ctest's SKIP_RETURN_CODE. */
#define EXIT_SKIPPED 77

struct test {
    char *name, *cwd;
    char *argv[MAX_ARGS + 1];
    char *env[MAX_ENV + 1];
    int argc, envc;
    double timeout;
    bool serial;
};

struct job {
    struct test *t;
    pid_t pid;
    int fd; /* read end of the test's stdout+stderr; -1 once at EOF */
    double start;
    bool timed_out, exited;
    int status;
    char line[LINE_MAX_LEN];
    size_t len;
};

static struct test tests[MAX_TESTS];
static int ntests, jobs_max = 1;
static struct job jobs[MAX_JOBS];

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Never returns: pid 1 exiting would panic the kernel. */
static void power_off(void)
{
    fflush(stdout);
    sync();
    reboot(RB_POWER_OFF);
    for (;;)
        pause();
}

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("wxsys: error ");
    vprintf(fmt, ap);
    printf(" (%s)\n", strerror(errno));
    va_end(ap);
    power_off();
}

static void mount_fs(const char *type, const char *dir, unsigned long flags)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        fail("mkdir %s", dir);
    if (mount(type, dir, type, flags, NULL) != 0)
        fail("mount %s on %s", type, dir);
}

/* The kernel gives init the console only if the archive has /dev/console;
 * devtmpfs has it, so the archive needs no device node (and packing it
 * needs no root). */
static void mount_all(void)
{
    mount_fs("devtmpfs", "/dev", MS_NOSUID);
    int fd = open("/dev/console", O_RDWR | O_NOCTTY);
    int null = open("/dev/null", O_RDONLY);
    if (fd < 0 || null < 0)
        power_off(); /* nowhere to say so */
    dup2(null, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    close(null);
    close(fd);
    setvbuf(stdout, NULL, _IOLBF, 0);
    mount_fs("proc", "/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC);
    mount_fs("sysfs", "/sys", MS_NOSUID | MS_NODEV | MS_NOEXEC);
    mount_fs("devpts", "/dev/pts", MS_NOSUID | MS_NOEXEC);
    /* dualmap's shm_open and O_TMPFILE fallbacks, test_hardened's
     * noexec remounts. */
    mount_fs("tmpfs", "/dev/shm", MS_NOSUID | MS_NODEV);
    /* The programs lie at their paths on the host: where those are under
     * /tmp (a CI clone there), a tmpfs on /tmp would hide them. The
     * archive's own root is a writable tmpfs already: it serves. */
    struct stat st;
    if (stat("/tmp", &st) == 0) {
        if (chmod("/tmp", 01777) != 0)
            fail("chmod /tmp");
    } else {
        mount_fs("tmpfs", "/tmp", MS_NOSUID | MS_NODEV);
    }
}

static char *value(char *line, const char *key)
{
    size_t n = strlen(key);
    return strncmp(line, key, n) == 0 && line[n] == ' ' ? line + n + 1 : NULL;
}

static void read_manifest(void)
{
    FILE *f = fopen(MANIFEST, "r");
    if (!f)
        fail("open %s", MANIFEST);
    char buf[LINE_MAX_LEN], *v;
    struct test *t = &tests[0];
    while (fgets(buf, sizeof(buf), f)) {
        buf[strcspn(buf, "\n")] = 0;
        char *line = strdup(buf);
        if ((v = value(line, "jobs")))
            jobs_max = atoi(v);
        else if ((v = value(line, "test")))
            t->name = v;
        else if ((v = value(line, "timeout")))
            t->timeout = atof(v);
        else if ((v = value(line, "serial")))
            t->serial = atoi(v) != 0;
        else if ((v = value(line, "cwd")))
            t->cwd = v;
        else if ((v = value(line, "env")) && t->envc < MAX_ENV)
            t->env[t->envc++] = v;
        else if ((v = value(line, "arg")) && t->argc < MAX_ARGS)
            t->argv[t->argc++] = v;
        else if (!strcmp(line, "run") && t->name && t->argc > 0 &&
                 t->timeout > 0 && ntests < MAX_TESTS - 1)
            t = &tests[++ntests];
        else {
            errno = EINVAL;
            fail("%s: bad or too many lines at \"%s\"", MANIFEST, line);
        }
    }
    fclose(f);
    if (jobs_max < 1 || jobs_max > MAX_JOBS) {
        errno = EINVAL;
        fail("%s: jobs %d", MANIFEST, jobs_max);
    }
}

/* A test's stdout and stderr go to a pseudo-terminal rather than a pipe:
 * stdio then flushes each line as it is written (on a pipe only at exit),
 * so a test killed at its timeout still shows how far it got. Raw mode:
 * its lines reach the console as written (no \r added). */
static void open_pty(int *master, int *slave)
{
    struct termios raw;
    *master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (*master < 0 || grantpt(*master) != 0 || unlockpt(*master) != 0)
        fail("pseudo-terminal");
    *slave = open(ptsname(*master), O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (*slave < 0 || tcgetattr(*slave, &raw) != 0)
        fail("open %s", ptsname(*master));
    cfmakeraw(&raw);
    tcsetattr(*slave, TCSANOW, &raw);
}

static void start(struct job *j, struct test *t)
{
    int p[2];
    open_pty(&p[0], &p[1]);
    memset(j, 0, sizeof(*j));
    j->t = t;
    j->start = now();
    j->pid = fork();
    if (j->pid < 0)
        fail("fork");
    if (j->pid == 0) {
        /* Its own session and process group, so that a timeout kills
         * its children too; the terminal stays nobody's controlling one
         * (O_NOCTTY), so no job control signal reaches the test. */
        setsid();
        dup2(p[1], 1);
        dup2(p[1], 2);
        if (t->cwd && chdir(t->cwd) != 0)
            perror(t->cwd);
        clearenv();
        setenv("PATH", "/bin", 1);
        setenv("HOME", "/", 1);
        for (int i = 0; i < t->envc; i++)
            putenv(t->env[i]);
        execv(t->argv[0], t->argv);
        perror(t->argv[0]);
        _exit(127);
    }
    close(p[1]);
    j->fd = p[0];
    fcntl(j->fd, F_SETFL, O_NONBLOCK);
}

static void put_line(struct job *j)
{
    printf("wxsys: out %s %.1f| %.*s\n", j->t->name, now() - j->start,
           (int)j->len, j->line);
    j->len = 0;
}

static void drain(struct job *j)
{
    char buf[4096];
    ssize_t n;
    while ((n = read(j->fd, buf, sizeof(buf))) > 0)
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n' || j->len == sizeof(j->line))
                put_line(j);
            if (buf[i] != '\n')
                j->line[j->len++] = buf[i];
        }
    /* EIO: every holder of the terminal's other end has closed it. */
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        if (j->len)
            put_line(j);
        close(j->fd);
        j->fd = -1;
    }
}

static void finish(struct job *j)
{
    const char *verdict = "failed";
    char detail[64];
    int st = j->status;
    /* Anything the test left behind goes with it. */
    kill(-j->pid, SIGKILL);
    if (j->timed_out) {
        verdict = "timeout";
        snprintf(detail, sizeof(detail), "after-%.0fs", j->t->timeout);
    } else if (WIFEXITED(st)) {
        if (WEXITSTATUS(st) == 0)
            verdict = "passed";
        else if (WEXITSTATUS(st) == EXIT_SKIPPED)
            verdict = "skipped";
        snprintf(detail, sizeof(detail), "exit-%d", WEXITSTATUS(st));
    } else {
        snprintf(detail, sizeof(detail), "signal-%d-%s", WTERMSIG(st),
                 sigabbrev_np(WTERMSIG(st)));
    }
    printf("wxsys: result %s %s %s %.1f\n", j->t->name, verdict, detail,
           now() - j->start);
    j->t = NULL;
}

/* Waits for output, exits and deadlines of the running jobs; reaps
 * orphans of earlier tests too (pid 1 inherits them). */
static void step(void)
{
    struct pollfd pfd[MAX_JOBS];
    int n = 0;
    for (int i = 0; i < jobs_max; i++)
        if (jobs[i].t && jobs[i].fd >= 0)
            pfd[n++] = (struct pollfd){.fd = jobs[i].fd, .events = POLLIN};
    /* Exits are polled, every 50 ms at worst: a SIGCHLD would interrupt
     * nothing that poll does not already bound. */
    poll(pfd, (nfds_t)n, 50);
    for (int i = 0; i < jobs_max; i++)
        if (jobs[i].t && jobs[i].fd >= 0)
            drain(&jobs[i]);
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
        for (int i = 0; i < jobs_max; i++)
            if (jobs[i].t && jobs[i].pid == pid) {
                jobs[i].exited = true;
                jobs[i].status = st;
            }
    for (int i = 0; i < jobs_max; i++) {
        struct job *j = &jobs[i];
        if (!j->t)
            continue;
        if (!j->exited && now() - j->start > j->t->timeout) {
            j->timed_out = true;
            kill(-j->pid, SIGKILL);
        }
        /* A child the test left running may hold the pipe open: the
         * test's own exit ends it. */
        if (j->exited) {
            if (j->fd >= 0) {
                drain(j);
                if (j->fd >= 0) {
                    if (j->len)
                        put_line(j);
                    close(j->fd);
                    j->fd = -1;
                }
            }
            finish(j);
        }
    }
}

static int running(void)
{
    int n = 0;
    for (int i = 0; i < jobs_max; i++)
        n += jobs[i].t != NULL;
    return n;
}

static void run_all(void)
{
    int next = 0;
    while (next < ntests || running()) {
        struct test *t = next < ntests ? &tests[next] : NULL;
        /* A serial test (ctest's RUN_SERIAL) runs alone, as under ctest. */
        bool may = t && running() < jobs_max &&
                   !(t->serial && running() > 0);
        for (int i = 0; i < jobs_max && may; i++)
            if (jobs[i].t && jobs[i].t->serial)
                may = false;
        if (may) {
            for (int i = 0; i < jobs_max; i++)
                if (!jobs[i].t) {
                    start(&jobs[i], t);
                    break;
                }
            next++;
            continue;
        }
        step();
    }
}

int main(void)
{
    mount_all();
    struct utsname u;
    uname(&u);
    double up = 0;
    FILE *f = fopen("/proc/uptime", "r");
    if (f) {
        if (fscanf(f, "%lf", &up) != 1)
            up = 0;
        fclose(f);
    }
    printf("wxsys: kernel %s %s cpus %ld uptime %.2f\n", u.release,
           u.machine, sysconf(_SC_NPROCESSORS_ONLN), up);
    read_manifest();
    double t0 = now();
    run_all();
    printf("wxsys: done %d tests in %.1f s\n", ntests, now() - t0);
    power_off();
}
