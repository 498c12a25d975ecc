"""crun: the C OCI runtime.

crun refuses a hybrid cgroup layout whose cgroup2 mount still lists
controllers ("cgroups in hybrid mode not supported").  Only when that is the
case here, each crun command runs in a private mount namespace where an empty
file covers ``/sys/fs/cgroup/unified/cgroup.controllers``, so crun falls back
to the v1 hierarchies like runc does; nothing outside that one command sees the
bind mount.  It is done with ctypes in the forked child (no extra ``unshare``
exec inside the timed interval) and recorded in the metadata.
"""
from __future__ import annotations

import ctypes
import os
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


class Crun(OCIBackend):
    name = binary = "crun"
    isolation_rank = 2

    def __init__(self):
        super().__init__()
        self.masked = hybrid_needs_mask()

    def popen_kw(self) -> dict:
        if not self.masked:
            return {}
        return {"preexec_fn": _mask_in_child(_empty_file().encode())}

    def metadata(self) -> dict:
        md = super().metadata()
        md["hybrid_cgroup_mask"] = (f"private mount ns, empty file over {UNIFIED_CONTROLLERS}"
                                    if self.masked else "not needed")
        return md
