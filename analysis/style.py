"""One look for every chart: a fixed colour per backend, slide or paper sizing,
and the subtitle that says which CPU, kernel and accelerator produced the numbers.

A backend keeps its colour in every chart of every run, so an audience that
learned "purple is gVisor" on slide 3 can still read slide 9.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import textwrap
import warnings
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # charts are files; never open a window, never need a display

import matplotlib.pyplot as plt  # noqa: E402

# Colour-blind-safe (Okabe-Ito based); the VMs are the warm colours.
BACKEND_COLORS = {
    "host": "#7f7f7f",
    "builtin": "#0072B2",
    "crun": "#009E73",
    "runc": "#56B4E9",
    "runsc": "#CC79A7",
    "qemu": "#E69F00",
    "libvirt": "#D55E00",
    "qemu-microvm": "#8C6D00",
    "builtin-cli": "#004B75",
}
_EXTRA = ["#8c564b", "#bcbd22", "#17becf", "#393b79", "#637939", "#843c39"]
UP, DOWN, NEUTRAL = "#D55E00", "#009E73", "#7f7f7f"

BACKEND_LABELS = {
    "host": "host process", "builtin": "cvbench runtime, in-process library call (no interpreter start)", "crun": "crun", "runc": "runc",
    "runsc": "gVisor (runsc)", "qemu": "QEMU VM", "libvirt": "libvirt VM", "qemu-microvm": "QEMU microvm",
    "builtin-cli": "cvbench runtime CLI",
}

STYLES = {
    # 16:9 slide at 13.33 x 7.5 in: big type that survives a projector.
    "talk": {"figsize": (13.33, 7.5), "dpi": 150, "font": 17, "title": 24, "sub": 14, "tick": 15},
    "paper": {"figsize": (7.0, 4.2), "dpi": 300, "font": 9, "title": 11, "sub": 7.5, "tick": 8},
}


def color(backend: str) -> str:
    if backend in BACKEND_COLORS:
        return BACKEND_COLORS[backend]
    h = int(hashlib.sha256(backend.encode()).hexdigest(), 16)
    return _EXTRA[h % len(_EXTRA)]


def label(backend: str) -> str:
    return BACKEND_LABELS.get(backend, backend)


@contextmanager
def styled(style: str):
    """rcParams for one chart style, restored afterwards."""
    s = STYLES[style]
    rc = {"font.size": s["font"], "axes.titlesize": s["font"], "axes.labelsize": s["font"],
          "xtick.labelsize": s["tick"], "ytick.labelsize": s["tick"], "legend.fontsize": s["tick"],
          "axes.spines.top": False, "axes.spines.right": False, "svg.fonttype": "none",
          "figure.constrained_layout.use": True, "savefig.dpi": max(150, s["dpi"])}
    with plt.rc_context(rc):
        yield s


def figure(style: str, nrows: int = 1, ncols: int = 1, **kw):
    s = STYLES[style]
    return plt.subplots(nrows, ncols, figsize=s["figsize"], **kw)


def kernel_release(text) -> str:
    """'6.1.0-13-amd64' out of a full `uname -a`-like string; a subtitle has no room for the rest."""
    words = str(text or "?").split()
    return next((w for w in words if any(c.isdigit() for c in w) and "." in w), words[0] if words else "?")


VM_BACKENDS = ("qemu", "qemu-microvm", "libvirt")


def vm_accels(meta: dict) -> dict[str, str]:
    """Measured VM backend -> its accelerator: meta.json backends.<name>.accel
    ({"accel": "kvm"|"tcg", "why": ...}), or its metadata's accel, or (older
    runs) the run's one env accelerator."""
    env_accel = (meta.get("env", {}).get("accel") or {}).get("name", "unknown")
    out = {}
    for name, info in (meta.get("backends") or {}).items():
        if not isinstance(info, dict) or not info.get("available", True):
            continue
        rec, md = info.get("accel"), info.get("metadata") or {}
        if isinstance(rec, dict) and rec.get("accel"):
            out[name] = str(rec["accel"])
        elif isinstance(rec, str) and rec:
            out[name] = rec
        elif md.get("accel"):
            out[name] = str(md["accel"])
        elif name in VM_BACKENDS:
            out[name] = env_accel
    return out


