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
import shutil
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
    return root() / cid


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
    """Claim the id (mkdir is atomic) and write the first state."""
    d = path(cid)
    root().mkdir(parents=True, exist_ok=True)
    try:
        d.mkdir()
    except FileExistsError:
        raise CvbError(f"container {cid}", "already exists",
                       f"pick another id, or 'python -m runtime delete {cid}'") from None
    record = {"id": cid, **record}
    write(cid, record)
    return record


def write(cid: str, record: dict) -> None:
    d = path(cid)
    tmp = d / "state.json.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, d / "state.json")


def read(cid: str) -> dict | None:
    try:
        return json.loads((path(cid) / "state.json").read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        return {"id": cid, "corrupt": True}


def remove(cid: str) -> None:
    shutil.rmtree(path(cid), ignore_errors=True)


def all_ids() -> list[str]:
    try:
        return sorted(p.name for p in root().iterdir() if p.is_dir())
    except FileNotFoundError:
        return []
