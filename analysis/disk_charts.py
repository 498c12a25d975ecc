"""Disk charts (IOPS per backing and fio job; completion-latency percentiles)
and the disk table for the report, from tidy.csv and meta.json's ``disk``.

Every subtitle names the accelerator (style.subtitle) and each backing's cache
mode; rows that were not measured or failed are named, never dropped.  A VM
backing whose reads the host page cache can serve (virtio-fs: virtiofsd does
buffered host I/O) is marked ‡, and VM rows under TCG are said to be emulation.
"""
from __future__ import annotations

import math
from pathlib import Path

from . import style
from .load import Run

JOB_ORDER = ["fc-randread", "fc-randwrite", "kata-seqread-4k", "kata-randread-64k",
             "meta-create", "meta-stat", "meta-unlink"]
SHORT_CACHE = {"dir": "host page cache, O_DIRECT", "bind": "host page cache, O_DIRECT",
               "overlay": "overlayfs, upper on the host disk, O_DIRECT", "tmpfs": "RAM",
               "gofer-root": "gVisor gofer, Sentry cache", "gofer-overlay": "Sentry memory",
               "virtio-blk": "raw file, cache=none (O_DIRECT on the host)",
               "virtio-fs": "virtiofsd cache=none, buffered on the host ‡"}
# Backings whose data lives in memory, not on the disk: flagged on every chart.
IN_MEMORY = {"tmpfs", "gofer-overlay"}
BACKING_SHADE = {"dir": 1.0, "bind": 1.0, "overlay": 0.65, "tmpfs": 0.35, "gofer-root": 1.0,
                 "gofer-overlay": 0.5, "virtio-blk": 1.0, "virtio-fs": 0.55}
VM_BACKENDS = {"libvirt", "qemu", "qemu-microvm"}


def _disk(run: Run):
    df = run.tidy[run.tidy["scenario"] == "disk"].copy()
    if df.empty:
        return df
    parts = df["variant"].str.split(":", n=1, expand=True)
    df["backing"], df["job"] = parts[0], parts[1]
    df["column"] = df["backend"] + "/" + df["backing"]
    return df


def _columns(run: Run, df) -> list[str]:
    order = {b: i for i, b in enumerate(run.backend_order())}
    cols = df[["column", "backend", "backing"]].drop_duplicates()
    back = list(BACKING_SHADE)
    return [c for c, _, _ in sorted(cols.itertuples(index=False),
                                    key=lambda r: (order.get(r[1], 99), back.index(r[2]) if r[2] in back else 9))]


def _jobs(df) -> list[str]:
    present = set(df["job"])
    return [j for j in JOB_ORDER if j in present] + sorted(present - set(JOB_ORDER))


def notes(run: Run) -> str:
    """Cache mode per backing, and every row that was not measured or failed."""
    rows = (run.meta.get("disk") or {}).get("rows") or {}
    caches = {}
    for key, r in rows.items():
        if r.get("cache"):
            backing = key.split("/", 1)[1]
            caches.setdefault(backing, SHORT_CACHE.get(backing, r["cache"].split(";")[0]))
    lines = ["cache (full text in the report): " + "; ".join(f"{k}: {v}" for k, v in caches.items())] \
        if caches else []
    mem = sorted(IN_MEMORY & set(caches))
    if mem:
        lines.append(f"† in memory, not on the disk ({', '.join(mem)}): O_DIRECT has nothing to bypass")
    infl = sorted(_inflated(run))
    if infl:
        lines.append(f"‡ host page cache can inflate these VM results ({', '.join(infl)}): "
                     "the guest's O_DIRECT does not reach the host file")
    odd = sorted(k for k, r in rows.items() if "event_idx=off" in (r.get("cache") or ""))
    if odd:
        lines.append(f"{', '.join(odd)}: virtio-fs device with event_idx=off (with it on, fio hung there)")
    accel = ((run.meta.get("env") or {}).get("accel") or {}).get("name")
    if accel == "tcg" and any(k.split("/", 1)[0] in VM_BACKENDS for k, r in rows.items() if r.get("status") == "ok"):
        lines.append("VM rows under TCG: the guest side (fio, guest kernel, virtio drivers) is emulated, "
                     "not KVM figures")
    missing = {}
    for k, r in rows.items():
        if r.get("status") not in ("ok", "pending"):
            missing.setdefault(r.get("status"), []).append(k)
    for status, keys in missing.items():
        lines.append(f"{status} (why: in the report): " + ", ".join(keys))
    retried = [k for k, r in rows.items() if r.get("retried")]
    if retried:
        lines.append("retried after a hang (a fresh instance ran the profile again; evidence in the report): "
                     + ", ".join(retried))
    win = (run.meta.get("disk") or {}).get("window") or {}
    vwin = (run.meta.get("disk") or {}).get("vm_window") or {}
    if win:
        lines.append(f"each job {win.get('ramp_s')} s ramp + {win.get('runtime_s')} s, caches dropped before it, "
                     f"O_DIRECT; fio {(run.meta.get('disk') or {}).get('fio', '')}")
    if vwin and vwin != win and any(k.split("/", 1)[0] in VM_BACKENDS for k in rows):
        lines.append(f"VM rows ran a shorter window: {vwin.get('ramp_s')} s ramp + {vwin.get('runtime_s')} s, "
                     f"{vwin.get('size_mib')} MiB files, {vwin.get('nfiles')} metadata files "
                     f"(containers: {win.get('size_mib')} MiB, {win.get('nfiles')} files)")
    return "\n".join(lines)


