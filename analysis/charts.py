"""Startup, memory and syscall charts for one run (the isolation ladder lives in
ladder.py).  Each function returns the files it wrote, or [] when the run holds
no data for it, so ``charts`` can render whatever a run contains.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from . import stats, style
from .load import Run


def fmt_seconds(v: float) -> str:
    if v >= 1:
        return f"{v:.3g} s"
    if v >= 1e-3:
        return f"{v * 1e3:.3g} ms"
    return f"{v * 1e6:.3g} µs"


def fmt_ns(v: float) -> str:
    for factor, unit in ((1e6, "ms"), (1e3, "µs")):
        if v >= factor:
            return f"{v / factor:g} {unit}"
    return f"{v:g} ns"


def seconds_axis(axis) -> None:
    """Tick labels a slide can use: "10 ms", not "10^-2"."""
    axis.set_major_formatter(lambda v, _p: fmt_seconds(v) if v > 0 else "0")


def wrapped(text: str, width: int = 24) -> str:
    """A long backend name on several short lines, so the axes keep their width on a slide."""
    return "\n".join(textwrap.wrap(text, width)) or text


def _select(run: Run, scenario: str, metric: str | None = None, variant: str | None = None):
    df = run.tidy[run.tidy["scenario"] == scenario]
    if metric is not None:
        df = df[df["metric"] == metric]
    if variant is not None:
        df = df[df["variant"] == variant]
    return df


def _ordered(run: Run, backends) -> list[str]:
    order = run.backend_order()
    present = set(backends)
    return [b for b in order if b in present]


def startup_median(run: Run, st: str, out: Path) -> list[Path]:
    """Median ready and lifecycle time with 95% CI, weakest isolation at the top."""
    df = _select(run, "startup")
    if df.empty:
        return []
    backends = _ordered(run, df["backend"].unique())
    metrics = [m for m in ("ready", "lifecycle") if m in set(df["metric"])]
    summ = {(b, m): stats.summarize(g["value"], g["process"])
            for b in backends for m in metrics for g in [df[(df.backend == b) & (df.metric == m)]]}
    summ = {k: v for k, v in summ.items() if v["n"]}
    with style.styled(st):
        fig, ax = style.figure(st)
        marker = {"ready": ("o", "to CVB READY"), "lifecycle": ("D", "spawn to gone (lifecycle)")}
        offset = {"ready": -0.17, "lifecycle": 0.17} if len(metrics) > 1 else {metrics[0]: 0.0}
        small = False
        for (b, m), s in summ.items():
            y = backends.index(b) + offset[m]
            filled = m == "ready"
            has_ci = bool(np.isfinite(s["ci_low"]))
            small |= not has_ci
            err = [[s["median"] - s["ci_low"]], [s["ci_high"] - s["median"]]] if has_ci else None
            ax.errorbar(s["median"], y, xerr=err, fmt=marker[m][0], color=style.color(b),
                        mfc=style.color(b) if filled else "white", ms=9, capsize=4, lw=2)
            text = fmt_seconds(s["median"]) + ("" if has_ci else f" (n={s['k']}: no CI)")
            ax.annotate(text, (s["ci_high"] if has_ci else s["median"], y), xytext=(8, 0),
                        textcoords="offset points", va="center", fontsize="small", color="#333333")
        vals = [v for s in summ.values() for v in (s["ci_high"], s["ci_low"], s["median"]) if np.isfinite(v)]
        if style.log_if_wide(vals):
            ax.set_xscale("log")
            ax.set_xlim(min(vals) / 1.6, max(vals) * 4)
        else:
            ax.set_xlim(0, max(vals) * 1.25)
        seconds_axis(ax.xaxis)      # "10 ms", not raw seconds, on either scale
        ax.set_yticks(range(len(backends)), [wrapped(style.label(b)) for b in backends])
        ax.invert_yaxis()
        ax.set_xlabel("spawn to ready or gone " + (f"(median; 95% CI only with ≥{stats.MIN_N} processes)"
                                                    if small else "(median, 95% CI)"))
        for m in metrics:
            ax.plot([], [], marker[m][0], color="#333333", mfc="#333333" if m == "ready" else "white",
                    label=marker[m][1])
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.grid(axis="x", alpha=0.3, which="both")
        style.titled(fig, "Startup time, weakest to strongest isolation", run.meta, st)
        return style.save(fig, out, "startup_median")


def startup_ecdf(run: Run, st: str, out: Path) -> list[Path]:
    """The whole distribution, not just the median: tails show here first."""
    df = _select(run, "startup", "ready")
    if df.empty:
        return []
    backends = _ordered(run, df["backend"].unique())
    with style.styled(st):
        fig, ax = style.figure(st)
        for b in backends:
            v = np.sort(df[df.backend == b]["value"].to_numpy())
            ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", color=style.color(b), lw=2.5,
                    label=wrapped(f"{style.label(b)} (n={v.size})", 34))
        if style.log_if_wide(df["value"]):
            ax.set_xscale("log")
        seconds_axis(ax.xaxis)      # "10 ms", not raw seconds, on either scale
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("spawn to CVB READY")
        ax.set_ylabel("fraction of starts at or below")
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        style.titled(fig, "Startup time distribution (ECDF)", run.meta, st)
        return style.save(fig, out, "startup_ecdf")


HEADLINE_PARTS = [("cgroup_charged", "own cgroup's charge", None),
                  ("outside_pss", "processes outside it (PSS)", "//"),
                  ("supervisor_share", "shared supervisor's share", "xx")]
VM_WORKLOAD = "guest RAM (THP-rounded, guest kernel included)"


def memory_definition(run: Run) -> str:
    """The one definition, as the chart prints it, with the builtin supervisor's case."""
    defs = run.meta.get("memory_definitions") or {}
    if "charged" not in defs:
        return "older run: no charged headline recorded; PSS only"
    sup = (defs.get("supervisor") or {}).get("builtin", "")
    return ("Headline = memory controller's charge to the instance's own cgroup (a container's; raw QEMU: "
            "a cvbench cgroup; libvirt: its machine cgroup) + PSS of its processes outside it"
            + (f"; builtin's supervisor is {sup.split(':')[0]}, its PSS shared by the live instances"
               if sup else "") + ".")


