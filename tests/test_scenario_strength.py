"""strength, end to end: exposure profiles of host, builtin, crun, runc and a VM
(quick mode), the battery harmless to the real host, and the runtimes alike.

The host row has no boundary and runs no battery; the unfenced reference is the
builtin ladder's bare rung (every mechanism off: root, all capabilities, the
host's namespaces), where the battery runs with the host's own power."""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import need, usable
from scenario_run import ROOT, VM, names, run_scenario

from bench import strength, strength_host

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
    # what the battery mounts (a tmpfs named cvbench on its scratch dir), not other runs' netns mounts
    state["mounts"] = [m for m in Path("/proc/self/mountinfo").read_text().splitlines()
                       if "cvbench-strength-" in m or " - tmpfs cvbench " in m]
    state["scratch"] = sorted(glob.glob("/tmp/cvbench-strength-*") + glob.glob("/dev/shm/cvbench-strength-*"))
    return state


@pytest.mark.vm
@pytest.mark.slow
def test_strength_profiles(root, image, tmp_path):
    before = _host_state()
    suite, meta, tidy, _ = run_scenario("strength", tmp_path, backends=BACKENDS)
    assert _host_state() == before   # the battery ran unfenced (bare rung) and changed nothing there
    prof = meta["strength"]
    rungs = meta["strength_ladder"]
    assert rungs and "bare" in rungs
    assert set(prof) == set(BACKENDS) | {f"builtin/{r}" for r in rungs}
    got = names(suite)
    for b in BACKENDS:
        assert f"strength.ready.{b}" in got and f"strength.getppid.{b}" in got   # the cost axes, same run
    assert all(f"strength.getppid.builtin.{r}" in got for r in rungs)
    for label, p in prof.items():
        assert p["runs"] == 3 and p["differs_between_runs"] == [], (label, p["differs_between_runs"])
        if label == "host":   # no boundary: no battery, and the row says so
            assert p["battery"] == strength.NO_BOUNDARY and p["escapes"] == {} and p["escapes_succeeded"] is None
            continue
        assert p["battery"] == "run" and set(p["escapes"]) == set(strength.ESCAPES), label
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
        assert prof[b]["device_list"] == ref["device_list"], b
    # the unfenced reference, the bare rung, has the host's reach, and the battery acted there
    # with the host's own power (so the unchanged host state above means something)
    host, bare = prof["host"], prof["builtin/bare"]
    for k in ("syscalls_reachable", "caps_effective", "namespaces_shared_names"):
        assert bare[k] == host[k], k
    for a in ("raw_socket", "mknod_block", "mount_tmpfs"):
        assert bare["escapes"][a]["result"] == "succeeded", (a, bare["escapes"][a])
    # the containers are fenced where it is not: the seccomp profile and dropped caps show
    assert ref["syscalls_reachable"] < bare["syscalls_reachable"]
    assert ref["caps_effective"] < bare["caps_effective"]
    assert ref["escapes"]["raw_socket"]["result"] == "blocked"
    assert ref["escapes_succeeded"] < bare["escapes_succeeded"]
    assert "pid" in ref["namespaces_own"] and "pid" in host["namespaces_shared_names"]
    # the VM's view is the guest's, behind a hardware boundary: no namespace comparison
    assert prof[VM]["boundary"].startswith("hardware") and prof[VM]["namespaces_shared"] == 0
    assert set(meta["strength_host_side"]) == {"host_syscalls", "kernel_functions"}
    assert meta["strength_host_side"]["kernel_functions"]["checks"]   # detected in the run, not assumed
    # the host side: strace -f of each backend's command (builtin and its rungs: its CLI as a process);
    # a runtime adds its own syscalls to the workload's
    for label, p in prof.items():
        if label != VM:
            assert p["host_syscalls"]["measured"] and p["host_syscalls"]["distinct"] > 5, (label, p)
            assert "exit_group" in p["host_syscalls"]["names"], label   # entered, though it never returns
    assert prof["builtin"]["host_syscalls"]["via"].startswith("builtin-cli")
    assert prof["runc"]["host_syscalls"]["distinct"] > prof["host"]["host_syscalls"]["distinct"]
    assert "seccomp" in set(prof["builtin"]["host_syscalls"]["names"]) - set(bare["host_syscalls"]["names"])
    # under a VM only QEMU's own syscalls reach the host kernel
    assert prof[VM]["host_syscalls"]["measured"] and prof[VM]["host_syscalls"]["distinct"] > 5, prof[VM]
    assert not {"mount", "mknod", "ptrace"} & set(prof[VM]["host_syscalls"]["names"])
    # the Pareto chart, the battery heat map and the report's profile table, readable on a slide
    from analysis import render, style
    with warnings.catch_warnings():
        warnings.simplefilter("error", style.OverlapWarning)
        _, written, (md, _) = render.render(tmp_path / "latest", log=lambda m: None)
    assert {"strength_pareto.png", "strength_pareto_syscall.png", "strength_battery.png"} <= \
        {p.name for p in written}
    text = md.read_text()
    assert "## Strength: exposure profile" in text
    for label in prof:
        assert f"| {label} |" in text, label
    host_line = next(line for line in text.splitlines() if line.startswith("| host | none (host) |"))
    assert "no boundary (battery not run)" in host_line
    assert "rows whose instances disagreed: none" in text
    assert "- host kernel functions: " in text and "(and its rungs): host syscalls via its CLI" in text


