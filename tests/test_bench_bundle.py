"""One configuration for every container runtime: the image's config.json is
runc spec + cgroup namespace + Podman's default seccomp profile converted from
its source, every container backend reads it, and what each instance gets is
observed from inside it and identical for builtin, crun and runc."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import bundle, inside
from tests.conftest import usable

ROOT = Path(__file__).resolve().parent.parent
SAME = ["builtin", "crun", "runc"]


def source() -> dict:
    if not bundle.SECCOMP_SOURCE.exists():
        pytest.skip(f"{bundle.SECCOMP_SOURCE} missing; make setup installs {bundle.SECCOMP_PACKAGE}")
    return bundle.read_seccomp_source()


def rules_for(profile: dict, name: str) -> list[dict]:
    return [r for r in profile["syscalls"] if name in r["names"]]


def test_image_config_is_runc_spec_plus_cgroupns_plus_the_converted_profile(image, tmp_path):
    spec = json.loads(Path(image.bundle, "config.json").read_text())
    runc = subprocess.run(["runc", "spec"], cwd=tmp_path, capture_output=True)
    if runc.returncode != 0:
        pytest.skip("runc not installed")
    base = json.loads((tmp_path / "config.json").read_text())
    mine = copy.deepcopy(spec)
    # what cvbench changes on purpose: the workload, no tty, its hostname, and the two additions
    for s in (mine, base):
        s["process"].pop("args"), s["process"].pop("terminal"), s.pop("hostname")
        s["linux"]["namespaces"] = [n for n in s["linux"]["namespaces"] if n["type"] != "cgroup"]
    mine["linux"].pop("seccomp")
    assert mine == base
    assert {"type": "cgroup"} in spec["linux"]["namespaces"]
    assert spec["linux"]["seccomp"] == bundle.docker_to_oci(source(), spec["process"]["capabilities"]["bounding"])


def test_conversion_resolves_includes_and_excludes_against_the_capabilities():
    src = source()
    default = bundle.docker_to_oci(src, ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"], "x86_64")
    assert default["defaultAction"] == src["defaultAction"] == "SCMP_ACT_ERRNO"
    assert default["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert all("includes" not in r and "excludes" not in r for r in default["syscalls"])
    # no CAP_SYS_ADMIN: bpf is denied with EPERM, never allowed
    assert [r["action"] for r in rules_for(default, "bpf")] == ["SCMP_ACT_ERRNO"]
    # amd64-only rules kept, other architectures' dropped
    assert rules_for(default, "arch_prctl") and not rules_for(default, "s390_runtime_instr")
    # CAP_AUDIT_WRITE is in the set: the unconditional socket allow, not the excluded filters
    assert [r.get("args") for r in rules_for(default, "socket")] == [None]
    admin = bundle.docker_to_oci(src, ["CAP_SYS_ADMIN"], "x86_64")
    assert [r["action"] for r in rules_for(admin, "bpf")] == ["SCMP_ACT_ALLOW"]
    assert {r["action"] for r in rules_for(admin, "socket")} == {"SCMP_ACT_ERRNO", "SCMP_ACT_ALLOW"}


def test_min_kernel_is_resolved_against_the_kernel():
    prof = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["new_call"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "5.8"}},
        {"names": ["old_call"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "5.8"}}]}
    assert [r["names"] for r in bundle.docker_to_oci(prof, [], "x86_64", "6.1.0-9-amd64")["syscalls"]] \
        == [["new_call"]]
    assert [r["names"] for r in bundle.docker_to_oci(prof, [], "x86_64", "4.19.0")["syscalls"]] \
        == [["old_call"]]


@pytest.mark.parametrize("content, needle", [
    (None, "no such file"), ("{not json", "is not valid JSON"), ("[1, 2]", "must be a JSON object"),
    ('{"ociVersion": "1.0.2", "root": {"path": "rootfs"}}', "'process' is missing"),
])
def test_bad_config_is_exit_2_naming_the_file(tmp_path, content, needle):
    cfg = tmp_path / "config.json"
    if content is not None:
        cfg.write_text(content)
    r = subprocess.run([sys.executable, "-m", "bench", "run", "startup", "--config", str(cfg),
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"cvbench: --config: {cfg}: ") and needle in line, line
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_observed_isolation_is_identical_for_builtin_crun_and_runc(root, image):
    seen = {b.name: inside.observe(b) for b in usables(SAME)}
    first = seen["builtin"]
    assert all(o == first for o in seen.values()), seen
    # and it is what the bundle asks for: one filter, 3 caps, no_new_privs, 6 namespaces
    assert first["Seccomp"] == "2" and first["Seccomp_filters"] == "1"
    assert int(first["CapEff"], 16) == (1 << 29) | (1 << 5) | (1 << 10)  # AUDIT_WRITE, KILL, NET_BIND_SERVICE
    assert first["NoNewPrivs"] == "1"
    assert first["own_namespaces"] == ["cgroup", "ipc", "mnt", "net", "pid", "uts"]


def test_a_user_config_reaches_every_container_backend_alike(root, image, tmp_path, monkeypatch):
    spec = json.loads(Path(image.bundle, "config.json").read_text())
    del spec["linux"]["seccomp"]
    spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "uts"]
    spec.pop("hostname")   # needs the uts namespace
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(spec))
    folder = bundle.write_user_bundle(str(cfg), image.rootfs)
    monkeypatch.setenv(bundle.BUNDLE_ENV, str(folder))
    try:
        seen = {b.name: inside.observe(b) for b in usables(SAME)}
        written = json.loads((folder / "config.json").read_text())
    finally:
        shutil.rmtree(folder)
    for name, o in seen.items():
        assert o["Seccomp"] == "0", (name, o)
        assert o["own_namespaces"] == ["cgroup", "ipc", "mnt", "net", "pid"], (name, o)
    assert os.path.realpath(written["root"]["path"]) == os.path.realpath(image.rootfs)


def test_bench_run_config_runs_the_users_config_on_every_container_backend(root, image, tmp_path):
    usables(["builtin", "crun"])
    spec = json.loads(Path(image.bundle, "config.json").read_text())
    del spec["linux"]["seccomp"]
    cfg = tmp_path / "no-seccomp.json"
    cfg.write_text(json.dumps(spec))
    r = subprocess.run([sys.executable, "-m", "bench", "run", "startup", "--backends", "builtin,crun", "--fast",
                        "--quick", "--config", str(cfg), "--out", str(tmp_path / "out")], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((tmp_path / "out" / "latest" / "meta.json").read_text())
    assert meta["bundle"]["user_config"] == str(cfg) and meta["bundle"]["seccomp"] == "no seccomp"
    for b in ("builtin", "crun"):
        assert meta["backends"][b]["observed"]["Seccomp"] == "0", meta["backends"][b]
    assert bundle.BUNDLE_ENV not in os.environ
    # the run's copy of the config is gone with the run
    assert not list((bundle.state_dir() / "bench" / "bundles").glob("cvbench-b*-config-*"))


def usables(names):
    return [usable(n) for n in names]
