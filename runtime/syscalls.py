"""The few raw Linux calls Python 3.11 does not expose, through ctypes.

Python 3.12 gained os.unshare/os.setns; 3.11 has neither, nor mount, umount2,
pivot_root, sethostname, capset or prctl.  Every mechanism module calls them
from here so there is one place that turns a -1 into an OSError with errno.
"""
from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)

# <sched.h>
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_PARENT = 0x00008000

# <sys/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

# <sys/prctl.h>
PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

SYS_pivot_root = 155
SYS_keyctl = 250
SYS_close_range = 436
SYS_openat2 = 437
SYS_mount_setattr = 442
KEYCTL_JOIN_SESSION_KEYRING = 1
KEYCTL_SETPERM = 5
CLOSE_RANGE_CLOEXEC = 1 << 2
# <linux/openat2.h>
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
# <linux/mount.h>
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_NOSYMFOLLOW = 0x200000
SYS_rt_sigaction = 13
SYS_rt_sigprocmask = 14
SYS_clone = 56
SYS_capset = 126
SYS_seccomp = 317
SECCOMP_SET_MODE_FILTER = 1

_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _check(rc: int, what: str, arg: object = None) -> int:
    if rc < 0:
        err = ctypes.get_errno()
        msg = f"{what}({arg})" if arg is not None else what
        raise OSError(err, f"{msg}: {os.strerror(err)}")
    return rc


def _b(s: str | bytes | None) -> bytes | None:
    if s is None or isinstance(s, bytes):
        return s
    return os.fsencode(s)


_NS_NAMES = {CLONE_NEWNS: "mount", CLONE_NEWUTS: "uts", CLONE_NEWIPC: "ipc", CLONE_NEWUSER: "user",
             CLONE_NEWPID: "pid", CLONE_NEWNET: "net", CLONE_NEWCGROUP: "cgroup", CLONE_NEWTIME: "time"}


def unshare(flags: int) -> None:
    names = "|".join(n for f, n in _NS_NAMES.items() if flags & f) or hex(flags)
    _check(_libc.unshare(flags), "unshare", names)


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "setns", fd)


def mount(source, target, fstype, flags: int = 0, data=None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), "mount", target)


def umount2(target, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), "umount2", target)


def pivot_root(new_root, put_old) -> None:
    _check(_libc.syscall(SYS_pivot_root, _b(new_root), _b(put_old)), "pivot_root", new_root)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname", name)


def prctl(option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
    return _check(_libc.prctl(option, a2, a3, a4, a5), "prctl", option)


def clone_parent() -> int:
    """fork(), except the child's parent is our parent (CLONE_PARENT).

    Used after unshare(CLONE_NEWPID) so that the new namespace's pid 1 is a
    direct child of the process that called spawn(), which can then waitpid()
    it.  Only safe in a single-threaded process about to exec, which is where
    it is called."""
    return _check(_libc.syscall(SYS_clone, CLONE_PARENT | 17, 0, 0, 0, 0), "clone")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = _CapHeader(0x20080522, 0)
    data = (_CapData * 2)()
    for i in range(2):
        data[i].effective = (effective >> (32 * i)) & 0xFFFFFFFF
        data[i].permitted = (permitted >> (32 * i)) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> (32 * i)) & 0xFFFFFFFF
    _check(_libc.syscall(SYS_capset, ctypes.byref(hdr), ctypes.byref(data)), "capset")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_load_bpf(bpf: bytes) -> None:
    """Install an already compiled classic-BPF filter (8 bytes per instruction)."""
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _SockFprog(len(bpf) // 8, ctypes.cast(buf, ctypes.c_void_p))
    _check(_libc.syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, ctypes.byref(prog)), "seccomp")


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2): resolve `path` with the kernel's RESOLVE_* rules (Linux 5.6)."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    return _check(_libc.syscall(SYS_openat2, dirfd, _b(path), ctypes.byref(how), ctypes.sizeof(how)),
                  "openat2", path)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(path: str, attr_set: int, attr_clr: int, recursive: bool) -> None:
    """mount_setattr(2) (Linux 5.12): change a mount's flags, with AT_RECURSIVE
    on the whole subtree, which a MS_REMOUNT cannot."""
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    fl = AT_RECURSIVE if recursive else 0
    _check(_libc.syscall(SYS_mount_setattr, -100, _b(path), fl, ctypes.byref(attr), ctypes.sizeof(attr)),
           "mount_setattr", path)


def close_range_cloexec(first: int) -> None:
    """Mark every fd >= first close-on-exec (close_range(2), Linux 5.11)."""
    _check(_libc.syscall(SYS_close_range, ctypes.c_uint(first), ctypes.c_uint(0xFFFFFFFF),
                         ctypes.c_uint(CLOSE_RANGE_CLOEXEC)), "close_range", first)


def join_session_keyring(name: str) -> int:
    """A new session keyring for this process, so it never shares its caller's."""
    return _check(_libc.syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, _b(name)), "keyctl", name)


def keyring_setperm(key: int, perm: int) -> None:
    _check(_libc.syscall(SYS_keyctl, KEYCTL_SETPERM, key, ctypes.c_uint32(perm)), "keyctl(SETPERM)", key)


def reset_signals() -> None:
    """Every signal to SIG_DFL and an empty mask, through the raw syscalls:
    glibc's sigaction and sigprocmask refuse its reserved signals 32 and 33,
    so a caller that ignores them (GNU make's recipe shells do) would
    otherwise pass that on into the container.  Only for a single-threaded
    child about to exec."""
    dfl = (ctypes.c_ulong * 4)()          # kernel struct sigaction: handler, flags, restorer, mask
    for sig in range(1, 65):
        if sig in (9, 19):                # SIGKILL, SIGSTOP cannot be changed
            continue
        _check(_libc.syscall(SYS_rt_sigaction, sig, ctypes.byref(dfl), None, 8), "rt_sigaction", sig)
    empty = ctypes.c_ulong(0)
    _check(_libc.syscall(SYS_rt_sigprocmask, 2, ctypes.byref(empty), None, 8), "rt_sigprocmask")