def gaps(meta: dict, width: int = 60) -> list[str]:
    """Backends that were not measured (unavailable) or failed mid-run, with why."""
    out = []
    for name, info in (meta.get("backends") or {}).items():
        if not isinstance(info, dict):
            continue
        if not info.get("available", True):
            out.append(f"{label(name)} unavailable ({str(info.get('reason') or 'no reason recorded')[:width]})")
        elif info.get("failed"):
            out.append(f"{label(name)} failed ({str(info['failed']).splitlines()[0][:width]})")
    return out


def subtitle(meta: dict) -> str:
    """CPU, cores, kernel and mode; then each VM row's accelerator; then every
    backend that is missing from the chart and why (a gap is never silent)."""
    env = meta.get("env", {})
    parts = [env.get("cpu_model") or "unknown CPU", f"{env.get('cpu_count', '?')} cores",
             f"kernel {kernel_release(env.get('kernel'))}"]
    mode = meta.get("mode")
    if mode:
        parts.append(f"{mode} mode")
    if meta.get("synthetic"):
        parts.append("SYNTHETIC TEST DATA")
    lines = [" · ".join(str(p) for p in parts)]
    vms = vm_accels(meta)
    if vms:
        line = "VMs: " + ", ".join(f"{label(b)} {a.upper()}" for b, a in sorted(vms.items()))
        if "tcg" in vms.values():
            line += " — TCG emulation, not KVM"
        lines.append(line)
    else:
        lines.append(f"no VM rows · host accelerator {(env.get('accel') or {}).get('name', 'unknown')}")
    missing = gaps(meta)
    if missing:
        lines.append("not shown: " + "; ".join(missing))
    return "\n".join(lines)


def titled(fig, title: str, meta: dict, style: str, note: str = "") -> None:
    """Bold title, then the environment subtitle (and any caveat ``note``) under it.
    Blank title lines reserve the subtitle's room, so constrained_layout keeps the axes clear of it."""
    s = STYLES[style]
    width = 130 if style == "talk" else 120
    lines = subtitle(meta).splitlines() + note.splitlines()
    sub = "\n".join("\n".join(textwrap.wrap(line, width)) for line in lines if line.strip())
    n_sub = sub.count("\n") + 1
    blank = math.ceil((n_sub * 1.3 * s["sub"] + 0.3 * s["title"]) / (1.2 * s["title"]))
    fig.suptitle(title + "\n" * blank + "\u200b", fontsize=s["title"], fontweight="bold")
    h_pad_pt = fig.get_layout_engine().get()["h_pad"] * 72
    y = 1 - (h_pad_pt + 1.3 * s["title"]) / (fig.get_figheight() * 72)
    fig.text(0.5, y, sub, ha="center", va="top", fontsize=s["sub"], color="#444444",
             linespacing=1.3, in_layout=False, gid="cvb-subtitle")


def log_if_wide(values) -> bool:
    """A log axis when the values span more than 10x (containers vs VMs always do)."""
    vals = [v for v in values if v and v > 0 and math.isfinite(v)]
    return bool(vals) and max(vals) / min(vals) > 10


class OverlapWarning(UserWarning):
    """Two labels of a chart overlap: unreadable on a slide."""


