"""The disk scenario's backings and how fio runs on each: host, container and
VM (the VM side is bench/disk_vm.py: virtio-blk and virtio-fs in a guest).

Everything a run writes lives in one folder on the host's disk,
``<CVBENCH_DISK_STATE or /var/tmp/cvbench-disk>/cvbench-d<pid>-<start>``: the
owner's pid and start time let a sweep remove a killed run's folder (and
anything mounted under it) while a live run's stays.  The overlay and tmpfs
backings are mounts the container runtime makes inside the container's own
mount namespace (OCI ``mounts``), so they die with the container; fio
processes on the host carry ``CVBENCH_OWNER`` so bench.sweep kills orphans.

Honest caching: dirty pages are synced and the host's page cache dropped
before every fio job (containers share the host kernel, so that is their cache
too); the profiles ask for O_DIRECT, and each backing records its cache mode.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import owner
from common.errors import CvbError, EnvError
from common.naming import PREFIX
from common.paths import ROOT, state_dir
from common.procs import descendants

from . import disk_fio, disk_watch

STATE_ENV = "CVBENCH_DISK_STATE"


@dataclass
class Backing:
    name: str        # dir | bind | overlay | tmpfs | gofer-* | virtio-blk | virtio-fs
    cache: str       # what caches the data path (recorded, shown on the chart)
    direct: bool     # O_DIRECT as the profile asks
    inflated: bool = False   # a VM result the host page cache can inflate (flagged on the chart)


HOST_BACKINGS = [Backing("dir", "host page cache, O_DIRECT bypasses it; dropped before each job", True)]
CONTAINER_BACKINGS = [
    Backing("bind", "host page cache (bind mount of a host directory), O_DIRECT bypasses it; "
            "dropped before each job", True),
    Backing("overlay", "overlayfs over the image rootfs, upper dir on the host disk; O_DIRECT passed "
            "to the upper fs; dropped before each job", True),
    Backing("tmpfs", "tmpfs: the data is the page cache (RAM); O_DIRECT accepted, nothing to bypass", True),
]
# gVisor: fio's files in the container root, which the gofer serves from a
# host directory (a hard-link copy of the fio layer, so the shared layer is
# never written), and the same root under runsc's own memory-backed overlay.
RUNSC_BACKINGS = [
    Backing("gofer-root", "gVisor gofer (--overlay2=none, file-access=exclusive: the Sentry caches file "
            "data) to a host directory; host page cache dropped before each job", True),
    Backing("gofer-overlay", "gVisor --overlay2=root:memory: writes land in the Sentry's memory, reads of "
            "the lower layer through the gofer; not the host page cache", True),
]
RUNSC_FLAGS = {"gofer-root": ["--overlay2=none"], "gofer-overlay": ["--overlay2=root:memory"]}


def vm_backings(backend: str) -> list[Backing]:
    from . import disk_vm
    return [Backing(n, disk_vm.cache_mode(backend, n), True, disk_vm.INFLATED[n]) for n in disk_vm.CACHE]


def state_root() -> Path:
    return Path(os.environ.get(STATE_ENV, "/var/tmp/cvbench-disk"))


def run_dir() -> Path:
    d = state_root() / f"{PREFIX}-d{os.getpid()}-{owner.start_time(os.getpid()) or 0}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def check_space(window: disk_fio.Window) -> dict:
    """Exit 2 before measuring when one backing's files would not fit."""
    root = state_root()
    root.mkdir(parents=True, exist_ok=True)
    need = window.bytes_needed() + 256 * 2**20
    free = shutil.disk_usage(root).free
    mem = _mem_available()
    if free < need:
        raise EnvError("disk", f"{root} has {free // 2**20} MiB free, a run needs {need // 2**20} MiB",
                       f"free space there or point {STATE_ENV} at a larger disk")
    if mem is not None and mem < need:
        raise EnvError("disk", f"the tmpfs backing needs {need // 2**20} MiB of RAM, "
                       f"{mem // 2**20} MiB is available", "use FAST=1 or free memory")
    return {"state_dir": str(root), "needed_bytes": need, "free_bytes": free}


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def drop_caches() -> None:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as e:
        raise EnvError("disk", f"cannot drop the page cache ({e.strerror})",
                       "run as root: every job starts from a cold cache") from None


