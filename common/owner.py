"""Who owns an object cvbench made: a process's pid and its start time.

Several cvbench processes can run at once, so a sweep removes only what a dead
process left.  Pids are reused, so the start time from /proc/PID/stat (clock
ticks since boot) goes along with the pid wherever an owner is recorded.
"""
from __future__ import annotations

import os

from .procs import stat_fields


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat; None if there is no such process or it is a
    zombie (a zombie has done all it will do: for ownership it is dead)."""
    fields = stat_fields(pid)
    if not fields or fields[0] == b"Z":
        return None
    return int(fields[19])


def alive(pid: int | None, start: int | None = None) -> bool:
    """True if ``pid`` runs and, when ``start`` is known (non-zero), is the same
    process that started then rather than a later one that reused the pid."""
    if not pid:
        return False
    st = start_time(pid)
    return st is not None and (not start or st == start)


def me() -> tuple[int, int]:
    pid = os.getpid()
    return pid, start_time(pid) or 0
