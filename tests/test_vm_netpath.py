"""The network scenario's VM paths: a real guest (raw QEMU and libvirt) on a
cvbench tap moved into a cvbench netns, and a raw-QEMU guest whose NIC is
passt (user-mode) running in a cvbench netns; real probe traffic between the
host-side server and the guest's client, an MTU change, and a SIGKILLed owner
whose netns, passt and socket folder the sweep removes.  libvirt's passt
backend: the row's reason comes from libvirt itself."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import usable
from scenario_run import ROOT

from bench import image, netpath, netpath_passt, netpath_slirp, netpath_vm
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
import sys
from bench import image, netpath
from common.probe import net_result
kind = netpath.kind(sys.argv[1])
p = kind.factory(netpath.PathEnv(netpath.pick_range(), image.load().probe), "qemu")
srv = p.start_server(["probe", "net", "serve", "tcp", str(netpath.PORT)], "net_serve")
print("UP", flush=True)
p.run_client(["probe", "net", "client", "tcp_stream", p.server_addr, str(netpath.PORT), "--ms", "60000",
              "--size", "65536"], 120)
"""


def _tagged(pid: int) -> list[str]:
    """comm of the processes tagged CVBENCH_OWNER=pid (server probes, passt)."""
    found = []
    for e in os.scandir("/proc"):
        if e.name.isdigit():
            try:
                if f"CVBENCH_OWNER={pid}".encode() in open(f"/proc/{e.name}/environ", "rb").read().split(b"\0"):
                    found.append(open(f"/proc/{e.name}/comm").read().strip())
            except OSError:
                pass
    return found


def _passt_dirs(pid: int) -> list[str]:
    from common.paths import state_dir
    return [d for d in os.listdir(state_dir()) if d.startswith(f"cvbench-passt-{pid}-")]


@pytest.mark.parametrize("path", ["tap-virtio", "user-mode"])
def test_kill_mid_stream_then_sweep(path):
    usable("qemu")
    why = netpath.kind(path).why_not("qemu")
    if why:
        pytest.skip(why)
    from vm_backend.sweep import qemu_processes
    p = subprocess.Popen([sys.executable, "-c", KILLED, path], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(ROOT)), text=True)
    try:
        line = p.stdout.readline().split()
        assert line[:1] == ["UP"], p.stderr.read()[-800:] if p.poll() is not None else "no UP"
        time.sleep(1.5)     # mid-stream
        assert _netns(p.pid), "no netns to leave behind"
        if path == "user-mode":
            assert any(c.startswith("passt") for c in _tagged(p.pid)) and _passt_dirs(p.pid), "no passt to leave behind"
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
    # the server probe in the netns and passt (CVBENCH_OWNER) are gone too, and passt's socket folder
    end = time.monotonic() + 5
    while _tagged(p.pid) and time.monotonic() < end:
        time.sleep(0.1)
    assert not _tagged(p.pid) and not _passt_dirs(p.pid)


def test_passt_carries_traffic():
    """The raw-QEMU user-mode column: passt in a cvbench netns, the guest's
    client dialing passt's gateway (mapped to that netns's loopback)."""
    usable("qemu")
    why = netpath_slirp.USER_MODE.why_not("qemu")
    if why:
        pytest.skip(why)
    env = netpath.PathEnv(netpath.pick_range(), image.load().probe)
    p = netpath_slirp.USER_MODE.factory(env, "qemu")
    try:
        assert isinstance(p, netpath_passt.PasstPath) and any(c.startswith("passt") for c in _tagged(os.getpid()))
        host = subprocess.run(["ip", "-4", "-j", "addr"], capture_output=True, text=True).stdout
        assert p.server_addr not in host
        port = netpath.PORT
        srv = [p.start_server(["probe", "net", "serve", proto, str(port)], "net_serve") for proto in ("tcp", "udp")]
        try:
            for op in ("tcp_rr", "udp_rr"):
                rr = netpath.probe_client(p, op, port, 300, 64, 60)
                assert int(rr["n"]) > 0 and rr["client_cpu_s"] > 0, rr
            p0 = p.extra_cpu_s()
            p.set_mtu(netpath_passt.PASST_MAX_MTU)
            assert p.mtu() == netpath_passt.PASST_MAX_MTU
            st = netpath.probe_client(p, "tcp_stream", port, 300, 1, 60)
            assert int(st["bytes"]) > 0 and p.extra_cpu_s() > p0, st   # passt's CPU is counted
        finally:
            for s in srv:
                s.stop()
        with pytest.raises(Exception, match="outside"):
            p.set_mtu(netpath_passt.PASST_MAX_MTU + 1)
    finally:
        p.close()
    assert not _netns(os.getpid()) and not _links(os.getpid())
    assert not _tagged(os.getpid()) and not _passt_dirs(os.getpid())


def test_libvirt_passt_row_is_libvirts_own_answer():
    """The libvirt user-mode row's reason comes from asking libvirt (a
    parse-only define), and the check leaves no domain behind."""
    usable("libvirt")
    from vm_backend.conn import domain_names
    netpath_passt.libvirt_why_not.cache_clear()
    why = netpath_slirp.USER_MODE.why_not("libvirt")
    assert why and "passt" in why, why
    assert not [n for n in domain_names("qemu:///system") if f"passtcheck-{os.getpid()}-" in n]


def test_passt_nic_xml_and_qemu_args():
    """A passt NIC: libvirt's <interface type='user'><backend type='passt'/>
    with the guest address, and raw QEMU's -netdev stream on passt's socket."""
    from vm_backend.iodev import GuestIO, Nic, domain_devices_xml, qemu_args
    io = GuestIO(nics=[Nic("", "52:54:cb:00:00:70", backend="passt", socket="/run/x/passt.sock",
                           ip="198.51.100.2/30")])
    xml = domain_devices_xml(io)
    assert "<interface type='user'><backend type='passt'/>" in xml
    assert 'address="198.51.100.2" prefix="30"' in xml and "<target" not in xml
    args = qemu_args(io, 128, microvm=False)
    assert "stream,id=cvbnet0,server=off,addr.type=unix,addr.path=/run/x/passt.sock" in args
    assert "virtio-net-pci,netdev=cvbnet0,mac=52:54:cb:00:00:70" in args
    with pytest.raises(ValueError, match="tap' or 'passt"):
        Nic("x", "52:54:cb:00:00:71", backend="slirp")
