"""network: what each isolation path costs in latency, throughput and CPU.

A column is a (path, backend) pair from bench.netpath's registry, which sets
each path up and tears it down: ``loopback`` and ``veth`` with host
processes, ``veth`` with the client as a builtin, builtin-cli, crun or runc
container, ``bridge`` and ``user-mode`` (slirp4netns) with containers,
``gvisor`` with runsc, ``tap-virtio`` with a guest (bench/netpath_vm.py), and
``user-mode`` with a raw-QEMU guest behind passt (bench/netpath_passt.py; the
libvirt column is a row saying whether this libvirt offers passt).
In each, the static probe runs a server and a client (scenarios/probe/probe.c
``net``):

- ``tcp_rr`` / ``udp_rr``: 64-byte request/response for a fixed time; the
  probe's HDR-style histogram gives p50, p99 and p99.9 (never a mean);
- ``tcp_stream``: 128 KiB writes for a fixed time, at each MTU of the path
  (1500 and the largest the path allows; loopback: the host lo's own);
- CPU per GB: the client's (wait4 of a host process, or the container's
  cgroup cpuacct) plus the server's user + system seconds over the stream,
  per 10^9 bytes received.  Softirq work is charged to whichever process the
  kernel ran it in, so it is counted when it runs in either endpoint and
  missed otherwise (said in meta.json).

A path's columns are all up at once and take turns within each repetition
(the order rotated each time), so a drift of the shared machine's load hits
them alike.  iperf3 (throughput, same write size, TCP_NODELAY like the
probe) and sockperf ping-pong (TCP RR p50, same message size, full round
trip) run on the same endpoints as the host-process probe, before it in odd
repetitions and after it in even ones; the ratios go to meta.json's
``crosschecks``, judged at ±15%.  Container and guest clients carry only the
probe, so their columns have no cross-check.

Paths and MTUs can be narrowed with CVBENCH_NET_PATHS=loopback,veth and
CVBENCH_NET_MTUS=1500,9000; an unknown path or an MTU the path can't carry
exits 2.  A path or column that cannot be set up here is a row with the
reason in meta.json; one that fails is a failed row with why.
"""
from __future__ import annotations

import dataclasses
import os
import statistics

from bench import crosscheck, inside, netpath, timing
from bench.harness import Context, Task, progress
from common.errors import CvbError
from common.probe import hist_quantile

DESCRIPTION = "latency (RR p50/p99/p99.9), stream throughput and CPU per GB per network path"

TOLERANCE = 0.15
RR_SIZE = 64            # bytes per request and response (sockperf's -m)
STREAM_WRITE = 1 << 17  # the probe's write size; iperf3 gets the same -l
PATHS = netpath.ORDER
# mode -> (repetitions, seconds per client run).  The probe and iperf3/sockperf
# run for the same time: measured here, a veth stream ran ~5 GB/s over 1 s but
# ~1 GB/s over 3 s (many retransmits), so unequal durations alone made the
# iperf3 ratio ~2 (iperf3 -t takes whole seconds).
# Measured here with every container path (loopback, veth x5, bridge x2,
# user-mode x2, gvisor): 3 repetitions of 1 s took 2.8 min, so FAST keeps 2
# and the default 4 of 2 s, leaving room under the 3 and 10 minutes the
# issue allows for the VM columns.
SIZES = {"quick": (2, 1), "fast": (2, 1), "default": (4, 2), "rigorous": (10, 3)}
QUANTILES = (("p50", 0.50), ("p99", 0.99), ("p999", 0.999))
# What the probe's stream and iperf3 share, and what differs.  Checked on
# loopback here (where the iperf3 ratio read 0.77-0.83 in most runs):
# interleaved 1 s pairs, same pinning, gave probe/iperf3 0.59-1.31 per pair
# (median 0.82, load 1.2-1.7).  The I/O mode does not explain it: a small C
# stream with the probe's blocking write()/read() at both ends ran 3.05 GB/s,
# with iperf3's non-blocking select() loops at both ends 2.79 (medians of 6
# interleaved 1 s runs, load 0.9-1.6); nor does buffer alignment (the probe's
# static buffers are 32-byte aligned, iperf3's mmap'd ones page-aligned: 3.23
# against 3.20 GB/s, same test).  Single runs of one program swing 2.4-4.5 GB/s.
CROSSCHECK_DEFINITION = (
    "same for the probe's tcp_stream and iperf3: one TCP connection, 128 KiB writes (iperf3 -l) and reads, "
    "TCP_NODELAY (iperf3 -N), kernel-autotuned socket buffers, the same pinned CPUs, the same duration, "
    "no warm-up or omitted interval, the path's MTU; differs: iperf3 3.x drives non-blocking sockets "
    "through select() at both ends, the probe blocking write()/read(); the ratio is probe / iperf3 "
    "medians over the same interleaved repetitions")


