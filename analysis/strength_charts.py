"""Strength charts: exposure against startup cost (one panel per exposure
measure), the escape battery as a heat map (attempt x backend/rung), and the
profile table for the report; from meta.json's ``strength`` and tidy.csv.

A VM row is the guest kernel's view, behind a hardware boundary (here: TCG
emulation, named in the subtitle): its counts say what the workload can reach of
the guest, not of the host, and the charts mark it with a hollow symbol.  The
host row has no boundary and no battery: its heat-map column and table cell read
"no boundary", and it has no point in the escapes panel.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import style
from .charts import fmt_ns, fmt_seconds
from .load import Run

PANELS = [("syscalls_reachable", "syscalls reachable"),
          ("caps_effective", "effective caps"),
          ("escapes_succeeded", "escapes succeeded"),
          ("host_syscalls", "host syscalls entered")]
RESULT_COLOR = {"succeeded": "#d62728", "blocked": "#2ca02c", "na": "#cccccc", "no_boundary": "#ffffff"}
RESULT_CODE = {"succeeded": 2, "blocked": 1}   # anything else is n/a (0); no battery is 3
MARKERS = "osD^v<>PX*"


def _rows(run: Run) -> list[tuple[str, dict]]:
    """(label, profile) in isolation order; a backend's ladder rungs (builtin's) come
    before the backend itself, which is the ladder's top ("full")."""
    prof = run.meta.get("strength") or {}
    order = run.isolation_order
    ladder = list(run.meta.get("strength_ladder") or [])

    def key(kv):
        p = kv[1]
        rung = p.get("rung") or ""
        step = ladder.index(rung) if rung in ladder else len(ladder)   # the backend itself: top of its ladder
        return (order.index(p["backend"]) if p["backend"] in order else len(order), step, kv[0])
    return sorted(prof.items(), key=key)


def short(label: str, p: dict) -> str:
    """A cumulative rung by its last mechanism: "builtin +seccomp (13)"."""
    rung = p.get("rung") or ""
    if rung.startswith("cum:"):
        mech = rung[4:].split("+")
        return f"{p['backend']} +{mech[-1]} ({len(mech)})"
    return label


def charted(run: Run) -> list[tuple[str, dict]]:
    """The rows the charts draw: backends and the cumulative ladder (the bare
    rung included); single-mechanism rungs are in the report table only."""
    return [(label, p) for label, p in _rows(run) if not (p.get("rung") or "").startswith("only:")]


def cost_median(run: Run, p: dict, metric: str) -> float:
    """The row's median of a cost metric of this run (ready: s; getppid: ns)."""
    df = run.tidy[(run.tidy["scenario"] == "strength") & (run.tidy["metric"] == metric)
                  & (run.tidy["backend"] == p["backend"]) & (run.tidy["variant"] == (p.get("rung") or ""))]
    return float(df["value"].median()) if not df.empty else float("nan")


def ready_median(run: Run, p: dict) -> float:
    return cost_median(run, p, "ready")


def host_syscalls(p: dict) -> int | None:
    h = p.get("host_syscalls") or {}
    return h.get("distinct") if h.get("measured") else None


def _value(p: dict, key: str):
    return host_syscalls(p) if key == "host_syscalls" else p.get(key)


def _is_vm(p: dict) -> bool:
    return p.get("boundary", "").startswith("hardware")


def _note(run: Run) -> str:
    notes = ["hollow: a VM, the guest kernel's view behind a hardware boundary",
             "host row: no boundary, so no escape battery (the bare rung is the unfenced reference)",
             "host syscalls of builtin and its rungs: its CLI as a process (Python start included)",
             "caps held in a user namespace (its rungs) count too, though they act on that namespace's objects only"]
    unmeasured = [label for label, p in _rows(run) if not p.get("rung") and host_syscalls(p) is None]
    if unmeasured:
        notes.append("host syscalls not measured for: " + ", ".join(unmeasured) + " (the report says why)")
    perf = [label for label, p in _rows(run) if (p.get("host_syscalls") or {}).get("tool") == "perf trace"]
    if perf:
        notes.append("host syscalls by perf trace (strace cannot follow) for: " + ", ".join(perf))
    kf = kernel_functions(run)
    if kf:
        notes.append("host kernel functions: " + kf)
    return "\n".join(notes)


def kernel_functions(run: Run) -> str:
    """The kernel-functions measure, or why it is missing ("" if not recorded)."""
    kf = (run.meta.get("strength_host_side") or {}).get("kernel_functions")
    if isinstance(kf, dict):
        return f"{kf['distinct']} distinct" if kf.get("measured") else f"not measured: {kf.get('why', '?')}"
    return kf or ""


