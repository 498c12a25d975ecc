"""Network charts (RR latency ECDF per path, stream throughput per path and
MTU, host CPU-seconds per GB) and the network table for the report, from
tidy.csv and meta.json's ``network`` (scenarios/network.py writes both).

Every subtitle names the accelerator (style.subtitle) and each path's setup;
paths that were not measured or failed are named with why, never dropped.
"""
from __future__ import annotations

import re
from pathlib import Path

from . import style
from .load import Run

PATH_COLORS = {"loopback": "#4c72b0", "veth": "#dd8452", "bridge": "#55a868", "tap-virtio": "#c44e52",
               "user-mode": "#8172b3", "gvisor": "#937860"}
_MTU = re.compile(r"^(stream|cpu_per_gb)_mtu(\d+)$")
# Where the client ran, when not a host process: a line style / bar hatch each.
BACKEND_LINES = {"host": "-", "builtin": "--", "builtin-cli": "-.", "crun": ":", "runc": (0, (5, 1)),
                 "runsc": (0, (1, 1)), "libvirt": (0, (3, 1, 1, 1)), "qemu": (0, (5, 2, 1, 2))}
BACKEND_HATCH = {"host": "", "builtin": "//", "builtin-cli": "\\\\", "crun": "..", "runc": "xx",
                 "runsc": "oo", "libvirt": "--", "qemu": "++"}


def row_key(path: str, backend: str) -> str:
    """The row name scenarios/network.py gives a (path, backend) column."""
    return path if backend == "host" else f"{path} ({backend})"


def _path_of(run: Run, key: str) -> tuple[str, str]:
    r = _paths(run).get(key) or {}
    return r.get("path", key), r.get("backend", "host")


def _net(run: Run):
    df = run.tidy[run.tidy["scenario"] == "network"]
    return df


def _paths(run: Run) -> dict:
    return (run.meta.get("network") or {}).get("paths") or {}


# One line per path for the subtitles; each row's full setup is in the report.
SHORT = {"loopback": "loopback: two host processes on 127.0.0.1",
         "veth": "veth: the client (host process, or a container joined by netns path) in a cvbench netns, "
                 "a veth to the server's",
         "bridge": "bridge: two containers' veths on a cvbench Linux bridge inside a cvbench netns",
         "user-mode": "user-mode: a container behind slirp4netns, or a raw-QEMU guest behind passt (the guest "
                      "dials passt's gateway, mapped to the server on loopback); each in a cvbench netns",
         "gvisor": "gvisor: runsc --network=sandbox (gVisor's netstack) on a veth to a cvbench netns",
         "tap-virtio": "tap-virtio: a guest's virtio-net on a cvbench tap in a cvbench netns"}


def notes(run: Run) -> str:
    """Each measured path's setup in short (one line per path, whatever its
    columns), the address range, and every row not measured or failed."""
    net = run.meta.get("network") or {}
    rng = net.get("address_range") or {}
    lines = []
    for key, r in _paths(run).items():
        path = r.get("path", key)
        if r.get("status") == "measured":
            line = SHORT.get(path, f"{path}: {str(r.get('setup', ''))[:100]}")
            if line not in lines:
                lines.append(line)
    if rng:
        lines.append(f"addresses: {rng.get('cidr', '?')} ({str(rng.get('name', '')).split(' (')[0]}, "
                     "checked unused on the host)")
    missing = [f"{p} ({r.get('status')})" for p, r in _paths(run).items() if r.get("status") != "measured"]
    if missing:
        lines.append("not shown, why in the report: " + ", ".join(missing))
    return "\n".join(lines)


def network_latency_ecdf(run: Run, st: str, out: Path) -> list[Path]:
    """ECDF of every request/response round trip (the probe's HDR histogram,
    all repetitions pooled), one line per path; TCP and UDP side by side."""
    hist = (run.meta.get("network") or {}).get("hist") or {}
    if not hist:
        return []
    with style.styled(st):
        fig, axes = style.figure(st, 1, 2, squeeze=False, layout="constrained", sharey=True)
        for ax, op in zip(axes[0], ("tcp_rr", "udp_rr"), strict=True):
            for key, ops in hist.items():
                path, backend = _path_of(run, key)
                h = sorted((int(lo), int(c)) for lo, c in ops.get(op) or [])
                total = sum(c for _, c in h)
                if not total:
                    continue
                xs, ys, seen = [], [], 0
                for lo, c in h:
                    seen += c
                    xs.append(lo / 1000)
                    ys.append(seen / total)
                ax.step(xs, ys, where="post", color=PATH_COLORS.get(path, "#333333"), label=key,
                        linestyle=BACKEND_LINES.get(backend, "-"))
            ax.set_xscale("log")
            ax.set_title(f"{op} ({(run.meta.get('network') or {}).get('rr_size_bytes', '?')} B each way)",
                         fontsize="small")
            ax.set_xlabel("round trip (µs, log scale)")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("fraction of requests")
        # beside the plots, not on them: a line per column can be a dozen
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize="small",
                   frameon=False)
        style.titled(fig, "Network: request/response latency ECDF per path", run.meta, st, note=notes(run))
        return style.save(fig, out, "network_latency_ecdf")