def row_key(path: str, backend: str) -> str:
    """A row of the table and a line of the charts: the path, and where the
    client runs when that is not a host process."""
    return path if backend == "host" else f"{path} ({backend})"


def selection() -> tuple[list[str], list[int] | None]:
    """Paths and MTUs from CVBENCH_NET_PATHS / CVBENCH_NET_MTUS (exit 2 when bad)."""
    raw = os.environ.get("CVBENCH_NET_PATHS", "")
    paths = [p.strip() for p in raw.split(",") if p.strip()] or list(PATHS)
    for p in paths:
        if p not in PATHS:
            raise CvbError("CVBENCH_NET_PATHS", f"unknown path {p!r}", f"choose from {', '.join(PATHS)}")
    mtus = None
    raw = os.environ.get("CVBENCH_NET_MTUS", "")
    if raw.strip():
        try:
            mtus = [int(m) for m in raw.split(",") if m.strip()]
        except ValueError:
            raise CvbError("CVBENCH_NET_MTUS", f"{raw!r} is not a list of integers",
                           "e.g. CVBENCH_NET_MTUS=1500,9000") from None
        bad = [m for m in mtus if m < netpath.MIN_MTU]
        if bad:
            raise CvbError("CVBENCH_NET_MTUS", f"MTU {bad[0]} is below IPv4's minimum {netpath.MIN_MTU}",
                           "pick MTUs >= 68")
    return paths, mtus


def _affinity() -> dict:
    """Server and client on two fixed CPUs (bench.inside.pinning's pair), so every
    round trip crosses the same CPUs; on one CPU, both on it."""
    pin = inside.pinning()
    srv, cli = (pin["pair"][1], pin["pair"][0]) if pin["pair"] else (pin["cpu"], pin["cpu"])
    return {"server_cpu": srv, "client_cpu": cli,
            "why": "measured here: one CPU ~13 us round trip, across CPUs ~41 us; unpinned runs mix both",
            "tools": "iperf3 and sockperf pinned the same way"}


def columns(paths: list[str], backends: list[str], net: dict) -> list[tuple[str, str, netpath.PathKind]]:
    """(path, backend, kind) to measure; every other selected path becomes a
    "not measured" row with the reason (never a silent gap)."""
    todo = []
    for p in paths:
        k = netpath.kind(p)
        if isinstance(k, str):
            net["paths"][p] = {"path": p, "backend": "-", "status": "not measured", "why": k}
            continue
        mine = [b for b in k.backends if b in backends]
        if not mine:
            net["paths"][p] = {"path": p, "backend": "-", "status": "not measured",
                               "why": f"needs one of the backends {', '.join(k.backends)} in --backends"}
        for b in mine:
            why = k.why_not(b)
            if why:
                net["paths"][row_key(p, b)] = {"path": p, "backend": b, "status": "not measured", "why": why}
            else:
                todo.append((p, b, k))
    return todo