def _grid(st: str, n: int, rows: int):
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    fig, axes = style.figure(st, nrows, ncols, squeeze=False, layout="constrained")
    w, h = fig.get_size_inches()
    fig.set_size_inches(w, h * max(1.0, rows / 8))   # room for every backing's label
    flat = [a for row in axes for a in row]
    for a in flat[n:]:
        a.remove()
    return fig, flat[:n], ncols


def _inflated(run: Run) -> set[str]:
    """backend/backing keys whose result the host page cache can inflate."""
    rows = (run.meta.get("disk") or {}).get("rows") or {}
    return {k for k, r in rows.items() if r.get("host_cache_inflated")}


def _label(col: str, inflated: set[str] = frozenset()) -> str:
    return col + (" †" if col.split("/", 1)[1] in IN_MEMORY else "") + (" ‡" if col in inflated else "")


def _rows(ax, i: int, ncols: int, cols: list[str], inflated: set[str] = frozenset()) -> None:
    """The same backing rows in every panel; labelled in the first column only."""
    ax.set_yticks(range(len(cols)), [_label(c, inflated) for c in cols] if i % ncols == 0 else [""] * len(cols),
                  fontsize="small")
    ax.set_ylim(len(cols) - 0.5, -0.5)


def _log_x(ax, fmt) -> None:
    from matplotlib.ticker import LogLocator, NullFormatter
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(numticks=4))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(lambda v, _p: fmt(v))


def _bar_color(col: str) -> tuple:
    import matplotlib.colors as mc
    backend, backing = col.split("/", 1)
    return mc.to_rgba(style.color(backend), BACKING_SHADE.get(backing, 1.0))


def disk_iops(run: Run, st: str, out: Path) -> list[Path]:
    """IOPS (median over repeats) per backing, one panel per fio job."""
    df = _disk(run)
    if df.empty:
        return []
    d = df[df["metric"] == "iops"]
    cols, jobs = _columns(run, d), _jobs(d)
    with style.styled(st):
        fig, axes, ncols = _grid(st, len(jobs), len(cols))
        for i, (ax, job) in enumerate(zip(axes, jobs, strict=False)):
            med = d[d["job"] == job].groupby("column")["value"].median()
            ys = [k for k, c in enumerate(cols) if c in med.index]
            ax.barh(ys, [med[cols[k]] for k in ys], color=[_bar_color(cols[k]) for k in ys])
            _rows(ax, i, ncols, cols, _inflated(run))
            if style.log_if_wide(med.values):
                _log_x(ax, _fmt_iops)
            else:
                ax.xaxis.set_major_formatter(lambda v, _p: _fmt_iops(v))
                ax.locator_params(axis="x", nbins=3)
            ax.set_title(job, fontsize="small")
            ax.grid(axis="x", alpha=0.3)
        fig.supxlabel("IOPS (fio, median over repeats; log scale where values span >10x)")
        style.titled(fig, "Disk: IOPS per backing and fio job", run.meta, st, note=notes(run))
        return style.save(fig, out, "disk_iops")


