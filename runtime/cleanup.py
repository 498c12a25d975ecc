"""sweep(): remove what killed cvbench runtimes left behind.

Several cvbench processes (and other engineers' tests) run at once on one
machine, so only objects whose recorded owner is dead are touched: a state
file's owner pid+start time, and cgroups under a ``cvbench`` parent that no
state file claims (state is written before a cgroup is made and removed
after it is gone, so an unclaimed cgroup has no living owner).
"""
from __future__ import annotations

import os
import signal
import time

from common.naming import PREFIX

from . import cgroups, state


def _kill(pid: int | None, start: int | None) -> bool:
    if pid and state.alive(pid, start):
        try:
            os.kill(pid, signal.SIGKILL)
            return True
        except ProcessLookupError:
            pass
    return False


def remove_container(cid: str, rec: dict) -> list[str]:
    """Kill and remove everything a state record names (sweep and `delete`)."""
    removed = []
    if _kill(rec.get("pid"), rec.get("pid_start")):
        removed.append(f"process {rec['pid']} of {cid}")
    for d in rec.get("cgroups") or []:
        if os.path.isdir(d):
            cgroups.kill_all([d], timeout=2.0)
            cgroups.Backend().remove([d])
            removed.append(f"cgroup {d}")
    if rec.get("net"):
        from . import network
        removed.extend(network.remove_record(rec["net"]))
    state.remove(cid)
    removed.append(f"state {cid}")
    return removed


def sweep() -> list[str]:
    removed: list[str] = []
    claimed: set[str] = set()
    claimed_netns: set[str] = set()
    for cid in state.all_ids():
        rec = state.read(cid)
        if rec is None:
            continue
        if rec.get("corrupt"):
            # half-written by a live spawn, or left by one killed mid-write
            try:
                age = time.time() - os.stat(state.path(cid)).st_mtime
            except FileNotFoundError:
                continue
            if age < 60:
                claimed.add(cid)
                continue
        elif state.alive(rec.get("owner"), rec.get("owner_start")):
            claimed.add(cid)
            if rec.get("net"):
                claimed_netns.add(rec["net"]["netns"])
            continue
        removed.extend(remove_container(cid, rec))
    removed.extend(_sweep_cgroups(claimed))
    for tmp in state.stale_tmp():
        tmp.unlink(missing_ok=True)
        removed.append(f"state {tmp.name}")
    from . import network
    removed.extend(network.sweep_netns(claimed_netns))
    return removed


def _supervised(path: str) -> bool:
    """A cgroup with no state file here may still be live: a container started
    with another --root keeps its state there.  It is live while one of its
    processes has a living parent outside it (the runtime supervising it, or
    the caller its init was cloned under); a dead supervisor's init has been
    killed by its parent-death signal or reparented to init."""
    pids: set[int] = set()
    for root, _dirs, _files in os.walk(path):
        try:
            with open(os.path.join(root, "cgroup.procs")) as f:
                pids.update(int(x) for x in f.read().split())
        except (FileNotFoundError, ValueError):
            continue
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                ppid = next(int(ln.split()[1]) for ln in f if ln.startswith("PPid:"))
        except (OSError, StopIteration, ValueError):
            continue
        if ppid > 1 and ppid not in pids and os.path.exists(f"/proc/{ppid}"):
            return True
    return False


def _sweep_cgroups(claimed: set[str]) -> list[str]:
    out = []
    be = cgroups.Backend()  # remove() and pids() work the same on v1 and v2
    for d in cgroups.find_ours(cgroups.all_roots()):
        if os.path.basename(d) != PREFIX:
            continue
        try:
            leaves = os.listdir(d)
        except FileNotFoundError:
            continue  # a concurrent sweep (another cvbench process) removed it first
        for leaf in leaves:
            path = os.path.join(d, leaf)
            if os.path.isdir(path) and leaf not in claimed and not state.path(leaf).exists() \
                    and not _supervised(path):
                try:
                    cgroups.kill_all([path], timeout=2.0)
                    be.remove([path])
                except FileNotFoundError:
                    continue
                out.append(f"cgroup {path}")
        try:
            os.rmdir(d)
            out.append(f"cgroup {d}")
        except OSError:
            pass
    return out