def _mounts_under(path: str) -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4].replace("\\040", " ")
        if mp == path or mp.startswith(path + "/"):
            out.append(mp)
    return sorted(out, key=len, reverse=True)


def remove_run_dir(d: Path) -> None:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    for mp in _mounts_under(str(d)):
        libc.umount2(mp.encode(), 2)   # MNT_DETACH
    shutil.rmtree(d, ignore_errors=True)


def sweep(mine: bool = False) -> list[str]:
    """Run folders of dead owners (with ``mine``, this process's own too)."""
    removed = []
    root = state_root()
    if not root.is_dir():
        return removed
    for d in root.glob(f"{PREFIX}-d*"):
        try:
            pid, start = (int(x) for x in d.name[len(PREFIX) + 2:].split("-", 1))
        except ValueError:
            continue
        if (mine and pid == os.getpid()) or not owner.alive(pid, start):
            remove_run_dir(d)
            removed.append(f"disk state {d}")
    return removed


# ---- running fio ------------------------------------------------------------------

def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(cmd: list[str], limit: float, what: str, expected: float = 0.0, evidence=None,
         **kw) -> tuple[str, float]:
    """Run one fio (or runtime) command; its stdout and the CPU-seconds it and
    every process it reaped used (getrusage of the children).  Past ``limit``
    seconds it is hung: ``evidence(pids)`` (default: disk_watch.host_evidence)
    describes its process tree, which is then killed, and Hang is raised."""
    c0 = _cpu_children()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        tree = descendants(proc.pid)
        try:
            seen = (evidence or disk_watch.host_evidence)(tree)
        except Exception as e:  # noqa: BLE001 - the hang is the finding, the evidence best effort
            seen = f"no evidence ({type(e).__name__}: {e})"
        for pid in reversed(tree):   # children first; all of them this run's own
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        proc.communicate()
        raise disk_watch.Hang(what, limit, expected, seen) from None
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    cpu = _cpu_children() - c0
    if proc.returncode != 0:
        tail = (err.strip() or out.strip())[-600:]
        raise CvbError("disk", f"{what}: exited with {proc.returncode}: {tail}", "see the output", status=1)
    return out, cpu


class HostRunner:
    """fio as a plain host process on a host directory: the floor."""

    speed = "native"   # disk_watch's class for the expected length of a job
    laid_out = False   # the data file exists (measure() lays it out once)

    def __init__(self, layer: Path, workdir: Path):
        self.fio = str(layer / "usr/bin/fio")
        self.jobs = str(layer / disk_fio.IN_ROOT_JOBS.lstrip("/"))
        self.workdir = workdir

    def run(self, backing: Backing, env: dict, profile: str, section: str, limit: float,
            create_only: bool = False, expected: float = 0.0) -> tuple[str, float]:
        """One fio run; past ``limit`` seconds it counts as hung (disk_watch.Hang)."""
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        full = {"PATH": "/usr/bin:/bin", "CVBENCH_OWNER": str(os.getpid()), **env, "CVB_DIR": str(data)}
        return _run(disk_fio.argv(self.fio, self.jobs, profile, section, create_only), limit,
                    f"host/{backing.name} {section}", expected, env=full)


