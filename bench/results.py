"""The results folder of one run: suite.json (pyperf), meta.json, tidy.csv.

Everything is written into a hidden staging folder next to the final one and
renamed into place at the end, so a run folder exists only complete: an
interrupted or failed run leaves nothing behind, and earlier runs are kept.
``results/latest`` is then repointed with an atomic symlink swap.
"""
from __future__ import annotations

import csv
import datetime as dt
import errno
import json
import os
import shutil
import socket
from pathlib import Path

import pyperf

from common import owner
from common.errors import CvbError

TIDY_COLUMNS = ["scenario", "metric", "backend", "variant", "value", "unit", "process", "run", "accel"]
# pyperf unit -> tidy unit (ns-per-op values are stored in seconds in pyperf,
# as pyperf does for every time, and scaled back to ns in tidy.csv).
TIDY_UNIT = {"second": "s", "byte": "bytes", "integer": "count"}


def run_id(scenario: str, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    host = socket.gethostname().split(".")[0] or "host"
    return f"{now:%Y%m%dT%H%M%SZ}_{host}_{scenario}"


def check_writable(out: Path) -> None:
    """Fail early (exit 2) rather than after minutes of measuring."""
    try:
        (out / "runs").mkdir(parents=True, exist_ok=True)
        probe = out / "runs" / f".cvbench-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise CvbError("--out", f"{out} is not writable ({e.strerror or e})",
                       "pass a folder you can write to with --out DIR") from None


def split_name(name: str) -> tuple[str, str, str, str]:
    """``scenario.metric.backend[.variant]`` -> its four parts."""
    parts = name.split(".", 3)
    if len(parts) < 3:
        raise ValueError(f"benchmark name {name!r} is not scenario.metric.backend[.variant]")
    return parts[0], parts[1], parts[2], parts[3] if len(parts) > 3 else ""


def backend_accels(meta: dict) -> dict[str, str]:
    """Each VM backend's own accelerator verdict (kvm or tcg), from meta.json."""
    return {n: (a.get("accel") or {}).get("accel", "") for n, a in (meta.get("backends") or {}).items()
            if isinstance(a, dict)}


def tidy_rows(suite: pyperf.BenchmarkSuite, accels: dict[str, str] | None = None) -> list[dict]:
    """One row per value; ``accel`` is the row's VM accelerator ('' for containers)."""
    accels = accels or {}
    rows = []
    for bench in suite.get_benchmarks():
        scenario, metric, backend, variant = split_name(bench.get_name())
        md = bench.get_metadata()
        unit = md.get("cvbench_tidy_unit") or TIDY_UNIT.get(bench.get_unit(), bench.get_unit())
        scale = 1e9 if unit == "ns" else 1.0
        proc = 0
        for run in bench.get_runs():
            if not run.values:
                continue  # calibration runs hold warmups only
            proc += 1
            for i, v in enumerate(run.values, 1):
                rows.append({"scenario": scenario, "metric": metric, "backend": backend,
                             "variant": variant, "value": repr(v * scale) if scale != 1.0 else repr(v),
                             "unit": unit, "process": proc, "run": i,
                             "accel": accels.get(backend, "")})
    return rows


def write_run(out: Path, scenario: str, suite: pyperf.BenchmarkSuite, meta: dict,
              rid: str | None = None) -> Path:
    rid = rid or meta.get("run_id") or run_id(scenario)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    stage = runs / f".{rid}.tmp-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        # The environment in pyperf's own metadata too, so `python -m pyperf show --metadata` users see it.
        env, accels = meta.get("env") or {}, backend_accels(meta)
        for bench in suite.get_benchmarks():
            backend = split_name(bench.get_name())[2]
            bench.update_metadata({k: " ".join(str(v).split())[:300] for k, v in {
                "cvbench_accel": accels.get(backend) or (env.get("accel") or {}).get("name"),
                "cvbench_accel_scope": "this VM backend" if accels.get(backend) else "host (run-wide)",
                "cvbench_kernel": env.get("kernel"), "cvbench_cpu": env.get("cpu_model")}.items() if v})
        suite.dump(str(stage / "suite.json"))
        with open(stage / "tidy.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=TIDY_COLUMNS)
            w.writeheader()
            accels = backend_accels(meta)
            w.writerows(tidy_rows(suite, accels))
            # values pyperf cannot hold (zeros), recorded by a scenario in meta.json
            w.writerows({**r, "accel": accels.get(r.get("backend", ""), "")}
                        for r in meta.get("tidy_extra_rows") or [])
        # Claim the name by the rename itself: two runs finishing in the same
        # second (or a concurrent harness) take -1, -2, ... instead of failing.
        for n in range(1000):
            final = runs / (rid if n == 0 else f"{rid}-{n}")
            if final.exists():
                continue
            (stage / "meta.json").write_text(json.dumps(dict(meta, run_id=final.name), indent=2) + "\n")
            try:
                os.rename(stage, final)
                break
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        else:
            raise OSError(errno.EEXIST, f"no free run folder name for {rid} in {runs}")
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    point_latest(out, final)
    return final


def point_latest(out: Path, final: Path) -> None:
    link = out / "latest"
    tmp = out / f".latest.tmp-{os.getpid()}"
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    tmp.symlink_to(os.path.relpath(final, out))
    os.replace(tmp, link)


def remove_stale_staging(out: Path) -> list[str]:
    """Staging folders of harness processes that died (SIGKILL) mid-write."""
    removed = []
    for p in (out / "runs").glob(".*.tmp-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not owner.alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(str(p))
    return removed


