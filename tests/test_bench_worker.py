"""Measuring processes stay light: a pyperf worker, with every backend module
loaded, has not imported pandas, matplotlib, numpy or scipy (a large parent
slows fork, and the worker forks on every spawn)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = """
import sys
import bench.worker, bench.timing, bench.inside, bench.harness
from bench import backends
for n in backends.NAMES:
    backends.get(n).available()
import scenarios.startup, scenarios.syscall, scenarios.memory, scenarios.isolation
heavy = sorted(m for m in ("pandas", "matplotlib", "numpy", "scipy") if m in sys.modules)
print(",".join(heavy) or "none")
"""


def test_worker_and_backends_import_nothing_heavy():
    r = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "none"
