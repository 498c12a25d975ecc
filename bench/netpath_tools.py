"""What runs on a network path (bench/netpath.py): the probe's client ops,
and iperf3 and sockperf as independent checks on the same endpoints.  They
use only the path protocol (``start_server``, ``run_client``,
``server_addr``), so they run on any path whose client side has the tool.
"""
from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING

from common.errors import CvbError
from common.probe import net_result

if TYPE_CHECKING:
    from .netpath import Path


def probe_client(path: Path, op: str, port: int, ms: int, size: int, timeout: float) -> dict:
    out, cpu = path.run_client(["probe", "net", "client", op, path.server_addr, str(port), "--ms", str(ms),
                                "--size", str(size)], timeout)
    res = net_result(out)
    if "op" not in res:
        raise CvbError("network", f"probe {op} printed no result: {out[-300:]}", "see the message", status=1)
    res["client_cpu_s"] = cpu
    return res


def iperf3(path: Path, port: int, secs: float, write: int) -> dict:
    """iperf3's received throughput (bytes/s), same endpoints, same write size as the probe."""
    srv = path.start_server(["iperf3", "-s", "-1", "--forceflush", "-p", str(port), "-B", path.server_addr],
                            "Server listening")
    try:
        out, _ = path.run_client(["iperf3", "-c", path.server_addr, "-p", str(port), "-t", f"{secs:g}",
                                  "-l", str(write), "-N", "-J"], secs + 30)
    finally:
        srv.stop()
    # -N: TCP_NODELAY, as the probe's stream socket has it.
    end = json.loads(out)["end"]
    return {"bytes_per_s": end["sum_received"]["bits_per_second"] / 8,
            "retransmits": end["sum_sent"].get("retransmits"),
            "command": f"iperf3 -c {path.server_addr} -t {secs:g} -l {write} -N"}


def sockperf(path: Path, port: int, secs: float, size: int) -> dict:
    """sockperf ping-pong's round-trip p50 and p99 (ns), TCP, ``size``-byte messages."""
    srv = path.start_server(["sockperf", "server", "--tcp", "-i", path.server_addr, "-p", str(port)], "")
    cmd = ["sockperf", "ping-pong", "--tcp", "-i", path.server_addr, "-p", str(port), "-t", f"{secs:g}",
           "-m", str(size), "--full-rtt"]
    pct: dict[float, float] = {}
    try:
        for _ in range(10):   # sockperf's server says nothing on a pipe when it listens
            time.sleep(0.3)
            out, _ = path.run_client(cmd, secs + 30)   # exits 0 even when refused
            pct = {float(a): float(b) * 1000
                   for a, b in re.findall(r"percentile\s+([\d.]+)\s*=\s*([\d.]+)", out)}
            if "connect" not in out or pct:
                break
    finally:
        srv.stop()
    if 50.0 not in pct:
        raise CvbError("network", f"sockperf printed no percentiles: {out[-300:]}", "see the message", status=1)
    return {"p50_ns": pct[50.0], "p99_ns": pct.get(99.0), "command": " ".join(cmd[:2] + cmd[7:])}
