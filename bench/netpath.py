"""Network paths the network scenario measures, set up and torn down by cvbench.

The path protocol
=================
scenarios/network.py knows a path only through this protocol, so a new kind of
endpoint (bench/netpath_vm.py for the VM paths) plugs in without touching the
scenario.  It is kept stable; see docs/architecture.md for the layering.

Registry.  ``REGISTRY`` maps a path name to ``(module, attribute)`` of a
:class:`PathKind`, imported lazily (as bench.backends does), so adding a path is
one line, and a module that is missing or broken makes that path a "not
measured"/"failed" row with the reason instead of breaking the others::

    "tap-virtio": ("bench.netpath_vm", "KIND"),

A :class:`PathKind` has

- ``backends``: the ``--backends`` names the path has a column for ("host":
  host processes; "builtin", "crun", ...: the client runs as that container;
  "libvirt", "qemu": a guest);
- ``why_not(backend) -> str | None``: None when the path can be set up here
  for that backend, else why not (the row says it);
- ``factory(env: PathEnv, backend) -> Path``: sets the path up, returns it;
- ``max_mtu(backend) -> int`` or None: the largest MTU, known without setting
  the path up (a VM boot is slow); None: the scenario sets one up briefly to
  check the MTUs asked for before anything is measured.

:class:`PathEnv` gives a factory the checked address range (``env.rng``,
``env.addr(i)``), the host path of the image's static probe (``env.probe``) and
cvbench names carrying the owner pid for the sweep: ``env.netns(tag)`` ->
``cvbench-n<pid>-<slot><tag>`` (the scenario sets ``slot`` per column, so
a path's columns can be up at once), ``env.link(letter)`` -> ``cvbench<pid><letter>``
(one letter: IFNAMSIZ).  Letters in use: a b (veth), c d e f g r (container paths),
t u (the VM paths' taps), p q (passt's veth, bench/netpath_passt.py).

A path object (subclass :class:`Path`; its defaults are host processes) has

- ``name``, ``backend``: the row it fills; ``setup``: one line for the chart
  subtitle and meta.json; ``server_addr``: what the servers listen on and the
  client dials; ``max_mtu``; ``client_tools``: which of ``probe``, ``iperf3``,
  ``sockperf`` the client side can run (a guest or a container: ``probe``);
- ``server_cpu``/``client_cpu``: CPUs the scenario pins the two sides to;
- ``start_server(argv, ready, timeout) -> server`` with ``cpu_s()`` and
  ``stop()``: by default a host process in netns ``server_ns`` (None: the
  host's) that prints ``ready`` once listening;
- ``run_client(argv, timeout) -> (stdout, cpu_seconds)``: runs ``argv`` to
  completion in the client endpoint.  ``argv[0]`` is a tool name (``probe`` is
  the image's static probe, wherever it lives); ``cpu_seconds`` is the host CPU
  that endpoint used (process rusage, a container's cgroup cpuacct, a VM's
  QEMU process).  A failure raises CvbError with status 1;
- ``mtu()`` / ``set_mtu(mtu)`` (CvbError, exit 2, for an MTU the path cannot
  carry); ``mtu_fixed``: True when cvbench must not change it (the host's lo);
- ``close()``: idempotent, removes everything the factory made.

The paths here: ``loopback`` (two host processes on 127.0.0.1) and ``veth``
(two cvbench netns joined by a veth pair, addressed from a documentation
(RFC 5737) or link-local range that :func:`pick_range` checks no host address
or route overlaps).  bench/netpath_container.py adds the container endpoints:
``veth`` with the client as a builtin, builtin-cli, crun or runc container,
``bridge`` (two containers on a cvbench Linux bridge) and ``gvisor``
(runsc's netstack); bench/netpath_slirp.py ``user-mode`` (slirp4netns), whose
VM columns are passt (bench/netpath_passt.py).

Everything carries the owner's pid, so :func:`sweep` removes only what a dead
cvbench run left (processes inside are tagged ``CVBENCH_OWNER`` and killed by
bench.sweep.sweep_host_probes).  The probe's ``net`` ops are in
scenarios/probe/probe.c; bench/netpath_tools.py runs them, and iperf3 and
sockperf as independent checks on the same endpoints, on any path.
"""
from __future__ import annotations

