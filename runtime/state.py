"""Container state under /run/cvbench/<id>/: what exists, who owns it.

Each state file records the owner (the process that must clean up: the
spawn() caller, or the container itself for a detached `create`) with its
start time, so `sweep` can tell a dead owner from a recycled pid and never
touches what a live cvbench process is still using.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from common.errors import CvbError
from common.paths import state_dir

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


def check_id(cid: str) -> str:
    if not _ID.match(cid or ""):
        raise CvbError("container id", f"{cid!r} is not valid",
                       "use 1-64 characters from A-Z a-z 0-9 _ . + - (starting alphanumeric)")
    return cid


def root() -> Path:
    return state_dir() / "containers"


def path(cid: str) -> Path:
    return root() / f"{cid}.json"


def fifo(cid: str) -> Path:
    """`create` leaves the init blocked on this FIFO until `start` opens it."""
    return root() / f"{cid}.fifo"


def starttime(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a pid, None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data[data.rfind(b")") + 2:].split()
    if fields[0] == b"Z":  # a zombie has done all it will do
        return None
    return int(fields[19])


def alive(pid: int | None, start: int | None) -> bool:
    return bool(pid) and starttime(pid) == start


def create(cid: str, record: dict) -> dict:
    """Claim the id (O_EXCL is atomic) and write the first state: one file
    write, because this sits on the measured start path."""
    record = {"id": cid, **record}
    data = json.dumps(record).encode()
    try:
        fd = os.open(path(cid), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        root().mkdir(parents=True, exist_ok=True)
        return create(cid, record)
    except FileExistsError:
        raise CvbError(f"container {cid}", "already exists",
                       f"pick another id, or 'python -m runtime delete {cid}'") from None
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return record


def write(cid: str, record: dict) -> None:
    p = path(cid)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, p)


def read(cid: str) -> dict | None:
    try:
        return json.loads(path(cid).read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        return {"id": cid, "corrupt": True}


def remove(cid: str) -> None:
    for p in (fifo(cid), path(cid)):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def all_ids() -> list[str]:
    try:
        return sorted(n[:-5] for n in os.listdir(root()) if n.endswith(".json"))
    except FileNotFoundError:
        return []
