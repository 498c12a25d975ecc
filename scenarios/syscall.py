"""syscall: every probe op (kernel crossings and controls) in every backend, ns/op.

On the host, ``perf bench syscall basic`` (getppid in a loop) runs alongside
as an independent check of the probe's getppid figure; both numbers and their
ratio go into the metadata.
"""
from __future__ import annotations

import re
import shutil
import statistics
import subprocess

from bench import estimate, inside
from bench.harness import Context, Task, progress
from common.probe import OPS

DESCRIPTION = "every probe op in every backend, ns/op (+ perf bench syscall basic on the host)"

# mode -> (instances per container backend, per VM backend, --repeat, --min-ms)
SIZES = {"quick": (1, 1, 2, 5), "fast": (3, 1, 3, 20), "default": (6, 2, 5, 50),
         "rigorous": (12, 4, 5, 100)}
PERF_LOOPS = 2_000_000


def sizes(ctx: Context) -> tuple[int, int, int, int]:
    return SIZES["quick" if ctx.quick else ctx.mode]


def perf_bench_getppid(runs: int) -> dict:
    """``perf bench syscall basic`` (getppid) in ns/op, ``runs`` times."""
    perf = shutil.which("perf")
    if not perf:
        return {"available": False, "reason": "perf not installed (apt-get install linux-perf)"}
    vals = []
    for _ in range(runs):
        r = subprocess.run([perf, "bench", "syscall", "basic", "--loop", str(PERF_LOOPS)],
                           capture_output=True, text=True, timeout=120)
        m = re.search(r"([\d.]+)\s+usecs/op", r.stdout)
        if r.returncode != 0 or not m:
            return {"available": False, "reason": f"perf bench failed: {(r.stderr or r.stdout)[-200:]}"}
        vals.append(float(m.group(1)) * 1000.0)
    return {"available": True, "ns_per_op": vals, "median_ns": statistics.median(vals),
            "loops": PERF_LOOPS, "command": f"perf bench syscall basic --loop {PERF_LOOPS}"}


def plan(ctx: Context) -> list[Task]:
    n_ct, n_vm, repeat, min_ms = sizes(ctx)
    tasks = []
    for b in ctx.backends:
        n = n_vm if ctx.is_vm(b) else n_ct

        def run(b=b, n=n):
            benches = inside.ops_benchmarks("syscall", ctx.backend(b), b, OPS, instances=n,
                                            repeat=repeat, min_ms=min_ms, timeout=ctx.timeout * 3,
                                            progress=progress)
            if b == "host":
                benches = _with_perf_check(ctx, benches, n)
            return benches
        per = len(OPS) * (repeat + 2) * min_ms / 1000
        tasks.append(Task(f"{b}: {len(OPS)} ops x {n} instances", b,
                          estimate.instances(b, n, per), run))
    ctx.summary_metrics = list(OPS)
    return tasks


def _with_perf_check(ctx: Context, benches: list, n: int) -> list:
    import pyperf
    perf = perf_bench_getppid(max(n, 2))
    out = []
    for bench in benches:
        if bench.get_name() == "syscall.getppid.host" and perf.get("available"):
            probe_med = bench.median() * 1e9
            perf["probe_getppid_median_ns"] = probe_med
            perf["ratio_probe_over_perf"] = probe_med / perf["median_ns"]
            extra = {"cvbench_perf_bench_getppid_ns": round(perf["median_ns"], 3),
                     "cvbench_probe_over_perf": round(perf["ratio_probe_over_perf"], 4)}
            runs = [pyperf.Run(r.values, warmups=r.warmups, metadata={**r.get_metadata(), **extra},
                               collect_metadata=False) for r in bench.get_runs()]
            bench = pyperf.Benchmark(runs)
        out.append(bench)
    ctx.meta["perf_bench_syscall_basic"] = perf
    return out