import importlib
import ipaddress
import json
import os
import re
import resource
import select
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from common import owner
from common.errors import CvbError, EnvError
from common.procs import cpu_seconds, stop_process

from .netpath_tools import iperf3, probe_client, sockperf  # noqa: F401 - part of this module's API

# Candidates in order: documentation ranges first (never routed on the
# internet), then a link-local /24.  The first that no host address or route
# overlaps is used; meta.json records which and why others were skipped.
RANGES = (("198.51.100.0/24", "TEST-NET-2 (RFC 5737 documentation range)"),
          ("203.0.113.0/24", "TEST-NET-3 (RFC 5737 documentation range)"),
          ("192.0.2.0/24", "TEST-NET-1 (RFC 5737 documentation range)"),
          ("169.254.201.0/24", "link-local (RFC 3927)"))
NS_RE = re.compile(r"^cvbench-n(\d+)-[a-z0-9-]+$")
LINK_RE = re.compile(r"^cvbench(\d+)[a-z]$")
MIN_MTU = 68            # IPv4's minimum
PORT = 47001            # inside cvbench's own namespaces nothing else listens
HOST_TOOLS = frozenset({"probe", "iperf3", "sockperf"})

# name -> (module, attribute of a PathKind); the scenario's row order is ORDER.
REGISTRY: dict[str, tuple[str, str]] = {
    "loopback": ("bench.netpath", "LOOPBACK"),
    "veth": ("bench.netpath", "VETH"),
    "bridge": ("bench.netpath_container", "BRIDGE"),
    "tap-virtio": ("bench.netpath_vm", "KIND"),
    "user-mode": ("bench.netpath_slirp", "USER_MODE"),
    "gvisor": ("bench.netpath_container", "GVISOR"),
}
ORDER = ("loopback", "veth", "bridge", "tap-virtio", "user-mode", "gvisor")
NOT_WIRED = {
    "tap-virtio": "VM tap + virtio-net (libvirt, raw QEMU; no vhost-net on this host): "
                  "not wired into the scenario yet (bench/netpath_vm.py)",
}


@dataclass
class PathEnv:
    """What a path factory gets: the checked range, the probe, cvbench names."""
    rng: dict | None
    probe: str
    owner: int = field(default_factory=os.getpid)
    slot: str = ""          # the scenario gives each column its own (e.g. "crun-")

    def netns(self, tag: str) -> str:
        return f"cvbench-n{self.owner}-{self.slot}{tag}"

    def link(self, letter: str) -> str:
        if len(letter) != 1:
            raise ValueError("a link tag is one letter: cvbench<pid><letter> fills IFNAMSIZ")
        return f"cvbench{self.owner}{letter}"

    def addr(self, i: int) -> ipaddress.IPv4Address:
        if not self.rng:
            raise EnvError("network", "this path needs an address range and none was picked",
                           "free one of " + ", ".join(c for c, _ in RANGES))
        return ipaddress.ip_network(self.rng["cidr"]).network_address + i


@dataclass
class PathKind:
    """A registered path: which backends it has a column for, whether it can be
    set up here (``why_not``), and how (``factory``)."""
    backends: tuple[str, ...]
    factory: Callable[[PathEnv, str], Path]
    why_not: Callable[[str], str | None] = lambda backend: None
    needs_range: bool = True
    max_mtu: Callable[[str], int] | None = None


