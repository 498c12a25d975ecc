"""Real guests (TCG here): boot, markers, timing points, memory, timeout, leaks."""
from __future__ import annotations

import json
import os
import time

import pytest

from vm_backend import LibvirtVM, QemuVM, VMError, detect_accel, sweep
from vm_backend.accel import host_hints
from vm_backend.cgroup import memory_root
from vm_backend.conn import domain_names
from vm_backend.sweep import qemu_processes

pytestmark = [pytest.mark.vm, pytest.mark.slow]


def _assert_gone(vm) -> None:
    assert vm.name not in domain_names("qemu:///system")
    assert vm.name not in {n for _, n in qemu_processes()}
    assert not os.path.exists(vm.console.path)
    root = memory_root()
    assert root is None or not (root / vm.name).exists()     # raw QEMU's own memory cgroup


@pytest.fixture(scope="module")
def accel(image, root):
    """The detected accelerator (cached on disk per kernel and boot)."""
    return detect_accel(image.kernel, image.initramfs)


@pytest.mark.parametrize("cls", [LibvirtVM, QemuVM])
def test_guest_boots_reports_ops_and_is_gone(image, accel, cls):
    vm = cls(image.kernel, image.initramfs, ["ops", "--iters", "2000", "getppid", "read_zero"],
             accel=accel, timeout=90)
    r = vm.run()
    assert r.probe.ready and r.probe.rc == 0, r.console
    assert [o.op for o in r.probe.ops] == ["getppid", "read_zero"]
    assert all(o.iters == 2000 and o.ns_per_op > 0 for o in r.probe.ops)
    assert r.t_spawn_ns < r.created_ns < r.ready_ns <= r.done_ns < r.gone_ns
    assert 0 < r.ready_s < r.done_s < r.gone_s
    assert r.accel == accel.name and r.accel_reason == accel.reason
    assert r.backend == vm.backend and "CVB READY" in r.console
    _assert_gone(vm)
    md = vm.metadata()
    assert md["accel"] == accel.name and md["qemu"] and " -- ops --iters 2000" in md["cmdline"]


def test_hung_guest_is_destroyed_at_timeout_with_console_tail(image, accel):
    vm = LibvirtVM(image.kernel, image.initramfs, ["sleep", "-1"], accel=accel, timeout=15)
    t0 = time.monotonic()
    with pytest.raises(VMError) as e:
        vm.run()
    assert time.monotonic() - t0 < 15 + 10
    assert "CVB DONE" in e.value.why and "timeout" in e.value.why
    assert "CVB sleeping s=-1" in e.value.console_tail      # the console's last lines
    assert e.value.status == 1
    _assert_gone(vm)


@pytest.mark.parametrize("cls", [LibvirtVM, QemuVM])
def test_running_guest_memory_split(image, accel, cls):
    with cls(image.kernel, image.initramfs, ["mem", "48", "-1"], accel=accel, timeout=90) as vm:
        vm.start()
        assert vm.result.ready_s > 0 and vm.result.done_ns is None
        assert vm.wait_value("mem_touched_mib") == "48"
        m = vm.memory()
        assert m["guest_ram_exact"], m
        assert m["guest_ram_size"] == 128 << 20
        # The guest touched 48 MiB (plus its kernel and initramfs): all in guest RAM.
        assert 48 << 20 < m["guest_ram"] <= 128 << 20
        assert m["vmm_overhead"] > 0 and m["pss_total"] == m["guest_ram"] + m["vmm_overhead"]
        assert 0 <= m["guest_ram_thp"] <= m["guest_ram"]
        assert vm.host_pids() == m["pids"]
        if cls is LibvirtVM:
            assert m["libvirt"].get("rss", 0) > 0
    _assert_gone(vm)


