"""cgroup limits, enforced on real containers: the memory limit ends in an
OOM kill, pids.max stops a fork bomb, the cpu quota throttles.  The v2 code
path is exercised against the host's real cgroup2 mount where one exists; its
enforcement tests skip, with the reason read from the host, where memory, cpu
and pids are bound to v1 (a hybrid host like this one)."""
from __future__ import annotations

import os
import subprocess

import pytest

from common.errors import EnvError
from runtime import Isolation, cgroup_version, cgroups, spawn

MiB = 1 << 20


def _read(path: str) -> dict[str, int]:
    with open(path) as f:
        return {k: int(v) for k, v in (line.split() for line in f if len(line.split()) == 2)}


def test_cgroup_version_is_detected(root):
    v = cgroup_version()
    assert v in ("v1", "v2", "hybrid")
    has_v2_root = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    assert (v == "v2") == has_v2_root


def test_memory_limit_ends_in_oom_kill(root, image):
    if open("/proc/swaps").read().count("\n") > 1:
        pytest.skip("swap is on: an over-limit container would swap instead of being OOM-killed")
    iso = Isolation.only("cgroup").replace(memory_bytes=32 * MiB)
    with spawn(image.bundle, ["/probe", "mem", "96"], iso) as c:
        assert c.wait(timeout=30) == 137  # SIGKILL from the OOM killer
        d = cgroups.backend().memory_dir(c.cgroup_dirs())
        if cgroups.backend().version == "v1":
            assert _read(f"{d}/memory.oom_control")["oom_kill"] >= 1
            assert int(open(f"{d}/memory.limit_in_bytes").read()) == 32 * MiB
        else:
            assert _read(f"{d}/memory.events")["oom_kill"] >= 1


def test_memory_within_limit_is_fine(root, image):
    iso = Isolation.only("cgroup").replace(memory_bytes=64 * MiB)
    with spawn(image.bundle, ["/probe", "mem", "16", "0"], iso) as c:
        assert c.wait(timeout=30) == 0


def test_pids_max_stops_a_fork_bomb(root, image):
    bomb = "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 1 & done 2>&1; cat /sys/fs/cgroup/pids/pids.current 2>/dev/null; kill $(jobs -p) 2>/dev/null; wait"
    iso = Isolation.only("cgroup").replace(pids_max=6)
    with spawn(image.bundle, ["/bin/sh", "-c", bomb], iso) as c:
        out = c.stdout.read().decode()
        c.wait(timeout=30)
        assert "can't fork" in out, out
        d = [x for x in c.cgroup_dirs() if "/pids/" in x or cgroups.backend().version == "v2"][0]
        assert int(open(f"{d}/pids.max").read()) == 6
        if os.path.exists(f"{d}/pids.events"):  # v2, and v1 on kernels >= 4.x
            assert _read(f"{d}/pids.events")["max"] >= 1


def test_cpu_quota_throttles(root, image):
    iso = Isolation.only("cgroup").replace(cpu_quota_us=10_000, cpu_period_us=100_000)
    with spawn(image.bundle, ["/probe", "ops", "--iters", "600000", "getppid"], iso) as c:
        assert c.wait(timeout=60) == 0
        if cgroups.backend().version == "v1":
            d = [x for x in c.cgroup_dirs() if "/cpu/" in x][0]
            assert int(open(f"{d}/cpu.cfs_quota_us").read()) == 10_000
        else:
            d = c.cgroup_dirs()[0]
        stat = _read(f"{d}/cpu.stat")
        assert stat["nr_throttled"] >= 1, stat


def test_cgroups_are_removed_on_delete(root, image):
    with spawn(image.bundle, ["/probe", "sleep", "-1"], Isolation.only("cgroup")) as c:
        dirs = c.cgroup_dirs()
        assert dirs and all(os.path.isdir(d) for d in dirs)
        assert c.pid in c.host_pids()
    assert c.t_gone_ns is not None
    assert not any(os.path.exists(d) for d in dirs)


# ---- cgroup v2: mapping logic always, file writes on a real cgroup2 mount

def test_v2_maps_limits_to_its_files():
    v2 = cgroups.V2.__new__(cgroups.V2)
    lim = cgroups.Limits(memory_bytes=32 * MiB, cpu_quota_us=20_000, cpu_period_us=50_000,
                         cpu_weight=100, pids_max=64)
    assert v2.files(lim) == {"memory.max": str(32 * MiB), "cpu.max": "20000 50000",
                             "cpu.weight": "100", "pids.max": "64"}
    assert v2.files(cgroups.Limits(cpu_weight=5)) == {"cpu.weight": "5"}
    assert v2.files(cgroups.Limits(cpu_period_us=10_000)) == {"cpu.max": "max 10000"}
    assert v2.needed(lim) == ["memory", "cpu", "pids"]
    # runc's shares <-> weight conversion at the ends of the ranges
    assert cgroups.shares_to_weight(2) == 1 and cgroups.shares_to_weight(262144) == 10000
    assert cgroups.shares_to_weight(1024) == 39
    assert cgroups.weight_to_shares(1) == 2 and cgroups.weight_to_shares(10000) == 262144


