"""Baselines per host class, and ``ci-bench``: a fast startup + syscall pass
judged against the baseline for the machine it ran on.

A baseline is one JSON file per host class (CPU model, core count,
accelerator) under results/baselines/, holding each scenario's meta and values,
so it is small, diffable and tracked by git.  CI runners get new hostnames on
every job, so hostnames are not part of the class.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from common.errors import EXIT_FAILED, CvbError
from common.paths import ROOT, results_dir

from . import compare, stats
from .load import TIDY_COLUMNS, Run, host_class, load_baseline, load_run

FORMAT = "cvbench-baseline/1"
CI_SCENARIOS = ("startup", "syscall")


def baselines_dir() -> Path:
    return results_dir() / "baselines"


def path_for(hc: str, folder: Path | None = None) -> Path:
    return (folder or baselines_dir()) / f"{hc}.json"


def save(run_paths: list[str | os.PathLike], folder: Path | None = None, log=print) -> Path:
    """Store runs as the baseline of their host class, replacing those scenarios.
    Several runs of one scenario are kept as repeats: the largest difference
    between them becomes that metric's noise floor in every later comparison."""
    runs = [load_run(p) for p in run_paths]
    classes = {host_class(r.env) for r in runs}
    if len(classes) != 1:
        raise CvbError("baseline save", f"runs come from different host classes ({', '.join(sorted(classes))})",
                       "save each host class's runs separately")
    hc = classes.pop()
    target = path_for(hc, folder)
    data = json.loads(target.read_text()) if target.exists() else {}
    if data and data.get("format") != FORMAT:
        raise CvbError(str(target), "is not a cvbench baseline", "move it away or delete it")
    data = {"format": FORMAT, "host_class": hc, "saved_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "runs": data.get("runs", {})}
    by_scenario: dict[str, list[Run]] = {}
    for r in runs:
        if r.meta.get("synthetic"):
            log(f"warning: {r.label} is synthetic test data")
        for scenario in r.scenarios:
            by_scenario.setdefault(scenario, []).append(r)
    for scenario, reps in by_scenario.items():
        rows = []
        for i, r in enumerate(reps):
            part = r.tidy[r.tidy["scenario"] == scenario][TIDY_COLUMNS]
            rows += [[*row, i] for row in part.values.tolist()]
        data["runs"][scenario] = {"source": [r.label for r in reps], "meta": reps[-1].meta,
                                  "columns": TIDY_COLUMNS + ["repeat"], "tidy": rows}
        log(f"baseline {hc}: {scenario} <- {', '.join(r.label for r in reps)} ({len(rows)} values)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(target)
    log(f"wrote {target}")
    return target


def listing(folder: Path | None = None) -> list[str]:
    out = []
    for p in sorted((folder or baselines_dir()).glob("*.json")):
        try:
            runs = load_baseline(p)
        except CvbError as e:
            out.append(f"{p.name}: unreadable ({e.why})")
            continue
        parts = [f"{s} ({1 if r.repeat is None else r.repeat.nunique()} run(s), {r.meta.get('mode', '?')} mode, "
                 f"{len(r.tidy)} values)" for s, r in sorted(runs.items())]
        out.append(f"{p.name}: " + "; ".join(parts))
    return out


def _newest_run(folder: Path, scenario: str, since: float) -> Path:
    found = [m.parent for m in folder.rglob("meta.json") if m.stat().st_mtime >= since]
    found = [f for f in found if json.loads((f / "meta.json").read_text()).get("scenario") == scenario]
    if not found:
        raise CvbError("ci-bench", f"the {scenario} run wrote no run folder under {folder}",
                       "run 'python -m bench run ... --fast' by hand to see why")
    return max(found, key=lambda f: (f / "meta.json").stat().st_mtime)


def run_bench(scenario: str, runs_dir: Path, backends: str | None, log=print) -> Run:
    """The harness's fast pass, as a subprocess: analysis never imports bench."""
    cmd = [sys.executable, "-m", "bench", "run", scenario, "--fast"]
    if backends:
        cmd += ["--backends", backends]
    env = dict(os.environ, CVBENCH_RESULTS=str(runs_dir))
    log("$ " + " ".join(cmd) + f"   (results under {runs_dir})")
    since = time.time() - 1
    rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    if rc != 0:
        raise CvbError("ci-bench", f"'{' '.join(cmd[1:])}' exited with status {rc}",
                       "fix the benchmark run first; ci-bench only judges complete runs",
                       status=2 if rc == 2 else EXIT_FAILED)
    return load_run(_newest_run(runs_dir, scenario, since))


def ci_bench(*, backends: str | None = None, scenarios=CI_SCENARIOS, runs_dir: Path | None = None,
             folder: Path | None = None, markdown_path: str | None = None, save_missing: bool = False,
             alpha: float = stats.ALPHA, threshold: float = stats.THRESHOLD, test: str = "permutation",
             record: int = 0, adjust: str = "holm", drift="auto", log=print) -> int:
    """Exit 0 when nothing regressed, 1 on a regression, 2 without a baseline.
    ``record`` > 0 instead runs each scenario that many times and saves them as the baseline."""
    runs_dir = runs_dir or results_dir() / "ci"
    runs_dir.mkdir(parents=True, exist_ok=True)
    if record > 0:
        reps = [run_bench(s, runs_dir, backends, log) for _ in range(record) for s in scenarios]
        target = save([r.path for r in reps], folder, log)
        log(f"ci-bench: recorded {record} run(s) of {', '.join(scenarios)} as the baseline; commit {target}")
        return 0
    new = [run_bench(s, runs_dir, backends, log) for s in scenarios]
    hc = host_class(new[0].env)
    target = path_for(hc, folder)
    if not target.exists():
        if save_missing:
            save([r.path for r in new], folder, log)
            log(f"ci-bench: no baseline existed for {hc}; saved this run as it. Commit {target}.")
            return 0
        raise CvbError("ci-bench", f"no baseline for host class {hc} ({target} missing)",
                       f"record one on this kind of machine: 'python -m analysis baseline save "
                       f"{' '.join(str(r.path) for r in new)}' and commit it, or run 'ci-bench --record 3' "
                       "for a baseline with a measured noise floor")
    base = load_baseline(target)
    pairs = []
    for r in new:
        for s in r.scenarios:
            if s not in base:
                raise CvbError("ci-bench", f"baseline {target.name} has no {s} scenario",
                               f"add it: 'python -m analysis baseline save {r.path}'")
            pairs.append((base[s], r, s))
    # Bonferroni across the scenarios, Holm within each (see compare.compare_scenarios).
    results = compare.compare_scenarios(pairs, alpha=alpha, threshold=threshold, test=test, adjust=adjust,
                                        drift=drift)
    for res in results:
        log(compare.table(res))
    if markdown_path:
        Path(markdown_path).write_text("\n".join(compare.markdown(x) for x in results))
    return max(x.exit_status for x in results)
