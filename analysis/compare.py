"""The regression gate: two runs of one scenario, metric by metric and backend
by backend, with a verdict a CI job can act on.

It refuses to compare what is not comparable (other scenario, accelerator or
host class, or VM rows whose accelerators differ) unless forced, and then says
so on every output, because a TCG baseline against a KVM run would "find" a
20x improvement.  Values are resampled by worker process (stats.py), and
where ``calibrate`` has measured this host class's run-to-run drift, a change
inside that drift is "inconclusive", not a regression.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from common.errors import CvbError

from . import calibrate, stats
from .load import KEY, Run, host_class, load_baseline, load_run, resolve


@dataclass
class Result:
    base: Run
    new: Run
    rows: pd.DataFrame                 # one row per (scenario, metric, backend, variant)
    notes: list[str] = field(default_factory=list)
    alpha: float = stats.ALPHA
    threshold: float = stats.THRESHOLD
    adjust: str = "none"

    @property
    def regressions(self) -> pd.DataFrame:
        return self.rows[self.rows["verdict"] == "regression"]

    @property
    def exit_status(self) -> int:
        return 1 if len(self.regressions) else 0


def open_pair(base_path: str | os.PathLike, new_path: str | os.PathLike) -> list[tuple[Run, Run, str]]:
    """Runs to compare, pairing scenarios when one side is a multi-scenario baseline file."""
    def side(p):
        r = resolve(p)
        if r.is_file() and r.suffix == ".json" and r.name != "meta.json":
            return load_baseline(r)
        run = load_run(r)
        return {s: run for s in run.scenarios}

    base, new = side(base_path), side(new_path)
    common = sorted(set(base) & set(new))
    if not common:
        raise CvbError("compare", f"different scenarios: {base_path} has {', '.join(sorted(base))}, "
                       f"{new_path} has {', '.join(sorted(new))}",
                       "compare two runs of the same scenario")
    return [(base[s], new[s], s) for s in common]


def accel_refusals(base: Run, new: Run) -> list[str]:
    """kvm and tcg never meet in one comparison: not inside one run's VM rows,
    and not between the two runs' rows of one VM backend."""
    out = []
    per = {}
    for side, run in (("base", base), ("new", new)):
        present = set(run.tidy["backend"])
        acc = {b: a for b, (a, _why) in run.backend_accel().items() if b in present}
        per[side] = acc
        kinds = {k for a in acc.values() for k in a.split(",") if k and k != "unknown"}
        if len(kinds) > 1:
            out.append(f"{side} run mixes accelerators ({', '.join(f'{b}={a}' for b, a in sorted(acc.items()))})")
    for b in sorted(set(per["base"]) & set(per["new"])):
        if per["base"][b] != per["new"][b]:
            out.append(f"{b}: accelerators differ (base {per['base'][b]}, new {per['new'][b]})")
    return out


CONTAINER_BACKENDS = {"builtin", "builtin-cli", "crun", "runc", "runsc"}


def _bundle_sig(meta: dict):
    b = meta.get("bundle") or {}
    if not b:
        return None
    return (tuple(b.get("namespaces") or ()), b.get("seccomp"), tuple(b.get("capabilities") or ()),
            b.get("no_new_privileges"), b.get("readonly_root"))


def config_refusals(base: Run, new: Run) -> list[str]:
    """Container rows measured under different config.json files are not the
    same experiment: a seccomp profile alone moves a runtime's start-up 2x."""
    def containers(run: Run) -> bool:
        return bool(CONTAINER_BACKENDS & set(run.tidy["backend"].unique()))
    if not (containers(base) and containers(new)):
        return []
    sb, sn = _bundle_sig(base.meta), _bundle_sig(new.meta)
    if sb == sn:
        return []
    def short(run: Run) -> str:
        b = run.meta.get("bundle") or {}
        return b.get("short") or "not recorded (measured before every runtime read one config.json)"
    return [f"the container config differs (base: {short(base)}; new: {short(new)}); "
            f"re-record the baseline ('make baseline') or compare runs of one config"]


