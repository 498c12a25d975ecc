"""The network scenario's tap-virtio path: a real guest (raw QEMU and libvirt)
on a cvbench tap moved into a cvbench netns, real probe traffic between the
host-side server and the guest's client, an MTU change on both ends, and a
SIGKILLed owner whose netns the sweep removes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import usable
from scenario_run import ROOT

from bench import image, netpath, netpath_vm
from common.probe import net_result

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (netns, taps, libvirt)")


def _links(pid: int) -> list[str]:
    out = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout or "[]")
    return [ln["ifname"] for ln in out if ln["ifname"].startswith(f"cvbench{pid}")]


def _netns(pid: int) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.startswith(f"cvbench-n{pid}-")]


@pytest.mark.parametrize("backend", ["qemu", "libvirt"])
def test_tap_virtio_carries_traffic(backend):
    usable(backend)
    why = netpath_vm.KIND.why_not(backend)
    if why:
        pytest.skip(why)
    env = netpath.PathEnv(netpath.pick_range(), image.load().probe)
    p = netpath_vm.KIND.factory(env, backend)
    try:
        assert p.server_ns.startswith("cvbench-n") and p.tap.startswith("cvbench")
        # the tap lives in our netns only: the host's has no address of the range
        assert p.tap not in _links(os.getpid())
        host = subprocess.run(["ip", "-4", "-j", "addr"], capture_output=True, text=True).stdout
        assert p.server_addr not in host
        port = str(netpath.PORT)
        srv = p.start_server(["probe", "net", "serve", "tcp", port], "net_serve")
        try:
            rr = netpath.probe_client(p, "tcp_rr", int(port), 300, 64, 60)
            assert rr["op"] == "tcp_rr" and rr["client_cpu_s"] > 0, rr
            p.set_mtu(9000)
            assert p.mtu() == 9000
            out, cpu = p.run_client(["probe", "net", "client", "tcp_stream", p.server_addr, port,
                                     "--ms", "300", "--size", "65536"], 60)
            res = net_result(out)
            assert int(res["bytes"]) > 0 and cpu > 0, out
        finally:
            srv.stop()
        with pytest.raises(Exception, match="outside"):
            p.set_mtu(netpath_vm.TAP_MAX_MTU + 1)
    finally:
        p.close()
    assert not _netns(os.getpid()) and not _links(os.getpid())


KILLED = """
from bench import image, netpath, netpath_vm
from common.probe import net_result
p = netpath_vm.KIND.factory(netpath.PathEnv(netpath.pick_range(), image.load().probe), "qemu")
srv = p.start_server(["probe", "net", "serve", "tcp", str(netpath.PORT)], "net_serve")
print("UP", p.tap, flush=True)
p.run_client(["probe", "net", "client", "tcp_stream", p.server_addr, str(netpath.PORT), "--ms", "60000",
              "--size", "65536"], 120)
"""


def test_kill_mid_stream_then_sweep():
    usable("qemu")
    if netpath_vm.KIND.why_not("qemu"):
        pytest.skip(netpath_vm.KIND.why_not("qemu"))
    from vm_backend.sweep import qemu_processes
    p = subprocess.Popen([sys.executable, "-c", KILLED], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(ROOT)), text=True)
    try:
        line = p.stdout.readline().split()
        assert line[:1] == ["UP"], p.stderr.read()[-800:] if p.poll() is not None else "no UP"
        time.sleep(1.5)     # mid-stream
        assert _netns(p.pid), "no netns to leave behind"
    finally:
        p.kill()
        p.wait()
        p.stdout.close()
        p.stderr.close()
    end = time.monotonic() + 10
    while any(f"-{p.pid}-" in n for _, n in qemu_processes()) and time.monotonic() < end:
        time.sleep(0.1)
    assert not [n for _, n in qemu_processes() if f"-{p.pid}-" in n], "QEMU outlived its owner"
    from bench import sweep
    removed = sweep.sweep_all()
    assert any(f"cvbench-n{p.pid}-" in x for x in removed), removed
    assert not _netns(p.pid) and not _links(p.pid)
    # the server probe in the netns (CVBENCH_OWNER) is gone too
    left = subprocess.run(["pgrep", "-f", f"net serve tcp {netpath.PORT}"], capture_output=True, text=True)
    for pid in left.stdout.split():
        env = open(f"/proc/{pid}/environ", "rb").read()
        assert f"CVBENCH_OWNER={p.pid}".encode() not in env