def _mib(v: float) -> str:
    return f"{v:.3g}" if v >= 10 else f"{v:.2g}"


def memory_per_instance(run: Run, st: str, out: Path) -> list[Path]:
    """Top: the headline per instance under one definition, in its parts.  Bottom:
    the PSS split into what the workload touched and what isolation costs."""
    df = _select(run, "memory")
    split = df[df.metric.isin(["workload", "overhead"])]
    if split.empty:
        return []
    has_head = "charged" in set(df.metric)
    variants = [v for v in ("idle", "mem64") if v in set(split.variant)] or sorted(split.variant.unique())
    backends = _ordered(run, split["backend"].unique())
    with style.styled(st):
        rows = 2 if has_head else 1
        fig, axes = style.figure(st, rows, len(variants), squeeze=False, sharey="row")
        x = np.arange(len(backends))
        labels = [style.label(b).split(",")[0] for b in backends]   # short: ticks are rotated
        for col, variant in enumerate(variants):
            med = df[df.variant == variant].groupby(["backend", "metric"])["value"].median() / 2**20
            if has_head:
                ax, bottom = axes[0][col], np.zeros(len(backends))
                for metric, what, hatch in HEADLINE_PARTS:
                    vals = np.array([med.get((b, metric), 0.0) for b in backends])
                    ax.bar(x, vals, bottom=bottom, color=[style.color(b) for b in backends],
                           alpha=1.0 if hatch is None else 0.45, hatch=hatch, edgecolor="#555555",
                           label=what)
                    bottom += vals
                for i, b in enumerate(backends):
                    head = med.get((b, "charged"))
                    if head is not None:
                        ax.annotate(_mib(head), (i, head), xytext=(0, 4), textcoords="offset points",
                                    ha="center", fontsize="small")
                ax.set_xticks(x, [])
                ax.set_title(f"{variant}: headline per instance, median")
                ax.set_ylim(0, max(bottom.max(), 1e-3) * 1.3)
            ax = axes[rows - 1][col]
            work = np.array([med.get((b, "workload"), 0.0) for b in backends])
            over = np.array([med.get((b, "overhead"), 0.0) for b in backends])
            ax.bar(x, work, color="#dddddd", edgecolor="#999999", hatch="..",
                   label="workload: probe's pages; VMs: " + VM_WORKLOAD)
            ax.bar(x, over, bottom=work, color=[style.color(b) for b in backends],
                   label="runtime / VMM (PSS)")
            for i, (w, o) in enumerate(zip(work, over, strict=True)):
                ax.annotate(_mib(w + o), (i, w + o), xytext=(0, 4), textcoords="offset points",
                            ha="center", fontsize="small")
            ax.set_xticks(x, labels, rotation=30, ha="right")
            ax.set_title(f"{variant}: PSS split, median")
            ax.set_ylim(0, max((work + over).max(), 1e-3) * 1.3)
        fig.supylabel("MiB per instance", fontsize=style.STYLES[st]["font"])
        from matplotlib.patches import Patch
        handles = [Patch(facecolor="#888888", alpha=1.0 if h is None else 0.45, hatch=h, edgecolor="#555555",
                         label=what) for _m, what, h in HEADLINE_PARTS] if has_head else []
        handles += [Patch(facecolor="#dddddd", edgecolor="#999999", hatch="..",
                          label="workload; VMs: " + VM_WORKLOAD),
                    Patch(facecolor="#888888", label="runtime / VMM (PSS)")]
        fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
        notes = (run.meta.get("memory_notes") or {})
        undercounted = [f"{style.label(k.split('.')[1])}: {v.split(';')[0]}" for k, v in notes.items()
                        if k.startswith("pss_total.") and k.count(".") >= 1]
        zeros = sorted({f"{style.label(k.split('.')[1]).split(',')[0]} {k.split('.')[0]}" for k, v in notes.items()
                        if v.startswith("0:") and k.split(".")[0] in ("workload", "overhead")})
        note = [memory_definition(run)] + undercounted
        if zeros:
            note.append("Recorded as 0 (not missing): " + ", ".join(zeros))
        style.titled(fig, "Memory per instance: one definition for every backend", run.meta, st,
                     note="\n".join(note))
        return style.save(fig, out, "memory_per_instance")


