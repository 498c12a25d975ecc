"""What runc, crun and runsc share: a per-run OCI bundle, ``<rt> run`` in the
foreground with stdout on a pipe, and ``delete --force`` afterwards.

Each run gets its own bundle folder whose config.json is the image's with
``process.args`` replaced, ``root.path`` the image rootfs as an absolute,
symlink-free path (runc rejects a symlinked one) and ``cgroupsPath`` named after
the container, so that memory can be read from the cgroup and a sweep can find
it.  Container ids are ``cvbench-b<owner pid>-<hex>``: the owner pid is what lets
a sweep tell a killed run's leftovers from a concurrent live run's containers.
"""
from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from common.naming import PREFIX
from common.paths import state_dir

from .base import (
    Backend,
    CrossCommand,
    Instance,
    PopenInstance,
    Timings,
    long_lived,
    probe_pids,
    timed_popen,
    which,
)

BENCH_STATE = "bench"


def container_id() -> str:
    return f"{PREFIX}-b{os.getpid()}-{secrets.token_hex(3)}"


def owner_pid(cid: str) -> int | None:
    """The pid that created container ``cid``, or None if it isn't one of ours."""
    head = f"{PREFIX}-b"
    if not cid.startswith(head):
        return None
    num = cid[len(head):].split("-", 1)[0]
    return int(num) if num.isdigit() else None


def state_root(runtime: str) -> Path:
    """Each runtime's --root: a cvbench folder, so its state (and runsc's lock
    files) never mixes with containers cvbench did not make."""
    return state_dir() / BENCH_STATE / runtime


def cgroup_dirs_for(path: str) -> list[str]:
    """Every cgroup folder (all v1 hierarchies and v2) a cgroupsPath maps to."""
    rel = path.lstrip("/")
    return [d for d in glob.glob(f"/sys/fs/cgroup/*/{rel}") + glob.glob(f"/sys/fs/cgroup/{rel}")
            if os.path.isdir(d)]


def remove_cgroups(path: str) -> list[str]:
    """rmdir the (empty) cgroup folders a killed runtime left; deepest first."""
    removed = []
    for d in sorted(cgroup_dirs_for(path), key=len, reverse=True):
        try:
            os.rmdir(d)
            removed.append(d)
        except OSError:
            pass
    return removed


class OCIBackend(Backend):
    kind = "container"
    binary = ""
    global_flags: list[str] = []

    def __init__(self):
        self.path = which(self.binary)


    # --- hooks for the runtime-specific modules ---------------------------------
    def popen_kw(self) -> dict:
        """Extra subprocess.Popen arguments (crun's private mount namespace)."""
        return {}

    def version(self) -> str:
        if not self.path:
            return ""
        r = subprocess.run([self.path, "--version"], capture_output=True, text=True)
        return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr) else ""

    # --- the backend interface --------------------------------------------------
    def available(self) -> tuple[bool, str]:
        if not self.path:
            return False, f"{self.binary}: not installed (apt-get install {self.binary})"
        if os.geteuid() != 0:
            return False, f"{self.binary}: needs root"
        return True, f"{self.version()} at {self.path}"

    def metadata(self) -> dict:
        return {"binary": self.path, "version": self.version(),
                "flags": " ".join(self.global_flags), "root": str(state_root(self.binary)),
                "bundle": f"{self.bundle}/config.json, process.args and root.path (absolute) replaced"}

    def _base(self) -> list[str]:
        return self._plain_base()

    def _prepare(self, args: list[str]) -> tuple[str, Path, str]:
        cid = container_id()
        bundle = state_dir() / BENCH_STATE / "bundles" / cid
        cgpath = f"/{cid}"
        try:
            self._write_bundle(bundle, args, cgpath)
        except BaseException:
            shutil.rmtree(bundle, ignore_errors=True)
            raise
        return cid, bundle, cgpath

    def _write_bundle(self, bundle: Path, args: list[str], cgpath: str) -> None:
        bundle.mkdir(parents=True, exist_ok=True)
        spec = json.loads(Path(self.bundle, "config.json").read_text())
        spec["process"]["args"] = ["/probe", *args]
        spec["process"]["terminal"] = False
        spec["root"]["path"] = os.path.realpath(self.img.rootfs)
        spec.setdefault("linux", {})["cgroupsPath"] = cgpath
        (bundle / "config.json").write_text(json.dumps(spec))
        state_root(self.binary).mkdir(parents=True, exist_ok=True)

    def _run_cmd(self, cid: str, bundle: Path) -> list[str]:
        return [*self._base(), "run", "--bundle", str(bundle), cid]

    def _leftover(self, cid: str) -> bool:
        return bool(glob.glob(f"{state_root(self.binary)}/*{cid}*"))

    def cleanup(self, cid: str, bundle: Path | None, cgpath: str) -> None:
        """``delete --force`` if the runtime still knows the container, then the
        bundle and any empty cgroup folders it left."""
        if self._leftover(cid):
            subprocess.run([*self._base(), "delete", "--force", cid], capture_output=True,
                           timeout=30, **self.popen_kw())
        for p in glob.glob(f"{state_root(self.binary)}/*{cid}*"):
            shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.unlink(p)
        if bundle is not None:
            shutil.rmtree(bundle, ignore_errors=True)
        remove_cgroups(cgpath)

    def command_for(self, args: list[str], runs: int) -> CrossCommand:
        """``<rt> run`` on ``runs`` prepared bundles, each with its own container
        id and cgroup, as the harness's spawns have: a reused id and cgroup path
        measured about 7% slower for crun here."""
        prepared = [self._prepare(args) for _ in range(runs)]
        root = str(prepared[0][1].parent)

        def cleanup():
            for cid, bundle, cgpath in prepared:
                self.cleanup(cid, bundle, cgpath)
        argv = [*self._plain_base(), "run", "--bundle", f"{root}/{{id}}", "{id}"]
        return CrossCommand(argv, self._timer_wrapper(), self.popen_kw(), [c for c, _, _ in prepared],
                            cleanup)

    def _plain_base(self) -> list[str]:
        """The runtime's own command, without any wrapper."""
        return [self.path, "--root", str(state_root(self.binary)), *self.global_flags]

    def _timer_wrapper(self) -> list[str]:
        return []

    def run(self, args: list[str], timeout: float = 60.0) -> Timings:
        cid, bundle, cgpath = self._prepare(args)
        return timed_popen(self.binary, self._run_cmd(cid, bundle), timeout,
                           cleanup=lambda: self.cleanup(cid, bundle, cgpath), **self.popen_kw())

    def start(self, args: list[str], timeout: float = 60.0) -> Instance:
        cid, bundle, cgpath = self._prepare(args)
        try:
            return PopenInstance(self.binary, self._run_cmd(cid, bundle), timeout,
                                 on_stop=lambda: self.cleanup(cid, bundle, cgpath),
                                 workload_pids=self.workload_pids,
                                 cgroup_dirs=lambda: cgroup_dirs_for(cgpath),
                                 settle=long_lived(args), **self.popen_kw())
        except BaseException:
            self.cleanup(cid, bundle, cgpath)
            raise

    def workload_pids(self, pids: list[int]) -> list[int]:
        return probe_pids(pids)

    def list_ids(self) -> list[str]:
        """Container ids the runtime knows under cvbench's --root (for sweeps)."""
        root = state_root(self.binary)
        if not root.is_dir():
            return []
        ids = set()
        for entry in os.listdir(root):
            for part in entry.replace(":", "_").split("_"):
                if part.startswith(f"{PREFIX}-b"):
                    ids.add(part.split(".")[0])
        return sorted(ids)