def _cgroup2_mount() -> str:
    for line in open("/proc/self/mountinfo"):
        left, _, right = line.partition(" - ")
        if right.split()[0] == "cgroup2":
            return left.split()[4]
    pytest.skip("no cgroup2 mount on this host")


def test_v2_backend_writes_real_cgroup2_files(root):
    mount = _cgroup2_mount()
    v2 = cgroups.V2(mount)
    sleeper = subprocess.Popen(["sleep", "30"])
    dirs = v2.create(v2.leaf_dirs(f"cvbench-test-{os.getpid()}"), cgroups.Limits())
    try:
        assert dirs == [os.path.join(mount, "cvbench", f"cvbench-test-{os.getpid()}")]
        v2.add(dirs, sleeper.pid)
        assert v2.pids(dirs) == {sleeper.pid}
        assert f"0::/cvbench/cvbench-test-{os.getpid()}" in open(f"/proc/{sleeper.pid}/cgroup").read()
    finally:
        sleeper.kill()
        sleeper.wait()
        v2.remove(dirs)
    assert not os.path.exists(dirs[0])


def test_v2_limits_need_their_controllers(root):
    v2 = cgroups.V2(_cgroup2_mount())
    missing = {"memory", "pids", "cpu"} - v2.available()
    if not missing:
        pytest.skip(f"cgroup2 at {v2.mount} has memory, cpu and pids: nothing is missing to test")
    with pytest.raises(EnvError, match="lacks the"):
        v2.create(v2.leaf_dirs(f"cvbench-test-{os.getpid()}"), cgroups.Limits(
            memory_bytes=MiB if "memory" in missing else None,
            pids_max=8 if "pids" in missing else None,
            cpu_weight=10 if "cpu" in missing else None))


def test_v2_enforcement(root, image):
    if cgroups.version() != "v2":
        v2 = cgroups.V2(_cgroup2_mount())
        pytest.skip(f"cgroup {cgroups.version()}: the cgroup2 mount {v2.mount} offers only "
                    f"{sorted(v2.available()) or 'no controllers'}; memory/cpu/pids are v1 here "
                    "and the tests above enforce them through the v1 backend")
    iso = Isolation.only("cgroup").replace(memory_bytes=32 * MiB)
    with spawn(image.bundle, ["/probe", "mem", "96"], iso) as c:
        assert c.wait(timeout=30) == 137


def test_device_allow_list_from_the_bundle(root, image):
    """The bundle denies all devices but the OCI defaults: a node made for
    /dev/mem (c 1:1) cannot be opened, /dev/null can (v1 devices controller)."""
    script = "mknod /dev/cvbmem c 1 1 && head -c1 /dev/cvbmem; echo rc=$?; echo hi > /dev/null && echo null-ok"
    with spawn(image.bundle, ["/bin/sh", "-c", "exec 2>&1; " + script], Isolation.full().without("caps")) as c:
        out = c.stdout.read().decode()
        devices = [d for d in c.cgroup_dirs() if "/devices/" in d][0]
        rules = open(f"{devices}/devices.list").read().split("\n")
    assert "Operation not permitted" in out and "rc=1" in out and "null-ok" in out, out
    assert "c 1:3 rwm" in rules and "a *:* rwm" not in rules


def test_container_through_the_v2_backend(root, image, monkeypatch):
    """A whole container start/delete through the V2 backend on the host's
    real cgroup2 mount (no limits: a hybrid host gives v2 no memory/cpu/pids)."""
    v2 = cgroups.V2(_cgroup2_mount())
    monkeypatch.setattr(cgroups, "_backend", v2)
    with spawn(image.bundle, ["/probe", "sleep", "-1"], Isolation.only("cgroup")) as c:
        assert c.stdout.readline() == b"CVB READY\n"
        assert c.cgroup_dirs() == [os.path.join(v2.mount, "cvbench", c.id)]
        assert f"0::/cvbench/{c.id}\n" in open(f"/proc/{c.pid}/cgroup").read()
        assert c.host_pids() == [c.pid]
    assert not os.path.exists(os.path.join(v2.mount, "cvbench", c.id))


def test_device_rules_through_the_v2_backend(root, image, monkeypatch):
    """On cgroup v2 the bundle's device rules become an eBPF program attached
    to the container's cgroup: /dev/null opens, a node for /dev/mem (c 1:1)
    does not.  Run on the host's real cgroup2 mount (no v1 devices controller
    is involved: the container is only in the v2 cgroup)."""
    v2 = cgroups.V2(_cgroup2_mount())
    monkeypatch.setattr(cgroups, "_backend", v2)
    script = ("mknod /dev/cvbmem c 1 1 && echo made && head -c1 /dev/cvbmem; echo rc=$?; "
              "echo hi > /dev/null && echo null-ok")
    with spawn(image.bundle, ["/bin/sh", "-c", "exec 2>&1; " + script], Isolation.full().without("caps")) as c:
        out = c.stdout.read().decode()
        assert c.cgroup_dirs() == [os.path.join(v2.mount, "cvbench", c.id)]
    assert out.startswith("made\n") and "/dev/cvbmem: Operation not permitted" in out, out
    assert "rc=1" in out and "null-ok" in out, out
