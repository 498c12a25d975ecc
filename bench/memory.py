"""Host-side memory of an instance, under one definition for every backend.

Headline (``charged``): what the host's memory controller charges to the
instance's own cgroup (a container's cgroup; the cvbench cgroup raw QEMU runs
in; libvirt's machine cgroup), plus the PSS of the instance's processes that
live outside that cgroup and exist only for it (``runc run``/``crun run`` in
the foreground, runsc's parts left outside, a runtime CLI), plus, where the
instance's supervisor is a process shared by several instances (the builtin
runtime's supervisor is the harness itself), that process's PSS divided by the
instances it supervises.  A page is counted once: processes inside the cgroup
are already in its charge, and PSS splits the pages outside processes share.

Second view: PSS (proportional set size) of every host process, split into the
workload and the runtime/VMM part.  ``ru_maxrss`` is deliberately not used:
for a VM it is the QEMU process's peak, not the memory the guest costs.
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


def pid_cgroup_dirs(pid: int) -> list[str]:
    """The cgroup folders a process sits in, from /proc/PID/cgroup: for an
    instance whose cgroup path only its runtime knows (a CLI runtime names it
    itself), the workload's own cgroup is the instance's."""
    dirs = []
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        _hid, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers:     # v1: the first controller's folder holds co-mounted ones too
            cands = [f"/sys/fs/cgroup/{c}/{rel}" for c in controllers.split(",")]
            cands.append(f"/sys/fs/cgroup/{controllers}/{rel}")
        else:               # v2, pure or the hybrid's unified mount
            cands = [f"/sys/fs/cgroup/unified/{rel}", f"/sys/fs/cgroup/{rel}"]
        dirs += [d.rstrip("/") for d in cands if rel and os.path.isdir(d)][:1]
    return dirs


def cgroup_procs(dirs: list[str]) -> list[int]:
    pids = []
    for d in dirs:
        try:
            pids += [int(x) for x in Path(d, "cgroup.procs").read_text().split()]
        except OSError:
            pass
    return pids


def cgroup_charged(dirs: list[str]) -> int | None:
    """Memory charged to the instance's memory cgroup (charged_bytes of its
    outermost memory folder); None when it has no memory cgroup we can read."""
    mdirs = memory_dirs(dirs)
    return charged_bytes(min(mdirs, key=len))[0] if mdirs else None


def memory_dirs(dirs: list[str]) -> list[str]:
    """The memory-controller folders among an instance's cgroup folders."""
    return [d for d in dirs if os.path.exists(os.path.join(d, "memory.stat"))]


def charged_bytes(d: str) -> tuple[int | None, str]:
    """(bytes, file) the memory controller charges to cgroup folder ``d`` and its
    children.  v1: memory.stat's total_rss + total_cache (+ total_swap), exact,
    where memory.usage_in_bytes is fuzzy by per-CPU charge batches; v2:
    memory.current (which, unlike v1, also holds kernel memory)."""
    try:
        return int(Path(d, "memory.current").read_text()), "memory.current"
    except (OSError, ValueError):
        pass
    try:
        stat = dict(ln.split() for ln in Path(d, "memory.stat").read_text().splitlines() if ln.strip())
        keys = [k for k in ("total_rss", "total_cache", "total_swap") if k in stat]
        if keys:
            return sum(int(stat[k]) for k in keys), "memory.stat " + "+".join(keys)
    except (OSError, ValueError):
        pass
    return None, ""


def cgroup_tree_procs(dirs: list[str]) -> set[int]:
    """Every process in these cgroup folders and their children."""
    pids: set[int] = set()
    for d in dirs:
        for root, _subdirs, _files in os.walk(d):
            pids.update(cgroup_procs([root]))
    return pids


def headline(pids: list[int], dirs: list[str], supervisor: dict | None = None) -> dict:
    """The headline figure under the one definition (module docstring).

    ``supervisor``: {"pid", "sharers", "what"} of a process outside the
    instance that supervises ``sharers`` instances at once (its share is counted)."""
    mdirs = memory_dirs(dirs)
    # the outermost memory folder of the instance (a child folder is in its total)
    top = min(mdirs, key=len) if mdirs else None
    charged, source = charged_bytes(top) if top else (None, "")
    inside = cgroup_tree_procs([top]) if top else set()
    outside = {p: pss(p) for p in sorted(set(pids) - inside)}
    rec = {"charged": (charged or 0) + sum(outside.values()), "cgroup_charged": charged,
           "cgroup": top or "", "cgroup_source": source, "outside_pss": sum(outside.values()),
           "outside": {str(p): {"exe": exe_name(p), "pss": v} for p, v in outside.items()},
           "supervisor_share": 0}
    if supervisor:
        share = pss(supervisor["pid"]) // max(1, int(supervisor["sharers"]))
        rec["supervisor_share"] = share
        rec["supervisor"] = supervisor["what"]
        rec["charged"] += share
    return rec


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