def plan(ctx: Context) -> list[Task]:
    paths, mtus = selection()
    reps, xsecs = SIZES["quick" if ctx.quick else ctx.mode]
    ms = xsecs * 1000
    net = ctx.meta.setdefault("network", {
        "rr_size_bytes": RR_SIZE, "stream_write_bytes": STREAM_WRITE, "ms_per_client_run": ms,
        "repetitions": reps, "tolerance": TOLERANCE,
        "cpu_accounting": "client: wait4 rusage of a host process, or the container's cgroup cpuacct; "
                          "server: /proc/PID/stat utime+stime over the stream; softirq work counts only "
                          "where the kernel ran it in an endpoint",
        "interleaving": "a path's columns (host, each container backend) take turns within each "
                        "repetition, the order rotated each time, and the probe and iperf3/sockperf "
                        "alternate which goes first: slow drifts of the shared machine's load hit all alike",
        "crosscheck_definition": CROSSCHECK_DEFINITION,
        "paths": {}, "hist": {}, "affinity": _affinity()})
    todo = columns(paths, ctx.backends, net)
    if any(k.needs_range for _, _, k in todo):
        net["address_range"] = netpath.pick_range()
    env = netpath.PathEnv(net.get("address_range"), os.path.join(ctx.backend("host").img.rootfs, "probe"))
    # Fail on a bad MTU before anything is measured (exit 2): each path's
    # limits come from its kind, or from a short-lived instance of it.
    if mtus:
        for p, b, k in todo:
            if k.max_mtu is not None:
                _check_mtus(p, None, k.max_mtu(b), mtus)
                continue
            path = k.factory(_env_for(env, b), b)
            try:
                _mtus_for(path, mtus)
            finally:
                path.close()
    tasks = []
    for p in dict.fromkeys(p for p, _, _ in todo):
        cols = [(b, k) for q, b, k in todo if q == p]
        n_mtu = 1 if p == "loopback" else len(mtus or (0, 0))
        est = sum(reps * (2 + n_mtu + (2 if b == "host" else 0)) * xsecs + 3 for b, _ in cols)
        tasks.append(Task(f"{p} path ({', '.join(b for b, _ in cols)})", cols[0][0], est,
                          lambda p=p, cols=cols: _measure(ctx, env, p, cols, mtus, reps, ms, xsecs)))
    ctx.summary_metrics = None
    return tasks


def _env_for(env, backend: str):
    """Each column its own netns names (cvbench-n<pid>-<backend>-<tag>), so a
    path's columns can be up at once and take turns."""
    return dataclasses.replace(env, slot="" if backend == "host" else f"{backend}-")


def _check_mtus(name: str, fixed: int | None, max_mtu: int, mtus: list[int]) -> None:
    if fixed is not None:
        if mtus and mtus != [fixed]:
            raise CvbError("CVBENCH_NET_MTUS", f"the {name} path runs at its fixed MTU {fixed} (the host's); "
                           "cvbench does not change host links", f"drop {name} or the MTUs")
        return
    for m in mtus:
        if m > max_mtu:
            raise CvbError("CVBENCH_NET_MTUS", f"MTU {m} is more than the {name} path can carry "
                           f"(max {max_mtu})", f"pick MTUs in {netpath.MIN_MTU}..{max_mtu}")


def _mtus_for(path, mtus: list[int] | None) -> list[int]:
    if path.mtu_fixed:
        _check_mtus(path.name, path.max_mtu, path.max_mtu, mtus or [])
        return [path.max_mtu]
    want = mtus or [1500, path.max_mtu]
    _check_mtus(path.name, None, path.max_mtu, want)
    return want


