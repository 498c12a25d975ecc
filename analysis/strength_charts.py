"""Strength charts: exposure against startup cost (one panel per exposure
measure), the escape battery as a heat map (attempt x backend/rung), and the
profile table for the report; from meta.json's ``strength`` and tidy.csv.

A VM row is the guest kernel's view, behind a hardware boundary (here: TCG
emulation, named in the subtitle): its counts say what the workload can reach of
the guest, not of the host, and the charts mark it with a hollow symbol.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import style
from .charts import fmt_seconds
from .load import Run

PANELS = [("syscalls_reachable", "syscalls reachable"),
          ("caps_effective", "effective caps"),
          ("escapes_succeeded", "escapes succeeded"),
          ("host_syscalls", "host syscalls (strace)")]
RESULT_COLOR = {"succeeded": "#d62728", "blocked": "#2ca02c", "na": "#cccccc"}
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


def ready_median(run: Run, p: dict) -> float:
    df = run.tidy[(run.tidy["scenario"] == "strength") & (run.tidy["metric"] == "ready")
                  & (run.tidy["backend"] == p["backend"]) & (run.tidy["variant"] == (p.get("rung") or ""))]
    return float(df["value"].median()) if not df.empty else float("nan")


def host_syscalls(p: dict) -> int | None:
    h = p.get("host_syscalls") or {}
    return h.get("distinct") if h.get("measured") else None


def _value(p: dict, key: str):
    return host_syscalls(p) if key == "host_syscalls" else p.get(key)


def _is_vm(p: dict) -> bool:
    return p.get("boundary", "").startswith("hardware")


def _note(run: Run) -> str:
    notes = ["hollow: a VM, the guest kernel's view behind a hardware boundary",
             "host row: no boundary (the attempts are harmless there by construction)",
             "caps held in a user namespace (its rungs) count too, though they act on that namespace's objects only",
             "syscall cost per backend: see the syscall and isolation scenarios"]
    unmeasured = [label for label, p in _rows(run) if not p.get("rung") and host_syscalls(p) is None]
    if unmeasured:
        notes.append("host syscalls not measured for: " + ", ".join(unmeasured) + " (the report says why)")
    kf = (run.meta.get("strength_host_side") or {}).get("kernel_functions")
    if kf:
        notes.append("host kernel functions: " + kf.split(":")[0])
    return "\n".join(notes)


def pareto(run: Run, st: str, out: Path) -> list[Path]:
    """Exposure (lower is stronger) against startup to READY (median, log axis)."""
    rows = charted(run)
    if not rows:
        return []
    with style.styled(st):
        fig, axes = style.figure(st, 1, len(PANELS), sharex=True, layout="constrained")
        for ax, (key, title) in zip(axes, PANELS, strict=True):
            ladder = [(ready_median(run, p), _value(p, key)) for _, p in rows if p.get("rung")]
            ladder = [(x, y) for x, y in ladder if np.isfinite(x) and y is not None]
            if ladder:
                ax.plot(*zip(*sorted(ladder), strict=True), "-o", color=style.color("builtin"), ms=4, lw=1,
                        alpha=0.6, label="builtin ladder (cumulative rungs)" if ax is axes[0] else None)
            for i, (label, p) in enumerate(r for r in rows if not r[1].get("rung")):
                x = ready_median(run, p)
                y = _value(p, key)
                if not np.isfinite(x) or y is None:
                    continue
                c = style.color(p["backend"])
                ax.plot(x, y, MARKERS[i % len(MARKERS)], ms=9, mec=c,
                        mfc="none" if _is_vm(p) else c, mew=1.8, label=label if ax is axes[0] else None)
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(lambda v, _p: fmt_seconds(v))
            ax.set_title(title)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3, which="both")
        axes[len(axes) // 2].set_xlabel("startup to READY, median (log scale); exposure: lower is stronger")
        fig.legend(loc="outside lower center", ncols=5, frameon=False)
        style.titled(fig, "What each isolation step buys, and what it costs to start", run.meta, st,
                     note=_note(run))
        return style.save(fig, out, "strength_pareto")


def battery(run: Run, st: str, out: Path) -> list[Path]:
    """The escape battery: one row per attempt, one column per backend or cumulative rung."""
    rows = charted(run)
    if not rows:
        return []
    attempts = list(rows[0][1]["escapes"])
    grid = np.array([[{"succeeded": 2, "blocked": 1}.get(p["escapes"][a]["result"], 0)
                      for _, p in rows] for a in attempts])
    from matplotlib.colors import ListedColormap
    cmap = ListedColormap([RESULT_COLOR["na"], RESULT_COLOR["blocked"], RESULT_COLOR["succeeded"]])
    with style.styled(st):
        fig, ax = style.figure(st, layout="constrained")
        ax.imshow(grid, cmap=cmap, vmin=0, vmax=2, aspect="auto")
        ax.set_xticks(range(len(rows)), [short(label, p) for label, p in rows], rotation=40, ha="right")
        ax.set_yticks(range(len(attempts)), attempts)
        for r in ("succeeded", "blocked", "na"):
            ax.plot([], [], "s", color=RESULT_COLOR[r], ms=10, label={"na": "not applicable"}.get(r, r))
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        style.titled(fig, "Escape battery: attempt x backend", run.meta, st,
                     note="VM columns: inside the guest, behind a hardware boundary; host: no boundary; "
                     "builtin +m (k): the first k mechanisms stacked; single-mechanism rungs: report table")
        return style.save(fig, out, "strength_battery")


def table(run: Run) -> tuple[list[str], list[list[str]]]:
    hdr = ["row", "boundary", "seccomp", "syscalls reachable / blocked / not probed", "caps eff / bnd",
           "ns shared with host", "devices", "paths r / w", "escapes succeeded", "host syscalls (strace -f)",
           "ready median"]
    body = []
    for label, p in _rows(run):
        s = p["syscalls"]
        won = [a for a, e in p["escapes"].items() if e["result"] == "succeeded"]
        x = ready_median(run, p)
        body.append([label, "hardware (guest view)" if _is_vm(p) else
                     ("none (host)" if label == "host" else "host kernel"),
                     str(p.get("seccomp")), f"{s['reachable']} / {p['syscalls_blocked']} / {s['not_probed']}",
                     f"{p['caps_effective']} / {p['caps_bounding']}",
                     "n/a (guest)" if _is_vm(p) else (", ".join(p["namespaces_shared_names"]) or "none"),
                     str(p["devices"]), f"{p['paths_readable']} / {p['paths_writable']}",
                     f"{len(won)}: {', '.join(won) or '-'}", _host_cell(p), fmt_seconds(x) if np.isfinite(x) else "not measured"])
    return hdr, body


def _host_cell(p: dict) -> str:
    if p.get("rung"):
        return "not measured for a rung (the builtin runtime has no single command to trace)"
    h = p.get("host_syscalls") or {}
    return str(h["distinct"]) if h.get("measured") else f"not measured: {h.get('why', 'not recorded')}"


CHARTS = [pareto, battery]