# the cost axes: tidy metric, axis label, tick format, chart name, title
COSTS = {"ready": ("startup to READY, median", fmt_seconds, "strength_pareto",
                   "What each isolation step buys, and what it costs to start"),
         "getppid": ("null syscall (getppid) in the instance, median", fmt_ns, "strength_pareto_syscall",
                     "What each isolation step buys, and what it costs per syscall")}


def pareto(run: Run, st: str, out: Path) -> list[Path]:
    """Exposure (lower is stronger) against startup to READY (median, log axis)."""
    return _pareto(run, st, out, "ready")


def pareto_syscall(run: Run, st: str, out: Path) -> list[Path]:
    """Exposure against the null syscall's cost in the instance (a seccomp
    filter, gVisor's Sentry and TCG emulation each add to it)."""
    return _pareto(run, st, out, "getppid")


def _pareto(run: Run, st: str, out: Path, metric: str) -> list[Path]:
    rows = charted(run)
    xlabel, fmt, name, heading = COSTS[metric]
    xs = [x for _, p in rows if np.isfinite(x := cost_median(run, p, metric)) and x > 0]
    if not xs:
        return []
    from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter
    # a factor of 3 around the points, so at least one decade tick falls inside and none
    # at a corner (where it would meet the y axis' 0); a label every second decade
    # when there are more than three (four decades in a quarter of a slide)
    lo, hi = min(xs) / 3, max(xs) * 3
    base = 100 if np.log10(hi / lo) > 3 else 10
    with style.styled(st):
        fig, axes = style.figure(st, 1, len(PANELS), sharex=True, layout="constrained")
        for ax, (key, title) in zip(axes, PANELS, strict=True):
            ladder = [(cost_median(run, p, metric), _value(p, key)) for _, p in rows if p.get("rung")]
            ladder = [(x, y) for x, y in ladder if np.isfinite(x) and y is not None]
            if ladder:
                # in ladder order (one mechanism more per step), not sorted by cost
                ax.plot(*zip(*ladder, strict=True), "-o", color=style.color("builtin"), ms=4, lw=1,
                        alpha=0.6, label="builtin ladder (cumulative rungs)" if ax is axes[0] else None)
            for i, (label, p) in enumerate(r for r in rows if not r[1].get("rung")):
                x = cost_median(run, p, metric)
                y = _value(p, key)
                if key == "escapes_succeeded" and not ran(p) and np.isfinite(x):
                    ax.text(x, 0.03, "host: no battery", transform=ax.get_xaxis_transform(),
                            ha="left", va="bottom", fontsize="x-small", color=style.color(p["backend"]))
                if not np.isfinite(x) or y is None:
                    continue
                c = style.color(p["backend"])
                ax.plot(x, y, MARKERS[i % len(MARKERS)], ms=9, mec=c,
                        mfc="none" if _is_vm(p) else c, mew=1.8, label=label if ax is axes[0] else None)
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(lambda v, _p: fmt(v))
            ax.set_xlim(lo, hi)
            ax.xaxis.set_major_locator(LogLocator(base=base))
            ax.xaxis.set_minor_locator(LogLocator(base=10))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_title(title)
            ax.set_ylim(bottom=0)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))   # counts
            ax.grid(alpha=0.3, which="both")
        axes[len(axes) // 2].set_xlabel(f"{xlabel} (log); exposure: lower is stronger")
        fig.legend(loc="outside lower center", ncols=5, frameon=False)
        style.titled(fig, heading, run.meta, st, note=_note(run))
        return style.save(fig, out, name)


def battery(run: Run, st: str, out: Path) -> list[Path]:
    """The escape battery: one row per attempt, one column per backend or cumulative rung."""
    rows = charted(run)
    # the attempts of every row that ran the battery, in the probe's order
    attempts = list(dict.fromkeys(a for _, p in rows for a in p["escapes"]))
    if not rows or not attempts:
        return []
    grid = np.array([[RESULT_CODE.get(p["escapes"][a]["result"], 0) if ran(p) else 3
                      for _, p in rows] for a in attempts])
    from matplotlib.colors import ListedColormap
    cmap = ListedColormap([RESULT_COLOR[r] for r in ("na", "blocked", "succeeded", "no_boundary")])
    with style.styled(st):
        fig, ax = style.figure(st, layout="constrained")
        ax.imshow(grid, cmap=cmap, vmin=0, vmax=3, aspect="auto")
        for col, (_, p) in enumerate(rows):
            if not ran(p):
                ax.text(col, (len(attempts) - 1) / 2, "no boundary: battery not run", rotation=90,
                        ha="center", va="center", fontsize="small", color="#555555")
        ax.set_xticks(range(len(rows)), [short(label, p) for label, p in rows], rotation=40, ha="right",
                      rotation_mode="anchor")
        ax.set_yticks(range(len(attempts)), attempts)
        for r in ("succeeded", "blocked", "na", "no_boundary"):
            ax.plot([], [], "s", color=RESULT_COLOR[r], mec="#999999", ms=10,
                    label={"na": "not applicable", "no_boundary": "no boundary: not run"}.get(r, r))
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        style.titled(fig, "Escape battery: attempt x backend", run.meta, st,
                     note="VM columns: inside the guest, behind a hardware boundary; host: no boundary, "
                     "battery not run; builtin bare: every mechanism off (the unfenced reference); "
                     "builtin +m (k): the first k mechanisms stacked; single-mechanism rungs: report table")
        return style.save(fig, out, "strength_battery")


def table(run: Run) -> tuple[list[str], list[list[str]]]:
    hdr = ["row", "boundary", "seccomp", "syscalls reachable / blocked / not probed", "caps eff / bnd",
           "ns shared with host", "devices", "paths r / w", "escapes succeeded", "host syscalls entered (strace -f unless noted)",
           "ready median", "getppid median"]
    body = []
    for label, p in _rows(run):
        s = p["syscalls"]
        won = [a for a, e in p["escapes"].items() if e["result"] == "succeeded"]
        escaped = f"{len(won)}: {', '.join(won) or '-'}" if ran(p) else "no boundary (battery not run)"
        x = ready_median(run, p)
        body.append([label, "hardware (guest view)" if _is_vm(p) else
                     ("none (host)" if label == "host" else "host kernel"),
                     str(p.get("seccomp")), f"{s['reachable']} / {p['syscalls_blocked']} / {s['not_probed']}",
                     f"{p['caps_effective']} / {p['caps_bounding']}",
                     "n/a (guest)" if _is_vm(p) else (", ".join(p["namespaces_shared_names"]) or "none"),
                     str(p["devices"]), f"{p['paths_readable']} / {p['paths_writable']}",
                     escaped, _host_cell(p), fmt_seconds(x) if np.isfinite(x) else "not measured",
                     fmt_ns(round(g, 1)) if np.isfinite(g := cost_median(run, p, "getppid")) else "not measured"])
    return hdr, body


def notes(run: Run) -> list[str]:
    """What the profile table's host-side columns mean and what is missing, for the report."""
    side = run.meta.get("strength_host_side") or {}
    out = ["host row: no boundary, so no escape battery; the builtin ladder's bare rung (every mechanism off) "
           "is the unfenced reference"]
    differ = [f"{label} ({', '.join(p['differs_between_runs'])})" for label, p in _rows(run)
              if p.get("differs_between_runs")]
    runs = run.meta.get("strength_runs", "?")
    out.append(f"each profile from {runs} fresh instances; rows whose instances disagreed: "
               + ("; ".join(differ) if differ else "none"))
    if isinstance(side.get("host_syscalls"), str):
        out.append("host syscalls: " + side["host_syscalls"])
    kf = kernel_functions(run)
    if kf:
        checks = (side.get("kernel_functions") or {}).get("checks") or {}
        out.append("host kernel functions: " + kf
                   + (" (checked: " + ", ".join(f"{k} {v}" for k, v in checks.items()) + ")" if checks else ""))
    via = set()
    for label, p in _rows(run):
        h = p.get("host_syscalls") or {}
        if h.get("why_tool"):
            out.append(f"{label}: host syscalls by {h['tool']}: {h['why_tool']}")
        if h.get("via_why") and h["via_why"] not in via:
            via.add(h["via_why"])
            out.append(f"{p['backend']} (and its rungs): host syscalls via its CLI: {h['via_why']}")
    return out


def ran(p: dict) -> bool:
    """Whether the escape battery ran for this row (not on the host: no boundary)."""
    return p.get("battery", "run") == "run"


def _host_cell(p: dict) -> str:
    h = p.get("host_syscalls") or {}
    if not h.get("measured"):
        return f"not measured: {h.get('why', 'not recorded')}"
    how = [h["tool"]] if h.get("tool") == "perf trace" else []
    if h.get("via"):
        how.append("via " + h["via"])
    return str(h["distinct"]) + (f" ({'; '.join(how)})" if how else "")


CHARTS = [pareto, pareto_syscall, battery]
