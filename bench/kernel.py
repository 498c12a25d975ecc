"""The guest kernel: Debian's cloud kernel, fetched once and cached.

The cloud flavour has the 8250 serial console built in, so the startup and
memory guests boot straight to an initramfs without modules.  Its virtio
drivers are modules, though: the I/O scenarios (disk, network) need
virtio_pci, virtio_blk, virtio_net and virtiofs, so the fetch also keeps those
modules and every module they depend on (read from each .ko's .modinfo, since
the package ships no modules.dep) in ``modules/`` next to vmlinuz; the
I/O initramfs (bench/guest_io.py) carries them, the startup one does not.
The package name is resolved through apt-cache at run time (it changes with
every Debian point release); ``KERNEL=/path/vmlinuz`` overrides the whole
lookup (and then no modules are known: the I/O rows say so).
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
# What the I/O guests load (their dependencies come along): PCI and MMIO
# transports (pc, microvm), the block and net drivers, virtio-fs.
IO_MODULES = ("virtio_pci", "virtio_mmio", "virtio_blk", "virtio_net", "virtiofs")
DEPS_FILE = "deps.txt"    # "<module> <dep>,<dep>" per line, in modules/


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


def _modinfo_depends(ko: Path) -> list[str]:
    """The ``depends=`` field of a module's .modinfo section (what modinfo -F
    depends prints), read from the bytes: no kmod tools needed."""
    m = re.search(rb"\0depends=([^\0]*)", ko.read_bytes())
    return [d for d in (m.group(1).decode().split(",") if m else []) if d]


def _keep_modules(tree: Path, out: Path) -> None:
    """Copy IO_MODULES and their dependency closure from an unpacked package
    into ``out`` with a deps.txt, so a loader can order them without depmod."""
    found = {ko.name[:-3]: ko for ko in tree.glob("lib/modules/*/kernel/**/*.ko")}
    want, deps = list(IO_MODULES), {}
    while want:
        name = want.pop()
        if name in deps:
            continue
        if name not in found:
            raise EnvError("kernel", f"the kernel package has no module {name}.ko",
                           "the I/O guests need a kernel with virtio as modules or built in")
        deps[name] = _modinfo_depends(found[name])
        want += deps[name]
    out.mkdir(parents=True)
    for name in deps:
        shutil.copy2(found[name], out / f"{name}.ko")
    (out / DEPS_FILE).write_text("".join(f"{n} {','.join(d)}\n" for n, d in sorted(deps.items())))


def _download(pkg: str, vmlinuz: bool = True) -> Path:
    """Fetch ``pkg`` and keep its vmlinuz (unless ``vmlinuz`` is False: a cache
    from before modules were kept) and its I/O modules."""
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
        if not vmlinuz:
            staging = dest / "modules.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            _keep_modules(x, staging)
            staging.rename(dest / "modules")  # atomic, as below
            return dest / found[0].name
        staging = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copy2(found[0], staging / found[0].name)
        _keep_modules(x, staging / "modules")
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
        if fetch and not (hit.parent / "modules" / DEPS_FILE).is_file():
            log(f"setup: fetching the I/O modules of {pkg} into {hit.parent / 'modules'}")
            _download(pkg, vmlinuz=False)
        return hit
    if not fetch:
        raise CvbError("kernel", "the guest kernel is not fetched yet", "run 'make setup'")
    log(f"setup: fetching guest kernel {pkg} into {build_dir() / 'kernel'}")
    return _download(pkg)


def modules_dir(kernel: Path) -> Path:
    """The I/O modules kept next to ``kernel`` (the one kernel_path() gave)."""
    d = Path(kernel).parent / "modules"
    if not (d / DEPS_FILE).is_file():
        raise EnvError("kernel", f"no I/O modules next to {kernel}",
                       "run 'make setup' (it keeps virtio modules from the kernel package); "
                       "a KERNEL= override has none")
    return d


def load_order(mods: Path, wanted: list[str]) -> list[str]:
    """``wanted`` and their dependencies, each after what it needs (insmod order)."""
    deps = {}
    for line in (mods / DEPS_FILE).read_text().splitlines():
        name, _, need = line.partition(" ")
        deps[name] = [d for d in need.split(",") if d]
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name not in deps or name in path:
            raise EnvError("kernel", f"module {name} is not kept or its dependencies loop",
                           "re-run 'make setup'")
        for d in deps[name]:
            visit(d, (*path, name))
        order.append(name)
    for w in wanted:
        visit(w, ())
    return order
