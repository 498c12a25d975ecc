"""A minimal writer for the kernel's initramfs format (cpio "newc").

Written here rather than shelling out to cpio(1) so the archive is
reproducible (fixed mtimes and owners, sorted entries: same inputs, same
bytes) and so /dev/console can be included without mknod, i.e. without root.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

_MAGIC = b"070701"


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _entry(name: str, mode: int, data: bytes = b"", ino: int = 0,
           rdev: tuple[int, int] = (0, 0)) -> bytes:
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
    head = _MAGIC + b"".join(b"%08X" % f for f in fields)
    raw = head + name.encode() + b"\0"
    return raw + _pad4(len(raw)) + data + _pad4(len(data))


def write(tree: Path, out: Path, extra_nodes: dict[str, tuple[int, int, int]] | None = None) -> None:
    """Archive ``tree`` into ``out``; ``extra_nodes`` maps path -> (mode, major, minor)."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            entries.append(Path(dirpath, name))
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:
        for ino, path in enumerate(sorted(entries), start=1):
            rel = str(path.relative_to(tree))
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                f.write(_entry(rel, st.st_mode, os.readlink(path).encode(), ino))
            elif stat.S_ISDIR(st.st_mode):
                f.write(_entry(rel, st.st_mode, b"", ino))
            else:
                f.write(_entry(rel, st.st_mode, path.read_bytes(), ino))
        for i, (rel, (mode, major, minor)) in enumerate(sorted((extra_nodes or {}).items())):
            f.write(_entry(rel, mode, b"", len(entries) + 1 + i, (major, minor)))
        f.write(_entry("TRAILER!!!", 0))
    os.replace(tmp, out)


def names(archive: Path) -> dict[str, bytes]:
    """Read back a newc archive: name -> file data (for tests and checks)."""
    data, off, out = archive.read_bytes(), 0, {}
    while off < len(data):
        assert data[off:off + 6] == _MAGIC, f"bad cpio magic at {off}"
        f = [int(data[off + 6 + 8 * i: off + 14 + 8 * i], 16) for i in range(13)]
        filesize, namesize = f[6], f[11]
        start = off + 110
        name = data[start:start + namesize - 1].decode()
        body = start + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            break
        out[name] = data[body:body + filesize]
        off = body + filesize + (-filesize % 4)
    return out
