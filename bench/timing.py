"""Running ``bench.worker`` under pyperf from the harness, and turning values
measured elsewhere (probe ns/op, memory bytes) into pyperf Runs.

The pyperf main process runs in its own session so that a Ctrl-C at the
terminal reaches the harness first: the harness then terminates the whole
process group in order (workers clean up their instances in ``finally``), and
only kills what is still there after a grace period.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pyperf

from common.errors import CvbError
from common.paths import ROOT

from .worker import PLAN

_STATIC_MD: dict | None = None


def static_metadata() -> dict:
    """pyperf's own host metadata, collected once per harness process."""
    global _STATIC_MD
    if _STATIC_MD is None:
        from pyperf._collect_metadata import collect_metadata
        _STATIC_MD = {k: v for k, v in collect_metadata().items()
                      if k not in ("date", "duration", "load_avg_1min", "mem_max_rss",
                                   "runnable_threads", "uptime")}
    return dict(_STATIC_MD)


def plan_of(mode: str, plan: str) -> dict:
    """Processes/values/warmups pyperf will use for a plan in a mode (for ETA and metadata)."""
    p = dict(PLAN[plan])
    if mode == "fast":
        if plan == "vm":   # three boots, each in its own process, no warmup boot
            p.update(processes=3, values=1, warmups=0)
        else:              # pyperf's own --fast rule
            p["processes"] = max(p["processes"] // 2, 3)
            p["values"] = max(p["values"] * 2 // 3, 2)
    elif mode == "rigorous":
        p["processes"] *= 2
    return p


def _flags_for(mode: str, plan: str, quick: bool, processes: int | None = None) -> list[str]:
    p = plan_of(mode, plan)
    if processes is not None:
        p["processes"] = processes
    if quick:  # test knob: the smallest run pyperf accepts that still spawns workers
        return ["-p", "1", "-n", "1", "-w", "0", "-l", "1"]
    # -l 1: one spawn per value, for every backend (see worker.PLAN)
    return ["-p", str(p["processes"]), "-n", str(p["values"]), "-w", str(p["warmups"]), "-l", "1"]


class WorkerFailed(CvbError):
    pass


def run_worker(name: str, backend: str, probe_args: str, *, mode: str, plan: str, quick: bool,
               timeout: float, rung: str = "", lifecycle_name: str | None = None,
               extra_md: dict | None = None, processes: int | None = None) -> list[pyperf.Benchmark]:
    """Time ``backend`` with pyperf workers; returns [ready] or [ready, lifecycle].
    ``processes`` overrides the plan's worker count (one chunk of an interleaved run)."""
    with tempfile.TemporaryDirectory(prefix="cvbench-pyperf-") as tmp:
        out = Path(tmp, "bench.json")
        side = Path(tmp, "sidecar.jsonl")
        cmd = [sys.executable, "-m", "bench.worker", "--quiet", "-o", str(out),
               *_flags_for(mode, plan, quick, processes), "--timeout", str(int(timeout * 4 + 60)),
               "--inherit-environ", "CVBENCH_BUILD,CVBENCH_RESULTS,CVBENCH_STATE,CVBENCH_SIDECAR,CVBENCH_BUNDLE",
               "--backend", backend, "--probe-args", probe_args, "--plan", plan,
               "--instance-timeout", str(timeout)]
        if rung:
            cmd += ["--rung", rung]
        cmd.append(name)
        env = dict(os.environ, PYTHONPATH=str(ROOT), CVBENCH_SIDECAR=str(side))
        proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, text=True)
        try:
            stdout, stderr = proc.communicate()
        except BaseException:
            interrupt_group(proc)
            raise
        if proc.returncode != 0 or not out.exists():
            lines = (stderr or stdout or "").strip().splitlines()
            ours = [ln for ln in lines if ln.startswith("cvbench: ")]
            tail = "\n".join(ours[-3:] if ours else lines[-12:])
            raise WorkerFailed(f"{name}", f"pyperf worker exited with {proc.returncode}:\n{tail}",
                               "rerun with --debug; 'python -m bench list' shows backend availability",
                               status=1)
        ready = pyperf.Benchmark.load(str(out))
        p = plan_of(mode, plan)
        ready = _with_metadata(ready, {**(extra_md or {}), "cvbench_processes_planned": p["processes"],
                                       "cvbench_values_per_process": p["values"],
                                       "cvbench_warmups": p["warmups"], "cvbench_loops": 1,
                                       "cvbench_quick": int(quick)})
        result = [ready]
        if lifecycle_name:
            result.append(_lifecycle(ready, side, lifecycle_name))
        return result


def interrupt_group(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM the worker's process group so instances are cleaned up, then KILL.

    SIGTERM rather than SIGINT: a harness started in the background inherits an
    ignored SIGINT and passes that on; the worker turns SIGTERM into the same
    unwinding as Ctrl-C."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            # workers may still be finishing their cleanup in the group
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
        except subprocess.TimeoutExpired:
            continue


def _with_metadata(bench: pyperf.Benchmark, md: dict) -> pyperf.Benchmark:
    if not md:
        return bench
    runs = [_copy_run(r, extra=md) for r in bench.get_runs()]
    return pyperf.Benchmark(runs)


def _copy_run(run: pyperf.Run, *, name: str | None = None, values=None, warmups=None,
              extra: dict | None = None) -> pyperf.Run:
    md = dict(run.get_metadata())
    if name:
        md["name"] = name
    md.update(extra or {})
    return pyperf.Run(run.values if values is None else values,
                      warmups=run.warmups if warmups is None else warmups,
                      metadata=md, collect_metadata=False)


def _lifecycle(ready: pyperf.Benchmark, side: Path, name: str) -> pyperf.Benchmark:
    """The lifecycle benchmark from the sidecar, run for run, value for value."""
    calls: dict[int, list[dict]] = {}
    order: list[int] = []
    for line in side.read_text().splitlines() if side.exists() else []:
        rec = json.loads(line)
        if rec["pid"] not in calls:
            order.append(rec["pid"])
        calls.setdefault(rec["pid"], []).append(rec)
    runs = ready.get_runs()
    if len(order) != len(runs):
        raise WorkerFailed(name, f"{len(order)} worker records for {len(runs)} pyperf runs",
                           "this is a cvbench bug; rerun with --debug", status=1)
    out = []
    for run, pid in zip(runs, order, strict=True):
        recs = calls[pid]
        nw = len(run.warmups or ())
        if len(recs) != nw + len(run.values):
            raise WorkerFailed(name, "sidecar and pyperf run disagree on the number of values",
                               "this is a cvbench bug; rerun with --debug", status=1)
        warm = [(r["loops"], r["gone"] / r["loops"]) for r in recs[:nw]]
        vals = [r["gone"] / r["loops"] for r in recs[nw:]]
        if not vals and not warm:
            continue
        out.append(_copy_run(run, name=name, values=vals, warmups=warm or None))
    return pyperf.Benchmark(out)


def in_instance_runs(name: str, samples: list[list[float]], unit: str, md: dict) -> pyperf.Benchmark:
    """A benchmark from values measured elsewhere: one pyperf Run per instance
    (process), its values the instance's repeats."""
    base = static_metadata()
    base.update(md)
    base.update({"name": name, "unit": unit, "loops": 1})
    base = {k: v for k, v in base.items() if v not in ("", None)}  # pyperf rejects empty values
    runs = [pyperf.Run(vals, metadata=base, collect_metadata=False) for vals in samples if vals]
    if not runs:
        raise WorkerFailed(name, "no values were measured", "see the progress output above", status=1)
    return pyperf.Benchmark(runs)