def test_parse_refuses_a_partial_report():
    with pytest.raises(strength.ProfileError, match="esc_bpf_map_create"):
        strength.parse({"CapEff": "0", "CapBnd": "0", "sys_reachable": "1", "dev_nodes": "0",
                        "paths_readable": "0", **{f"esc_{e}": "blocked:EPERM"
                                                  for e in strength.ESCAPES[:-1]}}, vm=False)


def _report(battery: bool) -> dict:
    base = {"CapEff": "0", "CapBnd": "0", "sys_reachable": "1", "dev_nodes": "0", "paths_readable": "0",
            "paths_writable": "0", **{f"sys_{k}": "0" for k in strength.SYSCALL_KEYS}}
    if battery:
        return {**base, **{f"esc_{e}": "blocked:EPERM" for e in strength.ESCAPES}}
    return {**base, "battery": "not_run:no_boundary"}


def test_differences_see_which_syscalls_not_only_how_many():
    a = strength.parse({**_report(True), "sys_enosys_nrs": "1,2"}, vm=False)
    b = strength.parse({**_report(True), "sys_enosys_nrs": "1,3"}, vm=False)
    c = strength.parse({**_report(True), "sys_enosys_nrs": "1,2", "esc_keyctl": "succeeded"}, vm=False)
    assert strength.differences([a, a, a]) == []
    assert strength.differences([a, b, a]) == ["enosys_nrs"]
    assert strength.differences([a, a, c]) == ["esc_keyctl", "escapes_succeeded"]
    d, e = (strength.parse({**_report(True), "sys_enosys_nrs": "1,2", "dev_list": v}, vm=False)
            for v in ("null,zero", "zero,null"))
    assert strength.differences([d, e]) == []   # the same devices, listed in another readdir order


def test_parse_battery_only_where_asked():
    p = strength.parse(_report(False), vm=False, battery=False)
    assert p["battery"] == strength.NO_BOUNDARY and p["escapes"] == {} and p["escapes_succeeded"] is None
    assert strength.parse(_report(True), vm=False)["escapes_succeeded"] == 0
    with pytest.raises(strength.ProfileError, match="--no-battery"):   # ran though not asked
        strength.parse({**_report(True), "battery": "not_run:no_boundary"}, vm=False, battery=False)
    with pytest.raises(strength.ProfileError, match="esc_sysrq_trigger"):   # asked but not run
        strength.parse(_report(False), vm=False)


def _tracefs_state() -> tuple:
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if " tracefs " in line]
    inst = sorted(glob.glob(f"/sys/kernel/tracing/instances/{strength_host.INSTANCE_PREFIX}*"))
    return mounts, inst


