"""fio for the disk scenario: the one binary, its job files, its JSON.

Debian's ``/usr/bin/fio`` needs about 80 MB of shared libraries (ceph, gluster,
rdma engines), so it is not put into the shared image (whose initramfs a 128
MiB guest unpacks into RAM): it goes into a layer of its own, the image rootfs
copied plus fio, every library ``ldd`` names and the job files, built once per
input and content-addressed like the image.  Every container runs that same
fio from that rootfs; the host runs the very same file.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from common.errors import CvbError, EnvError
from common.paths import ROOT, build_dir

JOBS_DIR = ROOT / "scenarios" / "fio"
FIO = Path("/usr/bin/fio")
IN_ROOT_JOBS = "/cvbench-fio"   # where the job files sit inside the layer
DATA = "/data"                  # the backing's mount point inside a container

# profile file -> its sections, each one fio run (caches dropped before each)
PROFILES = {
    "firecracker": ["fc-randread", "fc-randwrite"],
    "kata": ["kata-seqread-4k", "kata-randread-64k"],
    "metadata": ["meta-create", "meta-stat", "meta-unlink"],
}
DATA_PROFILES = ("firecracker", "kata")   # these need the data file laid out first
LAYOUT = ("firecracker", "fc-randread")    # the profile and section whose create_only run lays it out


@dataclass
class Window:
    """How long and how big each job is (the mode decides)."""
    ramp_s: int
    runtime_s: int
    size_mib: int        # the data file: firecracker's jobs use all of it, kata's four jobs a quarter each
    nfiles: int          # metadata profile

    def env(self, directory: str, direct: bool) -> dict[str, str]:
        return {"CVB_DIR": directory, "CVB_SIZE": f"{self.size_mib}m",
                "CVB_JOBSIZE": f"{max(self.size_mib // 4, 1)}m", "CVB_DIRECT": "1" if direct else "0",
                "CVB_RAMP": str(self.ramp_s), "CVB_RUNTIME": str(self.runtime_s),
                "CVB_NFILES": str(self.nfiles)}

    def bytes_needed(self) -> int:
        """Peak space one backing takes: the data file plus the small files."""
        return self.size_mib * 2**20 + self.nfiles * 8192


# Sized so a default run of the 12 host/container backings and the 6 VM
# backings stays under 15 minutes and FAST=1 under 4 (the budget).
# Before the VM rows, FAST=1 (ramp 1 + 2 s, 3,000 files) took 3 min 51 s for
# the 12 container backings alone, so FAST=1 is now a smoke run (no ramp, 1 s);
# rigorous is for a quiet host.
# A default run with ramp 2 + 4 s took 12 min 53 s (load 1.0-1.4, every row ok;
# the 12 container rows 34-40 s each, gofer 69-81 s): the ramp is now 1 s, as the
# guests' (fio's start transient on O_DIRECT is milliseconds), the 4 s measured
# window is kept.
WINDOWS = {"quick": Window(0, 1, 16, 500), "fast": Window(0, 1, 32, 1_000),
           "default": Window(1, 4, 512, 10_000), "rigorous": Window(5, 30, 1024, 10_000)}
# A guest under TCG runs fio emulated: one VM backing took 22 s with the quick
# window and 56 s with ramp 1 + 2 s and 3,000 files (libvirt virtio-fs, load
# ~1.5), so the VM rows get a smaller window in default and rigorous runs; the
# chart says which window each kind of row ran.  A default run with ramp 2 + 5 s
# for containers and 1 + 3 s for VMs took 15 min 5 s here (load 1.4-1.8; the
# 6 VM backings 40-60 s each), hence 2 + 4 s and 1 + 2 s.  The metadata jobs
# are what a guest spends longest on: create + stat + unlink of 2,000 files took
# 31-46 s per microvm virtio-fs backing (5-12 ms per op under TCG), of 1,000
# files under FAST=1 16 s per virtio-fs backing, so guests get 1,000 and 300
# files; at those rates that is still >=3 s of ops per section, hundreds of ops.
VM_WINDOWS = {"quick": WINDOWS["quick"], "fast": Window(0, 1, 32, 300),
              "default": Window(1, 2, 64, 1_000), "rigorous": WINDOWS["default"]}


def fio_path() -> Path:
    if not FIO.is_file():
        raise EnvError("fio", f"{FIO} not found", "apt-get install fio (make setup does)")
    return FIO


def _libraries(binary: Path) -> list[str]:
    r = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    if r.returncode != 0:
        raise EnvError("fio", f"ldd {binary} failed: {r.stderr.strip()}", "reinstall fio")
    libs = re.findall(r"(/\S+) \(0x", r.stdout)
    missing = re.findall(r"(\S+) => not found", r.stdout)
    if missing:
        raise EnvError("fio", f"libraries not found: {', '.join(missing)}", "apt-get install --reinstall fio")
    return sorted(set(libs))


def layer_hash(image_hash: str) -> str:
    h = hashlib.sha256(image_hash.encode())
    h.update(hashlib.sha256(fio_path().read_bytes()).digest())
    for lib in _libraries(FIO):
        st = os.stat(lib)
        h.update(f"{lib}:{st.st_size}:{int(st.st_mtime)}".encode())
    for f in sorted(JOBS_DIR.glob("*.fio")):
        h.update(f.name.encode() + hashlib.sha256(f.read_bytes()).digest())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:16]


def _copy_into(root: Path, path: str) -> None:
    """Copy ``path`` (resolving links) to the same path under ``root``, and the
    link itself too, so the loader finds the soname it asks for."""
    dest = root / path.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    real = os.path.realpath(path)
    if real != path:
        _copy_into(root, real)
        if not dest.exists() and not dest.is_symlink():
            dest.symlink_to(os.path.relpath(root / real.lstrip("/"), dest.parent))
        return
    if not dest.exists():
        shutil.copy2(path, dest)


def build_layer(image) -> Path:
    """The fio rootfs for ``image`` (bench.image.Image): built once, reused."""
    out = build_dir() / "disk" / layer_hash(image.hash)
    if (out / "done").exists():
        return out / "rootfs"
    staging = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    root = staging / "rootfs"
    try:
        shutil.copytree(image.rootfs, root, symlinks=True)
        for d in ("lib64", "lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", DATA.lstrip("/"),
                  IN_ROOT_JOBS.lstrip("/")):
            (root / d).mkdir(parents=True, exist_ok=True)
        _copy_into(root, str(fio_path()))
        for lib in _libraries(FIO):
            _copy_into(root, lib)
        for f in JOBS_DIR.glob("*.fio"):
            shutil.copy2(f, root / IN_ROOT_JOBS.lstrip("/") / f.name)
        (staging / "done").write_text("ok\n")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        staging.rename(out)   # atomic: ``out`` only ever exists complete
    except OSError:           # a concurrent build got there first: use theirs
        shutil.rmtree(staging, ignore_errors=True)
    return out / "rootfs"


def version() -> str:
    r = subprocess.run([str(fio_path()), "--version"], capture_output=True, text=True)
    return r.stdout.strip()


def argv(fio: str, jobs_dir: str, profile: str, section: str, create_only: bool = False) -> list[str]:
    return [fio, "--output-format=json", f"--section={section}",
            *(["--create_only=1"] if create_only else []), f"{jobs_dir}/{profile}.fio"]


# ---- the one parser of fio's JSON -------------------------------------------------

PCT = {"clat_p50": "50.000000", "clat_p99": "99.000000", "clat_p999": "99.900000"}


def parse(text: str, section: str) -> dict:
    """fio --output-format=json -> iops, bw (bytes/s), io bytes and clat
    percentiles (seconds, fio's own histogram percentiles) of ``section``,
    read and write summed (one of them is zero for every profile here)."""
    start = text.find("{")
    try:
        doc = json.loads(text[start:]) if start >= 0 else None
    except ValueError as e:
        raise CvbError("fio", f"output of {section} is not JSON ({e})", "see fio's output") from None
    if not doc or not doc.get("jobs"):
        raise CvbError("fio", f"no jobs in the output of {section}", "see fio's output")
    job = next((j for j in doc["jobs"] if j.get("jobname") == section), doc["jobs"][0])
    if job.get("error"):
        raise CvbError("fio", f"{section}: fio error {job['error']}", "see fio's output", status=1)
    sides = [job[d] for d in ("read", "write") if job.get(d, {}).get("total_ios", 0) > 0]
    if not sides:
        raise CvbError("fio", f"{section}: no I/O completed", "the backing did not work", status=1)
    side = max(sides, key=lambda s: s["total_ios"])
    pct = (side.get("clat_ns") or {}).get("percentile") or {}
    out = {"iops": sum(s["iops"] for s in sides), "bw": float(sum(s["bw_bytes"] for s in sides)),
           "io_bytes": sum(s["io_bytes"] for s in sides), "total_ios": sum(s["total_ios"] for s in sides),
           "runtime_ms": max(s["runtime"] for s in sides), "usr_cpu": job.get("usr_cpu"),
           "sys_cpu": job.get("sys_cpu"), "fio_version": doc.get("fio version", "")}
    for k, key in PCT.items():
        if key not in pct:
            raise CvbError("fio", f"{section}: percentile {key} missing from clat_ns",
                           "the job file must keep percentile_list=50:99:99.9", status=1)
        out[k] = pct[key] / 1e9
    return out