class ContainerRunner:
    """fio inside a container of an OCI runtime (runc, crun) or cvbench's own
    CLI (builtin-cli), from the image's config.json with the fio layer as root
    and the backing mounted at /data by the runtime."""

    def __init__(self, backend, layer: Path, workdir: Path):
        self.b = backend
        self.layer = layer
        self.workdir = workdir
        self.speed = disk_watch.speed_class(backend)
        self.laid_out = False

    def _root(self, backing: Backing) -> tuple[str, bool]:
        """The container root and whether it is read-only: the shared layer,
        or for gVisor's root backings a hard-link copy fio may write into."""
        if backing.name not in RUNSC_FLAGS:
            return os.path.realpath(self.layer), True
        root = self.workdir / "rootfs"
        if not root.exists():
            subprocess.run(["cp", "-al", str(self.layer), str(root)], check=True, capture_output=True)
        return str(root), False

    def _mount(self, backing: Backing) -> dict | None:
        if backing.name in RUNSC_FLAGS:
            return None   # fio writes into the root itself
        if backing.name == "bind":
            src = self.workdir / "bind"
            src.mkdir(exist_ok=True)
            return {"destination": disk_fio.DATA, "type": "bind", "source": str(src),
                    "options": ["rbind", "rw"]}
        if backing.name == "tmpfs":
            return {"destination": disk_fio.DATA, "type": "tmpfs", "source": "tmpfs",
                    "options": ["rw", "nosuid", "nodev", "mode=755", "size=2g"]}
        if backing.name == "overlay":
            up, wk = self.workdir / "upper", self.workdir / "work"
            up.mkdir(exist_ok=True)
            wk.mkdir(exist_ok=True)
            return {"destination": disk_fio.DATA, "type": "overlay", "source": "overlay",
                    "options": [f"lowerdir={os.path.realpath(self.b.img.rootfs)}", f"upperdir={up}",
                                f"workdir={wk}"]}
        raise CvbError("disk", f"unknown backing {backing.name!r}", "choose bind, overlay or tmpfs")

    def _bundle(self, cid: str, backing: Backing, env: dict, args: list[str]) -> Path:
        from .backends.oci import BENCH_STATE
        bundle = state_dir() / BENCH_STATE / "bundles" / cid
        bundle.mkdir(parents=True, exist_ok=True)
        spec = json.loads(Path(self.b.bundle, "config.json").read_text())
        spec["process"]["args"] = args
        spec["process"]["terminal"] = False
        spec["process"]["env"] = ["PATH=/usr/bin:/bin", *(f"{k}={v}" for k, v in env.items())]
        spec["root"]["path"], spec["root"]["readonly"] = self._root(backing)
        mount = self._mount(backing)
        spec["mounts"] = [*spec.get("mounts", []), *([mount] if mount else [])]
        spec.setdefault("linux", {})["cgroupsPath"] = f"/{cid}"
        (bundle / "config.json").write_text(json.dumps(spec))
        return bundle

    def _evidence(self, cid: str):
        """The host's view of a hung container; for gVisor also the Sentry's
        own process list (runsc debug --ps), where fio lives."""
        def seen(pids: list[int]) -> str:
            text = disk_watch.host_evidence(pids)
            if self.b.name == "runsc":
                try:
                    r = subprocess.run([*self.b._base(), "debug", "--ps", cid], capture_output=True, text=True,
                                       timeout=10, **self.b.popen_kw())
                    ps = " | ".join(ln.strip() for ln in (r.stdout + r.stderr).splitlines()[-6:] if ln.strip())
                except (OSError, subprocess.TimeoutExpired) as e:
                    ps = f"runsc debug --ps: {e}"
                text += f"; runsc debug --ps: {ps[-500:]}"
            return text
        return seen

    def run(self, backing: Backing, env: dict, profile: str, section: str, limit: float,
            create_only: bool = False, expected: float = 0.0) -> tuple[str, float]:
        """One fio run in a fresh container; past ``limit`` seconds it counts
        as hung (disk_watch.Hang, with the container's state as evidence)."""
        from .backends.oci import container_id
        from .backends.oci import state_root as oci_root
        cid = container_id()
        args = disk_fio.argv("/usr/bin/fio", disk_fio.IN_ROOT_JOBS, profile, section, create_only)
        bundle = self._bundle(cid, backing, {**env, "CVB_DIR": disk_fio.DATA}, args)
        what = f"{self.b.name}/{backing.name} {section}"
        try:
            if self.b.name == "builtin-cli":
                cmd = [sys.executable, "-m", "runtime", "run", "--bundle", str(bundle), cid]
                return _run(cmd, limit, what, expected, cwd=str(ROOT),
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
            oci_root(self.b.binary).mkdir(parents=True, exist_ok=True)
            flags = RUNSC_FLAGS.get(backing.name, [])
            return _run([*self.b._base(), *flags, "run", "--bundle", str(bundle), cid], limit, what,
                        expected, self._evidence(cid), **self.b.popen_kw())
        finally:
            if self.b.name == "builtin-cli":
                if (state_dir() / "containers" / cid).exists():
                    subprocess.run([sys.executable, "-m", "runtime", "delete", "-f", cid], capture_output=True,
                                   timeout=30, cwd=str(ROOT), env=dict(os.environ, PYTHONPATH=str(ROOT)))
                shutil.rmtree(bundle, ignore_errors=True)
            else:
                self.b.cleanup(cid, bundle, f"/{cid}")


def backings_for(backend) -> list[Backing]:
    if backend.kind == "process":
        return HOST_BACKINGS
    if backend.kind == "vm":
        return vm_backings(backend.name)
    return RUNSC_BACKINGS if backend.name == "runsc" else CONTAINER_BACKINGS


def runner_for(backend, layer: Path, workdir: Path, window: disk_fio.Window | None = None):
    """The runner for ``backend``; a VM runner keeps one guest up per backing
    until its ``close()`` (callers close every runner that has one)."""
    if backend.kind == "process":
        return HostRunner(layer, workdir)
    if backend.kind == "vm":
        from .disk_vm import VMRunner
        return VMRunner(backend, layer, workdir, window or disk_fio.WINDOWS["quick"])
    return ContainerRunner(backend, layer, workdir)


# Backings whose files vanish with each container (every job lays its files out anew).
FORGETFUL = {"tmpfs", "gofer-overlay"}


def measure(runner, backing: Backing, window: disk_fio.Window, profile: str, log=None) -> dict[str, dict]:
    """Every section of ``profile`` on ``backing``: section -> parsed fio
    figures plus ``cpu_s`` (host CPU-seconds of that fio run) and ``wall_s``.
    Each run's limit comes from its expected length (bench.disk_watch)."""
    env = window.env(disk_fio.DATA, backing.direct)
    forgetful = backing.name in FORGETFUL

    def job(section: str, create_only: bool = False) -> tuple[str, float]:
        exp = disk_watch.expected_s(runner.speed, window, section, create_only or forgetful)
        return runner.run(backing, env, profile, section, disk_watch.limit_s(exp), create_only=create_only,
                          expected=exp)

    out = {}
    if profile in disk_fio.DATA_PROFILES and not forgetful and not runner.laid_out:
        # lay the data file out once per instance: every data section of both profiles reads or
        # writes that one file (Kata's four jobs a quarter each), so no section pays for it
        exp = disk_watch.expected_s(runner.speed, window, disk_fio.LAYOUT[1], True)
        runner.run(backing, env, *disk_fio.LAYOUT, disk_watch.limit_s(exp), create_only=True, expected=exp)
        runner.laid_out = True
    for section in disk_fio.PROFILES[profile]:
        drop_caches()
        t0 = time.monotonic()
        text, cpu = job(section)
        fig = disk_fio.parse(text, section)
        fig["cpu_s"] = cpu
        fig["wall_s"] = time.monotonic() - t0
        out[section] = fig
        if log:
            log(f"    {backing.name} {section}: {fig['iops']:.0f} IOPS, p99 {fig['clat_p99'] * 1e6:.0f} us, "
                f"{fig['wall_s']:.1f} s")
    return out
