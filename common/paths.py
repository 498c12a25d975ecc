"""Where cvbench keeps built artefacts and results, relative to the checkout.

``CVBENCH_BUILD`` and ``CVBENCH_RESULTS`` override the defaults so tests and CI
can use scratch folders."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_dir() -> Path:
    return Path(os.environ.get("CVBENCH_BUILD", ROOT / "build"))


def results_dir() -> Path:
    return Path(os.environ.get("CVBENCH_RESULTS", ROOT / "results"))


def state_dir() -> Path:
    """Runtime state (container state files, consoles); a tmpfs on most hosts."""
    return Path(os.environ.get("CVBENCH_STATE", "/run/cvbench"))
