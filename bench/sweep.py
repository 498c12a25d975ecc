"""Remove what killed cvbench runs left behind, and only that.

Several cvbench processes (and other engineers' tests) run at once on one
machine, so nothing is removed whose owner is still alive: container ids and
bundle folders carry the owner pid (``cvbench-b<pid>-…``), host-backend probes
carry ``CVBENCH_OWNER`` in their environment, and runtime/ and vm_backend/
sweep their own objects by the same rule.
"""
from __future__ import annotations

import glob
import importlib
import os
import shutil
import signal
from pathlib import Path

from common import owner
from common.paths import state_dir

from .backends import oci

OWNER_ENV = "CVBENCH_OWNER"


def _dead(cid: str, mine: bool = False) -> bool:
    pid = oci.owner_pid(cid)
    return pid is not None and ((mine and pid == os.getpid()) or not owner.alive(pid))


def sweep_oci(mine: bool = False) -> list[str]:
    from . import backends
    removed = []
    for rt in ("crun", "runc", "runsc"):
        b = backends.get(rt)
        if not getattr(b, "path", None):
            continue
        for cid in b.list_ids():
            if _dead(cid, mine):
                b.cleanup(cid, None, f"/{cid}")
                removed.append(f"{rt} container {cid}")
    for bundle in glob.glob(str(state_dir() / oci.BENCH_STATE / "bundles" / "cvbench-b*")):
        if _dead(os.path.basename(bundle), mine):
            shutil.rmtree(bundle, ignore_errors=True)
            removed.append(f"bundle {bundle}")
    for d in glob.glob("/sys/fs/cgroup/*/cvbench-b*") + glob.glob("/sys/fs/cgroup/cvbench-b*"):
        if _dead(os.path.basename(d), mine):
            removed += oci.remove_cgroups("/" + os.path.basename(d))
    return removed


def sweep_host_probes(mine: bool = False) -> list[str]:
    """Host-backend probes orphaned by a killed harness (reparented, owner dead)."""
    removed = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        tags = [e for e in env if e.startswith(OWNER_ENV.encode() + b"=")]
        if not tags:
            continue
        pid = tags[0].split(b"=", 1)[1].decode()
        if pid.isdigit() and ((mine and int(pid) == os.getpid()) or not owner.alive(int(pid))):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                removed.append(f"host probe pid {entry.name}")
            except ProcessLookupError:
                pass
    return removed


def sweep_all(mine: bool = False) -> list[str]:
    """Leftovers of dead owners; with ``mine``, also this process's own (the harness
    calls that after an interrupt, once it has stopped measuring)."""
    removed = sweep_oci(mine) + sweep_host_probes(mine)
    from . import netpath  # after the probes: their netns go once they are dead
    removed += netpath.sweep(mine)
    from . import disk  # after the processes: nothing holds its files then
    removed += disk.sweep(mine)
    for label, mod, call in (("runtime", "runtime", lambda m: m.sweep()),
                             ("vm", "vm_backend", lambda m: m.sweep())):
        try:
            removed += [f"{label}: {x}" for x in call(importlib.import_module(mod))]
        except Exception as e:  # noqa: BLE001 - a broken sweep must not block measuring
            removed.append(f"{label}: sweep failed ({type(e).__name__}: {e})")
    from . import netpath_container  # last: the runtimes have removed its children by now
    removed += netpath_container.sweep_cgroups(mine)
    return removed
