"""The guest kernel: Debian's cloud kernel, fetched once and cached.

The cloud flavour has the 8250 serial console and virtio built in, so it boots
straight to an initramfs without modules.  The package name is resolved
through apt-cache at run time (it changes with every Debian point release);
``KERNEL=/path/vmlinuz`` overrides the whole lookup.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from common.errors import CvbError, EnvError
from common.paths import build_dir

META_PACKAGE = "linux-image-cloud-amd64"


def _apt(*args: str) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, check=False).stdout
    except FileNotFoundError as e:
        raise EnvError("kernel", f"{args[0]} not found", "this needs a Debian-like host with apt, "
                       "or set KERNEL=/path/to/vmlinuz") from e


def resolve_package() -> str:
    """The current unsigned cloud kernel package, e.g. linux-image-6.1.0-57-cloud-amd64-unsigned."""
    deps = _apt("apt-cache", "depends", META_PACKAGE)
    m = re.search(r"Depends:\s*(linux-image-\S+-cloud-amd64)\b", deps)
    if not m:
        raise EnvError("kernel", f"apt-cache cannot resolve {META_PACKAGE}",
                       "run 'apt-get update' (make setup does), or set KERNEL=/path/to/vmlinuz")
    return m.group(1) + "-unsigned"


def _cached(pkg: str) -> Path | None:
    hits = sorted((build_dir() / "kernel" / pkg).glob("vmlinuz-*"))
    return hits[0] if hits else None


def _download(pkg: str) -> Path:
    dest = build_dir() / "kernel" / pkg
    with tempfile.TemporaryDirectory(prefix="cvbench-kernel-") as tmp:
        os.chmod(tmp, 0o755)  # apt's _apt user must be able to write here
        r = subprocess.run(["apt-get", "download", pkg], cwd=tmp, capture_output=True, text=True)
        debs = list(Path(tmp).glob("*.deb"))
        if r.returncode != 0 or not debs:
            raise EnvError("kernel", f"apt-get download {pkg} failed: {r.stderr.strip()[-200:]}",
                           "check apt sources and network, or set KERNEL=/path/to/vmlinuz")
        x = Path(tmp) / "x"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(x)], check=True)
        found = sorted((x / "boot").glob("vmlinuz-*"))
        if not found:
            raise EnvError("kernel", f"{debs[0].name} holds no boot/vmlinuz-*",
                           "set KERNEL=/path/to/vmlinuz")
        staging = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copy2(found[0], staging / found[0].name)
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)  # atomic: a half-fetched kernel is never "cached"
    return dest / found[0].name


def kernel_path(fetch: bool = True, log=print) -> Path:
    """The guest kernel to boot: ``$KERNEL``, the cached package, or a fresh download."""
    override = os.environ.get("KERNEL")
    if override:
        p = Path(override)
        if not p.is_file():
            raise CvbError("KERNEL", f"{override}: no such file",
                           "point KERNEL at a bzImage/vmlinuz, or unset it to use Debian's cloud kernel")
        return p.resolve()
    try:
        pkg = resolve_package()
    except EnvError:
        # Offline or no apt lists: any kernel fetched before still boots.
        old = sorted((build_dir() / "kernel").glob("*/vmlinuz-*"))
        if old:
            return old[-1]
        raise
    hit = _cached(pkg)
    if hit:
        return hit
    if not fetch:
        raise CvbError("kernel", "the guest kernel is not fetched yet", "run 'make setup'")
    log(f"setup: fetching guest kernel {pkg} into {build_dir() / 'kernel'}")
    return _download(pkg)
