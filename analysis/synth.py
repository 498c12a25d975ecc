"""Run folders in the exact results/ contract format, filled from controlled
distributions.

The statistics tests need data whose truth is known (two samples from one
distribution, or the same data x1.10), which no real run can give.  This module
writes it through pyperf itself, so the folders are what the harness writes:
`python -m pyperf show` works on the suite.  It is test and demo data, never
presented as a measurement: meta.json says ``"synthetic": true``.
"""
from __future__ import annotations

import csv
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ORDER = ["host", "builtin", "crun", "runc", "runsc", "qemu", "libvirt"]
# Typical medians measured on the development machines (docs/architecture.md), only to give the charts realistic shapes.
STARTUP_S = {"host": 0.0006, "builtin": 0.004, "crun": 0.0065, "runc": 0.019, "runsc": 0.12,
             "qemu": 1.5, "libvirt": 2.4}
SYSCALL_NS = {"getppid": 78, "clock_gettime": 16, "read_zero": 105}
SYSCALL_X = {"host": 1, "builtin": 1.1, "crun": 1, "runc": 1, "runsc": 900, "qemu": 4.6, "libvirt": 4.6}
MEM_OVERHEAD = {"host": 0.2e6, "builtin": 1.0e6, "crun": 1.4e6, "runc": 1.4e6, "runsc": 30e6,
                "qemu": 90e6, "libvirt": 95e6}
LADDER = ["pidns", "mountns", "utsns", "ipcns", "netns", "userns", "cgroupns", "timens",
          "pivot_root", "cgroup", "caps", "no_new_privs", "seccomp", "veth"]
LADDER_COST_S = [0.0002, 0.0006, 0.00005, 0.00005, 0.0009, 0.0003, 0.00005, 0.00005,
                 0.0007, 0.0004, 0.00002, 0.00001, 0.0003, 0.06]


def env(accel: str = "tcg", host: str = "testhost", cpu: str = "Intel(R) Xeon(R) Test CPU @ 2.00GHz",
        cores: int = 2) -> dict:
    return {"hostname": host, "kernel": "6.1.0-test-amd64", "cpu_model": cpu, "cpu_count": cores,
            "mitigations": {"spectre_v2": "Mitigation: test"},
            "accel": {"name": accel, "reason": "synthetic data" if accel == "kvm" else "KVM cannot boot the guest"},
            "nested_virt": False, "cgroup_version": "hybrid",
            "versions": {"qemu": "7.2", "libvirt": "9.0.0", "crun": "1.8.1", "runc": "1.1.5",
                         "runsc": "2022-12", "python": "3.11", "pyperf": "2.11.0", "cvbench_git": "0000000"}}


def lognormal(rng, median: float, n: int, sigma: float = 0.08) -> np.ndarray:
    """Right-skewed like real timings."""
    return median * rng.lognormal(0.0, sigma, n)


def rows_for(scenario: str, backends: list[str], rng, n: int, scale: float = 1.0,
             sigma: float = 0.08) -> list[tuple]:
    """(metric, backend, variant, unit, values) for one scenario."""
    out = []
    if scenario == "startup":
        for b in backends:
            out.append(("ready", b, "", "s", lognormal(rng, STARTUP_S[b] * scale, n, sigma)))
            out.append(("lifecycle", b, "", "s", lognormal(rng, STARTUP_S[b] * 1.6 * scale, n, sigma)))
    elif scenario == "syscall":
        for b in backends:
            for op, ns in SYSCALL_NS.items():
                out.append((op, b, "", "ns", lognormal(rng, ns * SYSCALL_X[b] * scale, n, sigma / 2)))
    elif scenario == "memory":
        for b in backends:
            for variant, work in (("idle", 1.3e6), ("mem64", 1.3e6 + 64 * 2**20)):
                w = lognormal(rng, work * scale, n, 0.01)
                o = lognormal(rng, MEM_OVERHEAD[b] * scale, n, 0.02)
                out += [("workload", b, variant, "bytes", w), ("overhead", b, variant, "bytes", o),
                        ("pss_total", b, variant, "bytes", w + o)]
            per = (1.3e6 + MEM_OVERHEAD[b] * 0.7) * scale
            for k in (1, 2, 4, 8):
                out.append(("density_total", b, f"n={k}", "bytes", lognormal(rng, per * k + 0.3 * per, n, 0.01)))
            out.append(("density_slope", b, "", "bytes_per_instance", lognormal(rng, per, n, 0.01)))
    elif scenario == "isolation":
        base = STARTUP_S["builtin"] * 0.5
        rungs = [("bare", base)]
        rungs += [(f"only:{m}", base + c) for m, c in zip(LADDER, LADDER_COST_S, strict=True)]
        for i in range(1, len(LADDER) + 1):
            rungs.append(("cum:" + "+".join(LADDER[:i]), base + sum(LADDER_COST_S[:i])))
        for variant, ready in rungs:
            seccomp = 10.0 if ("seccomp" in variant) else 0.0
            out.append(("ready", "builtin", variant, "s", lognormal(rng, ready * scale, n, sigma)))
            out.append(("getppid", "builtin", variant, "ns", lognormal(rng, (78 + seccomp) * scale, n, sigma / 2)))
            out.append(("read_zero", "builtin", variant, "ns", lognormal(rng, (105 + seccomp) * scale, n, sigma / 2)))
        for b in backends:
            if b in ("crun", "runc", "runsc", "libvirt"):
                out.append(("ready", b, "top", "s", lognormal(rng, STARTUP_S[b] * scale, n, sigma)))
                for op in ("getppid", "read_zero"):
                    out.append((op, b, "top", "ns", lognormal(rng, SYSCALL_NS[op] * SYSCALL_X[b] * scale, n, sigma / 2)))
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    return out


