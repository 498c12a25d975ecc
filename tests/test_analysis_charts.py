"""Every chart renders, without a single matplotlib warning and without
overlapping labels (style.save warns on those), from run folders in the
results/ contract format, and from a real ``--fast`` run of the harness."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET

import matplotlib.image as mpimg
import pytest

from analysis import load, style, synth
from analysis.render import render
from common.paths import ROOT

EXPECTED = {
    "startup": ["startup_median", "startup_ecdf"],
    "memory": ["memory_per_instance", "memory_density"],
    "syscall": ["syscall_ops"],
    "isolation": ["isolation_ladder", "isolation_ladder_getppid", "isolation_summary", "isolation_alone"],
}


def render_strict(path, st="talk"):
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # any matplotlib (or overlap) warning fails the test
        return render(path, st, log=lambda _m: None)


def check_files(files, names, st):
    got = sorted(p.name for p in files)
    assert got == sorted(f"{n}.{ext}" for n in names for ext in ("png", "svg"))
    w_in, h_in = style.STYLES[st]["figsize"]
    for p in files:
        assert p.stat().st_size > 1000, p
        if p.suffix == ".png":
            h, w = mpimg.imread(p).shape[:2]
            assert w >= w_in * 150 - 2 and h >= h_in * 150 - 2, (p.name, w, h)   # >= 150 dpi
        else:
            ET.parse(p)


@pytest.mark.parametrize("st", ["talk", "paper"])
@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_charts_render_from_contract_run_folders(tmp_path, scenario, st):
    folder = synth.write_run(tmp_path, scenario, n=20, seed=5)
    run, files, (md, html) = render_strict(folder, st)
    check_files(files, EXPECTED[scenario], st)
    assert all(p.parent == folder / "charts" for p in files)
    text = html.read_text()
    srcs = re.findall(r'src="([^"]*)"', text)
    assert len(srcs) == len(EXPECTED[scenario]) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "TCG emulation, not KVM" in text and "TCG emulation, not KVM" in md.read_text()
    assert "| n | median | 95% CI | IQR | CV |" in md.read_text()


def test_backend_colours_are_the_same_in_every_chart(tmp_path):
    svgs = []
    for scenario in ("startup", "syscall", "memory"):
        _, files, _ = render_strict(synth.write_run(tmp_path / scenario, scenario, n=10, seed=1))
        svgs += [p.read_text().lower() for p in files if p.suffix == ".svg"]
    for backend in ("builtin", "crun", "runc", "runsc", "libvirt"):
        colour = style.color(backend).lower()
        assert all(colour in svg for svg in svgs), backend


def test_kvm_runs_carry_no_tcg_note_and_mixed_units_stay_readable(tmp_path):
    folder = synth.write_run(tmp_path, "startup", n=10, seed=2, accel="kvm", backends=["host", "builtin"])
    _, files, (md, _) = render_strict(folder)
    assert "TCG" not in "".join(p.read_text() for p in files if p.suffix == ".svg")
    assert "VMs ran under KVM" in md.read_text()


def test_overlap_check_really_fires(tmp_path):
    """The no-warning assertions above are only worth something if overlaps warn."""
    with style.styled("talk"):
        fig, ax = style.figure("talk")
        ax.text(0.5, 0.5, "a long label here")
        ax.text(0.5, 0.5, "another long label")
        with pytest.warns(style.OverlapWarning):
            style.save(fig, tmp_path, "overlap")
        fig, ax = style.figure("talk")
        fig.text(0.9, 0.5, "a label that runs off the right edge of the slide")
        with pytest.warns(style.OverlapWarning, match="figure's edge"):
            style.save(fig, tmp_path, "clipped")


def test_log_axis_only_when_range_exceeds_10x():
    assert style.log_if_wide([1e-3, 2.4]) and not style.log_if_wide([1e-3, 9e-3])


def harness_or_skip():
    r = subprocess.run([sys.executable, "-m", "bench", "run", "--help"], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"the harness's 'python -m bench run' is not usable here: {(r.stderr or r.stdout).strip()[-200:]}")


@pytest.mark.slow
def test_charts_from_a_real_fast_run(tmp_path, root):
    """The issue's check: a real `--fast` startup run, then every startup chart and the report."""
    harness_or_skip()
    env = dict(os.environ, CVBENCH_RESULTS=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "bench", "run", "startup", "--fast", "--backends", "host,builtin",
                        "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    run, files, (md, html) = render_strict(tmp_path / "latest")
    check_files(files, EXPECTED["startup"], "talk")
    assert set(run.tidy["backend"]) == {"host", "builtin"}
    assert md.stat().st_size > 0 and html.stat().st_size > 0
    meta = json.loads((run.path / "meta.json").read_text())
    assert load.host_class(meta["env"]).endswith(meta["env"]["accel"]["name"])


@pytest.mark.slow
def test_ci_bench_drives_the_real_harness(tmp_path, root):
    """ci-bench end to end with the host backend: first pass saves the baseline; second gives a verdict."""
    harness_or_skip()
    env = dict(os.environ, CVBENCH_RESULTS=str(tmp_path))
    cmd = [sys.executable, "-m", "analysis", "ci-bench", "--backends", "host", "--scenarios", "startup"]
    saved = subprocess.run(cmd + ["--save-missing"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert saved.returncode == 0, saved.stderr[-2000:]
    [baseline] = (tmp_path / "baselines").glob("*.json")
    md = tmp_path / "verdict.md"
    again = subprocess.run(cmd + ["--markdown", str(md)], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode in (0, 1), again.stderr[-2000:]   # real noise on a shared machine may fire
    assert "ready.host" in again.stdout and md.read_text().startswith("### cvbench compare")


@pytest.mark.parametrize("by", ["date", "git"])
def test_history_chart_renders_without_warnings(tmp_path, by):
    from datetime import UTC, datetime, timedelta

    from analysis import history
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(4):
        synth.write_run(tmp_path / "r", "syscall", n=12, seed=i, backends=["host", "runsc"],
                        created=t0 + timedelta(days=i), git_rev=f"{i}abcdef0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table, files = history.history([tmp_path / "r"], "getppid", by=by, out=tmp_path / "h")
    assert len(table) == 4 * 2 and {p.suffix for p in files} == {".png", ".svg"}
    assert all(p.stat().st_size > 1000 for p in files)


def test_ladder_without_a_bare_rung_has_no_wrapped_first_step(tmp_path):
    """Without a bare rung the first step has nothing before it: no delta
    against the last rung, and the summary (costs relative to bare) skips it."""
    import numpy as np

    from analysis import ladder
    rng = np.random.default_rng(1)
    rows = [r for r in synth.rows_for("isolation", ["host", "builtin", "crun"], rng, 10) if r[2] != "bare"]
    run = load.load_run(synth.write_run(tmp_path / "nobare", "isolation", n=10, rows=rows))
    rs = ladder.rungs(run, "ready")
    assert rs[0].kind == "step" and rs[0].delta == 0.0 and rs[0].ci == (0.0, 0.0)
    assert all(r.delta != 0.0 for r in rs[1:] if r.kind == "step")
    assert ladder.summary(run, "talk", tmp_path) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ladder.waterfall(run, "talk", tmp_path)


def test_subtitle_names_each_vm_accelerator_and_every_gap(tmp_path):
    """Every chart's subtitle: each VM row's own accelerator (meta.json
    backends.<name>.accel, else the run-wide one for older runs), and each
    backend that was unavailable or failed mid-run."""
    synth.STARTUP_S.setdefault("qemu-microvm", 1.4)
    folder = synth.write_run(tmp_path, "startup", n=20, seed=3, backends=["host", "qemu-microvm", "libvirt"],
                             backend_meta={"qemu-microvm": {"accel": {"accel": "kvm", "why": "test"}},
                                           "libvirt": {"accel": {"accel": "tcg", "why": "test"}},
                                           "runsc": {"available": True, "failed": "timeout after 60 s\nmore"},
                                           "runc": {"available": False, "reason": "runc not installed"}})
    _, files, _ = render_strict(folder)
    svg = next(p for p in files if p.name == "startup_median.svg").read_text()
    for text in ("VMs: libvirt VM TCG, QEMU microvm KVM", "TCG emulation, not KVM", "QEMU VM unavailable (not requested)",
                 "runc unavailable (runc not installed)", "gVisor (runsc) failed (timeout after 60 s)"):
        assert text in svg, text
    old = load.load_run(synth.write_run(tmp_path / "old", "startup", n=10, seed=1, backends=["host", "libvirt"]))
    assert style.vm_accels(old.meta) == {"libvirt": "tcg"}           # no per-backend record: the run-wide one


def test_syscall_chart_says_what_cpuid_and_clock_gettime_mean_here(tmp_path):
    import numpy as np
    rng = np.random.default_rng(2)
    rows = [(op, b, "", "ns", synth.lognormal(rng, ns, 6)) for b in ("host", "runsc", "libvirt")
            for op, ns in (("getppid", 80), ("clock_gettime", 16), ("cpuid", 4000))]
    folder = synth.write_run(tmp_path, "syscall", rows=rows, processes=6,
                             backend_meta={"runsc": {"metadata": {"platform": "systrap"}},
                                           "libvirt": {"accel": {"accel": "tcg", "why": "test"}}})
    meta = json.loads((folder / "meta.json").read_text())
    meta["env"]["nested_virt"] = "cpu has no vmx/svm; kvm_pvm loaded (PVM host)"
    (folder / "meta.json").write_text(json.dumps(meta))
    _, files, _ = render_strict(folder)
    svg = next(p for p in files if p.name == "syscall_ops.svg").read_text()
    assert "cpuid is emulated by QEMU under TCG; this host is itself a guest" in svg
    assert "under gVisor, where it crosses the Sentry" in svg
    assert "systrap" in svg and "ptrace" not in svg and "n too small for a CI" in svg
