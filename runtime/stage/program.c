/* cvbench-stage: replays the init's kernel work that runtime/stage/program.py
 * recorded (keyring, mounts under the new root, device nodes, pivot_root,
 * sysctls, read-only and masked paths, rlimits, oom_score_adj), step for
 * step as runtime/rootfs.py and runtime/child.py do it in the Python child.
 *
 * Paths inside the new root are resolved by the kernel as if the root were
 * "/" (openat2 RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), each operation on an
 * O_PATH fd through /proc/self/fd/N, so a symlink in the rootfs can never
 * send a mount, a mkdir or a mknod to the host (rootfs.InRoot does the same).
 * The record's format is described in program.py.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <linux/openat2.h>

#include "stage.h"

#ifndef MOUNT_ATTR_RDONLY
struct mount_attr { uint64_t attr_set, attr_clr, propagation, userns_fd; };
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#define NULL_LEN 0xffffffffU

void program_read(struct program *p, int fd)
{
    size_t cap = 8192;
    p->buf = malloc(cap);
    p->len = p->pos = 0;
    p->root_fd = -1;
    for (;;) {
        if (!p->buf)
            fail("malloc", NULL);
        ssize_t r = pread(fd, p->buf + p->len, cap - p->len, (off_t)p->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            fail("read the init's program", NULL);
        if (r == 0)
            break;
        p->len += (size_t)r;
        if (p->len == cap)
            p->buf = realloc(p->buf, cap *= 2);
    }
    close(fd);
}

static void truncated(void)
{
    errno = EINVAL;
    fail("cvbench-stage: the init's program is truncated", NULL);
}

static uint64_t num(struct program *p)
{
    uint64_t v = 0;
    if (p->len - p->pos < 8)
        truncated();
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p->buf[p->pos + (size_t)i];
    p->pos += 8;
    return v;
}

/* a NUL-terminated copy (NULL for the null string); lives until exec */
static char *str(struct program *p)
{
    uint32_t n = 0;
    if (p->len - p->pos < 4)
        truncated();
    for (int i = 3; i >= 0; i--)
        n = (n << 8) | p->buf[p->pos + (size_t)i];
    p->pos += 4;
    if (n == NULL_LEN)
        return NULL;
    if (p->len - p->pos < n)
        truncated();
    char *s = malloc((size_t)n + 1);
    if (!s)
        fail("malloc", NULL);
    memcpy(s, p->buf + p->pos, n);
    s[n] = 0;
    p->pos += n;
    return s;
}

