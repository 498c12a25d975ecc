"""The shared guest image: one rootfs tree (busybox-static + the probe), emitted
as an OCI bundle for the container runtimes and as an initramfs for VMs.

The bundle's config.json is bench.bundle.default_config(): runc spec, the
cgroup namespace and Podman's default seccomp profile, converted at build.

Every backend runs the same probe bytes from the same tree; that identity is
what makes the comparison fair, so the build is content-addressed: the output
folder is named by a hash of every input, and nothing is rebuilt unless an
input changed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from common import manifest
from common.errors import CvbError, EnvError
from common.paths import ROOT, build_dir

from . import bundle, cpio

PROBE_SRC = ROOT / "scenarios" / "probe" / "probe.c"
BUSYBOX = Path("/bin/busybox")
CC_FLAGS = ["-O2", "-static", "-Wall", "-Wextra", "-Werror"]

# /init for VMs: mount the kernel filesystems, run the probe with the words after
# " -- " on the kernel command line, then power off (reboot -f is the fallback for
# machines without ACPI; libvirt maps it to destroy with on_reboot).
INIT = """#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
read -r cmdline < /proc/cmdline
case "$cmdline" in
  *" -- "*) args=${cmdline#* -- } ;;
  *) args=ready ;;
esac
/probe $args
poweroff -f
reboot -f
"""

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
GROUP = "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"


@dataclass
class Image:
    hash: str
    bundle: str
    rootfs: str
    initramfs: str
    probe: str
    probe_sha256: str
    busybox: str
    kernel: str = ""



def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_busybox() -> None:
    if not BUSYBOX.exists():
        raise EnvError("image", f"{BUSYBOX} not found", "apt-get install busybox-static (make setup does)")
    if b"ld-linux" in BUSYBOX.read_bytes()[:65536]:
        raise EnvError("image", f"{BUSYBOX} is dynamically linked and would not run in the rootfs",
                       "apt-get install busybox-static")


def input_hash() -> str:
    h = hashlib.sha256()
    for part in (PROBE_SRC.read_bytes(), BUSYBOX.read_bytes(), INIT.encode(),
                 Path(__file__).read_bytes(), Path(cpio.__file__).read_bytes(),
                 Path(bundle.__file__).read_bytes(), bundle.source_digest(),
                 json.dumps(bundle.default_config(), sort_keys=True).encode(), " ".join(CC_FLAGS).encode()):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def _build_probe(out: Path) -> None:
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise EnvError("probe", "no C compiler", "apt-get install gcc (make setup does)")
    r = subprocess.run([cc, *CC_FLAGS, "-o", str(out), str(PROBE_SRC)], capture_output=True, text=True)
    if r.returncode != 0:
        raise CvbError("probe", f"{PROBE_SRC.name} does not compile:\n{r.stderr}",
                       "fix the C source; static linking needs libc6-dev")


def _populate(rootfs: Path, probe: Path) -> None:
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "etc",
              "root", "run", "mnt"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, rootfs / "bin/busybox")
    applets = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True,
                             text=True, check=True).stdout.split()
    for applet in applets:
        if os.path.basename(applet) == "busybox":
            continue  # a link named busybox would replace the binary itself
        link = rootfs / applet
        if link.exists() or link.is_symlink():
            continue
        # Relative links: absolute ones would point at the host's busybox.
        link.symlink_to(os.path.relpath(rootfs / "bin/busybox", link.parent))
    shutil.copy2(probe, rootfs / "probe")
    os.chmod(rootfs / "probe", 0o755)
    (rootfs / "init").write_text(INIT)
    os.chmod(rootfs / "init", 0o755)
    (rootfs / "etc/passwd").write_text(PASSWD)
    (rootfs / "etc/group").write_text(GROUP)
    (rootfs / "etc/hostname").write_text("cvbench\n")


def build(log=print) -> Image:
    """Build (or reuse) the image for the current inputs and record it as current."""
    _check_busybox()
    if not PROBE_SRC.exists():
        raise CvbError("image", f"{PROBE_SRC} missing", "restore it from git")
    digest = input_hash()
    out = build_dir() / "image" / digest
    if not (out / "done").exists():
        log(f"image: building {out}")
        staging = out.with_name(digest + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        _build_probe(staging / "probe")
        rootfs = staging / "bundle" / "rootfs"
        _populate(rootfs, staging / "probe")
        (staging / "bundle" / "config.json").write_text(
            json.dumps(bundle.default_config(["/probe", "ready"]), indent=2) + "\n")
        cpio.write(rootfs, staging / "initramfs.cpio",
                   {"dev/console": (stat.S_IFCHR | 0o600, 5, 1)})
        (staging / "done").write_text(digest + "\n")
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    img = Image(hash=digest, bundle=str(out / "bundle"), rootfs=str(out / "bundle" / "rootfs"),
                initramfs=str(out / "initramfs.cpio"), probe=str(out / "probe"),
                probe_sha256=_sha256(out / "probe"), busybox=str(BUSYBOX), kernel=_previous_kernel())
    _write_manifest(img)
    return img


def _previous_kernel() -> str:
    """The kernel the current manifest names, so a rebuild never blanks it for
    readers that load the manifest concurrently (tests, worker processes)."""
    try:
        k = json.loads(manifest.path().read_text()).get("kernel", "")
    except (OSError, ValueError):
        return ""
    return k if k and Path(k).is_file() else ""


def _write_manifest(img: Image) -> None:
    m = manifest.path()
    m.parent.mkdir(parents=True, exist_ok=True)
    tmp = m.with_name(m.name + ".tmp")
    tmp.write_text(json.dumps(asdict(img), indent=2) + "\n")
    os.replace(tmp, m)


def attach_kernel(img: Image, kernel: Path) -> Image:
    img.kernel = str(kernel)
    _write_manifest(img)
    return img


def load() -> Image:
    """The image built by the last ``make setup``; a clear error if there is none."""
    return Image(**manifest.read())