PYPERF_UNIT = {"s": "second", "ns": "second", "bytes": "byte", "bytes_per_instance": "byte"}


def write_run(root: str | os.PathLike, scenario: str, *, backends: list[str] | None = None, n: int = 20,
              seed: int = 0, scale: float = 1.0, sigma: float = 0.08, accel: str = "tcg",
              host: str = "testhost", cpu: str | None = None, created: datetime | None = None,
              git_rev: str = "0000000", mode: str = "fast", processes: int | None = None, rows=None,
              backend_meta: dict | None = None, tidy_accel: dict | None = None) -> Path:
    """Write results/runs/<id>/ under ``root``; returns the run folder.  ``rows``
    overrides the generated values: [(metric, backend, variant, unit, values)].
    Values come from ``processes`` worker processes (default: two values each, as
    pyperf's --fast gives); ``backend_meta`` adds to meta.json's backends records,
    ``tidy_accel`` ({backend: accel}) adds tidy.csv's accel column."""
    import pyperf  # lazy: only writers of synthetic runs need it

    backends = backends or ["host", "builtin", "crun", "runc", "runsc", "libvirt"]
    rng = np.random.default_rng(seed)
    created = created or datetime.now(UTC)
    run_id = f"{created:%Y%m%dT%H%M%SZ}_{host}_{scenario}"
    folder = Path(root) / "runs" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    data = rows if rows is not None else rows_for(scenario, backends, rng, n, scale, sigma)
    e = env(accel, host, **({"cpu": cpu} if cpu else {}))
    e["versions"]["cvbench_git"] = git_rev
    benches, tidy = [], []
    for metric, backend, variant, unit, values in data:
        name = ".".join(x for x in (scenario, metric, backend, variant) if x)
        k = processes if processes else max(1, len(values) // 2)
        per = np.array_split(np.asarray(values, dtype=float), max(1, min(k, len(values))))
        runs = []
        for p, chunk in enumerate(per):
            stored = [float(v) * (1e-9 if unit == "ns" else 1) for v in chunk]
            runs.append(pyperf.Run(stored, metadata={"name": name, "unit": PYPERF_UNIT[unit]},
                                   collect_metadata=False))
            tidy += [(scenario, metric, backend, variant, repr(float(v)), unit, p, r)
                     + ((tidy_accel.get(backend, ""),) if tidy_accel is not None else ()) for r, v in enumerate(chunk)]
        benches.append(pyperf.Benchmark(runs))
    suite = pyperf.BenchmarkSuite(benches)
    suite.dump(str(folder / "suite.json"), replace=True)
    with open(folder / "tidy.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["scenario", "metric", "backend", "variant", "value", "unit", "process", "run"]
                   + (["accel"] if tidy_accel is not None else []))
        w.writerows(tidy)
    meta = {"scenario": scenario, "run_id": run_id, "created_utc": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": ["python", "-m", "analysis.synth"], "mode": mode, "env": e, "synthetic": True,
            "backends": {b: {"available": True, "reason": "", "metadata": {}} for b in backends}
            | {"qemu": {"available": False, "reason": "not requested", "metadata": {}}},
            "isolation_order": ORDER,
            "ladder": ["bare"] + ["cum:" + "+".join(LADDER[:i]) for i in range(1, len(LADDER) + 1)]
            if scenario == "isolation" else []}
    for b, extra in (backend_meta or {}).items():
        meta["backends"].setdefault(b, {"available": True, "reason": "", "metadata": {}}).update(extra)
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    latest = Path(root) / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(folder.relative_to(root))
    return folder
