/* cvbench-stage: a container start without user namespaces or handshakes, in
 * C, so the runtime can start it with posix_spawn (vfork: no copy of the
 * large Python parent) instead of fork + Python.
 *
 * It does exactly what runtime/child.py does for such a plan, in the same
 * order: parent-death signal and orphan check, v1 cgroup self-join, unshare,
 * new session, the first part of the init's program (program.c: keyring,
 * mounts, device nodes, pivot_root, sysctls, read-only and masked paths),
 * hostname, loopback up, its second part (rlimits, oom_score_adj),
 * no_new_privs, bounding set, seccomp
 * (before the id switch without no_new_privs, after it with), supplementary
 * groups dropped, uid/gid, capability sets, parent-death signal again (a
 * credential change resets it), cwd, umask, every signal back to its default
 * and none blocked, every fd above 2 close-on-exec, exec.  A failure is one
 * line "E<why>" on the status fd and exit 127, as the Python child reports.
 *
 * argv: STATUS_FD GO_FD PDEATHSIG(0|1) CWD UMASK(octal) GIDS(a,b,..|-) UID GID
 *       UNSHARE(hex) TASKS(newline-separated|-) HOSTNAME(=name|-) LOOPBACK(0|1)
 *       NNP(0|1) CAPS(bnd,eff,perm,inh,amb hex|-) LAST_CAP BPF_FD(-1: none)
 *       PROGRAM_FD(-1: none; runtime/stage/program.py wrote it)
 *       EXE ARG0 [ARG...]
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
#include <net/if.h>
#include <sched.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include "stage.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

extern char **environ;
static int status_fd = -1;

void fail(const char *what, const char *path)
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

static void full_read(int fd, void *buf, size_t n)
{
    for (size_t got = 0; got < n; ) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            errno = r < 0 ? errno : EPIPE;
            fail("seccomp: the filter never arrived", NULL);
        }
        got += (size_t)r;
    }
}

static void load_seccomp(struct sock_fprog *prog)
{
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, prog) != 0)
        fail("seccomp", NULL);
}

static void loopback_up(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq req;
    if (s < 0)
        fail("socket", NULL);
    memset(&req, 0, sizeof req);
    strcpy(req.ifr_name, "lo");
    if (ioctl(s, SIOCGIFFLAGS, &req) != 0)
        fail("ioctl(SIOCGIFFLAGS, lo)", NULL);
    req.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &req) != 0)
        fail("ioctl(SIOCSIFFLAGS, lo)", NULL);
    close(s);
}

static void join_cgroups(char *tasks)  /* "0" into each v1 tasks file: ourselves */
{
    for (char *s = tasks, *f; (f = strsep(&s, "\n")); ) {
        int fd = open(f, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            fail("open", f);
        if (write(fd, "0", 1) != 1)
            fail("write", f);
        close(fd);
    }
}

/* SIG_DFL for one signal, through the kernel: glibc's sigaction refuses its
   reserved real-time signals, which posix_spawn leaves ignored in its child
   (a forked Python child has them handled, so exec resets them). */
static void default_action(int sig)
{
#if defined(__x86_64__) || defined(__aarch64__)
    struct { void *handler; unsigned long flags; void *restorer; unsigned long mask; } ksa = {0};
    ksa.handler = SIG_DFL;
    if (syscall(SYS_rt_sigaction, sig, &ksa, NULL, sizeof ksa.mask) != 0)
        fail("rt_sigaction", NULL);
#else
    signal(sig, SIG_DFL);
#endif
}

int main(int argc, char **argv)
{
    if (argc < 20) {
        errno = EINVAL;
        fail("cvbench-stage: usage: see stage.c", NULL);
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
    unsigned long unshare_flags = (unsigned long)number(argv[9], 16);
    char *tasks = strcmp(argv[10], "-") ? argv[10] : NULL;
    const char *hostname = argv[11][0] == '=' ? argv[11] + 1 : NULL;
    int lo = (int)number(argv[12], 10), nnp = (int)number(argv[13], 10);
    int caps = strcmp(argv[14], "-") != 0;
    unsigned long long cap[5] = {0};  /* bounding, effective, permitted, inheritable, ambient */
    if (caps && sscanf(argv[14], "%llx,%llx,%llx,%llx,%llx", &cap[0], &cap[1], &cap[2], &cap[3],
                       &cap[4]) != 5) {
        errno = EINVAL;
        fail("cvbench-stage: bad capability sets", NULL);
    }
    int last_cap = (int)number(argv[15], 10), bpf_fd = (int)number(argv[16], 10);
    int program_fd = (int)number(argv[17], 10);
    const char *exe = argv[18];
    struct program init = {0};
    if (program_fd >= 0)
        program_read(&init, program_fd);

    if (pdeath) {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
            fail("prctl", NULL);
        /* the parent may have died before that took effect: it holds the
           other end of the go pipe until we exec */
        struct pollfd p = {.fd = go_fd, .events = POLLIN};
        if (poll(&p, 1, 0) > 0 && (p.revents & POLLHUP))
            _exit(125);
    }
    if (tasks)  /* first, while still host root */
        join_cgroups(tasks);
    if (unshare_flags && unshare((int)unshare_flags) != 0)
        fail("unshare", NULL);
    if (setsid() < 0)
        fail("setsid", NULL);
    umask(022);  /* for mountpoints made in the rootfs; the process's own is set below */
    if (program_fd >= 0)
        program_run(&init);   /* keyring, chroot, mounts, pivot_root, sysctls, paths */
    if (hostname && sethostname(hostname, strlen(hostname)) != 0)
        fail("sethostname", NULL);
    if (lo)
        loopback_up();
    if (program_fd >= 0)
        program_run(&init);   /* rlimits, oom_score_adj */
    if (nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        fail("prctl(PR_SET_NO_NEW_PRIVS)", NULL);
    if (caps) {  /* runc's order: bounding set while CAP_SETPCAP is still effective */
        for (int c = 0; c <= last_cap; c++)
            if (!(cap[0] & (1ULL << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0)
                fail("prctl(PR_CAPBSET_DROP)", NULL);
        if (uid != 0 && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0)
            fail("prctl(PR_SET_KEEPCAPS)", NULL);
    }
    struct sock_fprog prog = {0};
    if (bpf_fd >= 0) {
        uint32_t n;
        full_read(bpf_fd, &n, sizeof n);
        if (n == 0 || n % 8 || n / 8 > 0xffff) {
            errno = EINVAL;
            fail("seccomp: compiling the filter failed", NULL);
        }
        prog.len = (unsigned short)(n / 8);
        prog.filter = malloc(n);
        if (!prog.filter)
            fail("malloc", NULL);
        full_read(bpf_fd, prog.filter, n);
    }
    /* Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, which a
       switch to a non-zero uid takes away: then load it first (runc's order). */
    int early = prog.filter && !nnp;
    if (early)
        load_seccomp(&prog);
    /* always: the caller's supplementary groups must never reach the container */
    if (setgroups(ngids, gids) != 0)
        fail("setgroups", NULL);
    if (gid || uid) {
        if (setresgid(gid, gid, gid) != 0)
            fail("setresgid", NULL);
        if (setresuid(uid, uid, uid) != 0)
            fail("setresuid", NULL);
    }
    if (prog.filter && !early)
        load_seccomp(&prog);
    if (caps) {
        struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct data[2];
        for (int i = 0; i < 2; i++) {
            data[i].effective = (uint32_t)(cap[1] >> (32 * i));
            data[i].permitted = (uint32_t)(cap[2] >> (32 * i));
            data[i].inheritable = (uint32_t)(cap[3] >> (32 * i));
        }
        if (syscall(SYS_capset, &hdr, data) != 0)
            fail("capset", NULL);
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0)
            fail("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", NULL);
        for (int c = 0; c <= last_cap; c++)
            if (cap[4] & (1ULL << c))
                prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0);  /* refused unless
                    permitted and inheritable: runc only warns, as the Python child */
    }
    if (pdeath && prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
        fail("prctl", NULL);
    if (chdir(cwd) != 0)
        fail("chdir", cwd);
    umask(mask);
    for (int sig = 1; sig <= 64; sig++)  /* as runtime/syscalls.reset_signals */
        if (sig != SIGKILL && sig != SIGSTOP)
            default_action(sig);
    unsigned long none = 0;  /* raw: glibc's sigprocmask leaves its reserved 32 and 33 alone */
    if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, sizeof none) != 0)
        fail("rt_sigprocmask", NULL);
    cloexec_from(3);  /* the status fd too: exec closes it, which the parent reads as success */
    execve(exe, argv + 19, environ);
    fail("execve", exe);
    return 127;
}