def kind(name: str) -> PathKind | str:
    """The PathKind registered as ``name``, or why there is none (a row's reason)."""
    if name not in REGISTRY:
        return NOT_WIRED.get(name, f"no path {name!r} is registered")
    mod, attr = REGISTRY[name]
    try:
        return getattr(importlib.import_module(mod), attr)
    except ModuleNotFoundError as e:
        if e.name == mod:
            return NOT_WIRED.get(name, f"{mod} is not there")
        return f"{mod} cannot load ({type(e).__name__}: {e})"
    except Exception as e:  # noqa: BLE001 - one broken path must not hide the others
        return f"{mod} cannot load ({type(e).__name__}: {e})"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise EnvError("network", f"ip {' '.join(args)} failed: {r.stderr.strip()}",
                       "needs root and iproute2 (make setup installs it)")
    return r


def _env() -> dict:
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CVBENCH_OWNER": str(os.getpid())}


def pick_range() -> dict:
    """The first candidate range no host IPv4 address or route (any table) overlaps."""
    used = []
    for a in json.loads(_ip("-4", "-j", "addr", "show").stdout or "[]"):
        for info in a.get("addr_info", []):
            used.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False))
    for r in json.loads(_ip("-4", "-j", "route", "show", "table", "all").stdout or "[]"):
        dst = r.get("dst", "")
        if dst and dst != "default":
            try:
                used.append(ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False))
            except ValueError:
                continue
    skipped = []
    for cidr, name in RANGES:
        net = ipaddress.ip_network(cidr)
        clash = [str(u) for u in used if u.overlaps(net) and u.prefixlen > 0]
        if clash:
            skipped.append({"cidr": cidr, "why": f"overlaps host address/route {', '.join(sorted(set(clash)))}"})
            continue
        return {"cidr": cidr, "name": name, "skipped": skipped,
                "checked": "ip -4 addr and ip -4 route show table all in the host namespace"}
    raise EnvError("network", "every candidate address range overlaps a host address or route: "
                   + "; ".join(f"{s['cidr']} {s['why']}" for s in skipped),
                   "free one of " + ", ".join(c for c, _ in RANGES))


@dataclass
class Path:
    """One path's endpoints; by default both sides are host processes, in netns
    ``server_ns``/``client_ns`` (None: the host's).  See the module docstring."""
    name: str
    server_addr: str
    server_ns: str | None = None
    client_ns: str | None = None
    links: list[tuple[str, str]] = field(default_factory=list)   # (netns, link) whose MTU we set
    max_mtu: int = 65536
    setup: str = ""
    backend: str = "host"
    probe: str = "probe"
    client_tools: frozenset = HOST_TOOLS
    namespaces: list[str] = field(default_factory=list)           # netns close() deletes
    # Measured here: a round trip on one CPU took ~13 us, across the two CPUs
    # ~41 us (a cross-CPU wakeup), so unpinned runs mix both modes by where the
    # scheduler put them.  The scenario pins the server and the client (and
    # iperf3/sockperf alike) to fixed CPUs for a whole run.
    server_cpu: int | None = None
    client_cpu: int | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def mtu_fixed(self) -> bool:
        return not self.links

    def mtu(self) -> int:
        ns, link = self.links[0] if self.links else (None, "lo")
        args = (["-n", ns] if ns else []) + ["-j", "link", "show", link]
        return int(json.loads(_ip(*args).stdout)[0]["mtu"])

    def set_mtu(self, mtu: int) -> None:
        if not self.links:
            raise CvbError("mtu", f"the {self.name} path's MTU is the host's lo MTU ({self.mtu()}); "
                           "cvbench does not change host links", "leave the MTU out for this path")
        if not MIN_MTU <= mtu <= self.max_mtu:
            raise CvbError("mtu", f"{mtu} is outside what the {self.name} path can carry "
                           f"({MIN_MTU}..{self.max_mtu})", f"pick an MTU in {MIN_MTU}..{self.max_mtu}")
        for ns, link in self.links:
            _ip("-n", ns, "link", "set", link, "mtu", str(mtu))

    def _host_argv(self, argv: list[str]) -> list[str]:
        return [self.probe if argv[0] == "probe" else argv[0], *argv[1:]]

    def start_server(self, argv: list[str], ready: str, timeout: float = 20.0) -> Server:
        return Server(self._host_argv(argv), self.server_ns, ready, timeout, cpu=self.server_cpu)

    def run_client(self, argv: list[str], timeout: float) -> tuple[str, float]:
        if argv[0] not in self.client_tools:
            raise CvbError("network", f"the {self.name} path's client side ({self.backend}) cannot run "
                           f"{argv[0]}", "run it on a path whose client_tools has it")
        return run_client(self._host_argv(argv), self.client_ns, timeout, self.client_cpu)

    def close(self) -> None:
        while self.cleanups:
            try:
                self.cleanups.pop()()
            except Exception:  # noqa: BLE001,S110 - go on removing the rest; the sweep is the backstop
                pass
        for ns in dict.fromkeys([*self.namespaces, self.server_ns, self.client_ns]):
            if ns:
                _ip("netns", "del", ns, check=False)
        self.namespaces = []


