"""Nothing leaks: 200 run/delete cycles, runs killed with SIGKILL (owner
process and CLI, idle and mid-start), SIGINT, timeouts and failed starts
leave no cgroup, mount, netns, veth, process or state file once `sweep` ran.

Other cvbench processes may run concurrently on this machine, so every
check is about this test's own container ids (a unique tag)."""
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
from runtime import Isolation, cgroups, spawn, state, sweep
from runtime.spec import default_spec

pytestmark = pytest.mark.slow


def leftovers(tag: str, netns: set[str] = frozenset()) -> list[str]:
    """Every trace of containers whose id contains `tag` (or of these netns)."""
    found = []
    for root in cgroups.all_roots():
        for dirpath, dirnames, _ in os.walk(root):
            found += [f"cgroup {dirpath}/{d}" for d in dirnames if tag in d]
    with open("/proc/mounts") as f:
        found += [f"mount {line.split()[1]}" for line in f
                  if tag in line or any(n in line for n in netns)]
    if os.path.isdir("/run/netns"):
        found += [f"netns {n}" for n in os.listdir("/run/netns") if n in netns]
    if state.root().is_dir():
        found += [f"state file {n}" for n in os.listdir(state.root()) if tag in n]
    me = str(os.getpid())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                in_cgroup = tag in f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                # a child of a killed owner that never reached exec still
                # carries the owner's command line, tag included
                in_cmdline = tag.encode() in f.read()
            if (in_cgroup or in_cmdline) and pid != me and not _reaping(pid):
                found.append(f"process {pid}")
        except OSError:
            pass
    return found


def _reaping(pid: str) -> bool:
    """A zombie handed to pid 1 holds nothing but its pid until init reaps it
    (this machine's init does so lazily); it still names its cgroup2 path."""
    with open(f"/proc/{pid}/status") as f:
        st = dict(line.split(":\t", 1) for line in f if ":\t" in line)
    return st.get("State", "").startswith("Z") and st.get("PPid", "").strip() == "1"


def veth_names() -> set[str]:
    try:
        return {n for n in os.listdir("/run/netns") if n.startswith("cvbench-rt-")}
    except FileNotFoundError:
        return set()


def test_200_run_delete_cycles_leave_nothing(root, image):
    tag = f"cvbench-leak{os.getpid()}c"
    before = veth_names()
    ladder = ([Isolation.bare(), Isolation.full()]
              + [Isolation.only(m) for m in Isolation.MECHANISMS if m != "veth"]
              + [Isolation.cumulative(n) for n in range(1, len(Isolation.MECHANISMS))])
    for i in range(200):
        with spawn(image.bundle, ["/probe", "ready"], ladder[i % len(ladder)], name=f"{tag}-{i}") as c:
            assert c.stdout.readline() == b"CVB READY\n"
            assert c.wait(timeout=20) == 0
    for i in range(3):  # veth is slow (netlink, pyroute2): a few cycles
        with spawn(image.bundle, ["/probe", "ready"], Isolation.only("veth"), name=f"{tag}-v{i}") as c:
            assert c.wait(timeout=20) == 0
    assert leftovers(tag, veth_names() - before) == []


OWNER = r"""
import sys, time
from runtime import Isolation, spawn
tag, mode, bundle = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "idle":
    isos = [Isolation.full(), Isolation.only("veth"), Isolation.cumulative(len(Isolation.MECHANISMS)),
            Isolation.only("userns").replace(cgroup=True, pids_max=50)]
    cs = [spawn(bundle, ["/probe", "sleep", "-1"], iso, name=f"{tag}-{i}") for i, iso in enumerate(isos)]
    print(" ".join(str(c.pid) for c in cs), "|", " ".join(c._net.netns for c in cs if c._net), flush=True)
    time.sleep(120)
elif mode == "busy":
    # with and without the parent handshake (userns), long-lived containers
    isos = [Isolation.full(), Isolation.only("userns").replace(cgroup=True),
            Isolation.cumulative(8)]
    print("go", flush=True)
    i = 0
    while True:
        with spawn(bundle, ["/probe", "sleep", "-1"], isos[i % 3], name=f"{tag}-{i}") as c:
            pass
        i += 1
elif mode == "atexit":
    import os
    c = spawn(bundle, ["/probe", "sleep", "-1"], Isolation.full(), name=f"{tag}-0")
    child = os.fork()
    if child == 0:
        sys.exit(0)  # a forked copy exits normally: its atexit must not touch c
    os.waitpid(child, 0)
    print(c.pid, c.poll() is None, flush=True)
    # and we exit without deleting c: the runtime's atexit hook must
elif mode == "sigint":
    with spawn(bundle, ["/probe", "sleep", "-1"], Isolation.full(), name=f"{tag}-0") as c:
        print(c.pid, flush=True)
        time.sleep(120)
"""


