"""The init's kernel work for the C stage, written down as a small program.

runtime/child.py's init() does, for the default bundle, keyring, mounts,
device nodes, pivot_root, sysctls, read-only and masked paths, rlimits and
oom_score_adj.  To run that without forking the Python caller, the parent
records the same steps here (rootfs.prepare() runs unchanged with a Recorder
in place of the InRoot that would do them) and stage.c replays them in the
child, in the same order.  Every decision that needs the host's view (the
rootfs's parent mount, whether a bind source is a directory) is taken here,
as the Python child takes it, before the root switch; what needs the
container's view (does a node exist, a mount's locked flags, is a masked
path a directory) stage.c decides as rootfs.py does.

Format, read by stage.c's run_program(): an op byte, then its fields in the
order OPS gives: 's' is a u32 length (0xffffffff: NULL) and the bytes, 'n' a
u64; all little-endian.  "|" ends the first part (before hostname and
loopback); the rest (rlimits, oom_score_adj) runs after them, as in init().
"""
from __future__ import annotations

import os
import posixpath
import struct

from .. import rootfs
from .. import syscalls as sc

OPS = {
    "K": "sn",      # join a new session keyring NAME, set its permissions
    "C": "s",       # chroot
    "M": "sssns",   # mount(source, target, fstype, flags, data) on a host path
    "O": "s",       # enter the root: an O_PATH fd that RESOLVE_IN_ROOT walks from
    "E": "sn",      # ensure DEST exists in the root (directory, or a file when 0)
    "m": "sssns",   # mount(source, DEST in the root, fstype, flags, data)
    "r": "sn",      # bind remount of DEST with flags plus the ones the kernel locks
    "a": "snn",     # mount_setattr(DEST, set, clear, AT_RECURSIVE)
    "l": "sss",     # symlink NAME -> TARGET in DIR, unless NAME exists
    "h": "sn",      # chmod DEST
    "d": "ssnnnnnnn",  # node NAME in DIR: mode, major, minor, replace, chown?, uid, gid
    "c": "",        # leave the root (close its fd)
    "P": "s",       # pivot_root into ROOT (chroot where the kernel refuses: EINVAL)
    "W": "ss",      # write VALUE to the file PATH (sysctls, oom_score_adj)
    "R": "s",       # readonly path (ENOENT skipped)
    "X": "s",       # masked path (ENOENT skipped)
    "Y": "",        # the root read-only
    "|": "",        # end of the first part
    "L": "nnn",     # setrlimit(resource, soft, hard)
}
NULL = 0xFFFFFFFF


def _rel(dest: str) -> str:
    """A path in the root as rootfs.InRoot.open resolves it (relative, normalised)."""
    return posixpath.normpath("/" + dest).lstrip("/")


class Recorder:
    """Stands in for rootfs.InRoot: the same calls, written down, not done."""

    def __init__(self):
        self.out = bytearray()

    def op(self, code: str, *fields) -> None:
        sig = OPS[code]
        if len(sig) != len(fields):
            raise TypeError(f"op {code}: {len(fields)} fields for {sig!r}")
        self.out += code.encode()
        for kind, v in zip(sig, fields, strict=True):
            if kind == "n":
                self.out += struct.pack("<Q", int(v))
            elif v is None:
                self.out += struct.pack("<I", NULL)
            else:
                b = os.fsencode(v)
                if b"\0" in b:
                    raise ValueError(f"op {code}: NUL byte in {v!r}")
                self.out += struct.pack("<I", len(b)) + b

    # rootfs.InRoot's interface
    def host_mount(self, source, target, fstype, flags: int, data=None) -> None:
        self.op("M", source, target, fstype, flags, data)

    def enter(self, root: str) -> Recorder:
        self.op("O", root)
        return self

    def close(self) -> None:
        self.op("c")

    def ensure(self, dest: str, directory: bool = True) -> None:
        self.op("E", _rel(dest), 1 if directory else 0)

    def mount(self, dest: str, source, fstype, flags: int, data=None) -> None:
        self.op("m", source, _rel(dest), fstype, flags, data)

    def remount(self, dest: str, flags: int) -> None:
        self.op("r", _rel(dest), flags)

    def setattr(self, dest: str, attr_set: int, attr_clr: int) -> None:
        self.op("a", _rel(dest), attr_set, attr_clr)

    def symlink(self, dest_dir: str, target: str, name: str) -> None:
        self.op("l", _rel(dest_dir), target, name)

    def chmod(self, dest: str, mode: int) -> None:
        self.op("h", _rel(dest), mode)

    def node(self, dest_dir: str, name: str, mode: int, major: int, minor: int, in_userns: bool,
             replace: bool = False, owner: tuple[int, int] | None = None) -> None:
        if in_userns:  # stage.eligible() keeps user namespaces on the Python child
            raise ValueError("the C stage makes no device nodes in a user namespace")
        uid, gid = owner or (0, 0)
        self.op("d", _rel(dest_dir), name, mode, major, minor, int(replace), int(owner is not None), uid, gid)


def build(p) -> bytes:
    """The program for plan p: init()'s steps from the keyring to oom_score_adj,
    minus hostname and loopback (stage.c's own, between the two parts)."""
    import resource
    iso, cfg = p.iso, p.cfg
    w = Recorder()
    if p.keyring:  # never the caller's session keyring (runc: "_ses.<id>", user search added)
        w.op("K", f"_ses.{p.cid}", 0x3f130000 | (0x8 if iso.userns else 0x80000))
    if p.chroot:
        w.op("C", p.root)
    if iso.mountns:
        if iso.pivot_root:
            binds = []
            if p.limits is not None and any(m.type in ("cgroup", "cgroup2") for m in cfg.mounts):
                from .. import cgroups
                binds = cgroups.backend().binds(p.cgroup_dirs)
            rootfs.prepare(p.root, cfg.mounts if iso.follow_bundle else [], propagation=cfg.propagation,
                           in_userns=iso.userns, cgroup_binds=binds, bundle=cfg.bundle,
                           devices=cfg.linux_devices if iso.follow_bundle else (), r=w)
            w.op("P", p.root)
            for key, value in p.sysctl.items():  # before /proc/sys turns read-only
                w.op("W", "/proc/sys/" + key.replace(".", "/"), value)
            for path in cfg.readonly_paths:  # runc's order: read-only, then masked
                w.op("R", path)
            for path in cfg.masked_paths:
                w.op("X", path)
            if cfg.root_readonly and iso.follow_bundle:
                w.op("Y")
            rootfs.finish(cfg.propagation, r=w)
        else:  # the ladder's mount-namespace rung: nothing is mounted, nothing may leak
            private = cfg.propagation in ("private", "rprivate")
            w.host_mount(None, "/", None, (sc.MS_PRIVATE if private else sc.MS_SLAVE) | sc.MS_REC)
    w.op("|")
    if iso.follow_bundle:
        for name, soft, hard in cfg.rlimits:
            w.op("L", getattr(resource, name), _rlim(soft), _rlim(hard))
    if cfg.oom_score_adj is not None:
        w.op("W", "/proc/self/oom_score_adj", str(cfg.oom_score_adj))
    return bytes(w.out)


def _rlim(v: int) -> int:
    """RLIM_INFINITY (-1 to Python's resource module) as the u64 the kernel takes."""
    return v & 0xFFFFFFFFFFFFFFFF
