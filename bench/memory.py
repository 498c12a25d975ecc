"""Host-side memory of an instance: PSS of every host process it has, plus what
its cgroup is charged.

PSS (proportional set size) splits shared pages among the processes that map
them, so summing it over an instance's processes neither double-counts the
runtime's shared libraries nor hides them.  ``ru_maxrss`` is deliberately not
used: for a VM it is the QEMU process's peak, not the memory the guest costs.
"""
from __future__ import annotations

import os
from pathlib import Path


def pss(pid: int) -> int:
    """PSS of one process in bytes; 0 if it is gone (it may exit while we look)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def exe_name(pid: int) -> str:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        pass
    try:  # another mount namespace can hide the exe link's target
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def cgroup_procs(dirs: list[str]) -> list[int]:
    pids = []
    for d in dirs:
        try:
            pids += [int(x) for x in Path(d, "cgroup.procs").read_text().split()]
        except OSError:
            pass
    return pids


def cgroup_charged(dirs: list[str]) -> int | None:
    """Memory charged to the instance's memory cgroup (v1 usage_in_bytes or v2
    memory.current); None when it has no memory cgroup we can read."""
    for d in dirs:
        for name in ("memory.usage_in_bytes", "memory.current"):
            p = Path(d, name)
            if p.exists():
                try:
                    return int(p.read_text())
                except (OSError, ValueError):
                    return None
    return None


def split(pids: list[int], workload_pids: list[int], charged: int | None = None,
          extra: dict | None = None) -> dict:
    """The memory record every backend returns: total PSS, the part of the
    processes that run the workload, and the rest (runtime/VMM overhead)."""
    per = {p: pss(p) for p in sorted(set(pids))}
    total = sum(per.values())
    work = sum(per.get(p, 0) for p in set(workload_pids))
    rec = {"pss_total": total, "workload": work, "overhead": total - work,
           "cgroup_charged": charged,
           "processes": {str(p): {"exe": exe_name(p), "pss": v} for p, v in per.items()}}
    if extra:
        rec.update(extra)
    return rec
