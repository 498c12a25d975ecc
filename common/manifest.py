"""The image manifest, ``build/image/current.json``: which bundle, initramfs
and kernel the last ``make setup`` built.

bench/image.py writes it; anything that only needs the paths (the VM CLI, the
A/B experiments) reads it here, so reading a file never pulls in the harness.
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import EnvError
from .paths import build_dir


def path() -> Path:
    return build_dir() / "image" / "current.json"


def read() -> dict:
    """The manifest as a dict, checked for the files a boot or a run needs."""
    m = path()
    try:
        rec = json.loads(m.read_text())
    except FileNotFoundError:
        raise EnvError("image", f"no image at {m}", "run 'make setup' (or python -m bench image)") from None
    except ValueError as e:
        raise EnvError("image", f"{m} is not valid JSON ({e})", "run 'make setup' to rewrite it") from None
    for key in ("rootfs", "initramfs"):
        if not Path(rec.get(key, "")).exists():
            raise EnvError("image", f"{rec.get(key) or key} is missing", "run 'make setup' to rebuild the image")
    return rec


def kernel_and_initramfs() -> tuple[str, str]:
    rec = read()
    if not rec.get("kernel") or not Path(rec["kernel"]).is_file():
        raise EnvError("image", "no guest kernel recorded in the image manifest",
                       "run 'make setup' (or set KERNEL=/path/vmlinuz and run python -m bench image)")
    return rec["kernel"], rec["initramfs"]
