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
Paths here: ``veth`` (container client), ``bridge`` and ``gvisor``;
bench/netpath_slirp.py builds ``user-mode`` on :class:`ContainerClient`.
Leftovers of a killed run: containers and bundles go with bench.sweep's
OCI/runtime sweeps (owner pid in their names), the netns with
bench.netpath.sweep, the parent cgroups with :func:`sweep_cgroups`.
"""
from __future__ import annotations

import functools
import glob
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path as FsPath

from common import owner
from common.errors import CvbError
from common.naming import PREFIX
from common.paths import state_dir

from . import backends
from .backends import oci
from .netpath import Path, PathEnv, PathKind, _ip, add_netns, add_veth

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
    """The parent in the hierarchy we read, and on v1 in cpuset with the
    root's CPUs and memory nodes: runc and crun copy those down into a parent
    they create, runsc does not (and then cannot write its own cpuset.cpus).
    The runtimes create the rest."""
    if os.path.isdir("/sys/fs/cgroup/cpuacct"):
        os.makedirs(f"/sys/fs/cgroup/cpuacct/{parent}", exist_ok=True)
        root = "/sys/fs/cgroup/cpuset"
        if os.path.exists(f"{root}/cpuset.cpus"):
            os.makedirs(f"{root}/{parent}", exist_ok=True)
            for f in ("cpuset.cpus", "cpuset.mems"):
                FsPath(root, parent, f).write_text(FsPath(root, f).read_text())
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


# runsc releases before 2023 decide "this is the host's netns" by whether
# /proc/sys/net/core/rmem_default exists, which newer kernels show in every
# netns; they then refuse --network=sandbox in any netns.  Only where that is
# so, each runsc command runs inside the container's cvbench netns (where
# runsc starts the sandbox anyway) and its own private mount namespace, in
# which an empty tmpfs covers that netns's /proc/sys/net/core (sysctl
# entries are per netns, so it is mounted from inside it): the test then sees the netns cvbench made for what it
# is.  Nothing outside that one command sees the mount (as crun's
# hybrid-cgroup mask in bench/backends/crun.py).
RUNSC_MASK = ["sh", "-c", 'mount -t tmpfs cvbench-netmask /proc/sys/net/core && exec "$0" "$@"']


@functools.lru_cache(maxsize=1)
def runsc_needs_mask() -> bool:
    """True when a netns cvbench made shows rmem_default (the old runsc's
    root-netns test) and this runsc predates the fixed test."""
    b = backends.get("runsc")
    m = re.search(r"(\d{8})", b.version() if getattr(b, "path", None) else "")
    if not m or int(m.group(1)) >= 20230101:
        return False
    name = f"{PREFIX}-n{os.getpid()}-probe"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True)
    if r.returncode != 0:
        return False
    try:
        return subprocess.run(["ip", "netns", "exec", name, "test", "-e", "/proc/sys/net/core/rmem_default"],
                              capture_output=True).returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _on_bundle(name: str, folder: str, parent: str, netns: str = ""):
    """A fresh ``name`` backend that reads ``folder`` as its bundle; an OCI one
    also nests its per-container cgroupsPath below ``parent``; runsc gets
    ``--network=sandbox`` (its own netstack on the netns's veth) instead of
    the ``--network=none`` it needs when started from the host's netns."""
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
    if name == "runsc":
        ns["global_flags"] = [f for f in base.global_flags if not f.startswith("--network=")] + ["--network=sandbox"]
        if runsc_needs_mask():
            ns["_base"] = lambda self: ["unshare", "--mount", "--propagation", "private", "--", "nsenter",
                                        f"--net=/run/netns/{netns}", "--", *RUNSC_MASK, *self._plain_base()]
    return type(f"Net{base.__name__}", (base,), ns)()


class Runner:
    """Containers of one backend in one netns, one at a time or long-lived:
    their bundle (the shared config.json, three fields changed) and the
    parent cgroup that counts their CPU."""

    def __init__(self, backend: str, netns: str, owner_pid: int, role: str):
        tag = secrets.token_hex(3)
        self.backend, self.runs = backend, 0
        self.cg_parent = f"{PREFIX}-b{owner_pid}-net{role}{tag}"
        self.bundle_dir = state_dir() / oci.BENCH_STATE / "bundles" / self.cg_parent
        self.impl = _on_bundle(backend, str(self.bundle_dir), self.cg_parent, netns)
        host = backends.get("host")
        self.spec = json.loads(FsPath(host.bundle, "config.json").read_text())
        self.spec["root"]["path"] = os.path.realpath(host.img.rootfs)
        self.spec["process"]["terminal"] = False
        lin = self.spec.setdefault("linux", {})
        nss = [n for n in lin.get("namespaces") or [] if n.get("type") != "network"]
        lin["namespaces"] = [*nss, {"type": "network", "path": f"/run/netns/{netns}"}]
        _make_parent(self.cg_parent)

    def write(self, args: list[str], cpu: int | None) -> None:
        self.runs += 1
        lin = self.spec["linux"]
        lin["cgroupsPath"] = f"/{self.cg_parent}/c{self.runs}"   # the OCI backends nest their own
        if cpu is not None:
            lin.setdefault("resources", {}).setdefault("cpu", {})["cpus"] = str(cpu)
        self.spec["process"]["args"] = ["/probe", *args]
        self.bundle_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.bundle_dir / ".config.json.tmp"
        tmp.write_text(json.dumps(self.spec))
        os.replace(tmp, self.bundle_dir / "config.json")

    def cpu_s(self) -> float:
        return cgroup_cpu_s(self.cg_parent)

    def run(self, args: list[str], cpu: int | None, timeout: float) -> tuple[str, float]:
        """One container to completion: (stdout, CPU its cgroup was charged)."""
        self.write(args, cpu)
        c0 = self.cpu_s()
        try:
            t = self.impl.run(args, timeout)
        except CvbError as e:
            if self.backend == "runsc" and "root network namespace" in e.why:
                raise CvbError("runsc", f"{self.impl.version()} takes the cvbench netns for the host's and "
                               "refuses it: its root-netns test looks for /proc/sys/net/core/rmem_default, "
                               f"which this kernel ({os.uname().release}) shows in every netns (runsc: cannot "
                               "run with network enabled in root network namespace)",
                               "a newer runsc release tests otherwise; install one to measure gVisor's netstack",
                               status=1) from None
            raise
        used = self.cpu_s() - c0
        if t.rc != 0:
            raise CvbError("network", f"{self.backend} container {' '.join(args[:4])} exited {t.rc}: "
                           f"{t.console.strip()[-300:]}", "see the message", status=1)
        return t.console, used

    def close(self) -> None:
        shutil.rmtree(self.bundle_dir, ignore_errors=True)
        remove_parent(self.cg_parent)


class ContainerServer:
    """A long-lived server container (``probe net serve``); ``cpu_s()`` is its
    cgroup's CPU, ``stop()`` ends and removes it."""

    def __init__(self, runner: Runner, argv: list[str], ready: str, cpu: int | None, timeout: float):
        runner.write(argv[1:], cpu)
        self.runner = runner
        self.inst = runner.impl.start(argv[1:], timeout)
        try:
            end = time.monotonic() + timeout
            while ready and not any(ready in line for line in self.inst.stream.text):
                if self.inst.stream.eof or time.monotonic() > end:
                    raise CvbError("network", f"{runner.backend} server container {' '.join(argv[1:4])} did "
                                   f"not print {ready!r}: {self.inst.stream.console()[-300:]}",
                                   "see the message", status=1)
                self.inst.stream.read_once(min(0.2, end - time.monotonic()))
        except BaseException:
            self.inst.stop()
            raise

    def cpu_s(self) -> float:
        return self.runner.cpu_s()

    def stop(self) -> None:
        if self.inst is not None:
            inst, self.inst = self.inst, None
            inst.stop()


class ContainerClient(Path):
    """The client side is a container of ``backend`` in netns ``client_ns``; the
    servers are host processes in ``server_ns`` (Path's defaults), or, with
    ``server_backend``, containers too."""

    def attach(self, env: PathEnv, server_backend: str | None = None) -> None:
        """Bundles and parent cgroups (undone by close())."""
        self.client = Runner(self.backend, self.client_ns, env.owner, "c")
        self.cleanups.append(self.client.close)
        self.server = None
        if server_backend:
            self.server = Runner(server_backend, self.server_ns, env.owner, "s")
            self.cleanups.append(self.server.close)
        self.client_tools = frozenset({"probe"})
        # runsc --network=sandbox moves the netns's addresses into its netstack
        # and leaves the link without them: put them back before each run.
        self.readdress: list[tuple[str, str, str]] = []

    def start_server(self, argv: list[str], ready: str, timeout: float = 20.0):
        if self.server is None:
            return super().start_server(argv, ready, timeout)
        return ContainerServer(self.server, argv, ready, self.server_cpu, timeout)

    def run_client(self, argv: list[str], timeout: float) -> tuple[str, float]:
        if argv[0] not in self.client_tools:
            raise CvbError("network", f"the {self.name} path's client is a {self.backend} container "
                           f"with the image's probe only, not {argv[0]}", "use the probe", status=2)
        for ns, link, addr in self.readdress:
            _ip("-n", ns, "addr", "replace", addr, "dev", link)
        return self.client.run(argv[1:], self.client_cpu, timeout)


def veth(env: PathEnv, backend: str) -> ContainerClient:
    """A container's netns (cvbench-n<pid>-<backend>-c, the client at .5) to a
    cvbench netns (-d, the server at .6) over a veth pair."""
    if backend not in (*CONTAINER_BACKENDS, "runsc"):
        raise CvbError("network", f"no container client for backend {backend}",
                       f"choose from {', '.join(CONTAINER_BACKENDS)}")
    c, d = env.netns("c"), env.netns("d")
    lc, ld = env.link("c"), env.link("d")
    ac, ad = env.addr(5), env.addr(6)
    name = "gvisor" if backend == "runsc" else "veth"
    how = f"{backend} container"
    if backend == "runsc":
        how = (f"runsc --network=sandbox (gVisor's netstack on the veth; platform "
               f"{backends.get('runsc').platform}"
               + ("; /proc/sys/net/core masked for its outdated root-netns test" if runsc_needs_mask() else "")
               + ")")
    p = ContainerClient(name, str(ad), server_ns=d, client_ns=c, links=[(c, lc), (d, ld)], probe=env.probe,
                        backend=backend,
                        setup=f"{how} joined to netns {c} (path in config.json), veth {lc}<->{ld} "
                              f"to netns {d}, {ac}/30 <-> {ad}/30 ({env.rng['name']})")
    try:
        add_netns(p, c)
        add_netns(p, d)
        p.max_mtu = add_veth((c, lc, str(ac)), (d, ld, str(ad)))
        p.attach(env)
        if backend == "runsc":
            p.readdress = [(c, lc, f"{ac}/30")]
    except BaseException:
        p.close()
        raise
    return p


def bridge(env: PathEnv, backend: str) -> ContainerClient:
    """Two containers of ``backend`` (the client at .9, the server at .10 of one
    /29), each in its own netns, whose veths meet on a cvbench Linux bridge
    inside a third cvbench netns (never the host's)."""
    c, s, br = env.netns("c"), env.netns("s"), env.netns("br")
    lc, ls, pc, ps, lb = env.link("c"), env.link("d"), env.link("e"), env.link("f"), env.link("r")
    ac, a_s = env.addr(9), env.addr(10)
    p = ContainerClient("bridge", str(a_s), server_ns=s, client_ns=c, probe=env.probe, backend=backend,
                        links=[(c, lc), (br, pc), (br, ps), (s, ls)],
                        setup=f"two {backend} containers in netns {c} and {s} (paths in config.json), veths "
                              f"to bridge {lb} in netns {br}, {ac}/29 <-> {a_s}/29 ({env.rng['name']})")
    try:
        for ns in (c, s, br):
            add_netns(p, ns)
        _ip("-n", br, "link", "add", lb, "type", "bridge")
        p.max_mtu = min(add_veth((c, lc, str(ac)), (br, pc, ""), prefix=29),
                        add_veth((s, ls, str(a_s)), (br, ps, ""), prefix=29))
        for port in (pc, ps):
            _ip("-n", br, "link", "set", port, "master", lb)
        _ip("-n", br, "link", "set", lb, "up")
        p.attach(env, server_backend=backend)
    except BaseException:
        p.close()
        raise
    return p


BRIDGE = PathKind(("builtin", "crun"), bridge, why_not)
GVISOR = PathKind(("runsc",), veth, why_not)