def owner(tag: str, mode: str, bundle: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", OWNER, tag, mode, bundle], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)


def gone(pids, timeout=10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not any(os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z"
                   for p in pids):
            return True
        time.sleep(0.02)
    return False


def test_owner_killed_with_sigkill_then_sweep(root, image):
    tag = f"cvbench-leak{os.getpid()}k"
    p = owner(tag, "idle", image.bundle)
    try:
        pids_part, _, netns_part = p.stdout.readline().partition("|")
        pids, netns = [int(x) for x in pids_part.split()], set(netns_part.split())
        assert len(pids) == 4 and len(netns) == 2  # only(veth) and the top rung
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    assert gone(pids), "containers outlived their owner (PR_SET_PDEATHSIG)"
    left = leftovers(tag, netns)
    assert any(x.startswith("cgroup") for x in left) and any(x.startswith("state") for x in left)
    assert any(x.startswith("netns") for x in left), left  # so the sweep below has work to do
    removed = sweep()
    assert any(tag in r for r in removed)
    assert leftovers(tag, netns) == []


def test_owner_killed_mid_start_then_sweep(root, image):
    tag = f"cvbench-leak{os.getpid()}m"
    for delay in (0.05, 0.1, 0.15, 0.2, 0.3, 0.4):
        p = owner(tag, "busy", image.bundle)
        assert p.stdout.readline() == "go\n"
        time.sleep(delay)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        time.sleep(0.1)
        sweep()
        assert leftovers(tag) == []


def test_cli_run_killed_with_sigkill_then_sweep(root, image):
    cid = f"cvbench-leak{os.getpid()}r"
    p = subprocess.Popen([sys.executable, "-m", "runtime", "run", "-b", image.bundle, cid, "--",
                          "/probe", "sleep", "-1"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "CVB READY\n"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    r = subprocess.run([sys.executable, "-m", "runtime", "sweep"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and cid in r.stdout
    assert leftovers(cid) == []


def test_sweep_spares_a_live_container_whose_state_is_under_another_root(root, image, tmp_path):
    """A container started with --root elsewhere has no state file where the
    sweep looks; its live supervisor still claims its cgroup."""
    cid = f"cvbench-leak{os.getpid()}o"
    p = subprocess.Popen([sys.executable, "-m", "runtime", "--root", str(tmp_path), "run", "-b", image.bundle,
                          cid, "--", "/probe", "sleep", "-1"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "CVB READY\n"
        r = subprocess.run([sys.executable, "-m", "runtime", "sweep"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and cid not in r.stdout, r.stdout
        assert p.poll() is None, "the sweep killed a live container"
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
    assert leftovers(cid) == []


def test_sigint_to_the_owner_cleans_up_without_sweep(root, image):
    tag = f"cvbench-leak{os.getpid()}i"
    p = owner(tag, "sigint", image.bundle)
    pid = int(p.stdout.readline())
    os.kill(p.pid, signal.SIGINT)
    p.wait(timeout=20)
    assert gone([pid])
    assert leftovers(tag) == []


def test_forgotten_container_is_deleted_at_exit(root, image):
    tag = f"cvbench-leak{os.getpid()}a"
    p = owner(tag, "atexit", image.bundle)
    out, _ = p.communicate(timeout=30)
    pid, alive = out.split()
    assert alive == "True"  # the forked copy's exit left it running
    assert p.returncode == 0 and gone([int(pid)])
    assert leftovers(tag) == []


def test_timeout_and_failed_start_leave_nothing(root, image, tmp_path):
    tag = f"cvbench-leak{os.getpid()}t"
    with spawn(image.bundle, ["/probe", "sleep", "-1"], Isolation.full(), name=f"{tag}-0") as c:
        with pytest.raises(TimeoutError):
            c.wait(timeout=0.2)
    assert c.wait() == 137
    cfg = default_spec(["/probe", "ready"], root=image.rootfs)
    cfg["process"]["cwd"] = "/does/not/exist"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CvbError, match="does/not/exist"):
        spawn(tmp_path, iso=Isolation.full(), name=f"{tag}-1")
    assert leftovers(tag) == []