class _Column:
    """One (path, backend) column: its endpoints, servers and samples."""

    def __init__(self, ctx: Context, env, name: str, backend: str, kind, mtus):
        self.net = ctx.meta["network"]
        self.name, self.backend, self.key = name, backend, row_key(name, backend)
        self.row = self.net["paths"].setdefault(self.key, {"path": name, "backend": backend, "status": "failed"})
        self.path, self.servers = None, []
        self.samples: dict[str, list[list[float]]] = {}
        self.units: dict[str, tuple[str, str]] = {}
        self.hist: dict[str, dict[int, int]] = {"tcp_rr": {}, "udp_rr": {}}
        self.tools: dict[str, list] = {"iperf3": [], "sockperf": [], "iperf3_errors": [],
                                       "sockperf_errors": [], "commands": []}
        self.path = kind.factory(_env_for(env, backend), backend)
        try:
            p = self.path
            p.server_cpu, p.client_cpu = self.net["affinity"]["server_cpu"], self.net["affinity"]["client_cpu"]
            self.row.update(setup=p.setup, max_mtu=p.max_mtu)
            self.mtus = _mtus_for(p, mtus)
            self.port = netpath.free_port() if p.server_ns is None else netpath.PORT
            self.row["port"] = self.port
            self.checked = {"iperf3", "sockperf"} <= set(p.client_tools)
            for proto in ("tcp", "udp"):
                self.servers.append(p.start_server(["probe", "net", "serve", proto, str(self.port)],
                                                   "CVB net_serve"))
        except BaseException:
            self.close()
            raise

    def add(self, metric, value, unit, tidy_unit):
        self.samples.setdefault(metric, []).append([value])
        self.units[metric] = (unit, tidy_unit)

    def repetition(self, rep: int, ms: int, xsecs: int) -> None:
        p, timeout = self.path, ms / 1000 * 20 + 30
        tools_first = self.checked and rep % 2 == 1
        if tools_first:
            self._tools(xsecs)
        if not p.mtu_fixed:
            p.set_mtu(self.mtus[0])
        for op in ("tcp_rr", "udp_rr"):
            res = netpath.probe_client(p, op, self.port, ms, RR_SIZE, timeout)
            h = res["hist"]
            for lo, c in h:
                self.hist[op][lo] = self.hist[op].get(lo, 0) + c
            for q, f in QUANTILES:
                self.add(f"{op}_{q}", hist_quantile(h, f) * 1e-9, "second", "ns")
        for mtu in self.mtus:
            if not p.mtu_fixed:
                p.set_mtu(mtu)
            s0 = self.servers[0].cpu_s()
            res = netpath.probe_client(p, "tcp_stream", self.port, ms, 1, timeout)
            cpu = res["client_cpu_s"] + self.servers[0].cpu_s() - s0
            gb = int(res["bytes"]) / 1e9
            self.add(f"stream_mtu{mtu}", int(res["bytes"]) / (int(res["ns"]) / 1e9), "byte", "bytes_per_s")
            self.add(f"cpu_per_gb_mtu{mtu}", cpu / gb, "second", "s_per_GB")
        # The independent tools on the same endpoints, next to the probe: each
        # repetition's pair sees the same machine state.
        if self.checked and not tools_first:
            self._tools(xsecs)

    def _tools(self, xsecs: int) -> None:
        if not self.path.mtu_fixed:
            self.path.set_mtu(self.mtus[0])
        _tools_once(self.path, self.tools, xsecs)

    def finish(self, ctx: Context) -> list:
        self.net["hist"][self.key] = {op: sorted(h.items()) for op, h in self.hist.items()}
        self.row.update(status="measured", mtus=self.mtus)
        self.row.pop("why", None)
        benches = [timing.in_instance_runs(f"network.{metric}.{self.backend}.{self.name}", vals,
                                           self.units[metric][0],
                                           {"cvbench_tidy_unit": self.units[metric][1], "cvbench_path": self.name,
                                            "cvbench_path_setup": self.path.setup})
                   for metric, vals in self.samples.items()]
        if self.checked:
            _crosschecks(ctx, self.key, self.mtus[0], self.samples, self.tools)
        return benches

    def close(self) -> None:
        for s in self.servers:
            s.stop()
        self.servers = []
        if self.path is not None:
            self.path.close()


def _failed(net: dict, name: str, backend: str, e: BaseException) -> str:
    """The row says why: a failed column is a row, never a silent gap."""
    why = (e.why if isinstance(e, CvbError) else f"{type(e).__name__}: {e}")[:300]
    row = net["paths"].setdefault(row_key(name, backend), {"path": name, "backend": backend})
    row.update(status="failed", why=why)
    progress(f"[network] {row_key(name, backend)}: FAILED: {why}")
    return why


