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
from common.owner import alive  # noqa: F401 - re-exported: state.alive(pid, start)
from common.owner import start_time as starttime  # noqa: F401 - re-exported
from common.paths import state_dir

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


def check_id(cid: str) -> str:
    if not _ID.match(cid or ""):
        raise CvbError("container id", f"{cid!r} is not valid",
                       "use 1-64 characters from A-Z a-z 0-9 _ . + - (starting alphanumeric)")
    return cid


_root: Path | None = None


def set_root(path: str) -> None:
    """The CLI's --root (runc's flag): keep state files there instead."""
    global _root
    _root = Path(os.path.abspath(path))


def root() -> Path:
    return _root if _root is not None else state_dir() / "containers"


def path(cid: str) -> Path:
    return root() / f"{cid}.json"


def fifo(cid: str) -> Path:
    """`create` leaves the init blocked on this FIFO until `start` opens it."""
    return root() / f"{cid}.fifo"


def _tmp(cid: str) -> Path:
    # the writer's pid in the name: a sweep can tell a dead writer's litter
    return root() / f"{cid}.{os.getpid()}.tmp"


def create(cid: str, record: dict) -> dict:
    """Claim the id and write the first state atomically: a complete file is
    link()ed into place (EEXIST if the id is taken), so a writer killed at any
    point leaves either nothing or a whole record, never an empty claim."""
    record = {"id": cid, **record}
    tmp = _tmp(cid)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        root().mkdir(parents=True, exist_ok=True)
        return create(cid, record)
    try:
        os.write(fd, json.dumps(record).encode())
    finally:
        os.close(fd)
    try:
        os.link(tmp, path(cid))
    except FileExistsError:
        raise CvbError(f"container {cid}", "already exists",
                       f"pick another id, or 'python -m runtime delete {cid}'") from None
    finally:
        os.unlink(tmp)
    return record


def write(cid: str, record: dict) -> None:
    tmp = _tmp(cid)
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path(cid))


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


def stale_tmp(max_age: float = 60.0) -> list[Path]:
    """<id>.<pid>.tmp files whose writer died between write and rename/link
    (or that are older than max_age: a writer holds one for microseconds)."""
    import time
    try:
        names = os.listdir(root())
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        if not n.endswith(".tmp"):
            continue
        p = root() / n
        writer = n[:-4].rsplit(".", 1)[-1]
        try:
            old = time.time() - p.stat().st_mtime > max_age
        except FileNotFoundError:
            continue
        if old or not (writer.isdigit() and os.path.exists(f"/proc/{writer}")):
            out.append(p)
    return out


def all_ids() -> list[str]:
    try:
        return sorted(n[:-5] for n in os.listdir(root()) if n.endswith(".json"))
    except FileNotFoundError:
        return []
