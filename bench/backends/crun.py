"""crun: the C OCI runtime.

crun refuses a hybrid cgroup layout whose cgroup2 mount still lists
controllers ("cgroups in hybrid mode not supported").  Only when that is the
case here, every crun command runs in a private mount namespace where an empty
file covers ``/sys/fs/cgroup/unified/cgroup.controllers``, so crun falls back
to the v1 hierarchies like runc does; nothing outside that namespace sees the
bind mount.

The namespace is made once per process (a helper child unshares and mounts,
we keep an fd to its namespace, the helper exits); the namespace dies with the
fd, so nothing can leak.  A measuring worker (bench.worker) enters it once with
setns() before anything is timed, then execs crun directly: no extra process
per spawn, so crun's startup is not taxed (an ``nsenter`` per spawn cost about
1.5 ms here, 20-30% of crun's own time).  Outside a worker (the harness itself,
which must keep the host's view for the other backends), each crun command
enters it with ``nsenter --mount=/proc/self/fd/N``; those paths time the probe
from inside, where the extra exec does not count.  The metadata records which.
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
        self._entered = False

    def prepare_worker(self) -> None:
        """Enter the masked mount namespace once, in this (single-threaded) worker."""
        if not self.masked or self._entered:
            return
        fd = masked_namespace_fd()
        cwd = os.getcwd()
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, CLONE_NEWNS) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns into the masked mount namespace: {os.strerror(err)}")
        finally:
            os.close(fd)
        os.chdir(cwd)   # setns() moved us to the namespace's root
        self._entered = True

    def _nsenter(self) -> list[str]:
        if not self.masked or self._entered:
            return []
        if self._ns_fd is None:
            self._ns_fd = masked_namespace_fd()
        return [shutil.which("nsenter") or "nsenter", f"--mount=/proc/self/fd/{self._ns_fd}"]

    def _base(self) -> list[str]:
        return [*self._nsenter(), *super()._base()]

    def popen_kw(self) -> dict:
        if not self.masked or self._entered:
            return {}
        self._nsenter()
        return {"pass_fds": (self._ns_fd,)}

    def _timer_wrapper(self) -> list[str]:
        """The timer itself runs in the masked namespace: one nsenter for the
        whole hyperfine, none per spawn."""
        return self._nsenter()

    def available(self) -> tuple[bool, str]:
        ok, why = super().available()
        if ok and self.masked and not shutil.which("nsenter"):
            return False, "crun: needs nsenter (util-linux) to mask the hybrid cgroup2 controllers"
        return ok, why

    def metadata(self) -> dict:
        md = super().metadata()
        md["hybrid_cgroup_mask"] = (f"a private mount ns with an empty file over {UNIFIED_CONTROLLERS}: "
                                    "timing workers setns() into it once and exec crun directly; "
                                    "other crun commands go through nsenter" if self.masked
                                    else "not needed")
        return md
