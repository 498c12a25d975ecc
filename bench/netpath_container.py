"""Container endpoints for the network paths: the probe client runs as a real
container of builtin, builtin-cli, crun or runc, joined to a network namespace
cvbench created, the way CNI hands a netns to a runtime.

Every runtime reads the same config.json (bench/bundle.py's, or the user's
``--config``) with three fields changed, alike for all of them:

- the ``network`` namespace entry gets ``path: /run/netns/cvbench-n<pid>-c``
  (the container joins it instead of making an empty one; every OCI runtime
  supports this, and it gives the container nothing of the host's);
- ``linux.resources.cpu.cpus`` pins the container to the client CPU the
  scenario picked (a cpuset cgroup, so the runtime's own cgroup join cannot
  undo it, as it would undo a sched_setaffinity inherited from the harness);
- ``linux.cgroupsPath`` puts each container below a cvbench parent cgroup
  ``cvbench-b<pid>-net<hex>``, whose cpuacct (v1) or cpu.stat (v2) still
  counts a child's CPU once the runtime has removed the child: that is the
  container's CPU for CPU per GB.

The runtimes are the registry's own backend classes, given this bundle (and,
for the OCI ones, the nested cgroup path) by a subclass made here: the spawn
path, ids, cleanup and the crun hybrid-cgroup mask are theirs, unchanged.
Leftovers of a killed run: containers and bundles go with bench.sweep's
OCI/runtime sweeps (owner pid in their names), the netns with
bench.netpath.sweep, the parent cgroups with :func:`sweep_cgroups`.
"""
from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
from pathlib import Path as FsPath

from common import owner
from common.errors import CvbError
from common.naming import PREFIX
from common.paths import state_dir

from . import backends
from .backends import oci
from .netpath import Path, PathEnv, add_netns, add_veth

CONTAINER_BACKENDS = ("builtin", "builtin-cli", "crun", "runc")
CGROUP_GLOB = f"{PREFIX}-b*-net*"


def why_not(backend: str) -> str | None:
    """None when ``backend`` can run a container here, else its own reason."""
    try:
        ok, why = backends.get(backend).available()
    except Exception as e:  # noqa: BLE001 - a row's reason, not a crash
        return f"{backend}: availability check failed ({type(e).__name__}: {e})"
    return None if ok else why


def _cpu_file(parent: str) -> tuple[str, float] | None:
    """The file that counts the parent cgroup's CPU, and its unit in seconds."""
    for f, unit in ((f"/sys/fs/cgroup/cpuacct/{parent}/cpuacct.usage", 1e-9),
                    (f"/sys/fs/cgroup/cpu,cpuacct/{parent}/cpuacct.usage", 1e-9),
                    (f"/sys/fs/cgroup/{parent}/cpu.stat", 1e-6)):
        if os.path.exists(f):
            return f, unit
    return None


def cgroup_cpu_s(parent: str) -> float:
    """CPU seconds charged to ``parent`` and every child it ever had."""
    found = _cpu_file(parent)
    if found is None:
        raise CvbError("network", f"no cpuacct.usage or cpu.stat for cgroup {parent}",
                       "mount the v1 cpuacct controller or use cgroup v2", status=2)
    f, unit = found
    text = FsPath(f).read_text()
    if f.endswith("cpu.stat"):
        text = dict(line.split() for line in text.splitlines())["usage_usec"]
    return int(text) * unit


def _make_parent(parent: str) -> None:
    """The parent in the hierarchy we read; the runtimes create the rest."""
    if os.path.isdir("/sys/fs/cgroup/cpuacct"):
        os.makedirs(f"/sys/fs/cgroup/cpuacct/{parent}", exist_ok=True)
    elif os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        os.makedirs(f"/sys/fs/cgroup/{parent}", exist_ok=True)


def remove_parent(parent: str) -> list[str]:
    """Its (empty) children first, then the parent, in every hierarchy."""
    removed = []
    for d in sorted(glob.glob(f"/sys/fs/cgroup/*/{parent}/*/") + glob.glob(f"/sys/fs/cgroup/{parent}/*/"),
                    key=len, reverse=True):
        try:
            os.rmdir(d)
            removed.append(d.rstrip("/"))
        except OSError:
            pass
    return removed + oci.remove_cgroups(f"/{parent}")


def sweep_cgroups(mine: bool = False) -> list[str]:
    """Parent cgroups of dead network runs (runs after the container sweeps,
    when the runtimes have removed their children)."""
    removed = []
    names = {os.path.basename(d) for d in glob.glob(f"/sys/fs/cgroup/*/{CGROUP_GLOB}")
             + glob.glob(f"/sys/fs/cgroup/{CGROUP_GLOB}")}
    for name in names:
        pid = oci.owner_pid(name)
        if pid is not None and ((mine and pid == os.getpid()) or not owner.alive(pid)):
            removed += [f"cgroup {d}" for d in remove_parent(name)]
    return removed