def memory_density(run: Run, st: str, out: Path) -> list[Path]:
    """Total memory against instance count: the slope is what one more instance costs."""
    df = _select(run, "memory", "density_total")
    if df.empty:
        return []
    slope = _select(run, "memory", "density_slope").groupby("backend")["value"].median()
    backends = _ordered(run, df["backend"].unique())
    with style.styled(st):
        fig, ax = style.figure(st)
        for b in backends:
            d = df[df.backend == b].copy()
            d["k"] = d["variant"].str.extract(r"(\d+)", expand=False).astype(float)
            med = d.groupby("k")["value"].median() / 2**20
            extra = f": {_mib(slope[b] / 2**20)} MiB/instance" if b in slope.index else ""
            ax.plot(med.index, med.to_numpy(), "o-", color=style.color(b), lw=2.5, ms=8,
                    label=f"{style.label(b).split(',')[0]}{extra}")
        if style.log_if_wide(df["value"]):
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(lambda v, _p: f"{v:g}")
        ax.set_xlabel("instances running at once")
        headline = "charged" in (run.meta.get("memory_definitions") or {})
        ax.set_ylabel("total, MiB (median of the headline)" if headline else "total host PSS, MiB (median)")
        ks = sorted(df["variant"].str.extract(r"(\d+)", expand=False).dropna().astype(int).unique())
        ax.set_xticks(ks)
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="one more instance costs")
        style.titled(fig, "Density: memory for N idle instances", run.meta, st, note=memory_definition(run))
        return style.save(fig, out, "memory_density")


def host_is_guest(env: dict) -> bool:
    """Whether the benchmark host is itself a VM (then cpuid traps even on the host)."""
    text = " ".join(str(x) for x in (env.get("nested_virt"), (env.get("accel") or {}).get("reason"),
                                      env.get("hypervisor")) if x)
    return bool(env.get("hypervisor")) or "PVM" in text or "under a hypervisor" in text


def backend_caption(run: Run, backend: str) -> str:
    """The legend name, with what changes a number's meaning: gVisor's platform
    (read from the run's runsc metadata) and a VM's accelerator."""
    md = ((run.meta.get("backends") or {}).get(backend) or {}).get("metadata") or {}
    name = style.label(backend)
    if backend == "runsc":
        return f"{name}, platform {md.get('platform') or 'not recorded'}"
    accel = style.vm_accels(run.meta).get(backend)
    return f"{name}, {accel.upper()}" if accel else name