def disk_latency(run: Run, st: str, out: Path) -> list[Path]:
    """Completion latency p50, p99 and p99.9 (fio's percentiles) per backing and job."""
    df = _disk(run)
    if df.empty:
        return []
    d = df[df["metric"].isin(["clat_p50", "clat_p99", "clat_p999"])]
    cols, jobs = _columns(run, d), _jobs(d)
    marks = {"clat_p50": ("o", "p50"), "clat_p99": ("s", "p99"), "clat_p999": ("^", "p99.9")}
    with style.styled(st):
        fig, axes, ncols = _grid(st, len(jobs), len(cols))
        for i, (ax, job) in enumerate(zip(axes, jobs, strict=False)):
            g = d[d["job"] == job]
            for metric, (m, lab) in marks.items():
                med = g[g["metric"] == metric].groupby("column")["value"].median()
                ys = [k for k, c in enumerate(cols) if c in med.index]
                ax.plot([med[cols[k]] for k in ys], ys, m, ls="none", color="#333333", ms=6,
                        label=lab if i == 0 else None, mfc="none" if metric != "clat_p50" else "#333333")
            _rows(ax, i, ncols, cols, _inflated(run))
            _log_x(ax, _fmt_s)
            ax.set_title(job, fontsize="small")
            ax.grid(axis="x", alpha=0.3)
        axes[-1].legend(*axes[0].get_legend_handles_labels(), loc="center left", bbox_to_anchor=(1.05, 0.5),
                        fontsize="small", frameon=False)
        fig.supxlabel("completion latency (fio clat percentiles, log scale)")
        style.titled(fig, "Disk: completion latency p50 / p99 / p99.9", run.meta, st, note=notes(run))
        return style.save(fig, out, "disk_latency")


def _fmt_iops(v: float) -> str:
    return f"{v / 1e6:g}M" if v >= 1e6 else f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"


def _fmt_s(v: float) -> str:
    if v >= 1e-3:
        return f"{v * 1e3:g} ms"
    if v >= 1e-6:
        return f"{v * 1e6:g} µs"
    return f"{v * 1e9:g} ns" if v > 0 else "0"


def table(run: Run) -> tuple[list[str], list[list[str]]]:
    """The report's disk table: medians per backend/backing and job, then the
    rows that were not measured or failed, with why."""
    df = _disk(run)
    header = ["backend/backing", "job", "IOPS", "bandwidth", "clat p50", "clat p99", "clat p99.9",
              "host CPU", "cache mode"]
    if df.empty:
        return header, []
    rows_meta = (run.meta.get("disk") or {}).get("rows") or {}
    med = df.groupby(["column", "job", "metric"])["value"].median()
    body = []
    for col in _columns(run, df):
        for job in _jobs(df[df["column"] == col]):
            def v(m, col=col, job=job):
                return med.get((col, job, m))
            bw = v("bw")
            cpu = v("cpu_s_per_gb")
            cpu_s = f"{cpu:.3g} s/GB" if cpu is not None else (
                f"{v('cpu_s_per_kop'):.3g} s/1k ops" if v("cpu_s_per_kop") is not None else "-")
            body.append([col, job, f"{v('iops'):.0f}" if v("iops") is not None else "-",
                         f"{bw / 2**20:.1f} MiB/s" if bw is not None else "-",
                         *(_fmt_s(v(m)) if v(m) is not None else "-" for m in ("clat_p50", "clat_p99", "clat_p999")),
                         cpu_s, (rows_meta.get(col) or {}).get("cache", "")
                         + (" [host-cache-inflated]" if (rows_meta.get(col) or {}).get("host_cache_inflated") else "")])
    for key, r in rows_meta.items():
        if r.get("status") not in ("ok", "pending"):
            body.append([key, "-", "-", "-", "-", "-", "-", "-", f"{r.get('status')}: {r.get('why', '')}"])
        for line in r.get("retried") or []:   # a hang, then a fresh instance: the figures above are the retry's
            body.append([key, "-", "-", "-", "-", "-", "-", "-", line])
    return header, body


CHARTS = [disk_iops, disk_latency]
