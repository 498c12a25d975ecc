"""Every kernel or libvirt object cvbench creates is named with this prefix, so a
sweep (and the before-stop leak check) can find what a killed run left behind."""
from __future__ import annotations

import os

PREFIX = "cvbench"


def unique(kind: str = "") -> str:
    """A short unique name such as ``cvbench-ctr-1a2b3c4d``.

    Kept short because veth and netns names share IFNAMSIZ (15 bytes)."""
    tag = os.urandom(4).hex()  # secrets.token_hex(4) without importing hmac/hashlib
    return f"{PREFIX}-{kind}-{tag}" if kind else f"{PREFIX}-{tag}"


def is_ours(name: str) -> bool:
    return os.path.basename(name).lower().startswith(PREFIX)