def syscall_notes(run: Run, ops: list[str], backends: list[str]) -> tuple[dict[str, str], list[str]]:
    """Row labels and footnotes for the ops whose meaning depends on where they run."""
    labels, notes = {op: op for op in ops}, []
    accels = set(style.vm_accels(run.meta).get(b, "") for b in backends) - {""}
    if "clock_gettime" in ops:
        if "runsc" in backends:
            labels["clock_gettime"] = "clock_gettime ‡"
            notes.append("‡ clock_gettime is the vDSO, a no-kernel control, everywhere but under gVisor, "
                         "where it crosses the Sentry like a real syscall")
        else:
            labels["clock_gettime"] = "clock_gettime (vDSO control)"
    if "cpuid" in ops:
        labels["cpuid"] = "cpuid †"
        how = {"kvm": "a VM exit under KVM", "tcg": "emulated by QEMU under TCG"}
        parts = [how.get(a, f"{a} in the VM") for a in sorted(accels)] or ["a VM exit under KVM, emulated under TCG"]
        guest = ("; this host is itself a guest, so cpuid traps to its hypervisor on the host and in every "
                 "container too" if host_is_guest(run.env) else "; on bare metal it never leaves the CPU")
        notes.append("† cpuid is " + " and ".join(parts) + guest)
    return labels, notes


def syscall_ops(run: Run, st: str, out: Path) -> list[Path]:
    """ns per operation: one row per op, one dot per backend (median), log axis.
    The 95% cluster-bootstrap interval is drawn where a backend has >= stats.MIN_N
    probe instances; with fewer, each instance's own median is drawn as a small
    dot instead, so the spread is visible but no interval is claimed."""
    df = _select(run, "syscall")
    if df.empty:
        return []
    ops = list(dict.fromkeys(df["metric"]))
    backends = _ordered(run, df["backend"].unique())
    labels, notes = syscall_notes(run, ops, backends)
    step = 0.8 / max(1, len(backends))
    small = False
    with style.styled(st):
        fig, ax = style.figure(st)
        for j, b in enumerate(backends):
            for i, op in enumerate(ops):
                g = df[(df.backend == b) & (df.metric == op)]
                if g.empty:
                    continue
                s = stats.summarize(g["value"], g["process"])
                y = i + (j - (len(backends) - 1) / 2) * step
                if np.isfinite(s["ci_low"]):
                    ax.errorbar(s["median"], y, xerr=[[s["median"] - s["ci_low"]], [s["ci_high"] - s["median"]]],
                                fmt="o", color=style.color(b), ms=8, capsize=3, lw=1.8)
                else:
                    small = True
                    per = g.groupby("process")["value"].median()
                    ax.plot(per.to_numpy(), [y] * len(per), "|", color=style.color(b), ms=9, mew=1.5, alpha=0.8)
                    ax.plot(s["median"], y, "o", color=style.color(b), ms=8)
        for b in backends:
            ax.plot([], [], "o", color=style.color(b), label=wrapped(backend_caption(run, b), 30))
        if style.log_if_wide(df.groupby(["metric", "backend"])["value"].median()):
            ax.set_xscale("log")
        ax.xaxis.set_major_formatter(lambda v, _p: fmt_ns(v))
        ax.set_yticks(range(len(ops)), [labels[o] for o in ops])
        ax.set_ylim(len(ops) - 0.5, -0.5)
        for i in range(len(ops) - 1):
            ax.axhline(i + 0.5, color="#dddddd", lw=0.8)
        if small:
            ax.plot([], [], "|", color="#555555", ms=9, mew=1.5, label=f"one instance ({stats.TOO_SMALL} for a CI)")
        ax.set_xlabel("time per operation, median" + (", 95% CI" if not small else "")
                      + (", log scale" if ax.get_xscale() == "log" else ""))
        ax.grid(axis="x", alpha=0.3, which="both")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        style.titled(fig, "Kernel crossings: cost per operation", run.meta, st, note="\n".join(notes))
        return style.save(fig, out, "syscall_ops")


CHARTS = [startup_median, startup_ecdf, memory_per_instance, memory_density, syscall_ops]
