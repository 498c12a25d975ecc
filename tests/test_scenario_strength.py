"""strength, end to end: exposure profiles of host, builtin, crun, runc and a VM
(quick mode), the battery harmless to the real host, and the runtimes alike."""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from scenario_run import ROOT, VM, names, run_scenario

from bench import strength

BACKENDS = ["host", "builtin", "crun", "runc", VM]


def _host_state() -> dict:
    """What the battery must leave exactly as it was on the real host."""
    state = {}
    for p in ("/proc/sys/kernel/core_pattern", "/proc/sys/kernel/sysrq", "/proc/sys/kernel/modprobe"):
        try:
            state[p] = Path(p).read_text()
        except OSError as e:
            state[p] = f"unreadable: {e.errno}"
    for p in sorted(glob.glob("/sys/fs/cgroup/*/release_agent")):
        state[p] = Path(p).read_text()
    state["mounts"] = Path("/proc/self/mountinfo").read_text()
    state["scratch"] = sorted(glob.glob("/tmp/cvbench-strength-*") + glob.glob("/dev/shm/cvbench-strength-*"))
    return state


@pytest.mark.vm
@pytest.mark.slow
def test_strength_profiles(root, image, tmp_path):
    before = _host_state()
    suite, meta, tidy, _ = run_scenario("strength", tmp_path, backends=BACKENDS)
    assert _host_state() == before   # the battery ran on the host too and changed nothing there
    prof = meta["strength"]
    rungs = meta["strength_ladder"]
    assert rungs and "bare" in rungs
    assert set(prof) == set(BACKENDS) | {f"builtin/{r}" for r in rungs}
    got = names(suite)
    for b in BACKENDS:
        assert f"strength.ready.{b}" in got   # the cost axis, from the same run
    for label, p in prof.items():
        assert p["runs"] == 3 and p["differs_between_runs"] == [], (label, p["differs_between_runs"])
        assert set(p["escapes"]) == set(strength.ESCAPES)
        assert all(e["result"] in ("blocked", "succeeded", "na") for e in p["escapes"].values())
        s = p["syscalls"]
        assert sum(s[k] for k in strength.SYSCALL_KEYS) == 463, label
        assert set(s["not_probed_why"]) >= {"60", "231", "169"}   # exit, exit_group, reboot: never called
    # the default bundle: builtin, crun and runc show the same reachability and battery
    ref = prof["runc"]
    for b in ("builtin", "crun"):
        assert prof[b]["syscalls"]["enosys_nrs"] == ref["syscalls"]["enosys_nrs"], b
        assert prof[b]["syscalls"]["eperm_nrs"] == ref["syscalls"]["eperm_nrs"], b
        assert prof[b]["syscalls_reachable"] == ref["syscalls_reachable"], b
        assert {k: v["result"] for k, v in prof[b]["escapes"].items()} == \
            {k: v["result"] for k, v in ref["escapes"].items()}, b
        assert prof[b]["cap_eff_mask"] == ref["cap_eff_mask"], b
    # the containers are fenced where the host is not: the seccomp profile and dropped caps show
    host = prof["host"]
    assert ref["syscalls_reachable"] < host["syscalls_reachable"]
    assert ref["caps_effective"] < host["caps_effective"]
    assert ref["escapes"]["raw_socket"]["result"] == "blocked"
    assert host["escapes"]["raw_socket"]["result"] == "succeeded"
    assert "pid" in ref["namespaces_own"] and "pid" in host["namespaces_shared_names"]
    # the VM's view is the guest's, behind a hardware boundary: no namespace comparison
    assert prof[VM]["boundary"].startswith("hardware") and prof[VM]["namespaces_shared"] == 0
    assert set(meta["strength_host_side"]) == {"host_syscalls", "kernel_functions"}
    # the host side: strace -f of each backend's command; a runtime adds its own syscalls to the workload's
    for b in ("host", "crun", "runc"):
        assert prof[b]["host_syscalls"]["measured"] and prof[b]["host_syscalls"]["distinct"] > 5, prof[b]
    assert prof["runc"]["host_syscalls"]["distinct"] > prof["host"]["host_syscalls"]["distinct"]
    # under a VM only QEMU's own syscalls reach the host kernel
    assert prof[VM]["host_syscalls"]["measured"] and prof[VM]["host_syscalls"]["distinct"] > 5, prof[VM]
    assert not {"mount", "mknod", "ptrace"} & set(prof[VM]["host_syscalls"]["names"])
    # the Pareto chart, the battery heat map and the report's profile table, readable on a slide
    from analysis import render, style
    with warnings.catch_warnings():
        warnings.simplefilter("error", style.OverlapWarning)
        _, written, (md, _) = render.render(tmp_path / "latest", log=lambda m: None)
    assert {"strength_pareto.png", "strength_battery.png"} <= {p.name for p in written}
    text = md.read_text()
    assert "## Strength: exposure profile" in text
    for label in prof:
        assert f"| {label} |" in text, label


def test_parse_refuses_a_partial_report():
    with pytest.raises(strength.ProfileError, match="esc_bpf_map_create"):
        strength.parse({"CapEff": "0", "CapBnd": "0", "sys_reachable": "1", "dev_nodes": "0",
                        "paths_readable": "0", **{f"esc_{e}": "blocked:EPERM"
                                                  for e in strength.ESCAPES[:-1]}}, vm=False)


def test_unknown_backend_exits_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench", "run", "strength", "--backends", "nosuch",
                        "--quick", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env=dict(os.environ))
    assert r.returncode == 2 and r.stderr.startswith("cvbench: ") and "nosuch" in r.stderr