def test_tracers_agree_on_the_host_command(root, image):
    """strace -f and perf trace (the tool for runsc) give the same set of
    syscalls entered for the same command, and perf leaves no tracefs mount."""
    need("strace")
    need("perf")
    before = _tracefs_state()
    host = usable("host")
    by = {t: strength_host.host_syscalls(host, 60, tool=t) for t in ("strace", "perf")}
    assert by["strace"]["measured"] and by["perf"]["measured"], by
    assert by["strace"]["names"] == by["perf"]["names"]
    assert {"getppid", "exit_group", "wait4"} <= set(by["perf"]["names"])
    assert _tracefs_state() == before


def test_runsc_host_syscalls_by_perf_trace(root, image):
    runsc = usable("runsc")
    need("perf")
    before = _tracefs_state()
    h = strength_host.host_syscalls(runsc, 120)
    assert h["measured"] and h["tool"] == "perf trace", h
    assert {"chroot", "pivot_root"} <= set(h["names"])   # the sandbox and gofer fencing themselves
    assert _tracefs_state() == before


def test_libvirt_wrapper_traces_only_cvbench_guests(tmp_path, monkeypatch):
    """The <emulator> wrapper libvirt runs: a cvbench guest's QEMU under strace
    into a file named after the guest; anything else (libvirt's capability
    probe, a foreign name) straight to QEMU.  /bin/echo stands in for QEMU."""
    strace = need("strace")
    from vm_backend.domain_xml import DomainSpec, build
    monkeypatch.setenv("CVBENCH_STATE", str(tmp_path))
    wrapper, traces = strength_host._libvirt_wrapper(strace, "/bin/echo")
    assert traces.stat().st_mode & 0o7777 == 0o1733
    r = subprocess.run([str(wrapper), "-name", "guest=cvbench-vm-1-ab12,debug-threads=on", "-S"],
                       capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() == "-name guest=cvbench-vm-1-ab12,debug-threads=on -S"
    assert "execve" in strength_host.strace_names((traces / "cvbench-vm-1-ab12.trace").read_text())
    for args in (["-machine", "none", "-qmp", "unix:x"], ["-name", "guest=other,x"],
                 ["-name", "guest=cvbench-../x"]):
        r = subprocess.run([str(wrapper), *args], capture_output=True, text=True, timeout=30)
        assert r.stdout.split() == args
    assert [f.name for f in traces.iterdir()] == ["cvbench-vm-1-ab12.trace"]
    # the domain XML names the wrapper only when asked to
    spec = dict(name="cvbench-vm-1-ab12", kernel="/k", initramfs="/i", args=["ready"])
    assert "<emulator>" not in build(DomainSpec(**spec, emulator=""))
    monkeypatch.setenv("CVBENCH_LIBVIRT_EMULATOR", str(wrapper))
    assert f"<emulator>{wrapper}</emulator>" in build(DomainSpec(**spec))


def test_kernel_functions_says_why_and_leaves_nothing(root):
    before = _tracefs_state()
    kf = strength_host.kernel_functions()
    assert kf["measured"] is False and kf["why"]
    if "tracefs" in Path("/proc/filesystems").read_text():
        assert kf["checks"].get("available_tracers"), kf   # detected, not assumed
        if kf["checks"].get("current_tracer=function") not in (None, "ok"):
            assert kf["checks"]["current_tracer=function"] in kf["why"]
    assert _tracefs_state() == before


def test_unknown_backend_exits_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench", "run", "strength", "--backends", "nosuch",
                        "--quick", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env=dict(os.environ))
    assert r.returncode == 2 and r.stderr.startswith("cvbench: ") and "nosuch" in r.stderr


@pytest.mark.parametrize("rung", ["nosuch", "cum:99", "only:nosuch"])
def test_unknown_rung_exits_2(rung, image):
    """A rung by the name the ladder and the host-side trace pass to the runtime CLI."""
    r = subprocess.run([sys.executable, "-m", "runtime", "run", "--isolation", rung, "--bundle", image.bundle,
                        "cvbench-strength-badrung", "--", "/probe", "ready"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, env=dict(os.environ))
    assert r.returncode == 2 and r.stderr.startswith("cvbench: isolation: "), r.stderr
    assert "CVB READY" not in r.stdout