def _per_mtu(run: Run, kind: str):
    """(row, mtu) -> median value of ``kind`` (stream or cpu_per_gb); rows in
    path order, host first within a path."""
    df = _net(run)
    out = {}
    for (metric, path, backend), g in df.groupby(["metric", "variant", "backend"]):
        m = _MTU.match(metric)
        if m and m.group(1) == kind:
            out[(row_key(path, backend), int(m.group(2)))] = (float(g["value"].median()), path, backend,
                                                              float(g["value"].min()), float(g["value"].max()))
    order = list(PATH_COLORS)
    return dict(sorted(out.items(), key=lambda kv: (order.index(kv[1][1]) if kv[1][1] in order else 99,
                                                    kv[1][2] != "host", kv[0][0], kv[0][1])))


def _bars(run: Run, st: str, out: Path, kind: str, scale: float, xlabel: str, title: str, name: str):
    vals = _per_mtu(run, kind)
    if not vals:
        return []
    with style.styled(st):
        fig, ax = style.figure(st, layout="constrained")
        # a bar per (row, MTU): grow the figure with them so labels never overlap
        fig.set_size_inches(fig.get_figwidth(), max(fig.get_figheight(), 3.2 + 0.3 * len(vals)))
        labels = [f"{k} · MTU {m}" for k, m in vals]
        rows = list(vals.values())
        med = [r[0] * scale for r in rows]
        ax.barh(range(len(vals)), med, color=[PATH_COLORS.get(r[1], "#333333") for r in rows],
                hatch=[BACKEND_HATCH.get(r[2], "") for r in rows], edgecolor="white")
        # whiskers: the lowest and highest repetition, so a gap inside the spread reads as one
        ax.errorbar(med, range(len(vals)), xerr=[[m - r[3] * scale for m, r in zip(med, rows, strict=True)],
                                                  [r[4] * scale - m for m, r in zip(med, rows, strict=True)]],
                    fmt="none", ecolor="#333333", elinewidth=1, capsize=3)
        ax.set_yticks(range(len(vals)), labels, fontsize="small")
        ax.set_ylim(len(vals) - 0.5, -0.5)
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", alpha=0.3)
        style.titled(fig, title, run.meta, st, note=notes(run))
        return style.save(fig, out, name)


def network_throughput(run: Run, st: str, out: Path) -> list[Path]:
    """TCP stream throughput (median over repetitions) per path and MTU."""
    return _bars(run, st, out, "stream", 8e-9, "TCP stream throughput (Gbit/s, probe; bar: median, whiskers: min-max of repetitions)",
                 "Network: stream throughput per path and MTU", "network_throughput")


def network_cpu_per_gb(run: Run, st: str, out: Path) -> list[Path]:
    """Client + server CPU-seconds per GB streamed, per path and MTU."""
    return _bars(run, st, out, "cpu_per_gb", 1.0,
                 "CPU-s per GB (client: wait4 or container cgroup; server: /proc; median, min-max)",
                 "Network: host CPU per GB streamed", "network_cpu_per_gb")


def table(run: Run) -> tuple[list[str], list[list[str]]]:
    """Per path: RR p50/p99 (TCP, UDP), throughput and CPU/GB per MTU, the
    cross-check ratios; then the paths not measured or failed, with why."""
    header = ["path", "TCP RR p50", "TCP RR p99", "UDP RR p50", "UDP RR p99", "stream (Gbit/s) per MTU: median (min-max)",
              "CPU s/GB per MTU", "iperf3 ratio", "sockperf ratio", "setup"]
    df = _net(run)
    paths = _paths(run)
    if df.empty and not paths:
        return header, []
    med = ({(row_key(p, b), m): v for (p, b, m), v in
            df.groupby(["variant", "backend", "metric"])["value"].median().items()} if not df.empty else {})
    thr, cpu = _per_mtu(run, "stream"), _per_mtu(run, "cpu_per_gb")
    checks = {(c.get("check"), c.get("path")): c for c in run.meta.get("crosschecks") or []}

    def us(path, metric):
        v = med.get((path, metric))
        return f"{v / 1000:.1f} µs" if v is not None else "-"

    def ratio(check, path):
        c = checks.get((check, path))
        return "-" if not c else (f"{c['ratio']:.2f}" if c.get("ratio") is not None else "not judged")

    body = []
    order = sorted(paths, key=lambda p: paths[p].get("status") != "measured")   # measured rows first
    for p in order:
        r = paths[p]
        if r.get("status") != "measured":
            body.append([p] + ["-"] * 8 + [f"{r.get('status')}: {r.get('why', '')}"])
            continue
        body.append([p, us(p, "tcp_rr_p50"), us(p, "tcp_rr_p99"), us(p, "udp_rr_p50"), us(p, "udp_rr_p99"),
                     ", ".join(f"{m}: {v[0] * 8e-9:.2f} ({v[3] * 8e-9:.2f}-{v[4] * 8e-9:.2f})"
                               for (q, m), v in thr.items() if q == p),
                     ", ".join(f"{m}: {v[0]:.3g}" for (q, m), v in cpu.items() if q == p),
                     ratio("iperf3", p), ratio("sockperf ping-pong", p), r.get("setup", "")])
    return header, body


CHARTS = [network_latency_ecdf, network_throughput, network_cpu_per_gb]
