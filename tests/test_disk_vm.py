"""The VM side of the disk scenario: the I/O initramfs (the startup one left
byte for byte as it was), the I/O devices in libvirt XML and QEMU arguments,
fio in real guests (raw QEMU: every profile on virtio-blk through the
scenario's own _one; libvirt: a virtio-fs job), and a guest SIGKILLed mid-job
whose leftovers the sweep removes."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import usable
from scenario_run import ROOT

from bench import cpio, disk, disk_fio, disk_vm, guest_io, image, kernel
from vm_backend import domain_xml
from vm_backend.iodev import Disk, GuestIO, Nic, Share, qemu_args

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (drop_caches, libvirt, taps)")
TINY = disk_fio.Window(0, 1, 8, 50)


@pytest.fixture
def state(tmp_path, monkeypatch):
    d = tmp_path / "disk-state"
    monkeypatch.setenv(disk.STATE_ENV, str(d))
    return d


def _img():
    img = image.load()
    if not img.kernel:
        pytest.skip("no guest kernel (make setup)")
    try:
        kernel.modules_dir(Path(img.kernel))
    except Exception as e:  # noqa: BLE001
        pytest.skip(str(e))
    return img


def test_io_initramfs_appends_to_the_startup_one():
    img = _img()
    base = Path(img.initramfs).read_bytes()
    io = guest_io.initramfs(img).read_bytes()
    assert io.startswith(base) and len(io) > len(base), "the I/O initramfs must be the image's plus a segment"
    seg = Path(str(guest_io.initramfs(img)) + ".seg")
    seg.write_bytes(io[len(base):])
    try:
        names = cpio.names(seg)
    finally:
        seg.unlink()
    assert names["init"] == guest_io.IO_INIT.encode()
    assert {"virtio_pci.ko", "virtio_blk.ko", "virtio_net.ko", "virtiofs.ko", "fuse.ko"} <= \
        {n.rsplit("/", 1)[1] for n in names if n.startswith(guest_io.MOD_DIR + "/")}
    # the startup guests still boot the image's own initramfs, untouched
    assert cpio.names(Path(img.initramfs))["init"] == image.INIT.encode()
    from bench import backends
    assert backends.get("qemu")._vm(["ready"], 5).initramfs == os.path.abspath(img.initramfs)


def test_module_load_order_puts_dependencies_first():
    img = _img()
    order = kernel.load_order(kernel.modules_dir(Path(img.kernel)), ["virtio_pci", "virtiofs", "virtio_net"])
    for mod, dep in (("virtio_pci", "virtio"), ("virtio", "virtio_ring"), ("virtiofs", "fuse"),
                     ("virtio_net", "net_failover"), ("net_failover", "failover")):
        assert order.index(dep) < order.index(mod), order
    assert len(order) == len(set(order))


def test_io_devices_in_xml_and_qemu_args():
    io = GuestIO(disks=[Disk("/x/root.ext4", readonly=True), Disk("/x/data.raw")],
                 shares=[Share("cvbdata", "/x/share", "/x/fs.sock")], nics=[Nic("cvbench1t", "52:54:cb:00:00:01")],
                 cmdline="cvbench.modules=virtio")
    spec = domain_xml.DomainSpec(name="cvbench-vm-1-abc", kernel="/k", initramfs="/i", args=["serve"], io=io)
    xml = domain_xml.build(spec)
    assert "<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>" in xml
    assert xml.count("cache=\"none\" io=\"native\"") == 2 and "<readonly/>" in xml
    assert "<driver type='virtiofs'/>" in xml and "<cache mode=\"none\"/>" in xml and "<thread_pool size='1'/>" in xml
    assert "<interface type='ethernet'>" in xml and "<target dev=\"cvbench1t\"" in xml
    plain = domain_xml.build(domain_xml.DomainSpec(name="cvbench-vm-1-abc", kernel="/k", initramfs="/i",
                                                   args=["ready"]))
    for dev in ("<disk", "<filesystem", "<interface", "memoryBacking"):
        assert dev not in plain, f"a startup guest got {dev}"
    pc = " ".join(qemu_args(io, 128, microvm=False))
    assert "virtio-blk-pci" in pc and "cache.direct=on" in pc and "aio=native" in pc
    assert "memory-backend-memfd,id=cvbmem,size=128M,share=on" in pc and "vhost-user-fs-pci" in pc
    assert "tap,id=cvbnet0,ifname=cvbench1t,script=no" in pc
    mvm = qemu_args(io, 128, microvm=True)
    assert "virtio-mmio.force-legacy=false" in mvm and any("virtio-blk-device" in a for a in mvm)
    # microvm's virtio-fs runs without event_idx (a lost notification hung fio there); pc keeps it
    assert any(a.startswith("vhost-user-fs-device,") and a.endswith(",event_idx=off") for a in mvm), mvm
    assert "event_idx" not in pc
    assert qemu_args(GuestIO(), 128, microvm=False) == [] and qemu_args(None, 128, microvm=True) == []


def test_raw_qemu_virtio_blk_every_profile(state):
    """The scenario's own _one on raw QEMU's virtio-blk: every fio job runs in
    the guest, the row is ok with its cache mode, and nothing is left behind."""
    b = usable("qemu")
    _img()
    from scenarios import disk as scenario
    layer = disk_fio.build_layer(image.load())
    backing = next(x for x in disk.backings_for(b) if x.name == "virtio-blk")
    rows = {"qemu/virtio-blk": {"status": "pending"}}
    out = scenario._one(None, b, backing, layer, TINY, 1, rows)
    assert rows["qemu/virtio-blk"]["status"] == "ok"
    assert "cache=none" in backing.cache and not backing.inflated
    got = {bm.get_name() for bm in out}
    for job in [s for secs in disk_fio.PROFILES.values() for s in secs]:
        assert f"disk.iops.qemu.virtio-blk:{job}" in got, job
        assert f"disk.clat_p99.qemu.virtio-blk:{job}" in got, job
    iops = next(bm for bm in out if bm.get_name() == "disk.iops.qemu.virtio-blk:fc-randread")
    assert iops.median() > 0
    assert not list(state.glob("cvbench-d*/qemu-virtio-blk")), "the backing's folder was not removed"
    assert not disk_vm.virtiofsd_pids(str(state))


def test_libvirt_virtio_fs_job(state):
    """A short fio job on libvirt's virtio-fs (libvirt starts virtiofsd), with
    host CPU of QEMU + virtiofsd; both gone after close()."""
    b = usable("libvirt")
    _img()
    layer = disk_fio.build_layer(image.load())
    backing = next(x for x in disk.backings_for(b) if x.name == "virtio-fs")
    assert backing.inflated, "virtio-fs reads go through the host page cache: it must be flagged"
    workdir = disk.run_dir() / "libvirt-virtio-fs"
    workdir.mkdir()
    runner = disk.runner_for(b, layer, workdir, TINY)
    try:
        env = TINY.env(disk_fio.DATA, True)
        runner.run(backing, env, "firecracker", "fc-randwrite", 90, create_only=True)
        assert disk_vm.virtiofsd_pids(str(workdir / "share")), "libvirt started no virtiofsd for the share"
        text, cpu = runner.run(backing, env, "firecracker", "fc-randwrite", 90)
        fig = disk_fio.parse(text, "fc-randwrite")
        assert fig["iops"] > 0 and fig["io_bytes"] > 0 and cpu > 0, (fig, cpu)
        assert (workdir / "share" / "cvbench-fc.dat").stat().st_size == TINY.size_mib * 2**20
        # the guest's watch: a run still going after 1 s prints what fio is blocked in,
        # kept apart from fio's JSON (which still parses)
        words = [f"{k}={v}" for k, v in env.items()]
        rc, out = runner.shell.run(words + disk_fio.argv("/usr/bin/fio", disk_fio.IN_ROOT_JOBS, "firecracker",
                                                         "fc-randwrite"), 90, watch=1)
        assert rc == 0 and disk_fio.parse(out, "fc-randwrite")["iops"] > 0
        assert any(" comm=fio State: " in h and " stack=" in h for h in runner.shell.hang), runner.shell.hang
        assert any(h.startswith("CVBIO hang irq=") and "virtio" in h for h in runner.shell.hang)
    finally:
        runner.close()
        disk.remove_run_dir(workdir)
    assert not disk_vm.virtiofsd_pids(str(workdir / "share"))


KILLED = """
import sys, time
from bench import backends, disk, disk_fio, image
b = backends.get("qemu")
layer = disk_fio.build_layer(image.load())
backing = [x for x in disk.backings_for(b) if x.name == "virtio-fs"][0]
win = disk_fio.Window(0, 60, 8, 50)
wd = disk.run_dir() / "qemu-virtio-fs"
wd.mkdir(parents=True)
r = disk.runner_for(b, layer, wd, win)
r.run(backing, win.env(disk_fio.DATA, True), "firecracker", "fc-randwrite", 120, create_only=True)
print("UP", flush=True)
r.run(backing, win.env(disk_fio.DATA, True), "firecracker", "fc-randwrite", 120)
"""


def test_kill_mid_job_then_sweep(state):
    """SIGKILL the owner while fio runs in a raw-QEMU guest on virtio-fs: QEMU
    and virtiofsd die with it, the run folder (raw files, share, socket) stays
    until a sweep, which removes it."""
    usable("qemu")
    _img()
    from vm_backend.sweep import qemu_processes
    err = state.parent / "killed.err"
    with open(err, "w") as ef:
        p = subprocess.Popen([sys.executable, "-c", KILLED], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=ef, env=dict(os.environ, PYTHONPATH=str(ROOT)), text=True)
    try:
        assert p.stdout.readline().strip() == "UP", f"the guest never came up: {err.read_text()[-800:]}"
        time.sleep(2)   # inside the 60 s job now
        mine = [pid for pid, name in qemu_processes() if f"-{p.pid}-" in name]
        share = next(state.glob(f"cvbench-d{p.pid}-*")) / "qemu-virtio-fs" / "share"
        assert mine and disk_vm.virtiofsd_pids(str(share)), "no guest or virtiofsd to kill"
    finally:
        p.kill()
        p.wait()
        p.stdout.close()
    end = time.monotonic() + 10
    while (any(f"-{p.pid}-" in n for _, n in qemu_processes()) or disk_vm.virtiofsd_pids(str(share))) \
            and time.monotonic() < end:
        time.sleep(0.1)
    assert not [n for _, n in qemu_processes() if f"-{p.pid}-" in n], "QEMU outlived its owner"
    assert not disk_vm.virtiofsd_pids(str(share)), "virtiofsd outlived its owner"
    assert list(state.glob(f"cvbench-d{p.pid}-*")), "the killed run left no folder: not killed mid-job"
    from bench import sweep
    removed = sweep.sweep_all()
    assert any(f"cvbench-d{p.pid}-" in x for x in removed), removed
    assert not list(state.glob(f"cvbench-d{p.pid}-*"))
    from vm_backend.console import socket_dir
    assert not list(socket_dir().glob(f"cvbench-*-{p.pid}-*")), "a console or virtiofsd socket was left"