def check_comparable(base: Run, new: Run, force: bool = False) -> list[str]:
    """Refusals (raised unless forced) and warnings, as lines for the output."""
    notes, refusals = [], []
    if base.accel != new.accel:
        refusals.append(f"accelerators differ (base {base.accel}, new {new.accel})")
    refusals += accel_refusals(base, new)
    refusals += config_refusals(base, new)
    hb, hn = host_class(base.env), host_class(new.env)
    if hb != hn:
        refusals.append(f"host classes differ (base {hb}, new {hn})")
    if refusals and not force:
        raise CvbError("compare", "; ".join(refusals),
                       "compare runs from the same kind of host and accelerator, or pass --force")
    notes += [f"FORCED: {r}; the verdicts mix machines and are not a like-for-like comparison" for r in refusals]
    eb, en = base.env, new.env
    if eb.get("hostname") != en.get("hostname"):
        notes.append(f"hosts differ by name ({eb.get('hostname')} vs {en.get('hostname')}) but share host class {hn}")
    if eb.get("kernel") != en.get("kernel"):
        notes.append(f"kernels differ ({eb.get('kernel')} vs {en.get('kernel')})")
    if base.meta.get("mode") != new.meta.get("mode"):
        notes.append(f"modes differ ({base.meta.get('mode')} vs {new.meta.get('mode')}): sample sizes differ")
    if new.accel == "tcg":
        notes.append("accelerator is tcg: VM numbers are TCG emulation, not KVM")
    return notes


def noise_floor(group: pd.DataFrame, repeat: pd.Series | None) -> float:
    """The largest relative difference between the medians of the baseline's
    repeated runs: run-to-run drift that no within-run test can see (load from
    neighbours, frequency scaling), so a change below it is not called a regression."""
    if repeat is None:
        return 0.0
    meds = group.groupby(repeat.loc[group.index])["value"].median()
    meds = meds[meds > 0]
    if len(meds) < 2:
        return 0.0
    return float(meds.max() / meds.min() - 1.0)


def clusters(run: Run, group: pd.DataFrame) -> pd.Series:
    """The worker process of each value; a baseline's repeated runs never share one."""
    proc = group["process"].astype(str)
    if run.repeat is not None:
        proc = run.repeat.loc[group.index].astype(str) + ":" + proc
    return proc


