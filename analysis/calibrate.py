"""``calibrate``: how often the regression gate cries wolf on this machine, and
whether it still catches a real slowdown.

Give it real runs of the *same code* made back to back (say 21 runs of
``python -m bench run startup --fast``).  Consecutive runs form A/A pairs:
any "regression" verdict between them is a false alarm.  The same pairs with
every value of the second run multiplied by 1 + shift measure power.  Each
pair is judged with a drift model fitted on the *other* pairs only (pairs that
share a run with it are left out too), so the false-alarm count is not
flattered by having seen its own data.

The drift of all pairs is then saved as ``results/baselines/calibration/<host-class>.json``;
``compare`` and ``history`` load it for runs of that host class, and a change
that beats the within-run test but not this drift is "inconclusive".
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from common.errors import CvbError
from common.paths import results_dir

from . import stats
from .load import KEY, Run, find_runs, host_class, load_run

FORMAT = "cvbench-calibration/1"
TARGET_FALSE = 1 / 20          # at most 1 false regression verdict in 20 A/A pairs
TARGET_POWER = 0.90            # an injected shift caught in at least 90% of trials


def calibration_dir() -> Path:
    return results_dir() / "baselines" / "calibration"     # tracked by git, like the baselines


def path_for(hc: str, folder: Path | None = None) -> Path:
    return (folder or calibration_dir()) / f"{hc}.json"


def read(path: str | os.PathLike) -> dict[tuple, stats.Drift]:
    """A saved calibration: (scenario, metric, backend, variant) -> Drift."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, not {FORMAT}")
        return {tuple(m[k] for k in KEY): stats.Drift(float(m["sd"]), int(m["pairs"])) for m in data["metrics"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CvbError(str(p), f"not a cvbench calibration ({e})",
                       "re-create it with 'python -m analysis calibrate RUN...' or delete it") from None


def load_for(hc: str, folder: Path | None = None) -> tuple[dict | None, str]:
    """(drift per metric, where from — with the modes it was measured in), or (None, "")."""
    p = path_for(hc, folder)
    if not p.is_file():
        return None, ""
    return read(p), f"{p} (measured in {', '.join(modes_for(hc, folder)) or 'unknown'} mode)"


def modes_for(hc: str, folder: Path | None = None) -> list[str]:
    """The modes of the runs a saved calibration was measured on (drift differs by mode)."""
    try:
        return list(json.loads(path_for(hc, folder).read_text()).get("modes") or [])
    except (OSError, ValueError, AttributeError):
        return []


def expand(paths: list[str | os.PathLike]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        out += find_runs(p) if p.is_dir() and not (p / "meta.json").exists() else [p]
    return out


def log_ratios(a: Run, b: Run) -> dict[tuple, float]:
    """log(median of b / median of a) per metric: one A/A pair's drift."""
    ma, mb = (r.tidy.groupby(KEY)["value"].median() for r in (a, b))
    both = ma.index.intersection(mb.index)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.log(mb[both] / ma[both])
    return {k: float(v) for k, v in r.items() if math.isfinite(v)}


def load_avg(run: Run) -> list[float]:
    """The 1-minute load averages pyperf recorded while this run measured (its
    suite.json metadata): a calibration is only as quiet as the machine was."""
    try:
        suite = json.loads((run.path / "suite.json").read_text())
    except (OSError, ValueError):
        return []
    out = []
    for bench in suite.get("benchmarks", []):
        common = (bench.get("metadata") or {}).get("load_avg_1min")
        for r in bench.get("runs", []):
            v = (r.get("metadata") or {}).get("load_avg_1min", common)
            if isinstance(v, (int, float)):
                out.append(float(v))
    return out


def shifted(run: Run, factor: float) -> Run:
    tidy = run.tidy.copy()
    tidy["value"] = tidy["value"] * factor
    return Run(run.path, run.meta, tidy, run.repeat)


@dataclass
class Outcome:
    pairs: int
    false_raw: int             # A/A tables with a regression, within-run test only
    false_cal: int             # the same with the (leave-out) drift model
    power: float               # fraction of (pair, metric) trials with the shift called a regression
    trials: int
    per_metric: pd.DataFrame
    drift: dict
    runs: list[Run]
    shift: float
    alpha: float
    power_raw: float = math.nan   # the same trials judged by the within-run test alone

    @property
    def allowed(self) -> int:
        """False alarms the target allows: 1 per 20 pairs, rounded up."""
        return math.ceil(TARGET_FALSE * self.pairs)

    @property
    def met(self) -> bool:
        return self.false_cal <= self.allowed and self.power >= TARGET_POWER


def calibrate(paths: list[str | os.PathLike], *, shift: float = 0.05, alpha: float = stats.ALPHA,
              threshold: float = stats.THRESHOLD, test: str = "permutation", log=print) -> Outcome:
    from .compare import compare_runs  # compare imports this module for load_for

    runs = [load_run(p) for p in expand(paths)]
    if len(runs) < 4:
        raise CvbError("calibrate", f"{len(runs)} run(s) given; A/A pairs need at least 4 runs of the same code",
                       "make 10-20 back-to-back runs, e.g. 'python -m bench run startup --fast --out DIR', "
                       "then 'python -m analysis calibrate DIR'")
    classes = {host_class(r.env) for r in runs}
    scen = {tuple(r.scenarios) for r in runs}
    if len(classes) != 1 or len(scen) != 1:
        raise CvbError("calibrate", f"runs differ in host class ({', '.join(sorted(classes))}) or scenarios "
                       f"({'; '.join(','.join(s) for s in sorted(scen))})",
                       "calibrate with runs of one scenario set on one host class")
    runs.sort(key=lambda r: (str(r.meta.get("created_utc", "")), r.label))
    pairs = list(zip(runs, runs[1:], strict=False))
    ratios = [log_ratios(a, b) for a, b in pairs]
    kw = dict(alpha=alpha, threshold=threshold, test=test, detect=False)
    false_raw = false_cal = 0
    verdicts = []
    for i, (a, b) in enumerate(pairs):
        others = [j for j in range(len(pairs)) if abs(j - i) > 1] or [j for j in range(len(pairs)) if j != i]
        keys = set().union(*(ratios[j] for j in others))
        d = {k: stats.Drift.from_ratios([ratios[j][k] for j in others if k in ratios[j]]) for k in keys}
        raw = compare_runs(a, b, drift=None, **kw)
        cal = compare_runs(a, b, drift=d, **kw)
        pw = compare_runs(a, shifted(b, 1 + shift), drift=d, **kw)
        pw_raw = compare_runs(a, shifted(b, 1 + shift), drift=None, **kw)
        false_raw += raw.exit_status
        false_cal += cal.exit_status
        for r_raw, r_cal, r_pw, r_pwr in zip(raw.rows.itertuples(), cal.rows.itertuples(), pw.rows.itertuples(),
                                             pw_raw.rows.itertuples(), strict=True):
            verdicts.append({**{k: getattr(r_cal, k) for k in KEY}, "raw": r_raw.verdict, "cal": r_cal.verdict,
                             "shifted": r_pw.verdict, "shifted_raw": r_pwr.verdict, "aa_change": r_cal.change})
        log(f"pair {i + 1}/{len(pairs)}: {a.label} -> {b.label}: within-run test "
            f"{'REGRESSION' if raw.exit_status else 'ok'}, calibrated {'REGRESSION' if cal.exit_status else 'ok'}, "
            f"+{shift:.0%} caught in {int((pw.rows['verdict'] == 'regression').sum())}/{len(pw.rows)} metrics")
    v = pd.DataFrame(verdicts)
    per = v.groupby(KEY, sort=False).agg(
        pairs=("cal", "size"), false_raw=("raw", lambda s: int((s == "regression").sum())),
        false_cal=("cal", lambda s: int((s == "regression").sum())),
        power=("shifted", lambda s: float((s == "regression").mean())),
        power_raw=("shifted_raw", lambda s: float((s == "regression").mean())),
        inconclusive=("shifted", lambda s: float((s == "inconclusive").mean()))).reset_index()
    drift = {k: stats.Drift.from_ratios([r[k] for r in ratios if k in r]) for k in set().union(*ratios)}
    per["drift_sd"] = [drift[tuple(r[k] for k in KEY)].sd for _, r in per.iterrows()]
    per["detects"] = [drift[tuple(r[k] for k in KEY)].detectable(alpha) for _, r in per.iterrows()]
    return Outcome(len(pairs), false_raw, false_cal, float((v["shifted"] == "regression").mean()), len(v),
                   per, drift, runs, shift, alpha, float((v["shifted_raw"] == "regression").mean()))


def save(o: Outcome, folder: Path | None = None) -> Path:
    hc = host_class(o.runs[0].env)
    target = path_for(hc, folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    metrics = [{**dict(zip(KEY, k, strict=True)), "sd": d.sd, "pairs": d.pairs} for k, d in sorted(o.drift.items())]
    data = {"format": FORMAT, "host_class": hc, "saved_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "runs": [r.label for r in o.runs], "modes": sorted({str(r.meta.get("mode", "")) for r in o.runs}),
            "pairs": o.pairs, "false_raw": o.false_raw, "false_cal": o.false_cal, "shift": o.shift,
            "power": o.power, "power_within_run": o.power_raw, "target_met": o.met, "metrics": metrics}
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(target)
    return target


def report(o: Outcome) -> str:
    cols = ["metric", "pairs", "drift sd", "false (within-run)", "false (calibrated)",
            f"power at +{o.shift:.0%}", "(within-run)", "inconclusive", "drift alone detects"]
    rows = [cols]
    for r in o.per_metric.itertuples():
        name = ".".join(x for x in (r.scenario, r.metric, r.backend, r.variant) if x)
        rows.append([name, str(r.pairs), f"{r.drift_sd:.1%}", str(r.false_raw), str(r.false_cal), f"{r.power:.0%}", f"{r.power_raw:.0%}",
                     f"{r.inconclusive:.0%}", "never" if math.isinf(r.detects) else f"≥{r.detects:+.0%}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    modes = ", ".join(sorted({str(r.meta.get("mode", "?")) for r in o.runs}))
    loads = [v for r in o.runs for v in load_avg(r)]
    load = (f"load average (1 min, pyperf metadata) median {np.median(loads):.2f}, "
            f"range {min(loads):.2f}-{max(loads):.2f}" if loads else "load average not recorded")
    lines += ["",
              f"runs: {len(o.runs)} ({o.runs[0].label} .. {o.runs[-1].label}), {modes} mode, "
              f"host class {host_class(o.runs[0].env)}; {load}",
              f"false regression verdicts in {o.pairs} A/A pairs: {o.false_raw} with the within-run test alone, "
              f"{o.false_cal} with the calibrated gate (target: at most {o.allowed}, 1 per 20 pairs)",
              f"power: an injected +{o.shift:.0%} shift called a regression in {o.power:.0%} of {o.trials} "
              f"(pair, metric) trials (target: at least {TARGET_POWER:.0%}); {o.power_raw:.0%} by the within-run "
              "test alone, which does not know the drift",
              f"target met: {'yes' if o.met else 'no'}" + ("" if o.met else
              " — on this machine a change inside the drift is reported as 'inconclusive', not 'regression'")]
    return "\n".join(lines)


def run(paths, *, save_to: Path | None = None, no_save: bool = False, as_json: bool = False, **kw) -> Outcome:
    import sys
    o = calibrate(paths, log=lambda m: print(m, file=sys.stderr), **kw)
    if as_json:
        print(json.dumps({"pairs": o.pairs, "false_raw": o.false_raw, "false_cal": o.false_cal, "power": o.power,
                          "power_within_run": o.power_raw,
                          "trials": o.trials, "shift": o.shift, "target_met": o.met,
                          "metrics": o.per_metric.replace([math.inf], None).to_dict(orient="records")}, indent=1))
    else:
        print(report(o))
    if not no_save:
        p = save(o, save_to)
        print(f"wrote {p}", file=sys.stderr if as_json else sys.stdout)
    return o
