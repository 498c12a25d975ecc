"""Independent tools check the harness's own numbers, in the same run.

Startup: ``hyperfine -N`` (no shell) times the very command each backend runs
(host: the probe; crun, runc, runsc: ``<rt> run`` on the same config.json, a
fresh container id and bundle folder per run as the harness has) before,
between the chunks of, and after the harness's own measurement, so both see
the same machine, even when its load drifts.  hyperfine's wall time of that process is the harness's lifecycle
(spawn to gone), so the ratio harness / hyperfine should be 1.

Syscall: ``perf bench syscall basic`` against the probe's getppid (see
scenarios/syscall.py).

Every check becomes one record in meta.json's ``crosschecks`` list; the report
prints the ratios and flags any outside +-TOLERANCE at the top, and
``--strict`` turns such a run's exit status into 1.
"""
from __future__ import annotations

import json
import shlex
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

TOLERANCE = 0.10
HYPERFINE_BACKENDS = ("host", "crun", "runc", "runsc")
# Runs per check (before or after the harness), about 3 s each here, spread
# over WINDOWS separate hyperfine processes: measured here, a process's spawns
# sit at one of two levels for its whole life (about 0.44 or 0.62 ms for the
# host probe, by where the scheduler put it), and pyperf's 10 worker
# processes sample that; one long hyperfine process would not.  Each window
# first does WARMUP runs that are not counted.
RUNS = {"host": 100, "crun": 60, "runc": 40, "runsc": 20}
WINDOWS, WARMUP = 5, 2


def hyperfine(backend, args: list[str], timeout: float = 300.0, quick: bool = False,
              windows: int | None = None) -> dict:
    """``hyperfine -N`` windows on ``backend``'s own command; the median of all their runs.

    A container runtime gets a fresh container id, bundle and cgroup for each
    run, as the harness's spawns do: hyperfine's ``-L id`` runs the command
    once per prepared id.  ``quick`` (the test knob) runs the same path with a
    handful of runs in one window."""
    exe = shutil.which("hyperfine")
    if not exe:
        return {"error": "hyperfine not installed (apt-get install hyperfine; make setup does)"}
    windows = 1 if quick else windows or WINDOWS
    per = 5 if quick else max(RUNS.get(backend.name, 20) // WINDOWS, 2)
    times: list[float] = []
    command = ""
    for _ in range(windows):
        w = _window(exe, backend, args, per, timeout)
        if "error" in w:
            return w
        times += w["times"]
        command = w["command"]
    return {"median_s": statistics.median(times), "runs": len(times), "windows": windows,
            "times": times, "command": command}


def _window(exe: str, backend, args: list[str], runs: int, timeout: float) -> dict:
    """One hyperfine process: WARMUP runs, then ``runs`` counted ones."""
    cmd = backend.command_for(args, runs + WARMUP)
    try:
        with tempfile.TemporaryDirectory(prefix="cvbench-hyperfine-") as tmp:
            out = Path(tmp, "hf.json")
            base = [*cmd.wrapper, exe, "-N", "--output", "pipe", "--style", "none", "--export-json", str(out)]
            if cmd.ids:   # one run per id, in order; the first WARMUP are the warmup
                base += ["--runs", "1", "-L", "id", ",".join(cmd.ids)]
            else:
                base += ["--warmup", str(WARMUP), "--runs", str(runs)]
            r = subprocess.run([*base, shlex.join(cmd.argv)], capture_output=True, text=True,
                               timeout=timeout, **cmd.kw)
            if r.returncode != 0 or not out.exists():
                tail = (r.stderr or r.stdout).strip()[-300:]
                return {"error": f"hyperfine exited with {r.returncode}: {tail}"}
            results = json.loads(out.read_text())["results"]
    except subprocess.TimeoutExpired:
        return {"error": f"hyperfine did not finish within {timeout:.0f} s"}
    finally:
        if cmd.cleanup is not None:
            cmd.cleanup()
    times = [t for res in results for t in res.get("times") or []]
    if cmd.ids:
        times = times[WARMUP:]
    if not times:
        return {"error": "hyperfine recorded no times"}
    return {"times": times, "command": "hyperfine -N " + ("-L id <one fresh id per run> " if cmd.ids else "")
            + shlex.join(cmd.argv)}


def judge(check: str, backend: str, metric: str, unit: str, harness: float | None,
          tool: float | None, **extra) -> dict:
    """One crosscheck record: the harness's figure over the tool's, within tolerance or not."""
    rec = {"check": check, "backend": backend, "metric": metric, "unit": unit,
           "harness": harness, "tool": tool, "tolerance": TOLERANCE, **extra}
    if harness and tool and harness > 0 and tool > 0:
        rec["ratio"] = harness / tool
        rec["within"] = abs(rec["ratio"] - 1) <= TOLERANCE
    else:
        rec["ratio"] = None
        rec["within"] = None   # not judged: the reason is in "error"
    return rec


def startup_record(backend: str, checks: list[dict], lifecycle_s: float | None) -> dict:
    """hyperfine's windows (before, between and after the harness's chunks),
    pooled, against the harness's lifecycle median."""
    times = [t for w in checks for t in w.get("times", [])]
    errors = [w["error"] for w in checks if "error" in w]
    extra = {"tool_windows": [w.get("median_s") for w in checks], "runs": len(times),
             "command": next((w["command"] for w in checks if "command" in w), "")}
    if errors:
        extra["error"] = "; ".join(sorted(set(errors)))
    return judge("hyperfine -N", backend, "lifecycle", "s", lifecycle_s,
                 statistics.median(times) if times and not errors else None, **extra)


def outside(records: list[dict]) -> list[dict]:
    """Records judged and found outside the tolerance, or that could not be judged."""
    return [r for r in records if r.get("within") is not True]
