"""A memory cgroup of its own for each raw QEMU process.

libvirt puts every domain's QEMU into a machine cgroup, so the host's memory
controller says what the domain costs.  Raw QEMU gets the same: a
``cvbench-qemu-<ownerpid>-<hex>`` memory cgroup (named like the guest, so
sweep() can remove a dead owner's), made before the spawn clock starts and
joined by the QEMU child before it execs, so every page it ever touches is
charged there.  v1 (``/sys/fs/cgroup/memory``) or v2 (a memory-enabled
unified root), detected at run time; None where neither can be written.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from . import owner
from .owner import alive, pid_from_name

V1 = Path("/sys/fs/cgroup/memory")
V2 = Path("/sys/fs/cgroup")


def memory_root() -> Path | None:
    ctl = V2 / "cgroup.controllers"
    if ctl.exists():
        try:
            return V2 if "memory" in ctl.read_text().split() else None
        except OSError:
            return None
    return V1 if (V1 / "cgroup.procs").exists() else None


def create(name: str) -> str | None:
    root = memory_root()
    if root is None or not name.startswith(owner.PREFIX):
        return None
    path = root / name
    try:
        path.mkdir()
    except FileExistsError:
        pass
    except OSError:
        return None
    return str(path)


def join_self(path: str) -> None:
    """Move the calling process (the QEMU child, before exec) into ``path``."""
    fd = os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)


def move(path: str, pid: int) -> None:
    """Move an already running process (a spawn outside the main thread, where
    no pre-exec hook runs); v1 moves its pages along when asked to."""
    try:
        Path(path, "memory.move_charge_at_immigrate").write_text("3")
    except OSError:
        pass
    try:
        Path(path, "cgroup.procs").write_text(str(pid))
    except OSError:
        pass


def charged(path: str | None) -> int | None:
    if not path:
        return None
    for f in ("memory.usage_in_bytes", "memory.current"):
        try:
            return int(Path(path, f).read_text())
        except (OSError, ValueError):
            continue
    return None


def remove(path: str | None, wait_s: float = 2.0) -> bool:
    """rmdir once the last task has left (the kernel drops exited tasks lazily)."""
    if not path:
        return True
    end = time.monotonic() + wait_s
    while True:
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() > end:
                return False
            time.sleep(0.02)


def sweep() -> list[str]:
    """Raw-QEMU cgroups whose owner is dead (and that hold no process any more)."""
    root = memory_root()
    removed = []
    if root is None:
        return removed
    for d in root.glob(f"{owner.PREFIX}-qemu-*"):
        pid = pid_from_name(d.name)
        if d.is_dir() and pid is not None and not alive(pid) and remove(str(d), 0.5):
            removed.append(f"cgroup {d}")
    return removed


def of_pid(pid: int) -> list[str]:
    """The memory cgroup folder a process is in (libvirt's machine cgroup for a
    libvirt guest, ours for raw QEMU), from /proc/PID/cgroup."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    for ln in lines:
        _, ctrls, path = ln.split(":", 2)
        if "memory" in ctrls.split(",") and V1.is_dir():
            return [str(V1) + path] if path != "/" else []     # the root is the whole host
    for ln in lines:
        if ln.startswith("0::") and memory_root() == V2 and ln[3:] != "/":
            return [str(V2) + ln[3:]]
    return []
