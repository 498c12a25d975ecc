"""Namespaces: create them (unshare), join existing ones (setns by path), and
the parent-side writes a new user or time namespace needs before use.

unshare() here runs in the forked child.  pid and time namespaces only apply
to the children of the caller, which is why the container's init is a second
fork (container.py); everything else applies at once.
"""
from __future__ import annotations

import fcntl
import os
import struct

from . import syscalls as sc

FLAGS = {"userns": sc.CLONE_NEWUSER, "pidns": sc.CLONE_NEWPID, "mountns": sc.CLONE_NEWNS,
         "utsns": sc.CLONE_NEWUTS, "ipcns": sc.CLONE_NEWIPC, "netns": sc.CLONE_NEWNET,
         "cgroupns": sc.CLONE_NEWCGROUP, "timens": sc.CLONE_NEWTIME}
PROC_NAME = {"userns": "user", "pidns": "pid", "mountns": "mnt", "utsns": "uts", "ipcns": "ipc",
             "netns": "net", "cgroupns": "cgroup", "timens": "time"}
# Join order: the user namespace first, so the others are joined with its rights.
JOIN_ORDER = ("userns", "ipcns", "utsns", "netns", "pidns", "cgroupns", "timens", "mountns")


_available: dict[str, bool] = {}


def available() -> dict[str, bool]:
    """Which namespace kinds this kernel has (a missing one gives a clear error)."""
    if not _available:
        _available.update({k: os.path.exists(f"/proc/self/ns/{v}") for k, v in PROC_NAME.items()})
    return _available


def flags(names) -> int:
    f = 0
    for n in names:
        f |= FLAGS[n]
    return f


def open_paths(paths: dict[str, str]) -> list[tuple[str, int]]:
    """Open namespace files in the parent, so a bad path fails before fork."""
    out = []
    try:
        for kind in JOIN_ORDER:
            if kind in paths:
                out.append((kind, _open_ns(kind, paths[kind])))
    except BaseException:
        for _, fd in out:  # the caller never sees a partial list: close what was opened
            os.close(fd)
        raise
    return out


NS_GET_NSTYPE = 0xB703   # linux/nsfs.h: the CLONE_NEW* type of a namespace fd


def _open_ns(kind: str, path: str) -> int:
    """The namespace file at ``path``, checked to be a ``kind`` namespace (as
    runc checks a path's type), so a wrong or missing path is a one-line error
    naming the field, not a failed setns in the child."""
    from common.errors import CvbError
    field = f"linux.namespaces {PROC_NAME[kind]} path"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise CvbError(field, f"{path}: {e.strerror}", "give an existing namespace file, e.g. /run/netns/NAME") from None
    try:
        got = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        got = None   # not a namespace file at all
    if got != FLAGS[kind]:
        os.close(fd)
        raise CvbError(field, f"{path} is not a {PROC_NAME[kind]} namespace",
                       f"give a {PROC_NAME[kind]} namespace file, e.g. /proc/PID/ns/{PROC_NAME[kind]}")
    return fd


def join(fds: list[tuple[str, int]]) -> None:
    for kind, fd in fds:
        sc.setns(fd, FLAGS[kind])
        os.close(fd)


def write_id_maps(pid: int, uid_map, gid_map) -> None:
    """Parent side: give a child's new user namespace its uid/gid mappings."""
    with open(f"/proc/{pid}/uid_map", "w") as f:
        f.write("".join(f"{c} {h} {n}\n" for c, h, n in uid_map))
    with open(f"/proc/{pid}/gid_map", "w") as f:
        f.write("".join(f"{c} {h} {n}\n" for c, h, n in gid_map))


def write_time_offsets(offsets: dict[str, tuple[int, int]]) -> None:
    """Child side, after unshare(CLONE_NEWTIME) and before the first child."""
    if offsets:
        with open("/proc/self/timens_offsets", "w") as f:
            f.write("".join(f"{clock} {s} {ns}\n" for clock, (s, ns) in offsets.items()))


def loopback_up() -> None:
    """Bring `lo` up in the current network namespace: one ioctl, no netlink.
    It runs in the child after pivot_root, so container.spawn loads socket
    before the fork (preload); importing it here then finds it loaded."""
    import socket
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        fl = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", fl | IFF_UP))