def compare_runs(base: Run, new: Run, *, alpha: float = stats.ALPHA, threshold: float = stats.THRESHOLD,
                 test: str = "permutation", force: bool = False, scenarios: list[str] | None = None,
                 n_boot: int = stats.N_BOOT, adjust: str = "holm", drift: dict | str | None = "auto",
                 detect: bool = True) -> Result:
    """``drift``: {key: stats.Drift} from ``calibrate``, None for none, or "auto"
    to use the saved calibration of the new run's host class if there is one."""
    notes = check_comparable(base, new, force)
    if drift == "auto":
        drift, where = calibrate.load_for(host_class(new.env))
        mode = str(new.meta.get("mode", ""))
        if drift and mode not in calibrate.modes_for(host_class(new.env)):
            where += f"; this run is in {mode} mode, whose drift may differ"
        notes.append(f"run-to-run drift from {where}" if drift else
                     "uncalibrated: this host class's run-to-run drift is unknown, so a verdict rests on the "
                     "within-run test alone; run 'python -m analysis calibrate' on A/A runs of this machine")
    drift = drift or {}
    b, n = base.tidy, new.tidy
    if scenarios:
        b, n = b[b["scenario"].isin(scenarios)], n[n["scenario"].isin(scenarios)]
    gb, gn = dict(list(b.groupby(KEY))), dict(list(n.groupby(KEY)))
    rows = []
    for key in sorted(set(gb) | set(gn)):
        if key not in gb or key not in gn:
            where = "base" if key in gb else "new"
            notes.append(f"{'.'.join(k for k in key if k)}: only in {where}; not compared")
            continue
        ub, un = set(gb[key]["unit"]), set(gn[key]["unit"])
        if ub != un:
            raise CvbError("compare", f"{'.'.join(key)}: units differ ({ub} vs {un})",
                           "the runs come from incompatible cvbench versions; re-run the baseline")
        floor = noise_floor(gb[key], base.repeat)
        c = stats.compare_samples(gb[key]["value"], gn[key]["value"], alpha=alpha,
                                  threshold=max(threshold, floor), test=test, n_boot=n_boot,
                                  base_clusters=clusters(base, gb[key]), new_clusters=clusters(new, gn[key]),
                                  drift=drift.get(key))
        rows.append(dict(zip(KEY, key, strict=True)) | {"unit": ub.pop(), "floor": floor, "detectable": math.nan}
                    | vars(c))
    # Holm adjusts over the finite p-values only (stats.holm), so that is the m its first step uses.
    m = max(1, sum(r["p"] is not None and math.isfinite(r["p"]) for r in rows)) if adjust == "holm" and len(rows) > 1 else 1
    for r in rows if detect else []:
        key = tuple(r[k] for k in KEY)
        # Holm's first step tests the smallest p at alpha/m: the bound for a slowdown in this metric alone,
        # with the same test the gate uses, and no smaller than the drift it must stand out from.
        within = stats.detectable_change(gb[key]["value"], alpha=alpha / m, threshold=max(threshold, r["floor"]),
                                         test=test, clusters=clusters(base, gb[key]))
        d = drift.get(key)
        r["detectable"] = max(within, d.detectable(alpha / m)) if d else within
    if not rows:
        raise CvbError("compare", f"{base.label} and {new.label} have no metric, backend and variant in common",
                       "run the new pass with the baseline's backends (--backends)")
    cols = KEY + ["unit", "floor", "detectable"] + list(stats.Comparison.__dataclass_fields__)
    df = pd.DataFrame(rows, columns=cols)
    df["p_raw"] = df["p"]
    if adjust == "holm" and len(df) > 1:
        df["p"] = stats.holm(df["p_raw"])
        # max(p, p_drift) is a valid p for "no change" too; Holm over it keeps the table's rate.
        gate = stats.holm(df[["p_raw", "p_drift"]].max(axis=1, skipna=True))
        df["p_drift"] = [g if math.isfinite(d) else math.nan for g, d in zip(gate, df["p_drift"], strict=True)]
        for i, r in df.iterrows():
            if r["note"].startswith("too few") or pd.isna(r["p"]):
                continue
            d = drift.get(tuple(r[k] for k in KEY))
            df.loc[i, ["verdict", "note"]] = stats.decide(r["change"], r["ci_low"], r["ci_high"], r["p"], alpha,
                                                          max(threshold, r["floor"]), r["p_drift"],
                                                          d.detectable(alpha) if d else 0.0)
        notes.append(f"p is Holm-adjusted over the {len(df)} metrics compared, so the false-alarm rate "
                     f"holds for the whole table (--adjust none for per-metric p)")
    order = new.isolation_order
    df["_o"] = df["backend"].map(lambda x: order.index(x) if x in order else len(order))
    df = df.sort_values(["scenario", "metric", "_o", "variant"]).drop(columns="_o").reset_index(drop=True)
    if len(df) and (df["floor"] > threshold).any():
        raised = df[df["floor"] > threshold]
        notes.append(f"{len(raised)} metric(s) use a noise floor above {threshold:.0%}, from the spread between "
                     f"the baseline's repeated runs (largest {raised['floor'].max():.0%})")
    blind = df[df["detectable"] > 0.10] if len(df) else df
    if len(blind):
        notes.append(f"{len(blind)} of {len(df)} metrics could miss a real 10% slowdown (see 'detects'): too few "
                     "values or too much noise; use default or --rigorous mode and a quiet machine")
    starved = df[df["note"].str.startswith("too few")] if len(df) else df
    if len(starved):
        notes.append(f"{len(starved)} of {len(df)} comparisons have too few worker processes to ever reach "
                     f"p<{alpha:g} (inconclusive); use the default or --rigorous mode for a gate that can fire")
    drifting = df[df["note"].str.contains("run-to-run drift")] if len(df) else df
    if len(drifting):
        notes.append(f"{len(drifting)} change(s) beat the within-run test but not this machine's measured "
                     "run-to-run drift: inconclusive, not regressions")
    return Result(base, new, df, notes, alpha, threshold, adjust if len(df) > 1 else "none")


