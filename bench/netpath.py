"""Network paths the network scenario measures, set up and torn down by cvbench.

A path is two endpoints (a server and a client network namespace, or none for
the host's loopback) plus the address the client reaches the server at.
Traffic never leaves them:

- ``loopback``: both probes in the host's network namespace, on 127.0.0.1.
- ``veth``: a veth pair between two network namespaces cvbench creates
  (``cvbench-n<pid>-a`` and ``-b``, links ``cvbench<pid>a``/``b``), addressed
  from a documentation (RFC 5737) or link-local range that :func:`pick_range`
  checks no host address or route overlaps.

Everything carries the owner's pid, so :func:`sweep` removes only what a dead
cvbench run left (processes inside are tagged ``CVBENCH_OWNER`` and killed by
bench.sweep.sweep_host_probes).  The probe's ``net`` ops are in
scenarios/probe/probe.c; iperf3 and sockperf run on the same endpoints as
independent checks.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import resource
import select
import socket
import subprocess
import time
from dataclasses import dataclass, field

from common import owner
from common.errors import CvbError, EnvError
from common.probe import net_result
from common.procs import stat_fields

# Candidates in order: documentation ranges first (never routed on the
# internet), then a link-local /24.  The first that no host address or route
# overlaps is used; meta.json records which and why others were skipped.
RANGES = (("198.51.100.0/24", "TEST-NET-2 (RFC 5737 documentation range)"),
          ("203.0.113.0/24", "TEST-NET-3 (RFC 5737 documentation range)"),
          ("192.0.2.0/24", "TEST-NET-1 (RFC 5737 documentation range)"),
          ("169.254.201.0/24", "link-local (RFC 3927)"))
NS_RE = re.compile(r"^cvbench-n(\d+)-[ab]$")
LINK_RE = re.compile(r"^cvbench(\d+)[ab]$")
MIN_MTU = 68            # IPv4's minimum
PORT = 47001            # inside cvbench's own namespaces nothing else listens
CLK_TCK = os.sysconf("SC_CLK_TCK")


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
    """One path's endpoints.  ``server_ns``/``client_ns`` None: the host namespace."""
    name: str
    server_addr: str
    server_ns: str | None = None
    client_ns: str | None = None
    links: list[tuple[str, str]] = field(default_factory=list)   # (netns, link) whose MTU we set
    max_mtu: int = 65536
    setup: str = ""
    # Measured here: a round trip on one CPU took ~13 us, across the two CPUs
    # ~41 us (a cross-CPU wakeup), so unpinned runs mix both modes by where the
    # scheduler put them.  The scenario pins the server and the client (and
    # iperf3/sockperf alike) to fixed CPUs for a whole run.
    server_cpu: int | None = None
    client_cpu: int | None = None

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

    def close(self) -> None:
        for ns in {n for n in (self.server_ns, self.client_ns) if n}:
            _ip("netns", "del", ns, check=False)


def loopback() -> Path:
    p = Path("loopback", "127.0.0.1", setup="two host processes on 127.0.0.1 (host lo)")
    p.max_mtu = p.mtu()
    return p


def veth(rng: dict) -> Path:
    """Two cvbench netns joined by a veth pair; the server at .2, the client at .1."""
    pid = os.getpid()
    a, b = f"cvbench-n{pid}-a", f"cvbench-n{pid}-b"
    la, lb = f"cvbench{pid}a", f"cvbench{pid}b"
    net = ipaddress.ip_network(rng["cidr"])
    ca, cb = net.network_address + 1, net.network_address + 2
    p = Path("veth", str(cb), server_ns=b, client_ns=a, links=[(a, la), (b, lb)],
             setup=f"veth {la}<->{lb} between netns {a} and {b}, {ca}/30 <-> {cb}/30 ({rng['name']})")
    try:
        _ip("netns", "add", a)
        _ip("netns", "add", b)
        _ip("link", "add", la, "netns", a, "type", "veth", "peer", "name", lb, "netns", b)
        for ns, link, addr in ((a, la, ca), (b, lb, cb)):
            _ip("-n", ns, "addr", "add", f"{addr}/30", "dev", link)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", link, "up")
        info = json.loads(_ip("-n", a, "-d", "-j", "link", "show", la).stdout)[0]
        p.max_mtu = int(info.get("max_mtu", 65535))
    except BaseException:
        p.close()
        raise
    return p


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
        f = stat_fields(self.p.pid)
        return (int(f[11]) + int(f[12])) / CLK_TCK if f else 0.0

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
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


def probe_client(probe: str, path: Path, op: str, port: int, ms: int, size: int, timeout: float) -> dict:
    out, cpu = run_client([probe, "net", "client", op, path.server_addr, str(port), "--ms", str(ms),
                           "--size", str(size)], path.client_ns, timeout, path.client_cpu)
    res = net_result(out)
    if "op" not in res:
        raise CvbError("network", f"probe {op} printed no result: {out[-300:]}", "see the message", status=1)
    res["client_cpu_s"] = cpu
    return res


def iperf3(path: Path, port: int, secs: float, write: int) -> dict:
    """iperf3's received throughput (bytes/s), same endpoints, same write size as the probe."""
    srv = Server(["iperf3", "-s", "-1", "--forceflush", "-p", str(port), "-B", path.server_addr],
                 path.server_ns, "Server listening", cpu=path.server_cpu)
    try:
        out, _ = run_client(["iperf3", "-c", path.server_addr, "-p", str(port), "-t", f"{secs:g}",
                             "-l", str(write), "-J"], path.client_ns, secs + 30, path.client_cpu)
    finally:
        srv.stop()
    bps = json.loads(out)["end"]["sum_received"]["bits_per_second"]
    return {"bytes_per_s": bps / 8, "command": f"iperf3 -c {path.server_addr} -t {secs:g} -l {write}"}


def sockperf(path: Path, port: int, secs: float, size: int) -> dict:
    """sockperf ping-pong's round-trip p50 and p99 (ns), TCP, ``size``-byte messages."""
    srv = Server(["sockperf", "server", "--tcp", "-i", path.server_addr, "-p", str(port)],
                 path.server_ns, "", cpu=path.server_cpu)
    cmd = ["sockperf", "ping-pong", "--tcp", "-i", path.server_addr, "-p", str(port), "-t", f"{secs:g}",
           "-m", str(size), "--full-rtt"]
    pct: dict[float, float] = {}
    try:
        for _ in range(10):   # sockperf's server says nothing on a pipe when it listens
            time.sleep(0.3)
            out, _ = run_client(cmd, path.client_ns, secs + 30, path.client_cpu)   # exits 0 even when refused
            pct = {float(a): float(b) * 1000
                   for a, b in re.findall(r"percentile\s+([\d.]+)\s*=\s*([\d.]+)", out)}
            if "connect" not in out or pct:
                break
    finally:
        srv.stop()
    if 50.0 not in pct:
        raise CvbError("network", f"sockperf printed no percentiles: {out[-300:]}", "see the message", status=1)
    return {"p50_ns": pct[50.0], "p99_ns": pct.get(99.0), "command": " ".join(cmd[:2] + cmd[7:])}


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
    return removed