/* DEST (already normalised by program.py, relative) inside the root */
static int in_root(struct program *p, const char *rel)
{
    struct open_how how = {.flags = O_PATH | O_CLOEXEC,
                           .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    if (p->root_fd < 0) {
        errno = EBADF;
        fail("cvbench-stage: the program uses the root before entering it", NULL);
    }
    return (int)syscall(SYS_openat2, p->root_fd, *rel ? rel : ".", &how, sizeof how);
}

static int in_root_or_fail(struct program *p, const char *rel)
{
    int fd = in_root(p, rel);
    if (fd < 0)
        fail("openat2", rel);
    return fd;
}

static void fd_path(char *buf, size_t n, int fd)
{
    snprintf(buf, n, "/proc/self/fd/%d", fd);
}

/* rootfs._locked_flags: what a bind remount must keep (locked in a userns) */
static unsigned long locked_flags(int fd, const char *path)
{
    struct statvfs st;
    if ((fd >= 0 ? fstatvfs(fd, &st) : statvfs(path, &st)) != 0)
        fail("statvfs", path);
    unsigned long f = st.f_flag, ms = 0;
    if (f & ST_RDONLY) ms |= MS_RDONLY;
    if (f & ST_NOSUID) ms |= MS_NOSUID;
    if (f & ST_NODEV) ms |= MS_NODEV;
    if (f & ST_NOEXEC) ms |= MS_NOEXEC;
    if (f & ST_NOATIME) ms |= MS_NOATIME;
    if (f & ST_NODIRATIME) ms |= MS_NODIRATIME;
    if (f & ST_RELATIME) ms |= MS_RELATIME;
    return ms;
}

/* rootfs.InRoot.ensure: create REL and missing parents inside the root, 0755 */
static void ensure(struct program *p, char *rel, int directory)
{
    size_t n = strlen(rel);
    int whole = in_root(p, rel);  /* most exist: one lookup, not one per component */
    if (whole >= 0) {
        close(whole);
        return;
    }
    for (size_t end = 0; end < n; ) {
        size_t next = end;
        while (next < n && rel[next] != '/')
            next++;
        char save = rel[next];
        rel[next] = 0;                       /* rel is now the first parts */
        int fd = in_root(p, rel);
        if (fd >= 0) {
            close(fd);
        } else if (errno != ENOENT) {
            fail("openat2", rel);
        } else {
            char *name = rel + end;
            if (end) rel[end - 1] = 0;       /* the parent */
            int parent = in_root_or_fail(p, end ? rel : "");
            int r;
            if (directory || next < n) {
                r = mkdirat(parent, name, 0755);
            } else {
                r = openat(parent, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0755);
                if (r >= 0)
                    close(r), r = 0;
            }
            if (r != 0 && errno != EEXIST)
                fail(directory || next < n ? "mkdir" : "open", name);
            close(parent);
            if (end) rel[end - 1] = '/';
        }
        rel[next] = save;
        end = next + 1;
    }
}

static void mount_in_root(struct program *p, const char *src, const char *rel, const char *type,
                          unsigned long flags, const char *data)
{
    char at[64];
    int fd = in_root_or_fail(p, rel);
    fd_path(at, sizeof at, fd);
    if (mount(src, at, type, flags, data) != 0)
        fail("mount", rel);
    close(fd);
}

static void remount_in_root(struct program *p, const char *rel, unsigned long flags)
{
    char at[64];
    int fd = in_root_or_fail(p, rel);
    fd_path(at, sizeof at, fd);
    if (mount(NULL, at, NULL, MS_BIND | MS_REMOUNT | flags | locked_flags(fd, rel), NULL) != 0)
        fail("mount", rel);
    close(fd);
}

static void setattr_in_root(struct program *p, const char *rel, uint64_t set, uint64_t clr)
{
    char at[64];
    struct mount_attr attr = {.attr_set = set, .attr_clr = clr};
    int fd = in_root_or_fail(p, rel);
    fd_path(at, sizeof at, fd);
    if (syscall(SYS_mount_setattr, AT_FDCWD, at, AT_RECURSIVE, &attr, sizeof attr) != 0)
        fail("mount_setattr", rel);
    close(fd);
}

/* rootfs.InRoot.node: kept if present unless replace; mode exactly as given */
static void node(struct program *p, const char *dir, const char *name, mode_t mode, unsigned major,
                 unsigned minor, int replace, int chown_it, uid_t uid, gid_t gid)
{
    struct stat st;
    int dfd = in_root_or_fail(p, dir);
    mode_t old = umask(0);
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (!replace)
            goto done;
        if (unlinkat(dfd, name, 0) != 0)
            fail("unlink", name);
    } else if (errno != ENOENT) {
        fail("stat", name);
    }
    if (mknodat(dfd, name, mode, makedev(major, minor)) != 0)
        fail("mknod", name);
    if (chown_it && fchownat(dfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) != 0)
        fail("chown", name);
done:
    umask(old);
    close(dfd);
}

/* rootfs.switch_root: pivot_root(".", ".") and detach the old root; chroot
   where the kernel refuses pivot_root (a rootfs on initramfs: EINVAL) */
static void switch_root(const char *root)
{
    if (chdir(root) != 0)
        fail("chdir", root);
    if (syscall(SYS_pivot_root, ".", ".") != 0 || umount2(".", MNT_DETACH) != 0) {
        if (errno != EINVAL)
            fail("pivot_root", root);
        if (mount(root, "/", NULL, MS_MOVE, NULL) != 0)
            fail("mount", root);
        if (chroot(".") != 0)
            fail("chroot", root);
    }
    if (chdir("/") != 0)
        fail("chdir", "/");
}

/* rootfs._remount_ro: read-only, keeping the flags a bind remount must keep;
   returns -1 with errno set instead of failing */
static int try_remount_ro(const char *path)
{
    struct statvfs st;
    if (statvfs(path, &st) != 0)
        return -1;
    (void)st;
    return mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | locked_flags(-1, path), NULL);
}

static void remount_ro(const char *path)
{
    if (try_remount_ro(path) != 0)
        fail("mount", path);
}

