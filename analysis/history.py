"""One metric across many runs, by date or git revision, with step changes marked.

A step is a pair of consecutive runs of one series (backend + variant) whose
comparison gives a verdict from the function the regression gate uses
(stats.compare_samples, whole worker processes resampled, the host class's
calibrated drift when there is one), so the history chart and ``compare``
never disagree about what counts as a change.  Runs of another host class or
accelerator start a new series: no step is judged across them.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from common.errors import CvbError
from common.paths import results_dir

from . import calibrate, stats, style
from .charts import seconds_axis, wrapped
from .load import DEFAULT_ORDER, load_runs

MAX_SERIES = 8


def steps(df: pd.DataFrame, *, alpha: float = stats.ALPHA, threshold: float = stats.THRESHOLD,
          drift: dict | str | None = "auto") -> pd.DataFrame:
    """Median per run and series, with the verdict against the series' previous run.
    ``drift`` as in compare.compare_runs: "auto" loads each host class's calibration."""
    rows = []
    cache: dict[str, dict] = {}

    def drift_for(hc: str, key: tuple):
        if drift is None:
            return None
        if drift != "auto":
            return drift.get(key)
        if hc not in cache:
            cache[hc] = calibrate.load_for(hc)[0] or {}
        return cache[hc].get(key)

    for (scenario, metric, backend, variant), g in df.groupby(["scenario", "metric", "backend", "variant"]):
        prev = None
        for run_id, r in sorted(g.groupby("run_id"), key=lambda kv: (kv[1]["date"].iloc[0], kv[0])):
            vals, procs = r["value"].to_numpy(), r["process"].to_numpy()
            s = stats.summarize(vals, procs)
            verdict, change = "", np.nan
            hc, accel = r["host_class"].iloc[0], r["accel"].iloc[0]
            if prev is not None and prev[2:] == (hc, accel):
                c = stats.compare_samples(prev[0], vals, alpha=alpha, threshold=threshold, n_boot=500,
                                          base_clusters=prev[1], new_clusters=procs,
                                          drift=drift_for(hc, (scenario, metric, backend, variant)))
                verdict, change = c.verdict, c.change
            elif prev is not None:
                verdict = "new series"
            rows.append({"scenario": scenario, "backend": backend, "variant": variant, "run_id": run_id,
                         "date": r["date"].iloc[0],
                         "git_rev": r["git_rev"].iloc[0], "host_class": r["host_class"].iloc[0],
                         "accel": r["accel"].iloc[0], "unit": r["unit"].iloc[0], "n": s["n"],
                         "median": s["median"], "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                         "change": change, "verdict": verdict})
            prev = (vals, procs, hc, accel)
    return pd.DataFrame(rows)


def history(paths: list[str | os.PathLike] | None, metric: str, *, scenario: str | None = None,
            backend: str | None = None, variant: str | None = None, by: str = "date", st: str = "talk",
            out: str | os.PathLike | None = None, alpha: float = stats.ALPHA,
            threshold: float = stats.THRESHOLD, drift: dict | str | None = "auto") -> tuple[pd.DataFrame, list[Path]]:
    """The table of every series' steps and one chart per scenario holding ``metric``
    (``ready`` is in startup and in isolation: both are drawn unless --scenario picks one)."""
    df = load_runs(paths)
    sel = df[df["metric"] == metric]
    for col, want in (("scenario", scenario), ("backend", backend), ("variant", variant)):
        if want is not None:
            sel = sel[sel[col] == want]
    if sel.empty:
        known = ", ".join(sorted(df["metric"].unique()))
        raise CvbError("history", f"no values for metric {metric!r} with those filters",
                       f"pick one of: {known}")
    table = steps(sel, alpha=alpha, threshold=threshold, drift=drift)
    folder = Path(out) if out else results_dir() / "history"
    files = []
    for scen, part in table.groupby("scenario"):
        rows = sel[sel["scenario"] == scen].sort_values("date")
        newest = rows.iloc[-1]
        # Each VM series' accelerator(s) across the runs drawn, for the subtitle.
        vms = rows[rows["backend"].isin(style.VM_BACKENDS)].groupby("backend")["accel"].unique()
        meta = {"env": {"cpu_model": newest["cpu_model"], "kernel": newest["kernel"],
                        "cpu_count": newest["cpu_count"], "accel": {"name": newest["accel"]}},
                "backends": {b: {"accel": {"accel": "+".join(sorted(map(str, a)))}} for b, a in vms.items()}}
        files += _chart(part, metric, by, st, folder, meta, scen)
    return table, files


def _chart(table: pd.DataFrame, metric: str, by: str, st: str, folder: Path, meta: dict, scenario: str):
    runs = table.drop_duplicates("run_id").sort_values(["date", "run_id"])
    if by == "git":
        pos = {r: i for i, r in enumerate(runs["run_id"])}
        ticks = [f"{str(g)[:8]}\n{d:%m-%d %H:%M}" for g, d in zip(runs["git_rev"], runs["date"], strict=True)]
    elif by == "date":
        pos = dict(zip(runs["run_id"], runs["date"], strict=True))
    else:
        raise CvbError("history", f"--by {by!r} is not known", "use --by date or --by git")
    unit = table["unit"].iloc[0]
    seconds = unit in ("s", "second", "seconds")
    if seconds:
        scale, unit_name = 1.0, ""              # the ticks carry the unit ("10 ms")
    elif unit == "ns":
        scale, unit_name = 1.0, "ns"
    elif "byte" in unit:
        scale, unit_name = 2**-20, "MiB"
    else:
        scale, unit_name = 1.0, unit            # unknown: plot as recorded, say what it is
    with style.styled(st):
        fig, ax = style.figure(st)
        groups = sorted(table.groupby(["backend", "variant"]),
                        key=lambda kv: (DEFAULT_ORDER.index(kv[0][0]) if kv[0][0] in DEFAULT_ORDER else 99, kv[0]))
        hidden = 0
        if len(groups) > MAX_SERIES:
            # The isolation ladder has a series per rung: keep its ends, the rest via --variant.
            keep = [g for g in groups if g[0][1] in ("", "bare", "full", "top")]
            hidden, groups = len(groups) - len(keep), keep
        for (backend, variant), g in groups:
            x = [pos[r] for r in g["run_id"]]
            y = g["median"].to_numpy() * scale
            # No interval below stats.MIN_N processes: a bare dot, and the y label says so.
            err = np.nan_to_num([y - g["ci_low"].to_numpy() * scale, g["ci_high"].to_numpy() * scale - y])
            name = wrapped(style.label(backend) + (f" {variant}" if variant else ""), 30)
            ax.errorbar(x, y, yerr=err, fmt="o-", color=style.color(backend), lw=2, ms=7, capsize=3, label=name)
            for xi, yi, v in zip(x, y, g["verdict"], strict=True):
                if v in ("regression", "improvement"):
                    up = v == "regression"
                    ax.plot(xi, yi, marker="^" if up else "v", ms=18, mfc="none", mew=2.5,
                            color=style.UP if up else style.DOWN, ls="none")
        ax.plot([], [], "^", ms=14, mfc="none", mew=2.5, color=style.UP, label="step up (regression)")
        ax.plot([], [], "v", ms=14, mfc="none", mew=2.5, color=style.DOWN, label="step down (improvement)")
        if by == "git":
            ax.set_xticks(range(len(ticks)), ticks, fontsize="small")
        else:
            if len(runs) == 1:          # one date: matplotlib would span years around it
                d = runs["date"].iloc[0]
                ax.set_xlim(d - pd.Timedelta(hours=1), d + pd.Timedelta(hours=1))
            fig.autofmt_xdate()
        if style.log_if_wide(table["median"]):
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(lambda v, _p: f"{v:g}")
        if seconds:
            seconds_axis(ax.yaxis)
        small = " where ≥10 processes" if table["ci_low"].isna().any() else ""
        ax.set_ylabel(f"{metric}{', ' + unit_name if unit_name else ''} (median, 95% CI{small})")
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize="small")
        hosts = table["host_class"].unique()
        if len(hosts) > 1:
            ax.set_title(f"mixed host classes: {', '.join(hosts)}", fontsize="small", color=style.UP)
        elif hidden:
            ax.set_title(f"{hidden} more series (ladder rungs): pick one with --variant", fontsize="small")
        n_runs = table['run_id'].nunique()
        style.titled(fig, f"{scenario}.{metric} across {n_runs} run{'s' if n_runs != 1 else ''}", meta, st)
        return style.save(fig, folder, f"history_{scenario}_{metric}")


def format_table(table: pd.DataFrame) -> str:
    from .compare import fmt_value
    lines = []
    for r in table.itertuples():
        ch = "" if pd.isna(r.change) else f"{r.change:+.1%}"
        mark = {"regression": "▲ regression", "improvement": "▼ improvement"}.get(r.verdict, r.verdict)
        series = f"{r.scenario}.{r.backend}" + (f".{r.variant}" if r.variant else "")
        lines.append(f"{str(r.date)[:19]}  {str(r.git_rev)[:8]:8}  {series:24}  "
                     f"{fmt_value(r.median, r.unit):>12}  {ch:>7}  {mark}")
    counts = table["verdict"].value_counts()
    if counts.get("inconclusive", 0):
        lines.append(f"{counts['inconclusive']} step(s) inconclusive: inside the calibrated run-to-run drift, "
                     "or too few processes to judge")
    return "\n".join(lines)
