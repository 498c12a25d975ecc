"""make setup is idempotent: a second run changes nothing."""
from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_second_setup_changes_nothing(root):
    subprocess.run(["bash", "scripts/setup.sh"], cwd=ROOT, check=True, capture_output=True)
    r = subprocess.run(["bash", "scripts/setup.sh"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "setup: nothing to change", r.stdout


def test_setup_refuses_non_root():
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "bash", str(ROOT / "scripts/setup.sh")], cwd="/tmp",
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "needs root" in r.stderr
