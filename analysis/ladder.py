"""The isolation ladder: what each mechanism adds, from a bare fork+exec to a VM.

The floor is the host backend's fork+exec of the probe; the next step is the
cvbench runtime itself with every mechanism off, so its own cost is visible
rather than hidden in the floor; then the mechanisms, stacked.

This is the one picture that explains containers: a container is a process
plus a stack of kernel mechanisms, each with a price, and a VM is a different
kind of thing altogether.  Steps are differences of medians with a bootstrap
interval, and a step whose interval includes zero is marked "n.s." rather than
drawn as if it were a measured cost.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import stats, style
from .charts import fmt_seconds
from .load import Run

TOPS = ["crun", "runc", "runsc", "qemu", "libvirt"]
CONTAINER_TOPS = ("crun", "runc", "runsc")
UNIT_LABEL = {"ready": "startup", "getppid": "getppid (null syscall)", "read_zero": "read of /dev/zero"}


@dataclass
class Rung:
    name: str           # row label
    variant: str
    backend: str
    values: np.ndarray
    kind: str           # "bare" | "step" | "total" | "top"
    median: float = 0.0
    delta: float = 0.0  # added over the previous rung (steps only)
    ci: tuple[float, float] = (0.0, 0.0)
    clusters: np.ndarray | None = None   # the pyperf process of each value: the resampling unit


def config_note(meta: dict) -> str:
    """What the one config.json of the container rows has, in a few words."""
    b = meta.get("bundle") or {}
    if not b.get("namespaces"):
        return "bundle config"
    sc = "seccomp" if not str(b.get("seccomp", "")).startswith("no ") else "no seccomp"
    return f"bundle: {len(b['namespaces'])} ns, {sc}, {len(b.get('capabilities') or [])} caps"


def stage_note(meta: dict, variants: list[str]) -> str:
    """Where the runtime's start path changes along the ladder.  Rungs the
    runtime's C stage can start skip the fork of the Python process; a rung
    that needs the Python child (user or time namespace, veth) carries that
    path's extra cost in its step, and the step back to the C stage (full
    isolation on the default bundle) sheds it, so the chart names both ends."""
    stages = meta.get("ladder_stage") or {}
    seen = [(v, stages[v]) for v in dict.fromkeys(variants) if stages.get(v)]
    if not seen or len({s for _, s in seen}) < 2:
        return ""
    py = [v for v, s in seen if s == "python"]
    if not py:
        return ""

    def label(v: str) -> str:
        mech = _mechs(v)
        return f"+ {mech[-1]}" if mech else v

    span = f"'{label(py[0])}'" + (f" to '{label(py[-1])}'" if len(py) > 1 else "")
    back = [v for v, s in seen[seen.index((py[-1], "python")) + 1:] if s == "c"]
    tail = f", the C stage again from '{label(back[0])}'" if back else ""
    return (f"start path: the runtime's C stage, its forked Python child for {span}{tail}; "
            f"the steps where it switches include the switch")


def _mechs(variant: str) -> list[str]:
    return [m for m in variant.split(":", 1)[1].split("+") if m] if ":" in variant else []


def rungs(run: Run, metric: str) -> list[Rung]:
    """Bare, then each cumulative rung, then the real runtimes and VMs at full isolation."""
    cache = run.__dict__.setdefault("_rungs", {})
    if metric not in cache:
        cache[metric] = _rungs(run, metric)
    return cache[metric]


def _rungs(run: Run, metric: str) -> list[Rung]:
    df = run.tidy[(run.tidy["scenario"] == "isolation") & (run.tidy["metric"] == metric)]
    if df.empty:
        return []
    b = df[df.backend == "builtin"]
    by_variant = {v: g["value"].to_numpy() for v, g in b.groupby("variant")}
    procs_of = {v: g["process"].to_numpy() for v, g in b.groupby("variant")}
    order = [v for v in run.meta.get("ladder") or [] if v.startswith("cum:")]
    cum = order or sorted((v for v in by_variant if v.startswith("cum:")), key=lambda v: len(_mechs(v)))
    out: list[Rung] = []
    hdf = df[(df.backend == "host") & (df.variant == "bare")]
    host = hdf["value"].to_numpy()
    if host.size:
        out.append(Rung("bare process (fork+exec)", "bare", "host", host, "bare",
                        clusters=hdf["process"].to_numpy()))
    if "bare" in by_variant:
        # With the host's floor below it, the runtime's own cost is a step of its own.
        out.append(Rung("+ cvbench runtime itself", "bare", "builtin", by_variant["bare"], "step",
                        clusters=procs_of["bare"])
                   if out else Rung("bare process", "bare", "builtin", by_variant["bare"], "bare",
                                    clusters=procs_of["bare"]))
    prev: list[str] = []
    for v in cum:
        if v not in by_variant:
            continue
        added = [m for m in _mechs(v) if m not in prev] or _mechs(v)[-1:]
        out.append(Rung("+ " + " + ".join(added), v, "builtin", by_variant[v], "step",
                        clusters=procs_of[v]))
        prev = _mechs(v)
    if any(r.variant.startswith("cum:") for r in out):
        out.append(Rung("= all mechanisms stacked", out[-1].variant, "builtin", out[-1].values, "total"))
    cfg = config_note(run.meta)
    if "full" in by_variant:
        out.append(Rung(f"cvbench runtime ({cfg})", "full", "builtin", by_variant["full"], "top"))
    for t in TOPS:
        g = df[(df.backend == t) & (df.variant == "top")]
        if len(g):
            out.append(Rung(f"{style.label(t)} ({cfg})" if t in CONTAINER_TOPS else style.label(t),
                            "top", t, g["value"].to_numpy(), "top"))
    for i, r in enumerate(out):
        r.median = float(np.median(r.values))
        if r.kind == "step" and i > 0:      # without a bare rung the first step has nothing before it
            r.delta = r.median - out[i - 1].median
            # values of one pyperf process are not independent: resample whole processes
            r.ci = stats.diff_ci(out[i - 1].values, r.values, base_clusters=out[i - 1].clusters,
                                 new_clusters=r.clusters)
    return out


def _fmt(metric: str, v: float) -> str:
    return fmt_seconds(v) if metric == "ready" else f"{v:.3g} ns"


def waterfall(run: Run, st: str, out: Path, metric: str = "ready") -> list[Path]:
    rs = rungs(run, metric)
    if len(rs) < 2:
        return []
    containers = [r.median for r in rs if r.backend in ("builtin", "host")]
    scale = max(containers) * 1.45
    # Real runtimes within 3x of the built-in ladder share its axis; a VM would squash it.
    near = [r.median for r in rs if r.kind == "top" and r.median < 3 * max(containers)]
    xmax = max([scale] + [m * 1.3 for m in near])
    ref = "bare" if rs[0].kind == "bare" else "the first rung"
    with style.styled(st):
        fig, ax = style.figure(st)
        for y, r in enumerate(rs):
            if r.kind == "step" and y > 0:
                left, width = min(r.median - r.delta, r.median), abs(r.delta)
                sig = not (r.ci[0] <= 0 <= r.ci[1])
                color = (style.UP if r.delta > 0 else style.DOWN) if sig else style.NEUTRAL
                ax.barh(y, max(width, xmax * 0.002), left=left, color=color, height=0.7)
                text = f"{'+' if r.delta >= 0 else '−'}{_fmt(metric, abs(r.delta))}" + ("" if sig else " (n.s.)")
                ax.annotate(text, (left + width, y), xytext=(6, 0), textcoords="offset points", va="center",
                            fontsize="small", color="#333333" if sig else "#888888")
                ax.plot([r.median - r.delta] * 2, [y - 1.35, y + 0.35], color="#bbbbbb", lw=0.8, zorder=0)
            else:
                color = style.NEUTRAL if r.kind == "bare" else style.color(r.backend)
                clipped = r.median > xmax
                ax.barh(y, min(r.median, xmax), color=color, height=0.7)
                if clipped:
                    ax.annotate(f"{_fmt(metric, r.median)}, off scale ({r.median / rs[0].median:.0f}× {ref}) ▶",
                                (xmax, y), xytext=(-8, 0), textcoords="offset points", ha="right", va="center",
                                fontsize="small", color="white", fontweight="bold")
                else:
                    ax.annotate(_fmt(metric, r.median), (r.median, y), xytext=(6, 0),
                                textcoords="offset points", va="center", fontsize="small")
        ax.set_yticks(range(len(rs)), [r.name for r in rs])
        ax.invert_yaxis()
        ax.set_xlim(0, xmax)
        if metric == "ready":
            factor, unit = {"s": (1, "s"), "ms": (1e-3, "ms"), "µs": (1e-6, "µs")}[
                "s" if xmax >= 2 else "ms" if xmax >= 2e-3 else "µs"]
            ax.xaxis.set_major_formatter(lambda v, _p: f"{v / factor:g}")
            ax.set_xlabel(f"spawn to CVB READY, {unit} (median; steps: difference of medians)")
        else:
            ax.set_xlabel(f"{UNIT_LABEL.get(metric, metric)}, ns per op (median)")
        ax.grid(axis="x", alpha=0.3)
        name = UNIT_LABEL.get(metric, metric)
        style.titled(fig, f"The isolation ladder: {name}, mechanism by mechanism", run.meta, st,
                     note=stage_note(run.meta, [r.variant for r in rs if r.backend == "builtin"]))
        return style.save(fig, out, "isolation_ladder" if metric == "ready" else f"isolation_ladder_{metric}")


def summary(run: Run, st: str, out: Path) -> list[Path]:
    """Every rung against its cost relative to a bare process, for each metric at once."""
    # Costs are relative to a bare process: a metric measured without one has no reference.
    metrics = [m for m in ("ready", "getppid", "read_zero")
               if len(rs := rungs(run, m)) > 1 and rs[0].kind == "bare"]
    if not metrics:
        return []
    with style.styled(st):
        fig, ax = style.figure(st)
        names: list[str] = []
        markers = {"ready": "o", "getppid": "s", "read_zero": "^"}
        colors = {"ready": "#0072B2", "getppid": "#D55E00", "read_zero": "#009E73"}
        n_ladder = 0
        for m in metrics:
            rs = [r for r in rungs(run, m) if r.kind != "total"]
            names = names or [r.name for r in rs]
            pts = [(r.median / rs[0].median, names.index(r.name), r.kind) for r in rs if r.name in names]
            ladder = [(x, y) for x, y, k in pts if k != "top"]
            tops = [(x, y) for x, y, k in pts if k == "top"]
            n_ladder = max(n_ladder, len(ladder))
            # The ladder is one cumulative path; the real runtimes are separate points, not a continuation.
            ax.plot(*zip(*ladder, strict=True), marker=markers[m], color=colors[m], lw=1.5, ms=9, label=UNIT_LABEL[m])
            if tops:
                ax.plot(*zip(*tops, strict=True), marker=markers[m], color=colors[m], ms=9, ls="none")
        if n_ladder < len(names):
            ax.axhline(n_ladder - 0.5, color="#999999", lw=1, ls="--")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(lambda v, _p: f"{v:g}×")
        ax.axvline(1, color="#999999", lw=1)
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set_xlabel("cost relative to a bare process (log scale)")
        ax.grid(axis="x", alpha=0.3, which="both")
        ax.legend(loc="upper right", frameon=False)
        style.titled(fig, "Isolation rung against its cost", run.meta, st)
        return style.save(fig, out, "isolation_summary")


def alone(run: Run, st: str, out: Path) -> list[Path]:
    """Each mechanism switched on by itself, so its price is not hidden by the order of the ladder."""
    df = run.tidy[(run.tidy.scenario == "isolation") & (run.tidy.metric == "ready") & (run.tidy.backend == "builtin")]
    bare = df[df.variant == "bare"]["value"].to_numpy()
    only = {v.split(":", 1)[1]: g["value"].to_numpy() for v, g in df.groupby("variant") if v.startswith("only:")}
    if bare.size == 0 or not only:
        return []
    items = []
    for mech, vals in only.items():
        d = float(np.median(vals) - np.median(bare))
        items.append((d, mech, stats.diff_ci(bare, vals)))
    items.sort(reverse=True)
    with style.styled(st):
        fig, ax = style.figure(st)
        for y, (d, _mech, (lo, hi)) in enumerate(items):
            sig = not (lo <= 0 <= hi)
            ax.barh(y, d * 1e3, xerr=[[(d - lo) * 1e3], [(hi - d) * 1e3]], capsize=3, height=0.7,
                    color=(style.UP if d > 0 else style.DOWN) if sig else style.NEUTRAL)
            right = d >= 0
            ax.annotate(f"{d * 1e3:+.3g} ms" + ("" if sig else " (n.s.)"),
                        ((max(d, hi) if right else min(d, lo)) * 1e3, y), xytext=(6 if right else -6, 0),
                        textcoords="offset points", va="center", ha="left" if right else "right", fontsize="small")
        ax.set_yticks(range(len(items)), [m for _, m, _ in items])
        ax.invert_yaxis()
        ax.axvline(0, color="#999999", lw=1)
        ax.margins(x=0.25)
        ax.set_xlabel(f"added startup over the cvbench runtime with everything off "
                      f"({fmt_seconds(float(np.median(bare)))}), ms, 95% CI")
        ax.grid(axis="x", alpha=0.3)
        style.titled(fig, "Each isolation mechanism on its own", run.meta, st)
        return style.save(fig, out, "isolation_alone")


def ladder_ready(run, st, out):
    return waterfall(run, st, out, "ready")


def ladder_getppid(run, st, out):
    return waterfall(run, st, out, "getppid")


CHARTS = [ladder_ready, ladder_getppid, summary, alone]