def test_twenty_boots_leave_nothing(image, accel):
    before = {n for n in domain_names("qemu:///system") if n.startswith("cvbench-")}
    names = []
    for i in range(20):
        # Both backends, alternating: each must leave nothing, and raw QEMU
        # boots (no libvirt teardown) keep this inside the CI time budget.
        cls = LibvirtVM if i % 2 == 0 else QemuVM
        vm = cls(image.kernel, image.initramfs, ["ready"], accel=accel, timeout=90)
        r = vm.run()
        assert r.probe.rc == 0 and r.gone_ns
        names.append(vm.name)
    assert not set(names) & domain_names("qemu:///system")
    assert not set(names) & {n for _, n in qemu_processes()}
    assert not [p for p in os.listdir("/run/cvbench/vm") if any(p.startswith(n) for n in names)]
    # Other engineers' guests may come and go meanwhile; ours must not be among them.
    assert not (({n for n in domain_names("qemu:///system") if n.startswith("cvbench-")} - before) & set(names))
    removed = sweep()       # once: a second call would see what the first already removed
    assert not [w for w in removed if str(os.getpid()) in w], removed


def test_detection_says_why(image, accel):
    assert accel.name in ("kvm", "tcg") and accel.reason
    if accel.name == "tcg" and os.path.exists("/sys/module/kvm_pvm"):
        assert "PVM host" in accel.reason and host_hints() in accel.reason


def test_kvm_guest_boots_where_kvm_works(image, accel):
    if accel.name != "kvm":
        pytest.skip(f"no working KVM here: {accel.reason}")
    r = LibvirtVM(image.kernel, image.initramfs, ["ops", "cpuid"], accel="kvm", timeout=30).run()
    assert r.probe.rc == 0 and r.probe.ns_per_op("cpuid")


def test_stream_console_as_used_for_remote_hosts(image, accel):
    """qemu:///system already goes through libvirt's remote driver (a unix socket
    to libvirtd), so this is the path a qemu+ssh:// URI takes, minus ssh."""
    vm = LibvirtVM(image.kernel, image.initramfs, ["ops", "--iters", "1000", "getppid"], accel=accel,
                   console="stream", timeout=90)
    r = vm.run()
    assert r.probe.rc == 0 and r.probe.ns_per_op("getppid")
    assert r.t_spawn_ns < r.created_ns < r.ready_ns <= r.done_ns < r.gone_ns
    assert "<serial type='pty'>" in vm.xml
    _assert_gone(vm)


def _options(argv: list[str]) -> dict[str, list[str]]:
    opts: dict[str, list[str]] = {}
    for flag, val in zip(argv, argv[1:], strict=False):
        if flag.startswith("-") and not val.startswith("-"):
            opts.setdefault(flag, []).append(val)
    return opts


def test_raw_qemu_runs_what_libvirt_runs(image, accel):
    """Backend qemu boots the QEMU configuration libvirt derives from our domain
    XML (read back from the running libvirt guest), minus libvirt's management."""
    from vm_backend.qemu_vm import machines, qemu_binary
    argvs = {}
    for cls in (LibvirtVM, QemuVM):
        with cls(image.kernel, image.initramfs, ["sleep", "-1"], accel=accel, timeout=90) as vm:
            vm.start()
            with open(f"/proc/{vm.host_pids()[0]}/cmdline", "rb") as f:
                argvs[cls] = _options([a.decode() for a in f.read().split(b"\0")])
    lv, raw = argvs[LibvirtVM], argvs[QemuVM]
    resolved = machines(qemu_binary())
    lv_machine = [p for p in lv["-machine"][0].split(",") if not p.startswith("memory-backend=")]
    raw_machine = raw["-machine"][0].split(",")
    assert resolved[raw_machine[0]] == lv_machine[0] and raw_machine[1:] == lv_machine[1:]
    for flag in ("-accel", "-cpu", "-m", "-smp", "-rtc", "-global", "-boot", "-sandbox", "-append",
                 "-kernel", "-initrd", "-overcommit", "-msg"):
        assert raw.get(flag) == lv.get(flag), flag
    assert [d.split(",")[0] for d in raw["-device"]] == \
        [json.loads(d)["driver"] for d in lv["-device"]]


def test_interleaved_boots_give_medians_and_the_libvirt_ratio(image, accel):
    from bench.backends.vm import paired
    res = paired(["qemu", "libvirt"], rounds=1, timeout=90)
    assert res["rounds"] == 1 and set(res["median_s"]) == {"qemu", "libvirt"}
    for n in ("qemu", "libvirt"):
        m = res["median_s"][n]
        assert 0 < m["ready"] < m["lifecycle"]
    r = res["libvirt_over_qemu"]
    assert r["ready"] == res["median_s"]["libvirt"]["ready"] / res["median_s"]["qemu"]["ready"]
