"""Versions of the VMM stack, for every result's metadata (asked once per process)."""
from __future__ import annotations

import functools
import re
import shutil
import subprocess

from .conn import open_conn


def _dotted(n: int) -> str:
    return f"{n // 1000000}.{n // 1000 % 1000}.{n % 1000}"


@functools.cache
def libvirt_versions(uri: str) -> dict:
    conn = open_conn(uri)
    try:
        return {"libvirt": _dotted(conn.getLibVersion()), "qemu": _dotted(conn.getVersion()),
                "hypervisor_host": conn.getHostname()}
    finally:
        conn.close()


@functools.cache
def qemu_version(binary: str) -> str:
    path = shutil.which(binary) or binary
    out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else "unknown"
