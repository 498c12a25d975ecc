"""The root filesystem change: the bundle's mounts, a minimal /dev, /proc,
pivot_root (chroot where pivot_root is impossible), masked and read-only paths.

Runs in the child, inside its own mount namespace, in runc's order: mounts
are made under the new root while the host's tree (device nodes, /sys) is
still reachable; /proc is mounted before the old root is detached (inside a
user namespace the kernel refuses it after).
"""
from __future__ import annotations

import errno
import os
import posixpath
import stat

from . import syscalls as sc

_FLAGS = {  # option -> (set, clear)
    "ro": (sc.MS_RDONLY, 0), "rw": (0, sc.MS_RDONLY), "nosuid": (sc.MS_NOSUID, 0),
    "suid": (0, sc.MS_NOSUID), "nodev": (sc.MS_NODEV, 0), "dev": (0, sc.MS_NODEV),
    "noexec": (sc.MS_NOEXEC, 0), "exec": (0, sc.MS_NOEXEC), "sync": (sc.MS_SYNCHRONOUS, 0),
    "async": (0, sc.MS_SYNCHRONOUS), "dirsync": (sc.MS_DIRSYNC, 0), "mand": (sc.MS_MANDLOCK, 0),
    "nomand": (0, sc.MS_MANDLOCK), "noatime": (sc.MS_NOATIME, 0), "atime": (0, sc.MS_NOATIME),
    "nodiratime": (sc.MS_NODIRATIME, 0), "diratime": (0, sc.MS_NODIRATIME),
    "relatime": (sc.MS_RELATIME, 0), "norelatime": (0, sc.MS_RELATIME),
    "strictatime": (sc.MS_STRICTATIME, 0), "nostrictatime": (0, sc.MS_STRICTATIME),
    "nosymfollow": (sc.MS_NOSYMFOLLOW, 0), "symfollow": (0, sc.MS_NOSYMFOLLOW),
    "silent": (sc.MS_SILENT, 0), "loud": (0, sc.MS_SILENT), "defaults": (0, 0),
    "bind": (sc.MS_BIND, 0), "rbind": (sc.MS_BIND | sc.MS_REC, 0), "remount": (sc.MS_REMOUNT, 0),
}
# The recursive options (runtime-spec config.md, "Mounts"): applied to the
# whole subtree with mount_setattr(AT_RECURSIVE), which no MS_REMOUNT can do.
_ATIME = sc.MOUNT_ATTR__ATIME
RECURSIVE = {  # option -> (attr_set, attr_clr)
    "rro": (sc.MOUNT_ATTR_RDONLY, 0), "rrw": (0, sc.MOUNT_ATTR_RDONLY),
    "rnosuid": (sc.MOUNT_ATTR_NOSUID, 0), "rsuid": (0, sc.MOUNT_ATTR_NOSUID),
    "rnodev": (sc.MOUNT_ATTR_NODEV, 0), "rdev": (0, sc.MOUNT_ATTR_NODEV),
    "rnoexec": (sc.MOUNT_ATTR_NOEXEC, 0), "rexec": (0, sc.MOUNT_ATTR_NOEXEC),
    "rnodiratime": (sc.MOUNT_ATTR_NODIRATIME, 0), "rdiratime": (0, sc.MOUNT_ATTR_NODIRATIME),
    "rrelatime": (sc.MOUNT_ATTR_RELATIME, _ATIME), "ratime": (sc.MOUNT_ATTR_RELATIME, _ATIME),
    "rnoatime": (sc.MOUNT_ATTR_NOATIME, _ATIME), "rstrictatime": (sc.MOUNT_ATTR_STRICTATIME, _ATIME),
    "rnosymfollow": (sc.MOUNT_ATTR_NOSYMFOLLOW, 0), "rsymfollow": (0, sc.MOUNT_ATTR_NOSYMFOLLOW),
}
PROPAGATION = {"private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
               "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
               "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
               "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC}
# (name, major, minor): the OCI default devices.
DEVICES = [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
           ("urandom", 1, 9), ("tty", 5, 0)]
LINKS = [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
         ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx")]
_ST_TO_MS = [(os.ST_RDONLY, sc.MS_RDONLY), (os.ST_NOSUID, sc.MS_NOSUID), (os.ST_NODEV, sc.MS_NODEV),
             (os.ST_NOEXEC, sc.MS_NOEXEC), (os.ST_NOATIME, sc.MS_NOATIME),
             (os.ST_NODIRATIME, sc.MS_NODIRATIME), (os.ST_RELATIME, sc.MS_RELATIME)]
_IN_ROOT = sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS
KNOWN_OPTIONS = {*_FLAGS, *RECURSIVE, *PROPAGATION}


class Options:
    """OCI mount options, split by how they are applied."""

    def __init__(self, options, bind: bool):
        self.flags = self.prop = self.rec_set = self.rec_clr = 0
        data = []
        for o in options:
            if o in _FLAGS:
                s, c = _FLAGS[o]
                self.flags = (self.flags | s) & ~c
            elif o in PROPAGATION:
                self.prop |= PROPAGATION[o]
            elif o in RECURSIVE:
                s, c = RECURSIVE[o]
                self.rec_set, self.rec_clr = (self.rec_set | s) & ~c, (self.rec_clr | c) & ~s
            elif bind:
                # config.py refused unknown words already; key=value data is
                # ignored by the kernel for a bind (runc passes it on too)
                if "=" not in o:
                    raise ValueError(f"unknown bind mount option {o!r}")
            else:
                data.append(o)
        self.data = ",".join(data)


def parse_options(options) -> tuple[int, int, str]:
    """OCI mount options -> (mount flags, propagation flags, fs data string)."""
    o = Options(options, bind=False)
    return o.flags, o.prop, o.data


def _locked_flags(path) -> int:
    """Flags a bind remount must keep (the kernel locks them inside a userns)."""
    f = os.statvfs(path).f_flag
    return sum(ms for st, ms in _ST_TO_MS if f & st)


def _remount_ro(path: str) -> None:
    sc.mount(None, path, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | _locked_flags(path))


def _mkdirs(path: str) -> None:
    os.makedirs(path, exist_ok=True)


class InRoot:
    """Paths inside the new root, resolved by the kernel as if root were "/"
    (openat2 RESOLVE_IN_ROOT): a symlink in the bundle's rootfs can never send a
    mount, a mkdir or a mknod to the host.  Each operation gets an O_PATH fd and
    works through /proc/self/fd/N, as runc does."""

    def __init__(self, root: str):
        self.fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    @staticmethod
    def host_mount(source, target, fstype, flags: int, data=None) -> None:
        """A mount on a host path (before the root is entered)."""
        sc.mount(source, target, fstype, flags, data)

    def close(self) -> None:
        os.close(self.fd)

    def open(self, dest: str) -> int:
        rel = posixpath.normpath("/" + dest).lstrip("/") or "."
        return sc.openat2(self.fd, rel, os.O_PATH, _IN_ROOT)

    def ensure(self, dest: str, directory: bool = True) -> None:
        """Create dest (and missing parents) inside the root; mode 0755 like runc."""
        try:
            os.close(self.open(dest))  # most exist: one lookup, not one per component
            return
        except FileNotFoundError:
            pass
        parts = [p for p in posixpath.normpath("/" + dest).split("/") if p]
        for i in range(len(parts)):
            try:
                os.close(self.open("/".join(parts[:i + 1])))
                continue
            except FileNotFoundError:
                pass
            parent = self.open("/".join(parts[:i]))
            try:
                if directory or i < len(parts) - 1:
                    os.mkdir(parts[i], 0o755, dir_fd=parent)
                else:
                    os.close(os.open(parts[i], os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                                     | os.O_CLOEXEC, 0o755, dir_fd=parent))
            except FileExistsError:
                pass
            finally:
                os.close(parent)

    def mount(self, dest: str, source, fstype, flags: int, data=None) -> None:
        fd = self.open(dest)
        try:
            sc.mount(source, f"/proc/self/fd/{fd}", fstype, flags, data)
        finally:
            os.close(fd)

    def remount(self, dest: str, flags: int) -> None:
        """A bind remount of the mount now at dest (re-resolved: the fd taken
        before a mount points below it)."""
        fd = self.open(dest)
        try:
            sc.mount(None, f"/proc/self/fd/{fd}", None, sc.MS_BIND | sc.MS_REMOUNT | flags
                     | _locked_flags(fd))
        finally:
            os.close(fd)

    def setattr(self, dest: str, attr_set: int, attr_clr: int) -> None:
        fd = self.open(dest)
        try:
            sc.mount_setattr(f"/proc/self/fd/{fd}", attr_set, attr_clr, recursive=True)
        finally:
            os.close(fd)

    def symlink(self, dest_dir: str, target: str, name: str) -> None:
        """name -> target in dest_dir, unless something is there already."""
        fd = self.open(dest_dir)
        try:
            os.symlink(target, name, dir_fd=fd)
        except FileExistsError:
            pass
        finally:
            os.close(fd)

    def chmod(self, dest: str, mode: int) -> None:
        fd = self.open(dest)
        try:
            os.chmod(f"/proc/self/fd/{fd}", mode)   # fd is O_PATH: fchmod refuses it
        finally:
            os.close(fd)

    def node(self, dest_dir: str, name: str, mode: int, major: int, minor: int, in_userns: bool,
             replace: bool = False, owner: tuple[int, int] | None = None) -> None:
        """A device node (mode exactly as given, umask 0) in dest_dir, kept if
        one exists unless replace; in a userns, where mknod is never allowed,
        an empty file with the host's node of the same path bound on it."""
        dirfd = self.open(dest_dir)
        old = os.umask(0)
        try:
            try:
                os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                if not replace:
                    return
                os.unlink(name, dir_fd=dirfd)
            except FileNotFoundError:
                pass
            dest = posixpath.join(dest_dir, name)
            if in_userns:
                os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                                 dir_fd=dirfd))
                self.mount(dest, dest, None, sc.MS_BIND)  # the host's node of the same path
            else:
                os.mknod(name, mode, os.makedev(major, minor), dir_fd=dirfd)
            if owner is not None:
                os.chown(name, owner[0], owner[1], dir_fd=dirfd, follow_symlinks=False)
        finally:
            os.umask(old)
            os.close(dirfd)