def _texts(fig):
    """(name, text artist, group) for every visible label; ticks of one axis share a group."""
    for t in fig.texts:
        # The title reserves the subtitle's room with blank lines, so the two overlap by design.
        header = t is fig._suptitle or t.get_gid() == "cvb-subtitle"
        yield f"figure text {t.get_text()[:30]!r}", t, ("header" if header else None)
    for i, ax in enumerate(fig.axes):
        for t in (ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label):
            yield f"axes{i} {t.get_text()[:30]!r}", t, None
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            # Labels of ticks outside the view are never drawn, but keep stale positions.
            for loc, t in zip(axis.get_majorticklocs(), axis.get_majorticklabels(), strict=False):
                if lo - 1e-9 * abs(hi - lo) <= loc <= hi + 1e-9 * abs(hi - lo):
                    yield f"axes{i} tick {t.get_text()!r}", t, (i, axis.axis_name)
        for t in ax.texts:
            yield f"axes{i} label {t.get_text()[:30]!r}", t, None
        leg = ax.get_legend()
        if leg is not None:
            for t in leg.get_texts():
                yield f"axes{i} legend {t.get_text()[:30]!r}", t, ("legend", i)


def overlapping_texts(fig) -> list[tuple[str, str]]:
    """Pairs of visible labels whose boxes intersect by more than a pixel, and
    labels cut off by the figure's edge."""
    renderer = fig.canvas.get_renderer()
    fig_box = fig.bbox
    boxes, clipped = [], []
    for name, t, group in _texts(fig):
        if not t.get_visible() or not t.get_text().strip():
            continue
        bb = t.get_window_extent(renderer)
        if bb.width < 1 or bb.height < 1 or not bb.overlaps(fig_box):
            continue
        boxes.append((name, bb.expanded(1, 1).shrunk(0.98, 0.9), group))
        if bb.x0 < fig_box.x0 - 1 or bb.x1 > fig_box.x1 + 1 or bb.y0 < fig_box.y0 - 1 or bb.y1 > fig_box.y1 + 1:
            clipped.append((name, "the figure's edge"))
    out = clipped
    for (n1, b1, g1), (n2, b2, g2) in itertools.combinations(boxes, 2):
        if g1 is not None and g1 == g2:
            continue  # one axis's own tick labels: matplotlib spaces those
        if b1.overlaps(b2):
            out.append((n1, n2))
    return out + legends_over_data(fig, renderer)


def legends_over_data(fig, renderer) -> list[tuple[str, str]]:
    """A legend inside the axes must not hide a data point or a bar."""
    import numpy as np
    out = []
    for i, ax in enumerate(fig.axes):
        leg = ax.get_legend()
        if leg is None or not leg.get_visible():
            continue
        box = leg.get_window_extent(renderer)
        for line in ax.get_lines():
            xy = np.asarray(line.get_xydata(), dtype=float)
            if xy.size == 0 or not line.get_visible():
                continue
            pts = line.get_transform().transform(xy)
            inside = ((pts[:, 0] > box.x0) & (pts[:, 0] < box.x1) & (pts[:, 1] > box.y0) & (pts[:, 1] < box.y1))
            if inside.any():
                out.append((f"axes{i} legend", f"line {line.get_label()!r}"))
        for patch in ax.patches:
            if patch.get_visible() and patch.get_window_extent(renderer).overlaps(box):
                out.append((f"axes{i} legend", f"bar {patch.get_label()!r}"))
                break
    return out


def save(fig, folder: Path, name: str) -> list[Path]:
    """PNG (>=150 dpi) and SVG, side by side in the run's charts/ folder.  Warns
    (OverlapWarning) when labels collide, so chart tests fail on an unreadable slide."""
    folder.mkdir(parents=True, exist_ok=True)
    # Lay out and check at the PNG's resolution: the state a viewer actually sees.
    fig.set_dpi(plt.rcParams["savefig.dpi"])
    fig.canvas.draw()
    clashes = overlapping_texts(fig)
    out = []
    for ext in ("png", "svg"):
        p = folder / f"{name}.{ext}"
        tmp = p.with_name(f".{p.name}.tmp")
        fig.savefig(tmp, format=ext)
        tmp.replace(p)
        out.append(p)
    plt.close(fig)
    if clashes:
        shown = "; ".join(f"{a} / {b}" for a, b in clashes[:4])
        warnings.warn(OverlapWarning(f"{name}: {len(clashes)} overlapping label pair(s): {shown}"), stacklevel=2)
    return out
