"""``python -m analysis`` end to end on run folders in the results/ contract
format: compare's exit codes and Markdown, bad input (exit 2 with one clear
line), baselines, and history's step marks."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from analysis import synth
from analysis.cli import main
from common.errors import run_cli
from common.paths import ROOT

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def cli(capsys, *argv):
    rc = run_cli(main, list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def runs(tmp_path):
    """A base run, an A/A twin, the base's values x1.10, and a KVM run."""
    mk = lambda name, **kw: synth.write_run(tmp_path / name, "startup", n=40, sigma=0.05, **kw)  # noqa: E731
    return {"base": mk("base", seed=1, created=T0),
            "twin": mk("twin", seed=2, created=T0 + timedelta(hours=1)),
            "slow": mk("slow", seed=1, scale=1.10, created=T0 + timedelta(hours=2)),
            "fast": mk("fast", seed=1, scale=1 / 1.10, created=T0 + timedelta(hours=3)),
            "kvm": mk("kvm", seed=3, accel="kvm", created=T0 + timedelta(hours=4)),
            "syscall": synth.write_run(tmp_path / "sys", "syscall", n=20, seed=1, created=T0)}


def test_module_entry_exit_codes(runs):
    """The real `python -m analysis compare` process: 0, then 1 on a 10% slowdown."""
    py = [sys.executable, "-m", "analysis", "compare"]
    ok = subprocess.run(py + [str(runs["base"]), str(runs["twin"])], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "verdict: ok" in ok.stdout
    bad = subprocess.run(py + [str(runs["base"]), str(runs["slow"])], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1, bad.stderr
    assert "REGRESSION" in bad.stdout and "+10.0%" in bad.stdout


def test_compare_markdown_and_improvement(runs, capsys, tmp_path):
    md = tmp_path / "cmp.md"
    rc, out, _ = cli(capsys, "compare", str(runs["base"]), str(runs["slow"]), "--markdown", str(md))
    assert rc == 1
    text = md.read_text()
    assert text.startswith("### cvbench compare") and "| startup | ready.host |" in text
    assert text.count("**regression**") == 12
    rc, out, _ = cli(capsys, "compare", str(runs["base"]), str(runs["fast"]))
    assert rc == 0 and "verdict: ok — 0 regression(s), 12 improvement(s), 0 inconclusive, 0 no change" in out
    rc, out, _ = cli(capsys, "compare", str(runs["base"]), str(runs["fast"]), "--json")
    [doc] = json.loads(out)
    assert rc == 0 and doc["regression"] is False
    assert [r["verdict"] for r in doc["rows"]] == ["improvement"] * 12
    rc, out, _ = cli(capsys, "compare", str(runs["base"]), str(runs["slow"]), "--json")
    [doc] = json.loads(out)
    assert rc == 1 and doc["regression"] is True and {r["verdict"] for r in doc["rows"]} == {"regression"}


def test_threshold_and_alpha_options(runs, capsys):
    rc, out, _ = cli(capsys, "compare", str(runs["base"]), str(runs["slow"]), "--threshold", "15%")
    assert rc == 0 and "|change|>15%" in out
    rc, _, _ = cli(capsys, "compare", str(runs["base"]), str(runs["slow"]), "--alpha", "1e-30")
    assert rc == 0


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cvbench: ") and "Traceback" not in err
    return lines[0]


def test_bad_input_exits_2_with_one_clear_line(runs, capsys, tmp_path):
    base = str(runs["base"])
    rc, _, err = cli(capsys, "compare", base, str(tmp_path / "nope"))
    assert rc == 2 and "no such file" in one_line(err)
    rc, _, err = cli(capsys, "compare", base, str(runs["syscall"]))
    assert rc == 2 and "different scenarios" in one_line(err)
    rc, _, err = cli(capsys, "compare", base, str(runs["kvm"]))
    assert rc == 2 and "accelerators differ" in one_line(err) and "--force" in err
    rc, _, err = cli(capsys, "compare", base, "--alpha", "7")
    assert rc == 2 and "--alpha" in one_line(err)
    other = synth.write_run(tmp_path / "other", "startup", n=10, seed=1, backends=["runsc"], created=T0)
    only_host = synth.write_run(tmp_path / "onlyhost", "startup", n=10, seed=1, backends=["host"], created=T0)
    rc, _, err = cli(capsys, "compare", str(other), str(only_host))
    assert rc == 2 and "no metric, backend and variant in common" in one_line(err)
    rc, _, err = cli(capsys, "frobnicate")
    assert rc == 2
    one_line(err)

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("suite.json", "tidy.csv"):
        (broken / name).write_bytes((runs["twin"] / name).read_bytes())
    rc, _, err = cli(capsys, "compare", base, str(broken))
    assert rc == 2 and "meta.json: missing" in one_line(err)
    (broken / "meta.json").write_text("{not json")
    rc, _, err = cli(capsys, "compare", base, str(broken))
    assert rc == 2 and "meta.json: not valid JSON" in one_line(err)
    (broken / "meta.json").write_text((runs["twin"] / "meta.json").read_text())
    (broken / "tidy.csv").write_text("scenario,metric,backend,value\nstartup,ready,host,1\n")
    rc, _, err = cli(capsys, "charts", str(broken))
    assert rc == 2 and "missing column(s) variant, unit, process, run" in one_line(err)
    lines = (runs["twin"] / "tidy.csv").read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[4], "fast")
    (broken / "tidy.csv").write_text("\n".join(lines) + "\n")
    rc, _, err = cli(capsys, "compare", base, str(broken))
    assert rc == 2 and "line 4: value 'fast' is not a finite number" in one_line(err)


def test_force_compares_and_says_so(runs, capsys):
    rc, out, _ = cli(capsys, "compare", str(runs["base"]), str(runs["kvm"]), "--force")
    assert rc in (0, 1)
    assert "FORCED: accelerators differ (base tcg, new kvm)" in out


def test_baseline_save_list_and_compare(runs, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CVBENCH_RESULTS", str(tmp_path / "results"))
    rc, out, _ = cli(capsys, "baseline", "save", str(runs["base"]), str(runs["syscall"]))
    assert rc == 0
    [path] = (tmp_path / "results" / "baselines").glob("*.json")
    assert path.name == "intel-xeon-test-2-00ghz-2c-tcg.json"
    data = json.loads(path.read_text())
    assert sorted(data["runs"]) == ["startup", "syscall"]
    rc, out, _ = cli(capsys, "baseline", "list")
    assert "startup (" in out and "syscall (" in out
    # A multi-scenario baseline file against a run picks the run's scenario.
    rc, out, _ = cli(capsys, "compare", str(path), str(runs["slow"]))
    assert rc == 1
    rc, out, _ = cli(capsys, "compare", str(path), str(runs["twin"]))
    assert rc == 0
    rc, _, err = cli(capsys, "baseline", "save", str(runs["base"]), str(runs["kvm"]))
    assert rc == 2 and "different host classes" in one_line(err)


def test_history_marks_the_step(tmp_path, capsys):
    root = tmp_path / "results"
    for i in range(5):
        synth.write_run(root, "startup", n=30, sigma=0.04, seed=i, backends=["host", "crun"],
                        scale=1.0 if i < 3 else 1.25, created=T0 + timedelta(days=i), git_rev=f"rev{i:04d}abc")
    rc, out, _ = cli(capsys, "history", str(root), "--metric", "ready", "--by", "git", "--out", str(tmp_path / "h"))
    assert rc == 0
    marks = [line for line in out.splitlines() if "regression" in line]
    assert len(marks) == 2 and all("rev0003" in m for m in marks), out
    assert not any("improvement" in line for line in out.splitlines())
    assert (tmp_path / "h" / "history_startup_ready.png").stat().st_size > 0
    rc, _, err = cli(capsys, "history", str(root), "--metric", "nosuch")
    assert rc == 2 and "pick one of: lifecycle, ready" in one_line(err)


def test_ci_bench_without_baseline_says_how_to_make_one(tmp_path, capsys, monkeypatch):
    """ci-bench drives the harness; until a baseline exists it must exit 2 and say how."""
    from analysis import baseline, load
    monkeypatch.setenv("CVBENCH_RESULTS", str(tmp_path / "results"))
    fake = synth.write_run(tmp_path / "ci", "startup", n=10, seed=1)
    # The real harness is driven in test_analysis_charts.py; here only the verdict logic around it.
    monkeypatch.setattr(baseline, "run_bench", lambda s, d, b, log=print: load.load_run(fake))
    rc, _, err = cli(capsys, "ci-bench", "--scenarios", "startup")
    assert rc == 2 and "no baseline for host class" in one_line(err) and "baseline save" in err
    rc, out, _ = cli(capsys, "ci-bench", "--scenarios", "startup", "--save-missing")
    assert rc == 0 and Path(tmp_path / "results" / "baselines").is_dir()
    rc, out, _ = cli(capsys, "ci-bench", "--scenarios", "startup")
    assert rc == 0 and "verdict: ok" in out


def test_repeated_baseline_runs_set_a_noise_floor(tmp_path, capsys):
    """Two baseline runs that differ by 20% (run-to-run drift): a 10% shift is
    then noise, a 60% one is still a regression."""
    mk = lambda name, seed, scale: synth.write_run(tmp_path / name, "startup", n=30, sigma=0.03, seed=seed,  # noqa: E731
                                                   backends=["host", "crun"], scale=scale, created=T0)
    b1, b2 = mk("b1", 1, 1.0), mk("b2", 2, 1.2)
    rc, _, _ = cli(capsys, "baseline", "save", str(b1), str(b2), "--baselines", str(tmp_path / "bl"))
    assert rc == 0
    [path] = (tmp_path / "bl").glob("*.json")
    rc, out, _ = cli(capsys, "compare", str(path), str(mk("n1", 3, 1.15)))
    assert rc == 0 and "noise floor" in out and "max(3%, noise floor)" in out
    rc, out, _ = cli(capsys, "compare", str(b1), str(mk("n2", 3, 1.15)))
    assert rc == 1            # against one run, with no measured drift, the same shift is flagged
    rc, out, _ = cli(capsys, "compare", str(path), str(mk("n3", 3, 1.6)))
    assert rc == 1
    rc, out, _ = cli(capsys, "baseline", "list", "--baselines", str(tmp_path / "bl"))
    assert "startup (2 run(s), fast mode" in out


def test_several_scenarios_split_alpha_bonferroni(runs):
    """Each scenario is its own table and the worst verdict wins, so k scenarios
    are each tested at alpha/k (Holm within a table) and the note says so."""
    from analysis import compare
    from analysis.load import load_run
    base, sysc = load_run(runs["base"]), load_run(runs["syscall"])
    [one] = compare.compare_scenarios([(base, base, "startup")], alpha=0.05)
    assert one.alpha == 0.05 and not any("Bonferroni" in n for n in one.notes)
    two = compare.compare_scenarios([(base, base, "startup"), (sysc, sysc, "syscall")], alpha=0.05)
    assert [r.alpha for r in two] == [0.025, 0.025]
    assert all(any("Bonferroni across scenarios" in n for n in r.notes) for r in two)
    per_metric = compare.compare_scenarios([(base, base, "startup"), (sysc, sysc, "syscall")], alpha=0.05,
                                           adjust="none")
    assert [r.alpha for r in per_metric] == [0.05, 0.05]


def vm_run(tmp_path, name, accels: dict, tidy: bool = False, **kw):
    """A startup run with VM rows whose accelerators are recorded the way the harness does:
    meta.json backends.<name>.accel, or (tidy=True) only the tidy.csv accel column."""
    meta = None if tidy else {b: {"accel": {"accel": a, "why": "test"}} for b, a in accels.items()}
    return synth.write_run(tmp_path / name, "startup", n=20, seed=kw.pop("seed", 1),
                           backends=["host", *accels], created=T0, backend_meta=meta,
                           tidy_accel={b: a for b, a in accels.items()} if tidy else None, **kw)


def test_mixing_kvm_and_tcg_is_refused_with_exit_2(tmp_path, capsys):
    synth.STARTUP_S.setdefault("qemu", 1.5)
    tcg = vm_run(tmp_path, "tcg", {"qemu": "tcg", "libvirt": "tcg"})
    kvm = vm_run(tmp_path, "kvm", {"qemu": "kvm", "libvirt": "tcg"}, seed=2)
    rc, _, err = cli(capsys, "compare", str(tcg), str(kvm))
    line = one_line(err)
    assert rc == 2 and "new run mixes accelerators (libvirt=tcg, qemu=kvm)" in line
    assert "qemu: accelerators differ (base tcg, new kvm)" in line
    # The per-row tidy.csv column is read too, and it alone is enough to refuse.
    kvm_rows = vm_run(tmp_path, "kvmrows", {"qemu": "kvm", "libvirt": "kvm"}, tidy=True, seed=3)
    rc, _, err = cli(capsys, "compare", str(tcg), str(kvm_rows))
    assert rc == 2 and "libvirt: accelerators differ (base tcg, new kvm)" in one_line(err)
    # Runs recorded before per-backend accelerators existed still load and compare.
    old = synth.write_run(tmp_path / "old", "startup", n=20, seed=4, backends=["host", "qemu", "libvirt"],
                          created=T0)
    rc, out, _ = cli(capsys, "compare", str(tcg), str(old))
    assert rc in (0, 1) and "qemu" in out
    rc, out, _ = cli(capsys, "compare", str(tcg), str(kvm), "--force")
    assert rc in (0, 1) and "FORCED: new run mixes accelerators" in out


def test_n_3_prints_no_interval_in_compare_and_report(tmp_path, capsys):
    """The issue's check: 3 processes a side give "n too small", never a 95% CI."""
    mk = lambda name, seed: synth.write_run(tmp_path / name, "startup", n=3, seed=seed, processes=3,  # noqa: E731
                                            backends=["host"], created=T0)
    a, b = mk("a", 1), mk("b", 2)
    rc, out, _ = cli(capsys, "compare", str(a), str(b), "--calibration", "none")
    assert rc == 0
    rows = [line for line in out.splitlines() if line.startswith("startup")]
    assert rows and all("n too small" in r and "[" not in r and "inconclusive" in r for r in rows), out
    rc, _, _ = cli(capsys, "report", str(a))
    md = (a / "report.md").read_text()
    assert rc == 0 and "n too small (3 processes)" in md


def aa_runs(root, n_runs, drift, seed=0, backends=("host", "crun")):
    """Back-to-back runs of unchanged code on a drifting machine: each run gets a
    lognormal run-level factor (sd ``drift``) on top of within-run noise."""
    rng = np.random.default_rng(seed)
    for i in range(n_runs):
        synth.write_run(root, "startup", n=20, sigma=0.03, seed=100 + i, backends=list(backends),
                        scale=float(rng.lognormal(0, drift)), created=T0 + timedelta(minutes=i))


def test_calibrate_counts_false_alarms_and_power_and_compare_uses_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CVBENCH_RESULTS", str(tmp_path / "results"))
    aa_runs(tmp_path / "aa", 9, drift=0.15)
    rc, out, err = cli(capsys, "calibrate", str(tmp_path / "aa"))
    assert rc == 0 and "pair 8/8" in err
    m = re.search(r"in 8 A/A pairs: (\d+) with the within-run test alone, (\d+) with the calibrated gate", out)
    raw, cal = int(m.group(1)), int(m.group(2))
    assert raw >= 3 and cal <= 1, out            # 15% drift fools the within-run test, not the calibrated gate
    assert "power: an injected +5% shift" in out and "target met: no" in out
    [saved] = (tmp_path / "results" / "baselines" / "calibration").glob("*.json")
    doc = json.loads(saved.read_text())
    assert doc["pairs"] == 8 and doc["false_cal"] == cal and len(doc["metrics"]) == 4
    # compare now finds the calibration by host class: a 10% change inside the drift is inconclusive,
    # a doubling is still a regression.
    runs = sorted((tmp_path / "aa" / "runs").iterdir())
    slow10 = synth.write_run(tmp_path / "s10", "startup", n=20, sigma=0.03, seed=100, backends=["host", "crun"],
                             scale=1.10, created=T0)
    rc, out, _ = cli(capsys, "compare", str(runs[0]), str(slow10))
    assert rc == 0 and "run-to-run drift from" in out and "inconclusive" in out
    rc, out, _ = cli(capsys, "compare", str(runs[0]), str(slow10), "--calibration", "none")
    assert rc == 1
    slow2 = synth.write_run(tmp_path / "s2", "startup", n=20, sigma=0.03, seed=100, backends=["host", "crun"],
                            scale=2.0, created=T0)
    rc, out, _ = cli(capsys, "compare", str(runs[0]), str(slow2))
    assert rc == 1
    rc, _, err = cli(capsys, "calibrate", str(runs[0]), str(runs[1]))
    assert rc == 2 and "at least 4 runs" in one_line(err)


def test_calibrate_on_a_quiet_machine_meets_the_target(tmp_path, capsys):
    """No run-level drift and many processes: few false alarms, and a 5% shift is caught."""
    rng = np.random.default_rng(1)
    for i in range(7):
        synth.write_run(tmp_path / "q", "startup", n=60, sigma=0.01, seed=200 + i, backends=["host"],
                        scale=float(rng.lognormal(0, 0.002)), created=T0 + timedelta(minutes=i))
    rc, out, _ = cli(capsys, "calibrate", str(tmp_path / "q"), "--out", str(tmp_path / "cal"))
    assert rc == 0 and "target met: yes" in out, out


def test_history_and_compare_give_the_same_verdict(tmp_path, capsys):
    """history judges each step with compare's function: same pair, same verdict."""
    from analysis import compare, history
    from analysis.load import load_run, load_runs
    root = tmp_path / "results"
    a = synth.write_run(root, "startup", n=30, sigma=0.04, seed=1, backends=["host"], created=T0)
    b = synth.write_run(root, "startup", n=30, sigma=0.04, seed=2, backends=["host"], scale=1.2,
                        created=T0 + timedelta(days=1))
    table = history.steps(load_runs([root]), drift=None)
    res = compare.compare_runs(load_run(a), load_run(b), drift=None, adjust="none", detect=False)
    for metric in ("ready", "lifecycle"):
        want = res.rows[res.rows["metric"] == metric].iloc[0]
        got = table[(table["run_id"] == b.name) & (table["scenario"] == "startup")]
        assert metric and want["verdict"] == "regression" and "regression" in set(got["verdict"])


def test_history_with_several_scenarios_draws_each(tmp_path, capsys):
    """`make history METRIC=ready` with startup and isolation runs in results/: one chart each."""
    root = tmp_path / "results"
    for i in range(2):
        synth.write_run(root, "startup", n=20, seed=i, backends=["host", "crun"], created=T0 + timedelta(days=i))
        synth.write_run(root, "isolation", n=20, seed=i, backends=["crun"], created=T0 + timedelta(days=i, hours=1))
    rc, out, _ = cli(capsys, "history", str(root), "--metric", "ready", "--out", str(tmp_path / "h"))
    assert rc == 0, out
    assert (tmp_path / "h" / "history_startup_ready.png").is_file()
    assert (tmp_path / "h" / "history_isolation_ready.png").is_file()
    assert "startup.host" in out and "isolation.builtin.bare" in out


def test_runs_of_different_container_configs_are_refused_with_exit_2(tmp_path, capsys):
    """A baseline measured without the bundle's seccomp profile is not the same
    experiment as a run with it: compare refuses rather than flag a regression."""
    import json
    a = synth.write_run(tmp_path / "a", "startup", n=20, seed=1, backends=["host", "crun"], created=T0)
    b = synth.write_run(tmp_path / "b", "startup", n=20, seed=2, backends=["host", "crun"], created=T0)
    meta = json.loads((b / "meta.json").read_text())
    meta["bundle"] = {"namespaces": ["pid"], "seccomp": "seccomp default SCMP_ACT_ERRNO, 19 rules",
                      "capabilities": [], "short": "1 namespace, seccomp"}
    (b / "meta.json").write_text(json.dumps(meta))
    rc, _, err = cli(capsys, "compare", str(a), str(b))
    assert rc == 2 and "the container config differs" in one_line(err)
    rc, _, _ = cli(capsys, "compare", str(b), str(b))
    assert rc in (0, 1)