def _mount_one(r: InRoot, bundle: str, m, in_userns: bool, cgroup_binds) -> None:
    dest = m.destination
    bind = "bind" in m.options or "rbind" in m.options or m.type == "bind"
    try:
        o = Options(m.options, bind)
    except ValueError as e:
        raise OSError(errno.EINVAL, f"mount {dest}: {e}") from None
    if m.type == "cgroup" or m.type == "cgroup2":
        return _mount_cgroup(r, dest, o.flags, cgroup_binds)
    if bind:
        src = m.source if os.path.isabs(m.source) else os.path.join(bundle, m.source)
        r.ensure(dest, os.path.isdir(src))
        r.mount(dest, src, None, sc.MS_BIND | (o.flags & sc.MS_REC))
        if o.flags & ~(sc.MS_BIND | sc.MS_REC):
            r.remount(dest, o.flags & ~(sc.MS_BIND | sc.MS_REC))
    else:
        r.ensure(dest)
        try:
            r.mount(dest, m.source or m.type, m.type, o.flags, o.data or None)
        except OSError as e:
            # sysfs or mqueue in a user namespace that does not own the net/ipc
            # namespace: the kernel refuses; runc bind-mounts the host's instead.
            if e.errno != errno.EPERM or not in_userns or m.type not in ("sysfs", "mqueue"):
                raise
            host = "/sys" if m.type == "sysfs" else "/dev/mqueue"
            if not os.path.isdir(host):
                return
            r.mount(dest, host, None, sc.MS_BIND | sc.MS_REC)
            if o.flags & sc.MS_RDONLY:
                r.remount(dest, sc.MS_RDONLY)
    if o.rec_set or o.rec_clr:
        r.setattr(dest, o.rec_set, o.rec_clr)
    if o.prop:
        r.mount(dest, None, None, o.prop)