static void readonly(const char *path)   /* rootfs.readonly: a missing path is skipped */
{
    if ((mount(path, path, NULL, MS_BIND | MS_REC, NULL) != 0 || try_remount_ro(path) != 0)
        && errno != ENOENT)
        fail("mount", path);
}

static void masked(const char *path)     /* rootfs.mask: a missing path is skipped */
{
    struct stat st;
    int dir = stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    int r = dir ? mount("tmpfs", path, "tmpfs", MS_RDONLY, NULL)
                : mount("/dev/null", path, NULL, MS_BIND, NULL);
    if (r != 0 && errno != ENOENT)
        fail("mount", path);
}

static void write_file(const char *path, const char *value)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    size_t n = strlen(value);
    if (fd < 0)
        fail("open", path);
    if (write(fd, value, n) != (ssize_t)n)
        fail("write", path);
    if (close(fd) != 0)
        fail("close", path);
}

void program_run(struct program *p)
{
    while (p->pos < p->len) {
        unsigned char op = p->buf[p->pos++];
        switch (op) {
        case '|':
            return;
        case 'K': {  /* a new session keyring, never the caller's */
            char *name = str(p);
            uint64_t perm = num(p);
            long key = syscall(SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, name);
            if (key < 0)
                fail("keyctl", name);
            if (syscall(SYS_keyctl, 5 /* KEYCTL_SETPERM */, key, (uint32_t)perm) != 0)
                fail("keyctl(SETPERM)", name);
            break;
        }
        case 'C': {
            char *root = str(p);
            if (chroot(root) != 0)
                fail("chroot", root);
            break;
        }
        case 'M': {
            char *src = str(p), *target = str(p), *type = str(p);
            uint64_t flags = num(p);
            char *data = str(p);
            if (mount(src, target, type, (unsigned long)flags, data) != 0)
                fail("mount", target);
            break;
        }
        case 'O': {
            char *root = str(p);
            p->root_fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
            if (p->root_fd < 0)
                fail("open", root);
            break;
        }
        case 'E': {
            char *rel = str(p);
            ensure(p, rel, (int)num(p));
            break;
        }
        case 'm': {
            char *src = str(p), *rel = str(p), *type = str(p);
            uint64_t flags = num(p);
            mount_in_root(p, src, rel, type, (unsigned long)flags, str(p));
            break;
        }
        case 'r': {
            char *rel = str(p);
            remount_in_root(p, rel, (unsigned long)num(p));
            break;
        }
        case 'a': {
            char *rel = str(p);
            uint64_t set = num(p), clr = num(p);
            setattr_in_root(p, rel, set, clr);
            break;
        }
        case 'l': {
            char *dir = str(p), *target = str(p), *name = str(p);
            int dfd = in_root_or_fail(p, dir);
            if (symlinkat(target, dfd, name) != 0 && errno != EEXIST)
                fail("symlink", name);
            close(dfd);
            break;
        }
        case 'h': {
            char *rel = str(p), at[64];
            uint64_t mode = num(p);
            int fd = in_root_or_fail(p, rel);
            fd_path(at, sizeof at, fd);
            if (chmod(at, (mode_t)mode) != 0)   /* fd is O_PATH: fchmod refuses it */
                fail("chmod", rel);
            close(fd);
            break;
        }
        case 'd': {
            char *dir = str(p), *name = str(p);
            uint64_t v[7];
            for (int i = 0; i < 7; i++)
                v[i] = num(p);
            node(p, dir, name, (mode_t)v[0], (unsigned)v[1], (unsigned)v[2], (int)v[3], (int)v[4],
                 (uid_t)v[5], (gid_t)v[6]);
            break;
        }
        case 'c':
            close(p->root_fd);
            p->root_fd = -1;
            break;
        case 'P':
            switch_root(str(p));
            break;
        case 'W': {
            char *path = str(p);
            write_file(path, str(p));
            break;
        }
        case 'R':
            readonly(str(p));
            break;
        case 'X':
            masked(str(p));
            break;
        case 'Y':
            remount_ro("/");
            break;
        case 'L': {
            uint64_t res = num(p);
            struct rlimit rl;
            rl.rlim_cur = (rlim_t)num(p);
            rl.rlim_max = (rlim_t)num(p);
            if (setrlimit((int)res, &rl) != 0)
                fail("setrlimit", NULL);
            break;
        }
        default:
            errno = EINVAL;
            fail("cvbench-stage: an unknown op in the init's program", NULL);
        }
    }
}
