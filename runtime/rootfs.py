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
    "bind": (sc.MS_BIND, 0), "rbind": (sc.MS_BIND | sc.MS_REC, 0), "remount": (sc.MS_REMOUNT, 0),
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


def parse_options(options) -> tuple[int, int, str]:
    """OCI mount options -> (mount flags, propagation flags, fs data string)."""
    flags, prop, data = 0, 0, []
    for o in options:
        if o in _FLAGS:
            s, c = _FLAGS[o]
            flags = (flags | s) & ~c
        elif o in PROPAGATION:
            prop |= PROPAGATION[o]
        else:
            data.append(o)
    return flags, prop, ",".join(data)


def _locked_flags(path: str) -> int:
    """Flags a bind remount must keep (the kernel locks them inside a userns)."""
    f = os.statvfs(path).f_flag
    return sum(ms for st, ms in _ST_TO_MS if f & st)


def _remount_ro(path: str) -> None:
    sc.mount(None, path, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | _locked_flags(path))


def _mkdirs(path: str) -> None:
    os.makedirs(path, exist_ok=True)


def _mount_one(root: str, m, in_userns: bool, cgroup_binds) -> None:
    target = root + m.destination.rstrip("/")
    flags, prop, data = parse_options(m.options)
    if m.type == "cgroup" or m.type == "cgroup2":
        return _mount_cgroup(target, flags, cgroup_binds)
    if flags & sc.MS_BIND:
        src = m.source if os.path.isabs(m.source) else os.path.join(os.path.dirname(root), m.source)
        if not os.path.exists(target):
            if os.path.isdir(src):
                _mkdirs(target)
            else:
                _mkdirs(os.path.dirname(target))
                open(target, "a").close()
        sc.mount(src, target, None, flags & (sc.MS_BIND | sc.MS_REC))
        if flags & ~(sc.MS_BIND | sc.MS_REC):
            sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | (flags & ~sc.MS_REC)
                     | _locked_flags(target))
    else:
        _mkdirs(target)
        try:
            sc.mount(m.source or m.type, target, m.type, flags, data or None)
        except OSError as e:
            # sysfs or mqueue in a user namespace that does not own the net/ipc
            # namespace: the kernel refuses; runc bind-mounts the host's instead.
            if e.errno != errno.EPERM or not in_userns or m.type not in ("sysfs", "mqueue"):
                raise
            host = "/sys" if m.type == "sysfs" else "/dev/mqueue"
            if not os.path.isdir(host):
                return
            sc.mount(host, target, None, sc.MS_BIND | sc.MS_REC)
            if flags & sc.MS_RDONLY:
                _remount_ro(target)
    if prop:
        sc.mount(None, target, None, prop)


def _mount_cgroup(target: str, flags: int, cgroup_binds) -> None:
    """/sys/fs/cgroup: a tmpfs holding the container's own cgroup directories."""
    _mkdirs(target)
    if len(cgroup_binds) == 1 and cgroup_binds[0][0] == "":  # v2: one tree, bind it as is
        sc.mount(cgroup_binds[0][1], target, None, sc.MS_BIND)
        if flags & sc.MS_RDONLY:
            _remount_ro(target)
        return
    sc.mount("cgroup", target, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, "mode=755")
    for name, host_dir in cgroup_binds:
        d = os.path.join(target, name)
        os.mkdir(d)
        sc.mount(host_dir, d, None, sc.MS_BIND)
        _remount_ro(d)
    if flags & sc.MS_RDONLY:
        _remount_ro(target)


def _make_dev(dev: str, in_userns: bool) -> None:
    """The OCI default device nodes: mknod, or bind-mount the host's in a userns
    (where mknod is never allowed)."""
    old = os.umask(0)
    try:
        for name, major, minor in DEVICES:
            path = f"{dev}/{name}"
            if os.path.exists(path):
                continue
            if in_userns:
                open(path, "a").close()
                sc.mount(f"/dev/{name}", path, None, sc.MS_BIND)
            else:
                os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        for name, target in LINKS:
            if not os.path.lexists(f"{dev}/{name}"):
                os.symlink(target, f"{dev}/{name}")
    finally:
        os.umask(old)


def prepare(root: str, mounts, *, propagation: str = "rslave", in_userns: bool = False,
            cgroup_binds=()) -> None:
    """Everything before the root switch: propagation, the rootfs bind, mounts, /dev."""
    sc.mount(None, "/", None, PROPAGATION[propagation])
    sc.mount(root, root, None, sc.MS_BIND | sc.MS_REC)
    dests = {m.destination.rstrip("/") for m in mounts}
    if "/proc" not in dests:
        _mkdirs(root + "/proc")
        sc.mount("proc", root + "/proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    if "/dev" not in dests:
        _mkdirs(root + "/dev")
        sc.mount("tmpfs", root + "/dev", "tmpfs", sc.MS_NOSUID | sc.MS_STRICTATIME, "mode=755,size=65536k")
    for m in mounts:
        _mount_one(root, m, in_userns, cgroup_binds)
    _make_dev(root + "/dev", in_userns)


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
                sc.mount("tmpfs", p, "tmpfs", sc.MS_RDONLY, "size=0")
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