_CG_FLAGS = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC


def _mount_cgroup(r: InRoot, dest: str, flags: int, cgroup_binds) -> None:
    """/sys/fs/cgroup as runc makes it: on v2 the container's cgroup bound as is;
    on v1 a tmpfs with every hierarchy's container directory bound read-only,
    nosuid, nodev, noexec (co-mounted controllers get runc's symlinks)."""
    r.ensure(dest)
    if len(cgroup_binds) == 1 and cgroup_binds[0][0] == "":  # v2: one tree, bind it as is
        r.mount(dest, cgroup_binds[0][1], None, sc.MS_BIND)
        r.remount(dest, (flags & (sc.MS_RDONLY | _CG_FLAGS)))
        return
    r.mount(dest, "tmpfs", "tmpfs", (flags & ~sc.MS_RDONLY) | _CG_FLAGS, "mode=755")
    for name, host_dir in cgroup_binds:
        d = posixpath.join(dest, name)
        r.ensure(d)
        r.mount(d, host_dir, None, sc.MS_BIND)
        r.remount(d, sc.MS_RDONLY | _CG_FLAGS | (flags & (sc.MS_RELATIME | sc.MS_NOATIME)))
        for ctrl in name.split(","):
            if ctrl != name:
                r.symlink(dest, name, ctrl)
    if flags & sc.MS_RDONLY:
        # runc leaves the tmpfs mounted rw but its top 0555: a container root
        # without CAP_DAC_OVERRIDE can add nothing beside the hierarchies
        r.chmod(dest, 0o555)


