"""One metric across many runs, by date or git revision, with step changes marked.

A step is a pair of consecutive runs of one series (backend + variant) whose
comparison gives a verdict under the same rule as the regression gate, so the
history chart and ``compare`` never disagree about what counts as a change.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from common.errors import CvbError
from common.paths import results_dir

from . import stats, style
from .charts import seconds_axis
from .load import DEFAULT_ORDER, load_runs


def steps(df: pd.DataFrame, *, alpha: float = stats.ALPHA, threshold: float = stats.THRESHOLD) -> pd.DataFrame:
    """Median per run and series, with the verdict against the series' previous run."""
    rows = []
    for (backend, variant), g in df.groupby(["backend", "variant"]):
        prev = None
        for run_id, r in sorted(g.groupby("run_id"), key=lambda kv: (kv[1]["date"].iloc[0], kv[0])):
            vals = r["value"].to_numpy()
            s = stats.summarize(vals)
            verdict, change = "", np.nan
            if prev is not None:
                c = stats.compare_samples(prev, vals, alpha=alpha, threshold=threshold, n_boot=500)
                verdict, change = c.verdict, c.change
            rows.append({"backend": backend, "variant": variant, "run_id": run_id, "date": r["date"].iloc[0],
                         "git_rev": r["git_rev"].iloc[0], "host_class": r["host_class"].iloc[0],
                         "accel": r["accel"].iloc[0], "unit": r["unit"].iloc[0], "n": s["n"],
                         "median": s["median"], "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                         "change": change, "verdict": verdict})
            prev = vals
    return pd.DataFrame(rows)


def history(paths: list[str | os.PathLike] | None, metric: str, *, scenario: str | None = None,
            backend: str | None = None, variant: str | None = None, by: str = "date", st: str = "talk",
            out: str | os.PathLike | None = None, alpha: float = stats.ALPHA,
            threshold: float = stats.THRESHOLD) -> tuple[pd.DataFrame, list[Path]]:
    df = load_runs(paths)
    sel = df[df["metric"] == metric]
    for col, want in (("scenario", scenario), ("backend", backend), ("variant", variant)):
        if want is not None:
            sel = sel[sel[col] == want]
    if sel.empty:
        known = ", ".join(sorted(df["metric"].unique()))
        raise CvbError("history", f"no values for metric {metric!r} with those filters",
                       f"pick one of: {known}")
    if sel["scenario"].nunique() > 1:
        raise CvbError("history", f"metric {metric!r} appears in scenarios {', '.join(sorted(sel.scenario.unique()))}",
                       "choose one with --scenario")
    table = steps(sel, alpha=alpha, threshold=threshold)
    folder = Path(out) if out else results_dir() / "history"
    newest = sel.sort_values("date").iloc[-1]
    meta = {"env": {"cpu_model": newest["cpu_model"], "kernel": newest["kernel"], "cpu_count": newest["cpu_count"],
                    "accel": {"name": newest["accel"]}}}
    files = _chart(table, metric, by, st, folder, meta, sel["scenario"].iloc[0])
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
        for (backend, variant), g in groups:
            x = [pos[r] for r in g["run_id"]]
            y = g["median"].to_numpy() * scale
            err = [y - g["ci_low"].to_numpy() * scale, g["ci_high"].to_numpy() * scale - y]
            name = style.label(backend) + (f" {variant}" if variant else "")
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
            fig.autofmt_xdate()
        if style.log_if_wide(table["median"]):
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(lambda v, _p: f"{v:g}")
        if seconds:
            seconds_axis(ax.yaxis)
        ax.set_ylabel(f"{metric}{', ' + unit_name if unit_name else ''} (median, 95% CI)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize="small")
        hosts = table["host_class"].unique()
        if len(hosts) > 1:
            ax.set_title(f"mixed host classes: {', '.join(hosts)}", fontsize="small", color=style.UP)
        style.titled(fig, f"{scenario}.{metric} across {table['run_id'].nunique()} runs", meta, st)
        return style.save(fig, folder, f"history_{scenario}_{metric}")


def format_table(table: pd.DataFrame) -> str:
    from .compare import fmt_value
    lines = []
    for r in table.itertuples():
        ch = "" if pd.isna(r.change) else f"{r.change:+.1%}"
        mark = {"regression": "▲ regression", "improvement": "▼ improvement"}.get(r.verdict, r.verdict)
        series = r.backend + (f".{r.variant}" if r.variant else "")
        lines.append(f"{str(r.date)[:19]}  {str(r.git_rev)[:8]:8}  {series:24}  "
                     f"{fmt_value(r.median, r.unit):>12}  {ch:>7}  {mark}")
    return "\n".join(lines)
