"""The network paths with container endpoints, each brought up through the
registry, carrying real probe traffic, and torn down: the client as a
builtin, builtin-cli, crun or runc container joined by path to a cvbench netns
(veth), two containers on a cvbench bridge, a container behind slirp4netns
(user-mode) and runsc's netstack (gvisor).  Then a run SIGKILLed mid-stream
whose containers, slirp4netns, netns and parent cgroups the sweep removes."""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import need, usable
from scenario_run import ROOT

from bench import netpath, sweep
from common.paths import state_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
PORT = 47001


def _netns() -> set[str]:
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in r.stdout.splitlines() if line.split()}


def _mine(pid: int) -> dict[str, list[str]]:
    """What of owner ``pid`` is on the host: netns, parent cgroups, bundles, tagged processes."""
    procs = []
    for e in os.scandir("/proc"):
        if e.name.isdigit():
            try:
                env = open(f"/proc/{e.name}/environ", "rb").read().split(b"\0")
                if f"CVBENCH_OWNER={pid}".encode() in env:
                    procs.append(open(f"/proc/{e.name}/comm").read().strip())
            except OSError:
                pass
    return {"netns": sorted(n for n in _netns() if n.startswith(f"cvbench-n{pid}-")),
            "cgroups": glob.glob(f"/sys/fs/cgroup/*/cvbench-b{pid}-net*"),
            "bundles": glob.glob(str(state_dir() / "bench" / "bundles" / f"cvbench-b{pid}-*")),
            "procs": procs}


def _bring_up(name: str, backend: str, image):
    env = netpath.PathEnv(netpath.pick_range(), os.path.join(image.rootfs, "probe"), slot=f"{backend}-")
    kind = netpath.kind(name)
    assert not isinstance(kind, str), kind
    assert backend in kind.backends
    path = kind.factory(dataclasses.replace(env), backend)
    path.server_cpu, path.client_cpu = 1 % os.cpu_count(), 0
    return path


def _traffic(path) -> dict:
    """A TCP RR and a stream at the largest MTU through the path; the CPU the
    client side was charged (container cgroup) comes back with it."""
    srv = path.start_server(["probe", "net", "serve", "tcp", str(PORT)], "CVB net_serve")
    try:
        rr = netpath.probe_client(path, "tcp_rr", PORT, 300, 64, 60)
        path.set_mtu(path.max_mtu)
        s0 = srv.cpu_s()
        st = netpath.probe_client(path, "tcp_stream", PORT, 300, 1, 60)
        st["server_cpu_s"] = srv.cpu_s() - s0
    finally:
        srv.stop()
    assert int(rr["n"]) > 10 and int(rr["lost"]) == 0 and sum(c for _, c in rr["hist"]) == int(rr["n"])
    assert int(st["bytes"]) > 1e6 and st["bytes"] == st["sent"]
    assert rr["client_cpu_s"] > 0 and st["client_cpu_s"] > 0    # the container's cgroup was charged
    return st


@pytest.mark.parametrize("backend", ["builtin", "builtin-cli", "crun", "runc"])
def test_container_client_on_veth(root, image, backend):
    usable(backend)
    before = _mine(os.getpid())
    path = _bring_up("veth", backend, image)
    try:
        assert path.backend == backend and path.client_tools == frozenset({"probe"})
        # The server's address exists only in the server's netns and is routed
        # only from the client's: traffic at all means the container joined it.
        _traffic(path)
        spec = json.loads((path.client.bundle_dir / "config.json").read_text())
        assert {"type": "network", "path": f"/run/netns/{path.client_ns}"} in spec["linux"]["namespaces"]
        assert spec["linux"]["resources"]["cpu"]["cpus"] == "0"       # pinned like the host client
    finally:
        path.close()
    assert _mine(os.getpid()) == before                                # netns, cgroups, bundle gone


def test_bridge_between_two_containers(root, image):
    usable("crun")
    path = _bring_up("bridge", "crun", image)
    try:
        br = [n for n in path.namespaces if n.endswith("-br")][0]
        links = json.loads(subprocess.run(["ip", "-n", br, "-j", "-d", "link", "show"], capture_output=True,
                                          text=True, check=True).stdout)
        bridge = [link for link in links if (link.get("linkinfo") or {}).get("info_kind") == "bridge"]
        assert bridge and bridge[0]["ifname"].startswith("cvbench")
        st = _traffic(path)
        assert st["server_cpu_s"] > 0                                  # the server container's cgroup
    finally:
        path.close()
    assert not _mine(os.getpid())["netns"]