def _make_dev(r: InRoot, in_userns: bool, devices=()) -> None:
    """The OCI default device nodes, then linux.devices: mknod, or bind-mount the
    host's in a userns (where mknod is never allowed)."""
    for name, major, minor in DEVICES:
        r.node("/dev", name, stat.S_IFCHR | 0o666, major, minor, in_userns)
    for d in devices:
        kind = stat.S_IFBLK if d["type"] == "b" else stat.S_IFIFO if d["type"] == "p" else stat.S_IFCHR
        parent = posixpath.dirname(posixpath.normpath(d["path"]))
        r.ensure(parent)
        r.node(parent, posixpath.basename(d["path"]), kind | (d.get("fileMode", 0o666) & 0o7777),
               d.get("major", 0), d.get("minor", 0), in_userns, replace=True,
               owner=(d.get("uid", 0), d.get("gid", 0)))
    for name, target in LINKS:
        r.symlink("/dev", target, name)


def _parent_mount(path: str) -> tuple[str, bool]:
    """(mount point, shared?) of the mount that holds path, from mountinfo."""
    best, shared = "/", False
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mp = fields[4].replace("\\040", " ")
            if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                best = mp
                shared = any(x.startswith("shared:") for x in fields[6:fields.index("-")])
    return best, shared


def prepare(root: str, mounts, *, propagation: str = "rslave", in_userns: bool = False,
            cgroup_binds=(), bundle: str = "", devices=(), r: InRoot | None = None) -> None:
    """Everything before the root switch: propagation, the rootfs bind, mounts, /dev.

    Nothing made here may reach the host's mount namespace, whatever
    rootfsPropagation says: "/" is made a slave (private when asked) first,
    the rootfs's parent mount private (runc's rootfsParentMountPrivate), and the
    bundle's shared/unbindable modes are applied only after the root switch
    (finish()).

    r: the InRoot that does the work; by default one that does it now, here;
    the C stage's program.Recorder writes the same steps down for stage.c."""
    host = r or InRoot
    private = propagation in ("private", "rprivate")
    host.host_mount(None, "/", None, (sc.MS_PRIVATE if private else sc.MS_SLAVE) | sc.MS_REC)
    parent, shared = _parent_mount(os.path.realpath(root))
    if shared:
        host.host_mount(None, parent, None, sc.MS_PRIVATE)
    host.host_mount(root, root, None, sc.MS_BIND | sc.MS_REC)
    r = r.enter(root) if r is not None else InRoot(root)
    try:
        dests = {posixpath.normpath(m.destination) for m in mounts}
        if "/proc" not in dests:
            r.ensure("/proc")
            r.mount("/proc", "proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
        if "/dev" not in dests:
            r.ensure("/dev")
            r.mount("/dev", "tmpfs", "tmpfs", sc.MS_NOSUID | sc.MS_STRICTATIME, "mode=755,size=65536k")
        for m in mounts:
            _mount_one(r, bundle or os.path.dirname(root), m, in_userns, cgroup_binds)
        _make_dev(r, in_userns, devices)
    finally:
        r.close()


def finish(propagation: str, r=None) -> None:
    """After the root switch: the bundle's rootfsPropagation on the new "/"
    (shared or unbindable now make new peer groups of the container's own)."""
    if propagation not in ("private", "rprivate", "slave", "rslave"):
        (r or InRoot).host_mount(None, "/", None, PROPAGATION[propagation])


def switch_root(root: str) -> None:
    """pivot_root(".", ".") and detach the old root; chroot when the rootfs is on
    a filesystem pivot_root rejects (initramfs/ramfs: EINVAL)."""
    os.chdir(root)
    try:
        sc.pivot_root(".", ".")
        sc.umount2(".", sc.MNT_DETACH)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        sc.mount(root, "/", None, sc.MS_MOVE)
        os.chroot(".")
    os.chdir("/")


def mask(paths) -> None:
    for p in paths:
        try:
            if os.path.isdir(p):
                sc.mount("tmpfs", p, "tmpfs", sc.MS_RDONLY)
            else:
                sc.mount("/dev/null", p, None, sc.MS_BIND)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise


def readonly(paths) -> None:
    for p in paths:
        try:
            sc.mount(p, p, None, sc.MS_BIND | sc.MS_REC)
            _remount_ro(p)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise


def readonly_root() -> None:
    _remount_ro("/")
