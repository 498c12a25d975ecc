"""The network scenario end to end: real probes on loopback and on a veth
between two cvbench netns, iperf3/sockperf beside them, bad input, and a run
SIGKILLed mid-stream whose netns and processes the sweep then removes."""
from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time

import pytest
from scenario_run import ROOT, run_scenario, tidy_values

from bench import netpath, sweep
from common import owner
from common.probe import hist_quantile

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def _netns() -> set[str]:
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in r.stdout.splitlines() if line.split()}


def _owned_procs(pid: int) -> list[int]:
    tag = f"CVBENCH_OWNER={pid}".encode()
    out = []
    for e in os.scandir("/proc"):
        if e.name.isdigit():
            try:
                if tag in open(f"/proc/{e.name}/environ", "rb").read().split(b"\0"):
                    out.append(int(e.name))
            except OSError:
                pass
    return out


def test_hist_quantile_reads_buckets():
    hist = [(100, 50), (200, 49), (5000, 1)]
    assert hist_quantile(hist, 0.5) == 100
    assert hist_quantile(hist, 0.99) == 200
    assert hist_quantile(hist, 0.999) == 5000


def test_range_is_unused_on_the_host():
    rng = netpath.pick_range()
    net = ipaddress.ip_network(rng["cidr"])
    r = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True)
    for word in r.stdout.split():
        if "/" in word and word[0].isdigit():
            assert not ipaddress.ip_network(word, strict=False).overlaps(net), (word, rng)


def test_network_loopback_and_veth(tmp_path):
    before = _netns()
    suite, meta, tidy, r = run_scenario("network", tmp_path, backends=["host"])
    net = meta["network"]
    assert net["paths"]["loopback"]["status"] == "measured"
    assert net["paths"]["veth"]["status"] == "measured"
    for p in ("bridge", "tap-virtio", "user-mode", "gvisor"):   # named rows with a reason
        assert net["paths"][p]["status"] == "not measured" and net["paths"][p]["why"]
    assert net["address_range"]["cidr"] in [c for c, _ in netpath.RANGES]
    for path in ("loopback", "veth"):
        for op in ("tcp_rr", "udp_rr"):
            p50 = tidy_values(tidy, metric=f"{op}_p50", variant=path)
            p99 = tidy_values(tidy, metric=f"{op}_p99", variant=path)
            assert p50 and all(0 < a <= b for a, b in zip(p50, p99, strict=True)), (path, op)
            assert sum(c for _, c in net["hist"][path][op]) > 100
    for mtu in net["paths"]["veth"]["mtus"]:
        assert min(tidy_values(tidy, metric=f"stream_mtu{mtu}", variant="veth")) > 1e6
        assert min(tidy_values(tidy, metric=f"cpu_per_gb_mtu{mtu}", variant="veth")) > 0
    assert net["paths"]["veth"]["mtus"] == [1500, 65535]
    checks = {(c["check"], c["path"]): c for c in meta["crosschecks"]}
    for key in (("iperf3", "loopback"), ("iperf3", "veth"), ("sockperf ping-pong", "loopback"),
                ("sockperf ping-pong", "veth")):
        assert checks[key]["ratio"] is not None, checks[key]   # really run and judged
        assert checks[key]["tolerance"] == 0.15
    # torn down: no cvbench netns left by a dead owner (the run); other live
    # cvbench runs on this machine may hold their own meanwhile
    assert not {n for n in _netns() - before
                if (m := netpath.NS_RE.match(n)) and not owner.alive(int(m.group(1)))}
    assert meta["network"]["affinity"]["server_cpu"] is not None
    # The charts and the report table, from the files the run wrote.
    folder = (tmp_path / "latest").resolve()
    c = subprocess.run([sys.executable, "-m", "analysis", "charts", str(folder)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert c.returncode == 0, c.stderr
    for name in ("network_latency_ecdf", "network_throughput", "network_cpu_per_gb"):
        assert (folder / "charts" / f"{name}.png").stat().st_size > 10_000
    report = (folder / "report.md").read_text()
    assert "## Network: per path (medians)" in report
    assert "| veth |" in report and "| gvisor | - |" in report and "not measured" in report


@pytest.mark.parametrize("env,needle", [
    ({"CVBENCH_NET_PATHS": "ethernet"}, "unknown path 'ethernet'"),
    ({"CVBENCH_NET_PATHS": "veth", "CVBENCH_NET_MTUS": "70000"}, "more than the veth path can carry"),
])
def test_bad_input_exits_2(tmp_path, env, needle):
    r = subprocess.run([sys.executable, "-m", "bench", "run", "network", "--backends", "host", "--quick",
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, **env})
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_killed_mid_stream_is_swept(tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "bench", "run", "network", "--backends", "host",
                          "--out", str(tmp_path)], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env={**os.environ, "CVBENCH_NET_PATHS": "veth"})
    ns = {f"cvbench-n{p.pid}-a", f"cvbench-n{p.pid}-b"}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:   # both netns up and a client running in them
            if ns <= _netns() and len(_owned_procs(p.pid)) >= 3:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the run never reached its veth clients")
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert ns <= _netns() and _owned_procs(p.pid)   # the kill left them behind
    removed = sweep.sweep_all()
    assert any(f"netns cvbench-n{p.pid}-a" == x for x in removed), removed
    time.sleep(0.2)
    assert not ns & _netns()
    assert not _owned_procs(p.pid)
    assert not list((tmp_path / "runs").glob("2*"))   # no half-written run folder