def add_netns(p: Path, name: str) -> str:
    """A cvbench netns with lo up, deleted by ``p.close()``.

    tcp_no_metrics_save=1 there (a per-netns sysctl; the host's is untouched):
    otherwise each connection leaves its ssthresh in the route metrics cache
    and the next one to the same address starts from it, so a stream's figure
    depended on what ran before it (a veth stream here retransmits ~10-20
    thousand segments a second, so that cached state is far from neutral)."""
    p.namespaces.append(name)
    _ip("netns", "add", name)
    _ip("-n", name, "link", "set", "lo", "up")
    _ip("netns", "exec", name, "sysctl", "-q", "-w", "net.ipv4.tcp_no_metrics_save=1")
    return name


def add_veth(a: tuple[str, str, str], b: tuple[str, str, str], prefix: int = 30) -> int:
    """A veth pair made straight inside two netns (never in the host's): ends
    ``(netns, link, address or "")``, both up; returns the pair's max MTU."""
    (na, la, _), (nb, lb, _) = a, b
    _ip("link", "add", la, "netns", na, "type", "veth", "peer", "name", lb, "netns", nb)
    for ns, link, addr in (a, b):
        if addr:
            _ip("-n", ns, "addr", "add", f"{addr}/{prefix}", "dev", link)
        _ip("-n", ns, "link", "set", link, "up")
    info = json.loads(_ip("-n", na, "-d", "-j", "link", "show", la).stdout)[0]
    return int(info.get("max_mtu", 65535))


def _loopback(env: PathEnv, backend: str) -> Path:
    p = Path("loopback", "127.0.0.1", probe=env.probe, setup="two host processes on 127.0.0.1 (host lo)")
    p.max_mtu = p.mtu()
    return p


def _veth(env: PathEnv, backend: str) -> Path:
    """Two cvbench netns joined by a veth pair; the server at .2, the client at .1."""
    a, b = env.netns("a"), env.netns("b")
    la, lb = env.link("a"), env.link("b")
    ca, cb = env.addr(1), env.addr(2)
    p = Path("veth", str(cb), server_ns=b, client_ns=a, links=[(a, la), (b, lb)], probe=env.probe,
             setup=f"veth {la}<->{lb} between netns {a} and {b}, {ca}/30 <-> {cb}/30 ({env.rng['name']})")
    try:
        add_netns(p, a)
        add_netns(p, b)
        p.max_mtu = add_veth((a, la, str(ca)), (b, lb, str(cb)))
    except BaseException:
        p.close()
        raise
    return p


def _veth_or_container(env: PathEnv, backend: str) -> Path:
    if backend == "host":
        return _veth(env, backend)
    from . import netpath_container
    return netpath_container.veth(env, backend)


def _container_why_not(backend: str) -> str | None:
    if backend == "host":
        return None
    from . import netpath_container
    return netpath_container.why_not(backend)


LOOPBACK = PathKind(("host",), _loopback, needs_range=False)
VETH = PathKind(("host", "builtin", "builtin-cli", "crun", "runc"), _veth_or_container, _container_why_not)


