"""The harness CLI: bad input is one clear line and exit 2; list and env work."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bench(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def one_error_line(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("cvbench: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[-1]


def test_unknown_scenario_is_exit_2_listing_the_valid_ones(tmp_path):
    r = bench("run", "bogus", "--out", str(tmp_path))
    assert r.returncode == 2
    line = one_error_line(r)
    assert "bogus" in line and "startup" in line and "isolation" in line
    assert not (tmp_path / "runs").exists()


def test_unknown_backend_is_exit_2_listing_the_valid_ones(tmp_path):
    r = bench("run", "startup", "--backends", "host,dockerish", "--out", str(tmp_path))
    assert r.returncode == 2
    line = one_error_line(r)
    assert "dockerish" in line
    for name in ("host", "builtin", "crun", "runc", "runsc", "qemu", "libvirt"):
        assert name in line


def test_unwritable_out_is_exit_2_before_measuring(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = bench("run", "startup", "--backends", "host", "--quick", "--out", str(blocker / "sub"))
    assert r.returncode == 2
    line = one_error_line(r)
    assert "--out" in line and "not writable" in line
    assert "[startup]" not in r.stderr  # failed before any progress


def test_bad_flag_is_exit_2():
    r = bench("run", "startup", "--frobnicate")
    assert r.returncode == 2
    one_error_line(r)


def test_list_shows_scenarios_and_backends_with_reasons():
    r = bench("list", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["scenarios"] == ["startup", "memory", "syscall", "isolation", "disk", "network", "strength"]
    assert set(data["backends"]) == {"host", "builtin", "builtin-cli", "crun", "runc", "runsc", "qemu-microvm", "qemu",
                                     "libvirt"}
    for name, rec in data["backends"].items():
        assert isinstance(rec["available"], bool)
        assert rec["reason"], name
    assert data["backends"]["host"]["available"]


def test_env_json_has_the_environment_fields():
    r = bench("env")
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)
    for key in ("hostname", "kernel", "cpu_model", "cpu_count", "mitigations", "accel",
                "nested_virt", "cgroup_version", "versions"):
        assert key in e
    assert e["accel"]["name"] in ("kvm", "tcg") and e["accel"]["reason"]
    assert e["cgroup_version"] in ("v1", "v2", "hybrid")
    for tool in ("qemu", "libvirt", "crun", "runc", "runsc", "python", "pyperf", "cvbench_git"):
        assert tool in e["versions"]
    if Path("/sys/devices/system/cpu/vulnerabilities").is_dir():
        assert e["mitigations"]
    assert e["cpu_count"] == os.cpu_count()


@pytest.mark.parametrize("spec,expected", [("runc,host", ["host", "runc"]), ("", None)])
def test_backend_selection_keeps_isolation_order(spec, expected):
    from bench import backends
    got = backends.parse(spec)
    assert got == (expected or backends.NAMES)
