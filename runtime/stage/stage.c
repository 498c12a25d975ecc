/* cvbench-stage: the last steps of a container start without namespaces,
 * in C, so the runtime can start it with posix_spawn (vfork: no copy of the
 * large Python parent) instead of fork + Python.
 *
 * It does exactly what runtime/child.py does for such a plan, in the same
 * order: parent-death signal and orphan check, new session, the caller's
 * supplementary groups dropped, uid/gid, parent-death signal again (a
 * credential change resets it), cwd, umask, every signal back to its default
 * and none blocked, every fd above 2 close-on-exec, exec.  A failure is one
 * line "E<why>" on the status fd and exit 127, as the Python child reports.
 *
 * argv: STATUS_FD GO_FD PDEATHSIG(0|1) CWD UMASK(octal) GIDS(a,b,..|-) UID GID EXE ARG0 [ARG...]
 * The environment is the container's (posix_spawn's envp).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <dirent.h>
#include <fcntl.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

extern char **environ;
static int status_fd = -1;

static void fail(const char *what, const char *path)
{
    char msg[4200];
    int e = errno, n;
    if (path)
        n = snprintf(msg, sizeof msg, "E[Errno %d] %s: '%s'\n", e, strerror(e), path);
    else
        n = snprintf(msg, sizeof msg, "E%s: [Errno %d] %s\n", what, e, strerror(e));
    if (n > 0 && status_fd >= 0 && write(status_fd, msg, (size_t)n) < 0)
        _exit(127);
    _exit(127);
}

static long number(const char *s, int base)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, base);
    if (errno || *s == 0 || *end) {
        errno = EINVAL;
        fail("cvbench-stage: bad argument", NULL);
    }
    return v;
}

static void cloexec_from(int first)
{
    if (syscall(SYS_close_range, first, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
        return;
    DIR *d = opendir("/proc/self/fd");  /* before Linux 5.11: one by one */
    if (!d)
        fail("close_range", NULL);
    int self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] != '.' && fd >= first && fd != self)
            fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    closedir(d);
}

/* SIG_DFL for one signal, through the kernel: glibc's sigaction refuses its
   reserved real-time signals, which posix_spawn leaves ignored in its child
   (a forked Python child has them handled, so exec resets them). */
static void default_action(int sig)
{
#if defined(__x86_64__) || defined(__aarch64__)
    struct { void *handler; unsigned long flags; void *restorer; unsigned long mask; } ksa = {0};
    ksa.handler = SIG_DFL;
    syscall(SYS_rt_sigaction, sig, &ksa, NULL, sizeof ksa.mask);
#else
    signal(sig, SIG_DFL);
#endif
}

int main(int argc, char **argv)
{
    if (argc < 11) {
        errno = EINVAL;
        fail("cvbench-stage: usage: STATUS_FD GO_FD PDEATHSIG CWD UMASK GIDS UID GID EXE ARG0...", NULL);
    }
    status_fd = (int)number(argv[1], 10);
    int go_fd = (int)number(argv[2], 10);
    int pdeath = (int)number(argv[3], 10);
    const char *cwd = argv[4];
    mode_t mask = (mode_t)number(argv[5], 8);
    gid_t gids[256];
    size_t ngids = 0;
    if (strcmp(argv[6], "-") != 0) {
        for (char *s = argv[6], *tok; (tok = strsep(&s, ",")); ) {
            if (ngids == sizeof gids / sizeof gids[0]) {
                errno = E2BIG;
                fail("setgroups", NULL);
            }
            gids[ngids++] = (gid_t)number(tok, 10);
        }
    }
    uid_t uid = (uid_t)number(argv[7], 10);
    gid_t gid = (gid_t)number(argv[8], 10);
    const char *exe = argv[9];

    if (pdeath) {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
            fail("prctl", NULL);
        /* the parent may have died before that took effect: it holds the
           other end of the go pipe until we exec */
        struct pollfd p = {.fd = go_fd, .events = POLLIN};
        if (poll(&p, 1, 0) > 0 && (p.revents & POLLHUP))
            _exit(125);
    }
    if (setsid() < 0)
        fail("setsid", NULL);
    umask(022);
    /* always: the caller's supplementary groups must never reach the container */
    if (setgroups(ngids, gids) != 0)
        fail("setgroups", NULL);
    if (gid || uid) {
        if (setresgid(gid, gid, gid) != 0)
            fail("setresgid", NULL);
        if (setresuid(uid, uid, uid) != 0)
            fail("setresuid", NULL);
    }
    if (pdeath && prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
        fail("prctl", NULL);
    if (chdir(cwd) != 0)
        fail("chdir", cwd);
    umask(mask);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            default_action(sig);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    cloexec_from(3);  /* the status fd too: exec closes it, which the parent reads as success */
    execve(exe, argv + 10, environ);
    fail("execve", exe);
    return 127;
}
