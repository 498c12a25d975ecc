"""Backends, really exercised: each container backend runs the probe, reaches
READY, exits 0 and leaves nothing behind; a live instance's memory is read
from the host; a sweep removes a killed owner's container and only that."""
from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench import backends
from bench.backends import crun as crun_mod
from bench.backends import oci
from common import procs
from tests.conftest import usable

ROOT = Path(__file__).resolve().parent.parent
CONTAINERS = ["host", "builtin", "crun", "runc", "runsc"]


def leftovers() -> set[str]:
    """This test process's own containers, cgroups and bundles (concurrent runs
    of other processes are not ours to judge)."""
    def mine(name: str) -> bool:
        return oci.owner_pid(name) == os.getpid()
    found = set()
    for rt in ("crun", "runc", "runsc"):
        if backends.get(rt).path:
            found |= {f"{rt}:{c}" for c in backends.get(rt).list_ids() if mine(c)}
    found |= {d for d in glob.glob("/sys/fs/cgroup/*/cvbench-b*") if mine(Path(d).name)}
    found |= {d for d in glob.glob(str(oci.state_root("x").parent / "bundles" / "cvbench-b*"))
              if mine(Path(d).name)}
    return found


@pytest.mark.parametrize("name", CONTAINERS)
def test_run_times_ready_before_gone_and_cleans_up(root, image, name):
    b = usable(name)
    before = leftovers()
    t = b.run(["ops", "--iters", "1000", "getppid"], timeout=60)
    assert t.rc == 0, t.console
    assert t.probe.ready and t.probe.rc == 0
    assert 0 < t.ready_s < t.gone_s < 60
    assert t.probe.ns_per_op("getppid") and t.probe.ns_per_op("getppid")[0] > 0
    assert not before and not leftovers()


@pytest.mark.parametrize("name", ["host", "builtin", "builtin-cli", "runc"])
def test_live_instance_memory_sees_the_touched_64mib(root, image, name):
    b = usable(name)
    with b.start(["mem", "64", "-1"], timeout=60) as inst:
        pids = inst.host_pids()
        assert pids
        m = inst.memory()
    assert m["pss_total"] == m["workload"] + m["overhead"]
    assert m["workload"] >= 64 << 20           # the probe's own touched pages
    if name != "host":                          # containers: the memory cgroup charges the touch
        assert m["cgroup_charged"] >= 64 << 20, m
    assert m["pss_total"] < 200 << 20
    for p in pids:                                # stopped: every host process is gone
        assert not Path(f"/proc/{p}").exists() or Path(f"/proc/{p}/status").read_text().find("zombie") >= 0


def test_crun_hybrid_mask_only_where_needed():
    listed = Path(crun_mod.UNIFIED_CONTROLLERS)
    expect = crun_mod.hybrid_needs_mask()
    c = backends.get("crun")
    assert bool(c.popen_kw()) == expect       # the backend masks exactly when detection says so
    if expect:
        # the masked namespace really hides the controllers, and only inside it
        r = subprocess.run([*c._nsenter(), "cat", crun_mod.UNIFIED_CONTROLLERS], capture_output=True,
                           text=True, **c.popen_kw())
        assert r.returncode == 0 and r.stdout.strip() == "", r.stderr
        assert listed.read_text().split()


def test_failing_workload_is_reported_not_hidden(root, image):
    b = usable("runc")
    t = b.run(["ops", "no_such_op"], timeout=60)
    assert t.rc != 0  # the probe's own failure reaches the caller


@pytest.mark.parametrize("rt", ["runc", "runsc"])
def test_sweep_removes_a_killed_owners_container_but_not_a_live_one(root, image, rt):
    usable(rt)
    from bench import sweep
    # A separate owner process starts a long-lived runc container, then is SIGKILLed:
    # its container (and runc's foreground process) outlive it.
    code = textwrap.dedent("""
        import sys, time
        from bench import backends
        inst = backends.get(sys.argv[1]).start(["sleep", "-1"], timeout=60)
        print("UP", inst.proc.pid, flush=True)
        time.sleep(600)
    """)
    rtb = backends.get(rt)
    owner = subprocess.Popen([sys.executable, "-c", code, rt], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    live = rtb.start(["sleep", "-1"], timeout=60)
    try:
        word, fg = owner.stdout.readline().split()
        assert word == "UP"
        ids = [c for c in rtb.list_ids() if oci.owner_pid(c) == owner.pid]
        assert len(ids) == 1
        # the hardest case: the owner and the runtime's foreground process both SIGKILLed
        tree = procs.descendants(int(fg))
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        os.kill(int(fg), signal.SIGKILL)
        removed = sweep.sweep_all()
        assert any(ids[0] in r for r in removed), removed
        assert ids[0] not in rtb.list_ids()
        assert not glob.glob(f"{oci.state_root(rt)}/*{ids[0]}*")    # runsc's lock files too
        assert not glob.glob(f"/sys/fs/cgroup/*/{ids[0]}")
        end = time.monotonic() + 10
        while time.monotonic() < end and [p for p in tree if Path(f"/proc/{p}").exists()]:
            time.sleep(0.1)
        assert not [p for p in tree if Path(f"/proc/{p}/exe").exists()]   # sandbox/gofer/probe gone
        # the live instance (owner: this process) is untouched
        mine = [c for c in rtb.list_ids() if oci.owner_pid(c) == os.getpid()]
        assert mine and live.proc.poll() is None
    finally:
        live.stop()
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        sweep.sweep_all()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and [c for c in rtb.list_ids()
                                           if oci.owner_pid(c) in (os.getpid(), owner.pid)]:
        time.sleep(0.1)
    assert not [c for c in rtb.list_ids() if oci.owner_pid(c) in (os.getpid(), owner.pid)]


def test_runsc_platform_is_read_from_runsc(root):
    """The syscall chart names gVisor's platform: it must come from runsc itself."""
    b = usable("runsc")
    r = subprocess.run([b.path, "flags"], capture_output=True, text=True)
    out = r.stdout + r.stderr                  # runsc prints its flags on stderr
    name = b.metadata()["platform"].split()[0]
    assert f'(default "{name}")' in out
