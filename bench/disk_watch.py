"""Hung fio jobs: how long a job may run before it counts as hung, what the
host (and a guest) showed when it did, and the error that lets the disk
scenario retry it once on a fresh instance.

Hangs seen here that are not cvbench's: gVisor 20221219 (ptrace platform) now
and then never finishes an fio job, and a TCG guest's virtio-fs job can stall
with QEMU, virtiofsd and the guest all idle.  A job's limit is sized from its
own expected length (start, window, layout, files), not one flat figure, so a
hang costs seconds, not minutes; the row then says "retried after a hang" with
the evidence (scenarios/disk.py), and a second hang is a failed row.
"""
from __future__ import annotations

import os
import time
from collections import Counter

from common.errors import CvbError
from common.procs import cpu_seconds, stat_fields

# Rough costs per speed class, measured here (2 shared cores, load ~1):
# a container's fio starts in <1 s, runsc's sandbox in 1-3 s, a TCG guest's fio
# in ~1.5 s; a metadata op takes ~20 us on the host, ~1 ms in gVisor and 5-12 ms
# in a TCG guest over virtio-fs; laying out data runs at >=100 MB/s natively
# and ~25 MB/s in gVisor or a guest.  The limit is 3x that plus 15 s of slack.
START_S = {"native": 2.0, "runsc": 4.0, "vm": 3.0}
PER_FILE_S = {"native": 0.001, "runsc": 0.004, "vm": 0.015}
LAYOUT_MIB_S = {"native": 50.0, "runsc": 20.0, "vm": 20.0}
FACTOR, SLACK_S = 3.0, 15.0


def speed_class(backend) -> str:
    if backend.kind == "vm":
        return "vm"
    return "runsc" if backend.name == "runsc" else "native"


def expected_s(speed: str, window, section: str, lays_out: bool) -> float:
    """How long one fio run of ``section`` should take, start to exit.
    ``lays_out``: it writes its data files first (the layout run, or a
    backing whose files vanish with each container: tmpfs, gVisor's overlay)."""
    t = START_S[speed]
    if section.startswith("meta-"):
        return t + window.nfiles * PER_FILE_S[speed]
    if lays_out:
        t += window.size_mib / LAYOUT_MIB_S[speed]
    return t + window.ramp_s + window.runtime_s


def limit_s(expected: float) -> float:
    return FACTOR * expected + SLACK_S


def describe() -> str:
    return (f"a job hangs when it runs longer than {FACTOR:g}x its expected length + {SLACK_S:g} s "
            "(start + ramp + runtime + layout or files, per speed class: "
            + ", ".join(f"{k} start {START_S[k]:g} s, {PER_FILE_S[k] * 1e3:g} ms/file, "
                        f"{LAYOUT_MIB_S[k]:g} MiB/s" for k in START_S)
            + "); a hung job is retried once on a fresh instance, a second hang fails the row")


class Hang(CvbError):
    """A job that overran its limit; ``evidence`` is one line of what the
    host (and the guest) showed at that moment."""

    def __init__(self, what: str, limit: float, expected: float, evidence: str):
        self.evidence = evidence
        super().__init__("disk", f"{what}: hung: no result within its {limit:.0f} s limit "
                         f"(expected ~{expected:.0f} s); {evidence}", "a component stalled; see the evidence",
                         status=1)


def _task_states(pid: int) -> Counter:
    """state:wchan of every thread of ``pid``."""
    c: Counter = Counter()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return c
    for tid in tids:
        fields = stat_fields(f"{pid}/task/{tid}")  # a thread's stat reads as a process's
        try:
            with open(f"/proc/{pid}/task/{tid}/wchan") as f:
                wchan = f.read().strip() or "-"
        except OSError:
            continue
        if fields:
            c[f"{fields[0].decode()}:{wchan.split('.')[0]}"] += 1
    return c


def host_evidence(pids: list[int], seconds: float = 1.0) -> str:
    """Per process: its CPU over ``seconds`` (a hang that spins differs from
    one that sleeps) and its threads' state:wchan counts."""
    pids = [p for p in pids if stat_fields(p)]
    c0 = {p: cpu_seconds(p) for p in pids}
    time.sleep(seconds)
    parts = []
    for p in pids:
        try:
            with open(f"/proc/{p}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        states = ", ".join(f"{k} x{n}" for k, n in _task_states(p).most_common(4))
        parts.append(f"{comm}[{p}] {cpu_seconds(p) - c0[p]:.2f} s CPU in {seconds:g} s, threads {states}")
    return "; ".join(parts) if parts else "no host process left"
