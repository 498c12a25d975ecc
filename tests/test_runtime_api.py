"""The library API the harness codes against (runtime/ contract): Isolation
presets, spawn/Container semantics and timestamps, and a light import."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from common.errors import CvbError
from common.paths import ROOT
from runtime import Container, Isolation, cgroup_version, spawn
from runtime.spec import default_spec


def test_ladder_presets():
    assert Isolation.MECHANISMS == ["pidns", "mountns", "utsns", "ipcns", "netns", "userns", "cgroupns",
                                    "timens", "pivot_root", "cgroup", "caps", "no_new_privs", "seccomp",
                                    "veth"]
    assert Isolation.bare() == Isolation() == Isolation.cumulative(0)
    assert Isolation.bare().enabled() == []
    for m in Isolation.MECHANISMS:
        on = Isolation.only(m).enabled()
        assert m in on and len(on) <= 2, on  # itself, plus at most what it needs
    assert Isolation.only("pivot_root").enabled() == ["mountns", "pivot_root"]
    assert Isolation.only("veth").enabled() == ["netns", "veth"]
    top = Isolation.cumulative(len(Isolation.MECHANISMS))
    assert top.enabled() == Isolation.MECHANISMS
    full = Isolation.full()
    assert full.follow_bundle and full.cgroup and full.caps and full.no_new_privs and full.seccomp
    for bad in (lambda: Isolation.only("wings"), lambda: Isolation.cumulative(99),
                lambda: Isolation(network="wifi"), lambda: Isolation(memory_bytes=-1)):
        with pytest.raises(CvbError):
            bad()


def test_spawn_full_probe_ready_and_timestamps(root, image):
    t0 = time.perf_counter_ns()
    c = spawn(image.bundle, ["/probe", "ready"], Isolation.full())
    with c:
        assert isinstance(c, Container) and c.id.startswith("cvbench-") and c.pid > 0
        assert t0 < c.t_spawn_ns and c.t_gone_ns is None
        assert c.stdout.readline() == b"CVB READY\n"
        t_ready = time.perf_counter_ns()
        assert c.stdout.readline() == b"CVB DONE rc=0\n"
        assert c.wait(timeout=10) == 0
        assert c.wait() == 0  # cached
        assert c.cgroup_dirs() and all(os.path.isdir(d) for d in c.cgroup_dirs())
    assert c.t_gone_ns is not None and c.t_gone_ns > t_ready > c.t_spawn_ns
    c.delete()  # idempotent
    assert not any(os.path.exists(d) for d in c.cgroup_dirs())


def test_spawn_defaults_config_args_and_full(root, image):
    with spawn(image.bundle) as c:  # args from config.json, iso full()
        assert c.stdout.read() == b"CVB READY\nCVB DONE rc=0\n"
        assert c.cgroup_dirs()


def test_bare_is_a_plain_child(root, image):
    with spawn(image.bundle, ["/probe", "sleep", "-1"], Isolation.bare()) as c:
        assert c.stdout.readline() == b"CVB READY\n"
        assert os.readlink(f"/proc/{c.pid}/ns/pid") == os.readlink("/proc/self/ns/pid")
        assert open(f"/proc/{c.pid}/stat").read().split()[3] == str(os.getpid())
        assert c.host_pids() == [c.pid] and c.cgroup_dirs() == []
        os.kill(c.pid, 0)


def test_kill_wait_and_status(root, image):
    with spawn(image.bundle, ["/probe", "sleep", "-1"], Isolation.full()) as c:
        assert c.stdout.readline() == b"CVB READY\n"
        assert c.stdout.readline().startswith(b"CVB sleeping")  # its SIGTERM handler is in place
        with pytest.raises(TimeoutError):
            c.wait(timeout=0.05)
        assert c.pid in c.host_pids()
        c.kill()  # SIGTERM: the probe exits 143 by itself
        assert c.wait(timeout=10) == 143
    with spawn(image.bundle, ["/probe", "sleep", "-1"], Isolation.full()) as c:
        c.kill(signal.SIGKILL)
        assert c.wait(timeout=10) == 137
        c.kill()  # after exit: no error, no stray signal


def test_stdout_to_a_file_and_names(root, image, tmp_path):
    name = f"cvbench-api-{os.getpid()}"
    with open(tmp_path / "out", "wb") as f, spawn(image.bundle, ["/probe", "ready"], Isolation.bare(),
                                                   name=name, stdout=f) as c:
        assert c.id == name and c.stdout is None
        assert c.wait(timeout=10) == 0
    assert (tmp_path / "out").read_bytes() == b"CVB READY\nCVB DONE rc=0\n"
    with spawn(image.bundle, ["/probe", "sleep", "-1"], Isolation.bare(), name=name):
        with pytest.raises(CvbError, match="already exists"):
            spawn(image.bundle, ["/probe", "ready"], Isolation.bare(), name=name)
    with pytest.raises(CvbError, match="not valid"):
        spawn(image.bundle, ["/probe"], name="../x")
    with pytest.raises(CvbError, match="not found as an executable"):
        spawn(image.bundle, ["/nope"])


def test_host_pids_cover_the_whole_container(root, image):
    with spawn(image.bundle, ["/bin/sh", "-c", "sleep 5 & sleep 5 & echo up; wait"], Isolation.full()) as c:
        assert c.stdout.readline() == b"up\n"
        pids = c.host_pids()
        assert c.pid in pids and len(pids) == 3


def test_time_namespace_offsets_from_config(root, image, tmp_path):
    cfg = default_spec(["/bin/cat", "/proc/uptime"], root=image.rootfs)
    cfg["linux"]["namespaces"].append({"type": "time"})
    cfg["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 365, "nanosecs": 0}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with spawn(tmp_path) as c:
        inside = float(c.stdout.read().split()[0])
    host = float(open("/proc/uptime").read().split()[0])
    assert inside - host > 86400 * 365 - 60


def test_readonly_root_and_masked_paths_from_config(root, image, tmp_path):
    cfg = default_spec(["/bin/sh", "-c", "cat /etc/hostname; cat /etc/passwd | wc -c; touch /x || echo ro"],
                       root=image.rootfs)
    cfg["linux"]["maskedPaths"].append("/etc/passwd")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with spawn(tmp_path) as c:
        out = c.stdout.read().decode().split()
    assert out == ["cvbench", "0", "ro"]


def test_cgroup_version_matches_the_mount_table():
    fs = {line.split()[2] for line in open("/proc/mounts")}
    expected = "hybrid" if {"cgroup", "cgroup2"} <= fs else "v2" if "cgroup2" in fs else "v1"
    assert cgroup_version() == expected


def test_import_stays_light():
    code = ("import sys; from runtime import Isolation, spawn, sweep, Container, cgroup_version; "
            "print(sorted(m for m in ('pyroute2', 'pyseccomp', 'pandas', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
