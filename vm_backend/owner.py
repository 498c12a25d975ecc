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
from common.owner import alive, me, start_time  # noqa: F401 - re-exported for vm_backend


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