def test_user_mode_slirp4netns(root, image):
    need("slirp4netns")
    usable("crun")
    path = _bring_up("user-mode", "crun", image)
    try:
        slirp = path.slirp.pid
        assert path.max_mtu == 65521
        _traffic(path)                          # at the largest MTU: slirp4netns restarted with it
        assert path.slirp.pid != slirp
        ns = os.readlink(f"/proc/{path.slirp.pid}/ns/net")
        assert ns == f"net:[{os.stat(f'/run/netns/{path.server_ns}').st_ino}]"   # never the host's
    finally:
        path.close()
    assert "slirp4netns" not in _mine(os.getpid())["procs"]
    assert not _mine(os.getpid())["netns"]


def test_gvisor_netstack(root, image):
    usable("runsc")
    path = _bring_up("gvisor", "runsc", image)
    try:
        _traffic(path)
    finally:
        path.close()
    assert _mine(os.getpid()) == {"netns": [], "cgroups": [], "bundles": [], "procs": []}


@pytest.mark.parametrize("path,needle", [("/run/netns/cvbench-missing", "No such file"),
                                         ("/proc/self/ns/uts", "is not a net namespace")])
def test_runtime_rejects_a_bad_netns_path(root, image, tmp_path, path, needle):
    """The runtime checks a joined namespace's path as runc does: one line, exit 2."""
    from runtime.spec import default_spec
    cfg = default_spec(["/probe", "ready"], root=os.path.realpath(image.rootfs))
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "network"] + [
        {"type": "network", "path": path}]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    r = subprocess.run([sys.executable, "-m", "runtime", "run", "--bundle", str(tmp_path), "cvbench-netpath-t"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and needle in r.stderr and "linux.namespaces net path" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_killed_mid_stream_with_containers_is_swept(tmp_path):
    """SIGKILL a run while a crun container streams behind slirp4netns; the
    sweep then leaves nothing of it."""
    usable("crun")
    need("slirp4netns")
    p = subprocess.Popen([sys.executable, "-m", "bench", "run", "network", "--backends", "crun", "--quick",
                          "--out", str(tmp_path)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "CVBENCH_NET_PATHS": "user-mode"})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:   # slirp4netns up, servers up, a container client running
            m = _mine(p.pid)
            if "slirp4netns" in m["procs"] and m["cgroups"] and glob.glob(
                    f"/sys/fs/cgroup/cpuacct/cvbench-b{p.pid}-netc*/cvbench-b{p.pid}-*"):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the run never reached its container client: {_mine(p.pid)}")
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    left = _mine(p.pid)
    assert left["netns"] and left["cgroups"] and "slirp4netns" in left["procs"]   # the kill left them
    removed = sweep.sweep_all()
    assert any("cvbench-n" in x for x in removed), removed
    for _ in range(50):   # a killed process is gone a moment after SIGKILL
        if _mine(p.pid) == {"netns": [], "cgroups": [], "bundles": [], "procs": []}:
            break
        time.sleep(0.1)
    assert _mine(p.pid) == {"netns": [], "cgroups": [], "bundles": [], "procs": []}
    assert not list((tmp_path / "runs").glob("2*"))   # no half-written run folder


@pytest.mark.parametrize("runtime", ["builtin", "runc"])
def test_a_joined_netns_is_left_as_its_creator_made_it(root, image, tmp_path, runtime):
    """A netns handed over by path belongs to its creator: runc does not bring
    its ``lo`` up, and neither may our runtime (it does so only in a netns it made)."""
    from runtime.spec import default_spec
    ns = f"cvbench-n{os.getpid()}-lo"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        cfg = default_spec(["/probe", "ready"], root=os.path.realpath(image.rootfs))
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "network"] + [
            {"type": "network", "path": f"/run/netns/{ns}"}]
        (tmp_path / "config.json").write_text(json.dumps(cfg))
        cid = f"cvbench-lo-{os.getpid()}"
        argv = ([sys.executable, "-m", "runtime", "run", "--bundle", str(tmp_path), cid] if runtime == "builtin"
                else [need("runc"), "run", "--bundle", str(tmp_path), cid])
        r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        link = json.loads(subprocess.run(["ip", "-n", ns, "-j", "link", "show", "lo"], capture_output=True,
                                         text=True, check=True).stdout)[0]
        assert "UP" not in link["flags"], (runtime, link["flags"])
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