def loopback() -> Path:
    """The loopback path outside the registry (tests)."""
    return _loopback(PathEnv(None, "probe"), "host")


def veth(rng: dict, probe: str = "probe") -> Path:
    """The host-process veth path outside the registry (tests)."""
    return _veth(PathEnv(rng, probe), "host")


def _pin(cpu: int | None):
    return (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None


def _in_ns(ns: str | None, argv: list[str]) -> list[str]:
    # ip netns exec execs the command itself: the pid is the probe's own.
    return ["ip", "netns", "exec", ns, *argv] if ns else argv


def free_port() -> int:
    """A port free for TCP and UDP on the host's loopback (for the loopback path)."""
    for _ in range(20):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(type=socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise EnvError("network", "no port free for both TCP and UDP on 127.0.0.1", "free some ports")


class Server:
    """A long-lived server process in ``ns`` that announces itself with ``ready``."""

    def __init__(self, argv: list[str], ns: str | None, ready: str, timeout: float = 20.0,
                 cpu: int | None = None):
        self.argv = argv
        self.p = subprocess.Popen(_in_ns(ns, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=_env(), text=True, preexec_fn=_pin(cpu))
        if ready:
            self._wait_for(ready, timeout)

    def _wait_for(self, ready: str, timeout: float) -> None:
        # Raw reads: a text-mode readline would leave later lines in Python's
        # buffer, where select() cannot see them.
        end, seen, fd = time.monotonic() + timeout, "", self.p.stdout.fileno()
        while time.monotonic() < end and ready not in seen:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                chunk = os.read(fd, 4096).decode(errors="replace")
                if not chunk:
                    break
                seen += chunk
        if ready in seen:
            return
        if self.p.poll() is None:
            self.p.kill()
        err = self.p.stderr.read() if self.p.stderr else ""
        self.stop()
        raise CvbError("network", f"server {' '.join(self.argv[:4])} did not come up: "
                       f"{(err or seen).strip()[-300:] or 'no output'}", "see the message", status=1)

    def cpu_s(self) -> float:
        """utime + stime of the server so far (it serves in its own process)."""
        return cpu_seconds(self.p.pid)

    def stop(self) -> None:
        stop_process(self.p)
        for s in (self.p.stdout, self.p.stderr):
            if s:
                s.close()


def run_client(argv: list[str], ns: str | None, timeout: float, cpu: int | None = None) -> tuple[str, float]:
    """Run a client to completion: (stdout, its CPU seconds from wait4 accounting).

    The harness's other children (servers) are still running, so the
    RUSAGE_CHILDREN delta is this client's alone."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(_in_ns(ns, argv), capture_output=True, text=True, timeout=timeout, env=_env(),
                       preexec_fn=_pin(cpu))
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise CvbError("network", f"{' '.join(argv[:3])} failed (exit {r.returncode}): "
                       f"{(r.stderr or r.stdout).strip()[-300:]}", "see the message", status=1)
    return r.stdout, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def sweep(mine: bool = False) -> list[str]:
    """Network namespaces and host links of dead cvbench network runs (or this
    process's own, with ``mine``)."""
    def dead(pid: str) -> bool:
        return (mine and int(pid) == os.getpid()) or not owner.alive(int(pid))
    removed = []
    r = _ip("netns", "list", check=False)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = NS_RE.match(name)
        if m and dead(m.group(1)):
            _ip("netns", "del", name, check=False)
            removed.append(f"netns {name}")
    r = _ip("-j", "link", "show", check=False)
    for link in json.loads(r.stdout or "[]"):
        m = LINK_RE.match(link.get("ifname", ""))
        if m and dead(m.group(1)):
            _ip("link", "del", link["ifname"], check=False)
            removed.append(f"link {link['ifname']}")
    from .netpath_passt import sweep_dirs
    return removed + sweep_dirs(dead)
