"""Shared by the tests/test_scenario_*.py files (named without test_ so pytest collects nothing here): run one scenario through the
real CLI (quick mode), then load what it wrote the way analysis and pyperf do."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pyperf
import pytest

ROOT = Path(__file__).resolve().parent.parent
VM = "qemu"   # the quickest VM backend to boot
BACKENDS = ["host", "builtin", VM]


def require_backends(names):
    from bench import backends
    for n in names:
        ok, why = backends.get(n).available()
        if not ok:
            pytest.skip(why)


def run_scenario(scenario: str, out: Path, backends=BACKENDS, extra=("--quick",), timeout=400):
    require_backends(backends)
    r = subprocess.run([sys.executable, "-m", "bench", "run", scenario, "--backends", ",".join(backends),
                        "--fast", *extra, "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout, env=dict(os.environ))
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr[-4000:]}"
    latest = out / "latest"
    assert latest.is_symlink()
    folder = latest.resolve()
    assert folder.parent == (out / "runs").resolve() and folder.name.endswith(f"_{scenario}")
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "suite.json", "tidy.csv"]
    suite = pyperf.BenchmarkSuite.load(str(folder / "suite.json"))
    meta = json.loads((folder / "meta.json").read_text())
    with open(folder / "tidy.csv") as f:
        tidy = list(csv.DictReader(f))
    for cmd in (["show"], ["stats"], ["compare_to", str(folder / "suite.json")]):
        p = subprocess.run([sys.executable, "-m", "pyperf", *cmd, str(folder / "suite.json")],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
    assert meta["scenario"] == scenario and meta["mode"] == "fast" and meta["quick"] is True
    assert meta["run_id"] == folder.name
    assert meta["env"]["accel"]["name"] in ("kvm", "tcg")
    for b in backends:
        assert meta["backends"][b]["available"], meta["backends"][b]
        assert "failed" not in meta["backends"][b], meta["backends"][b]
    assert "median" in r.stdout and "backend" in r.stdout   # the side-by-side table
    return suite, meta, tidy, r


def names(suite) -> set[str]:
    return {b.get_name() for b in suite.get_benchmarks()}


def tidy_values(tidy, **match) -> list[float]:
    return [float(row["value"]) for row in tidy if all(row[k] == v for k, v in match.items())]