def _measure(ctx: Context, env, name: str, cols, mtus, reps: int, ms: int, xsecs: int) -> list:
    """All of a path's columns up at once, taking turns in each repetition
    (rotated order); a column that fails is a failed row, the others go on."""
    net = ctx.meta["network"]
    live: list[_Column] = []
    errors = []
    try:
        for b, k in cols:
            try:
                live.append(_Column(ctx, env, name, b, k, mtus))
            except Exception as e:  # noqa: BLE001 - a column that cannot be measured is a failed row with why
                errors.append(_failed(net, name, b, e))
        for rep in range(reps):
            turn = live[rep % len(live):] + live[:rep % len(live)] if live else []
            for col in turn:
                try:
                    col.repetition(rep, ms, xsecs)
                except Exception as e:  # noqa: BLE001 - a column that cannot be measured is a failed row with why
                    errors.append(_failed(net, name, col.backend, e))
                    col.close()
                    live.remove(col)
            progress(f"[network] {name}: repetition {rep + 1}/{reps} done ({len(live)} of {len(cols)} columns)")
        for col in live:
            col.close()
        benches = [b for col in live for b in col.finish(ctx)]
        if not benches:
            raise CvbError("network", f"no column of the {name} path was measured: {'; '.join(errors)}",
                           "see the rows' reasons", status=1)
        return benches
    finally:
        for col in live:
            col.close()


def _judge(check: str, path: str, metric: str, unit: str, harness, tool, **extra) -> dict:
    """crosscheck.judge at this scenario's tolerance (the issue's ±15%)."""
    rec = crosscheck.judge(check, f"host ({path})", metric, unit, harness, tool, path=path, **extra)
    rec["tolerance"] = TOLERANCE
    if rec["ratio"] is not None:
        rec["within"] = abs(rec["ratio"] - 1) <= TOLERANCE
    return rec


def _tools_once(path, tools: dict, secs: int) -> None:
    """One iperf3 and one sockperf run; a failure is kept as the check's error."""
    # A port each: sockperf's server cannot bind one iperf3 just left in TIME_WAIT.
    ports = [netpath.free_port() if path.server_ns is None else netpath.PORT + i for i in (1, 2)]
    for key, call in (("iperf3", lambda: netpath.iperf3(path, ports[0], secs, STREAM_WRITE)),
                      ("sockperf", lambda: netpath.sockperf(path, ports[1], secs, RR_SIZE))):
        try:
            r = call()
            tools[key].append(r)
            if r["command"] not in tools["commands"]:
                tools["commands"].append(r["command"])
        except (CvbError, OSError, ValueError, KeyError) as e:
            tools[f"{key}_errors"].append(str(getattr(e, "why", e))[:300])


def _crosschecks(ctx: Context, name: str, mtu: int, samples: dict, tools: dict) -> None:
    """Probe median against tool median, both over the same interleaved repetitions."""
    checks = ctx.meta.setdefault("crosschecks", [])
    def err(key):
        return {"error": "; ".join(sorted(set(tools[f"{key}_errors"])))} if tools[f"{key}_errors"] else {}
    probe_bps = statistics.median(v[0] for v in samples[f"stream_mtu{mtu}"])
    iperf = [r["bytes_per_s"] for r in tools["iperf3"]]
    checks.append(_judge("iperf3", name, f"stream_mtu{mtu}", "bytes_per_s", probe_bps,
                         statistics.median(iperf) if iperf and not err("iperf3") else None,
                         runs=len(iperf), tool_retransmits=[r.get("retransmits") for r in tools["iperf3"]],
                         command=" | ".join(c for c in tools["commands"] if "iperf3" in c),
                         **err("iperf3")))
    p50 = statistics.median(v[0] for v in samples["tcp_rr_p50"]) * 1e9
    sp = [r["p50_ns"] for r in tools["sockperf"]]
    checks.append(_judge("sockperf ping-pong", name, "tcp_rr_p50", "ns", p50,
                         statistics.median(sp) if sp and not err("sockperf") else None, runs=len(sp),
                         tool_p99_ns=[r["p99_ns"] for r in tools["sockperf"]],
                         command=" | ".join(c for c in tools["commands"] if "sockperf" in c), **err("sockperf")))