def _on_bundle(name: str, folder: str, parent: str):
    """A fresh ``name`` backend that reads ``folder`` as its bundle; an OCI one
    also nests its per-container cgroupsPath below ``parent``."""
    base = type(backends.get(name))
    ns: dict = {"bundle": property(lambda self: folder)}
    if issubclass(base, oci.OCIBackend):
        def _write_bundle(self, bundle, args, cgpath):
            base._write_bundle(self, bundle, args, cgpath)
            f = FsPath(bundle, "config.json")
            spec = json.loads(f.read_text())
            spec["linux"]["cgroupsPath"] = f"/{parent}{cgpath}"
            f.write_text(json.dumps(spec))
        ns["_write_bundle"] = _write_bundle
    return type(f"Net{base.__name__}", (base,), ns)()


class ContainerClient(Path):
    """The client side is a container of ``backend`` in netns ``client_ns``; the
    servers stay host processes in ``server_ns`` (Path's defaults)."""

    def attach(self, env: PathEnv) -> None:
        """Write the bundle and make the parent cgroup (undone by close())."""
        tag = secrets.token_hex(3)
        self.cg_parent = f"{PREFIX}-b{env.owner}-net{tag}"
        self.bundle_dir = state_dir() / oci.BENCH_STATE / "bundles" / f"{PREFIX}-b{env.owner}-net{tag}"
        self.cleanups.append(lambda: shutil.rmtree(self.bundle_dir, ignore_errors=True))
        self.cleanups.append(lambda: remove_parent(self.cg_parent))
        self.runs = 0
        self.runner = _on_bundle(self.backend, str(self.bundle_dir), self.cg_parent)
        src = FsPath(backends.get("host").bundle, "config.json")
        self.spec = json.loads(src.read_text())
        self.spec["root"]["path"] = os.path.realpath(backends.get("host").img.rootfs)
        self.spec["process"]["terminal"] = False
        lin = self.spec.setdefault("linux", {})
        nss = [n for n in lin.get("namespaces") or [] if n.get("type") != "network"]
        lin["namespaces"] = [*nss, {"type": "network", "path": f"/run/netns/{self.client_ns}"}]
        _make_parent(self.cg_parent)
        self.client_tools = frozenset({"probe"})

    def _write(self, args: list[str]) -> None:
        self.runs += 1
        lin = self.spec["linux"]
        lin["cgroupsPath"] = f"/{self.cg_parent}/c{self.runs}"   # the OCI backends nest their own
        if self.client_cpu is not None:
            lin.setdefault("resources", {}).setdefault("cpu", {})["cpus"] = str(self.client_cpu)
        self.spec["process"]["args"] = ["/probe", *args]
        self.bundle_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.bundle_dir / ".config.json.tmp"
        tmp.write_text(json.dumps(self.spec))
        os.replace(tmp, self.bundle_dir / "config.json")

    def run_client(self, argv: list[str], timeout: float) -> tuple[str, float]:
        if argv[0] not in self.client_tools:
            raise CvbError("network", f"the {self.name} path's client is a {self.backend} container "
                           f"with the image's probe only, not {argv[0]}", "use the probe", status=2)
        self._write(argv[1:])
        c0 = cgroup_cpu_s(self.cg_parent)
        t = self.runner.run(argv[1:], timeout)
        cpu = cgroup_cpu_s(self.cg_parent) - c0
        if t.rc != 0:
            raise CvbError("network", f"{self.backend} container {' '.join(argv[1:4])} exited {t.rc}: "
                           f"{t.console.strip()[-300:]}", "see the message", status=1)
        return t.console, cpu


def veth(env: PathEnv, backend: str) -> ContainerClient:
    """A container's netns (cvbench-n<pid>-c, the client at .5) to a cvbench
    netns (-d, the server at .6) over a veth pair."""
    if backend not in CONTAINER_BACKENDS:
        raise CvbError("network", f"no container client for backend {backend}",
                       f"choose from {', '.join(CONTAINER_BACKENDS)}")
    c, d = env.netns("c"), env.netns("d")
    lc, ld = env.link("c"), env.link("d")
    ac, ad = env.addr(5), env.addr(6)
    p = ContainerClient("veth", str(ad), server_ns=d, client_ns=c, links=[(c, lc), (d, ld)], probe=env.probe,
                        backend=backend,
                        setup=f"{backend} container joined to netns {c} (path in config.json), veth {lc}<->{ld} "
                              f"to netns {d}, {ac}/30 <-> {ad}/30 ({env.rng['name']})")
    try:
        add_netns(p, c)
        add_netns(p, d)
        p.max_mtu = add_veth((c, lc, str(ac)), (d, ld, str(ad)))
        p.attach(env)
    except BaseException:
        p.close()
        raise
    return p
