"""The memory chart prints the one definition of memory overhead and its parts,
labels a VM's workload as guest RAM, and says which values are zeros."""
from __future__ import annotations

import html
import json
import re
import warnings

import numpy as np

from analysis import synth
from analysis.render import render

MiB = 2**20
# backend -> (cgroup charge, outside PSS, supervisor share, workload PSS, overhead PSS), MiB
PARTS = {"host": (None, 0.8, 0, 0.8, 0), "builtin": (0.05, 0, 19, 0.8, 0), "runc": (0.05, 9.2, 0, 0.8, 9.2),
         "qemu": (191, 0, 0, 118, 92), "libvirt": (187, 0, 0, 114, 92)}


def _rows():
    rows = []
    for b, (cg, out, sup, work, over) in PARTS.items():
        for variant in ("idle", "mem64"):
            vals = {"charged": (cg or 0) + out + sup, "outside_pss": out, "supervisor_share": sup,
                    "workload": work, "overhead": over, "pss_total": work + over}
            if cg is not None:
                vals["cgroup_charged"] = cg
            for metric, v in vals.items():
                if v > 0:
                    rows.append((metric, b, variant, "bytes", np.full(4, v * MiB)))
        for k in (1, 2):
            rows.append(("density_total", b, f"n={k}", "bytes", np.full(4, k * ((cg or 0) + out + 1) * MiB)))
    return rows


def _text(svg_path) -> str:
    """The SVG's visible text as one line (the subtitle wraps wherever it fits)."""
    words = re.findall(r">([^<>]+)<", svg_path.read_text())
    return html.unescape(" ".join(" ".join(words).split()))


def test_memory_chart_prints_the_definition_and_labels_guest_ram(tmp_path):
    folder = synth.write_run(tmp_path, "memory", backends=list(PARTS), rows=_rows(), n=4)
    meta = json.loads((folder / "meta.json").read_text())
    meta["memory_definitions"] = {"charged": "headline", "supervisor": {"builtin": "the harness process"}}
    meta["memory_notes"] = {"overhead.host.idle": "0: no separate runtime/VMM process"}
    (folder / "meta.json").write_text(json.dumps(meta))
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # overlapping labels fail
        _, files, _ = render(folder, "talk", log=lambda _m: None)
    svg = _text(next(p for p in files if p.name == "memory_per_instance.svg"))
    assert "Headline = memory controller's charge to the instance's own cgroup" in svg
    assert "builtin's supervisor is the harness process" in svg
    assert "guest RAM (THP-rounded, guest kernel included)" in svg
    assert "headline per instance" in svg and "PSS split" in svg
    assert "Recorded as 0 (not missing): host process overhead" in svg
    dens = _text(next(p for p in files if p.name == "memory_density.svg"))
    assert "median of the headline" in dens
