"""syscall: every probe op (kernel crossings and controls) in every backend, ns/op.

On the host, ``perf bench syscall basic`` (getppid in a loop) runs alongside
as an independent check of the probe's getppid figure, pinned to the probe's
CPU; both numbers and their ratio go into meta.json's ``crosschecks`` and the
report, judged against the same ±10% as the startup cross-checks.

Each container probe is pinned to one CPU and pipe_pingpong's two ends to two
fixed CPUs (bench.inside.pinning); the affinity is recorded per benchmark.  VMs
are not pinned: the guest's vCPU count is its own.
"""
from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess

from bench import crosscheck, estimate, inside
from bench.harness import Context, Task, progress
from common.probe import OPS

DESCRIPTION = "every probe op in every backend, ns/op (+ perf bench syscall basic on the host)"

# mode -> (instances per container backend, per VM backend, --repeat, --min-ms)
SIZES = {"quick": (1, 1, 2, 5), "fast": (3, 1, 3, 20), "default": (6, 2, 5, 50),
         "rigorous": (12, 4, 5, 100)}
PERF_LOOPS = 2_000_000


def sizes(ctx: Context) -> tuple[int, int, int, int]:
    return SIZES["quick" if ctx.quick else ctx.mode]


class PerfCheck:
    """``perf bench syscall basic`` (getppid in a loop), run once after each host
    probe instance so that both see the same machine state."""

    def __init__(self, cpu: int | None = None):
        self.perf = shutil.which("perf")
        self.cpu = cpu
        self.vals: list[float] = []
        self.error = "" if self.perf else "perf not installed (apt-get install linux-perf)"

    def once(self) -> None:
        if self.error:
            return
        pin = (lambda: os.sched_setaffinity(0, {self.cpu})) if self.cpu is not None else None
        r = subprocess.run([self.perf, "bench", "syscall", "basic", "--loop", str(PERF_LOOPS)],
                           capture_output=True, text=True, timeout=120, preexec_fn=pin)
        m = re.search(r"([\d.]+)\s+usecs/op", r.stdout)
        if r.returncode != 0 or not m:
            self.error = f"perf bench failed: {(r.stderr or r.stdout).strip()[-200:]}"
            return
        self.vals.append(float(m.group(1)) * 1000.0)

    def result(self) -> dict:
        if self.error or not self.vals:
            return {"available": False, "reason": self.error or "not run"}
        return {"available": True, "ns_per_op": self.vals, "median_ns": statistics.median(self.vals),
                "loops": PERF_LOOPS, "command": f"perf bench syscall basic --loop {PERF_LOOPS}",
                "cpu": self.cpu,
                "schedule": "one perf run after each host probe instance"}


def plan(ctx: Context) -> list[Task]:
    n_ct, n_vm, repeat, min_ms = sizes(ctx)
    tasks = []
    pin = inside.pinning()
    ctx.meta["affinity"] = {"probe_cpu": pin["cpu"], "pipe_pingpong_cpus": list(pin["pair"] or []),
                            "vms": "not pinned (the guest schedules its own vCPUs)"}
    for b in ctx.backends:
        n = n_vm if ctx.is_vm(b) else n_ct

        def run(b=b, n=n):
            check = PerfCheck(pin["cpu"]) if b == "host" else None
            benches = inside.ops_benchmarks("syscall", ctx.backend(b), b, OPS, instances=n,
                                            repeat=repeat, min_ms=min_ms, timeout=ctx.timeout * 3,
                                            progress=progress, between=check.once if check else None,
                                            pin=None if ctx.is_vm(b) else pin)
            if check is not None:
                if len(check.vals) < 2:   # at least two perf runs even in quick mode
                    check.once()
                benches = _with_perf_check(ctx, benches, check.result())
            return benches
        per = len(OPS) * (repeat + 2) * min_ms / 1000
        tasks.append(Task(f"{b}: {len(OPS)} ops x {n} instances", b,
                          estimate.instances(b, n, per), run))
    ctx.summary_metrics = list(OPS)
    return tasks


def _with_perf_check(ctx: Context, benches: list, perf: dict) -> list:
    import pyperf
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
    ctx.meta.setdefault("crosschecks", []).append(crosscheck.judge(
        "perf bench syscall basic", "host", "getppid", "ns", perf.get("probe_getppid_median_ns"),
        perf.get("median_ns"), command=perf.get("command", ""),
        **({} if perf.get("available") else {"error": perf.get("reason", "not run")})))
    return out
