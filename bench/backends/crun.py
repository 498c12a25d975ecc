"""crun: the C OCI runtime.

crun refuses a hybrid cgroup layout whose cgroup2 mount still lists
controllers ("cgroups in hybrid mode not supported").  Only when that is the
case here, every crun command runs in a private mount namespace where an empty
file covers ``/sys/fs/cgroup/unified/cgroup.controllers``, so crun falls back
to the v1 hierarchies like runc does; nothing outside that namespace sees the
bind mount.

The namespace is made once per process (a helper child unshares and mounts,
we keep an fd to its namespace, the helper exits) and each crun command enters
it with ``nsenter --mount=/proc/self/fd/N``.  Measured here, that costs about
1.5 ms per spawn, where unsharing and mounting in a Python ``preexec_fn`` for
every spawn cost about 6 ms (fork of a large parent, a mount-table copy and its
teardown); the namespace dies with the fd, so nothing can leak.  The metadata
records the trick.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import time
from pathlib import Path

from common.paths import state_dir

from .oci import BENCH_STATE, OCIBackend

UNIFIED_CONTROLLERS = "/sys/fs/cgroup/unified/cgroup.controllers"
CLONE_NEWNS = 0x00020000
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18


def hybrid_needs_mask() -> bool:
    """True when cgroup2 lists controllers while v1 controllers are mounted."""
    try:
        listed = Path(UNIFIED_CONTROLLERS).read_text().split()
    except OSError:
        return False
    v1 = any(os.path.isfile(f"/sys/fs/cgroup/{c}/tasks") for c in ("memory", "cpu", "pids"))
    return bool(listed) and v1


def _empty_file() -> str:
    p = state_dir() / BENCH_STATE / "empty-cgroup.controllers"
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("")
    return str(p)


def _mask_in_child(empty: bytes):
    libc = ctypes.CDLL(None, use_errno=True)

    def pre():
        if libc.unshare(CLONE_NEWNS) != 0:
            os._exit(125)
        if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
            os._exit(126)
        if libc.mount(empty, UNIFIED_CONTROLLERS.encode(), None, MS_BIND, None) != 0:
            os._exit(127)
    return pre


def masked_namespace_fd() -> int:
    """An fd of a private mount namespace with the controllers file masked."""
    sleep = shutil.which("sleep") or "/bin/sleep"
    helper = subprocess.Popen([sleep, "30"], preexec_fn=_mask_in_child(_empty_file().encode()))
    try:
        mine = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{helper.pid}/ns/mnt") == mine:   # until the child has unshared
            if helper.poll() is not None or time.monotonic() > deadline:
                raise OSError(f"mask helper exited with {helper.returncode}")
            time.sleep(0.001)
        me = os.readlink("/proc/self/exe")
        while helper.poll() is None and os.readlink(f"/proc/{helper.pid}/exe") == me:
            time.sleep(0.001)   # until it has exec'd sleep, i.e. the mounts are done
        if helper.poll() is not None:
            raise OSError(f"mask helper exited with {helper.returncode} (125 unshare, 126/127 mount)")
        return os.open(f"/proc/{helper.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        helper.kill()
        helper.wait()


class Crun(OCIBackend):
    name = binary = "crun"

    def __init__(self):
        super().__init__()
        self.masked = hybrid_needs_mask()
        self._ns_fd: int | None = None

    def _nsenter(self) -> list[str]:
        if not self.masked:
            return []
        if self._ns_fd is None:
            self._ns_fd = masked_namespace_fd()
        return [shutil.which("nsenter") or "nsenter", f"--mount=/proc/self/fd/{self._ns_fd}"]

    def _base(self) -> list[str]:
        return [*self._nsenter(), *super()._base()]

    def popen_kw(self) -> dict:
        if not self.masked:
            return {}
        self._nsenter()
        return {"pass_fds": (self._ns_fd,)}

    def available(self) -> tuple[bool, str]:
        ok, why = super().available()
        if ok and self.masked and not shutil.which("nsenter"):
            return False, "crun: needs nsenter (util-linux) to mask the hybrid cgroup2 controllers"
        return ok, why

    def metadata(self) -> dict:
        md = super().metadata()
        md["hybrid_cgroup_mask"] = (f"nsenter into a private mount ns with an empty file over "
                                    f"{UNIFIED_CONTROLLERS}" if self.masked else "not needed")
        return md
