"""Soak (opt-in, minutes): 1,000 `python -m runtime run` cycles, one in ten
SIGKILLed at a random moment (before, during or after the start), every
fourth with a veth (the Python child), every fourth with the ladder's cheap
rungs and the other half the default bundle (both through the C stage,
runtime/stage: the latter with its mounts, pivot_root and seccomp), then
one `runtime sweep` must leave no cgroup, mount, netns, veth, state file or
process of these runs.

    CVBENCH_SOAK=1 .venv/bin/python -m pytest tests/test_runtime_soak.py -s
    CVBENCH_SOAK_CYCLES=200 ...   (fewer cycles)

Not part of `make test`: it takes minutes.  It prints how long it took.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from common.paths import ROOT
from tests.test_runtime_leaks import leftovers

pytestmark = pytest.mark.skipif(os.environ.get("CVBENCH_SOAK") != "1",
                                reason="opt-in soak: set CVBENCH_SOAK=1 (takes minutes)")


def _veths(tag: str) -> list[str]:
    """veth ends on the host or in any cvbench netns that name these runs."""
    return [n for n in os.listdir("/sys/class/net") if tag in n]


def test_soak_run_kill_sweep(root, image):
    cycles = int(os.environ.get("CVBENCH_SOAK_CYCLES", "1000"))
    tag = f"cvbench-soak{os.getpid()}"
    rng = random.Random(os.getpid())
    netns_before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    killed = failed = 0
    t0 = time.monotonic()
    for i in range(cycles):
        cmd = [sys.executable, "-m", "runtime", "run", "-b", image.bundle, f"{tag}-{i}"]
        if i % 4 == 0:
            cmd += ["--network", "veth"]
        elif i % 4 == 2:  # the C stage's path (runtime/stage): namespaces, cgroup, caps, seccomp
            cmd += ["--isolation", "cum:5", "--network", "loopback", "--with", "cgroup", "--with", "caps",
                    "--with", "seccomp"]
        cmd += ["--", "/bin/sh", "-c", "echo up; sleep 0.02"]
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if i % 10 == 0:
            time.sleep(rng.uniform(0, 0.4))
            p.send_signal(signal.SIGKILL)
            killed += 1
            p.wait()
        else:
            _, err = p.communicate(timeout=60)
            if p.returncode != 0:
                failed += 1
                print(f"cycle {i}: exit {p.returncode}: {err.decode()[-300:]}")
    t_runs = time.monotonic() - t0
    time.sleep(0.5)  # the killed runtimes' containers die with them (PDEATHSIG)
    sw = subprocess.run([sys.executable, "-m", "runtime", "sweep"], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
    t_all = time.monotonic() - t0
    removed = [line for line in sw.stdout.splitlines() if tag in line]
    netns_after = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    left = leftovers(tag) + _veths(tag)
    new_netns = sorted(n for n in netns_after - netns_before if n.startswith("cvbench-rt-"))
    print(f"\nsoak: {cycles} cycles ({killed} SIGKILLed, {failed} failed) in {t_runs:.1f} s, "
          f"sweep done at {t_all:.1f} s; sweep removed {len(removed)} objects of these runs; "
          f"left: {left + new_netns or 'nothing'}")
    assert sw.returncode == 0, sw.stderr
    assert failed == 0
    assert left == [], left
    # a netns another cvbench process owns may appear meanwhile; ours carry no tag,
    # so any new cvbench-rt netns must belong to a live owner's state file
    from runtime import state
    owned = set()
    for cid in state.all_ids():
        rec = state.read(cid) or {}
        if rec.get("net"):
            owned.add(rec["net"].get("netns"))
    assert not [n for n in new_netns if n not in owned], new_netns
