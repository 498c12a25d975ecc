"""Who owns a VM: the pid and start time of the cvbench process that made it.

Several cvbench processes (and other engineers' tests) run at once, so a sweep
may only remove what a *dead* process left.  A pid alone is not enough (pids
are reused), so the owner's start time from /proc/PID/stat goes along with it.
"""
from __future__ import annotations

import os
import secrets
import socket

from common.naming import PREFIX


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), None if no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parens: split after the last ')'.
    return int(data[data.rindex(b")") + 2:].split()[19])


def me() -> tuple[int, int]:
    pid = os.getpid()
    return pid, start_time(pid) or 0


def alive(pid: int, start: int = 0) -> bool:
    """True if ``pid`` runs and is the same process that started at ``start`` (0: unknown)."""
    st = start_time(pid)
    if st is None:
        return False
    return start == 0 or st == start


def hostname() -> str:
    return socket.gethostname()


def vm_name(kind: str) -> str:
    """``cvbench-<kind>-<ownerpid>-<hex>``: the owner pid is in the name too, so
    leftovers can be matched to their owner even without metadata."""
    return f"{PREFIX}-{kind}-{os.getpid()}-{secrets.token_hex(3)}"


def pid_from_name(name: str) -> int | None:
    parts = name.split("-")
    if len(parts) >= 4 and parts[0] == PREFIX and parts[2].isdigit():
        return int(parts[2])
    return None