def fmt_value(v: float, unit: str) -> str:
    """Human units: seconds as ms/µs, bytes as MiB."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if unit in ("s", "second"):
        return f"{v * 1e3:.3g} ms" if v < 1 else f"{v:.3g} s"
    if unit in ("bytes", "byte", "bytes_per_instance"):
        suffix = "/inst" if unit == "bytes_per_instance" else ""
        return f"{v / 2**20:.3g} MiB{suffix}"
    if unit == "ns":
        return f"{v:.4g} ns"
    return f"{v:.4g} {unit}"


def _cells(r, with_floor: bool = False) -> list[str]:
    name = ".".join(x for x in (r.metric, r.backend, r.variant) if x)
    # The gate may use an interval from 5 processes, but a table never prints one from fewer than MIN_N.
    small = math.isnan(r.ci_low) or min(r.k_base, r.k_new) < stats.MIN_N
    ci = stats.TOO_SMALL if small else f"[{r.ci_low:+.1%}, {r.ci_high:+.1%}]"
    p = "-" if math.isnan(r.p) else f"{r.p:.2g}"
    cells = [r.scenario, name, fmt_value(r.median_base, r.unit), fmt_value(r.median_new, r.unit),
             "-" if math.isnan(r.change) else f"{r.change:+.1%}", ci, p,
             "-" if math.isnan(r.p_drift) else f"{r.p_drift:.2g}", f"{r.k_base}/{r.k_new}", r.verdict]
    if with_floor:
        cells.insert(-1, f"{r.floor:.0%}" if r.floor else "-")
    cells.insert(-1, "never" if math.isinf(r.detectable) else f"≥{r.detectable:+.0%}")
    return cells


def has_floor(result: Result) -> bool:
    return bool(len(result.rows)) and bool((result.rows["floor"] > 0).any())


def header(result: Result) -> list[str]:
    p = "p (Holm)" if result.adjust == "holm" else "p"
    cols = ["scenario", "metric", "base", "new", "change", f"{(1 - result.alpha) * 100:g}% CI", p, "p drift",
            "processes", "verdict"]
    if has_floor(result):
        cols.insert(-1, "noise floor")
    cols.insert(-1, "detects")
    return cols


def table(result: Result) -> str:
    cols = header(result)
    rows = [cols] + [_cells(r, has_floor(result)) for r in result.rows.itertuples()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + [""] + [f"note: {n}" for n in result.notes] + [summary_line(result)])


def summary_line(result: Result) -> str:
    counts = result.rows["verdict"].value_counts()
    limit = f"max({result.threshold:.0%}, noise floor)" if has_floor(result) else f"{result.threshold:.0%}"
    return (f"verdict: {'REGRESSION' if result.exit_status else 'ok'} — "
            f"{counts.get('regression', 0)} regression(s), {counts.get('improvement', 0)} improvement(s), "
            f"{counts.get('inconclusive', 0)} inconclusive, {counts.get('no change', 0)} no change "
            f"(rule: p<{result.alpha:g} permuting whole processes, |change|>{limit}, "
            f"the {(1 - result.alpha) * 100:g}% cluster-bootstrap interval excluding 0, "
            f"and beyond the calibrated run-to-run drift)")


def markdown(result: Result) -> str:
    """For a CI comment: a header line, the table, and the notes."""
    head = f"### cvbench compare: {result.base.label} → {result.new.label}\n\n**{summary_line(result)}**\n"
    cols = header(result)
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in result.rows.itertuples():
        cells = _cells(r, has_floor(result))
        if r.verdict != "no change":
            cells[-1] = f"**{cells[-1]}**"
        rows.append("| " + " | ".join(cells) + " |")
    notes = "".join(f"- {n}\n" for n in result.notes)
    return head + "\n" + "\n".join(rows) + "\n" + (f"\n{notes}" if notes else "")


def as_json(result: Result) -> dict:
    rows = result.rows.astype(object).where(result.rows.notna(), None)
    rows = rows.replace([math.inf], None)
    return {"base": result.base.label, "new": result.new.label, "alpha": result.alpha,
            "threshold": result.threshold, "adjust": result.adjust, "regression": bool(result.exit_status),
            "notes": result.notes, "rows": rows.to_dict(orient="records")}


def compare_scenarios(pairs: list[tuple[Run, Run, str]], *, alpha: float = stats.ALPHA, adjust: str = "holm",
                      **kw) -> list[Result]:
    """One Result per (base, new, scenario).  Each scenario is its own table and the
    caller takes the worst exit status, so with Holm on, k > 1 scenarios are each
    tested at alpha/k (Bonferroni across scenarios, Holm within one): the
    false-alarm rate then holds for all the tables together, not for each."""
    k = len(pairs)
    each = alpha / k if adjust == "holm" and k > 1 else alpha
    results = []
    for b, n, s in pairs:
        res = compare_runs(b, n, scenarios=[s], alpha=each, adjust=adjust, **kw)
        if each != alpha:
            res.notes.append(f"{k} scenarios are compared, so each table is tested at alpha={each:g} "
                             f"({alpha:g}/{k}: Bonferroni across scenarios, Holm within each); the "
                             f"false-alarm rate {alpha:g} holds for all {k} tables together")
        results.append(res)
    return results


def run(base_path, new_path, *, markdown_path: str | None = None, as_json_out: bool = False,
        **kw) -> list[Result]:
    """compare from the command line: prints tables (or JSON), optionally writes Markdown."""
    results = compare_scenarios(open_pair(base_path, new_path), **kw)
    if as_json_out:
        print(json.dumps([as_json(r) for r in results], indent=1))
    for r in results if not as_json_out else []:
        print(table(r))
    if markdown_path:
        Path(markdown_path).write_text("\n".join(markdown(r) for r in results))
    return results
