"""Nothing leaks: signals, a killed owner, sweeps of dead owners only, clear errors, the CLI."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from common.paths import ROOT
from vm_backend import LibvirtVM, VMError, sweep
from vm_backend.conn import domain_names, libvirt_module, open_conn
from vm_backend.domain_xml import DomainSpec, build
from vm_backend.sweep import qemu_processes

PY = sys.executable


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _wait(cond, limit=20.0) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return False


def _child(image, body: str) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import sys, time
        from vm_backend import LibvirtVM
        vm = LibvirtVM({image.kernel!r}, {image.initramfs!r}, ["sleep", "-1"], accel="tcg", timeout=90)
    """) + textwrap.dedent(body)
    return subprocess.Popen([PY, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)


@pytest.mark.vm
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_destroys_the_guest(image, root, sig):
    p = _child(image, """
        with vm:
            vm.start()
            print(vm.name, flush=True)
            time.sleep(600)
    """)
    name = p.stdout.readline().strip()
    assert name.startswith("cvbench-vm-"), "child did not boot"
    assert name in domain_names("qemu:///system")
    p.send_signal(sig)
    assert p.wait(timeout=40) != 0
    assert name not in domain_names("qemu:///system")
    assert name not in {n for _, n in qemu_processes()}
    assert not os.path.exists(f"/run/cvbench/vm/{name}.sock")


@pytest.mark.vm
@pytest.mark.slow
def test_sigkilled_owner_leaves_nothing(image, root):
    p = _child(image, """
        vm.start()
        print(vm.name, flush=True)
        time.sleep(600)
    """)
    name = p.stdout.readline().strip()
    assert name in domain_names("qemu:///system")
    p.kill()
    p.wait()
    # libvirtd destroys an AUTODESTROY domain when its creator's connection drops.
    assert _wait(lambda: name not in domain_names("qemu:///system")), f"{name} survived its owner"
    sock = f"/run/cvbench/vm/{name}.sock"     # the one thing left for a sweep (a concurrent one may take it first)
    sweep()
    assert not os.path.exists(sock)


@pytest.mark.vm
def test_sweep_removes_dead_owners_domains_only(image, root):
    libvirt = libvirt_module()
    conn = open_conn("qemu:///system")
    dead, live = f"cvbench-vm-{_dead_pid()}-aaaaaa", f"cvbench-vm-{os.getpid()}-bbbbbb"
    doms = []
    try:
        for name, pid in ((dead, int(dead.split("-")[2])), (live, os.getpid())):
            from vm_backend import owner
            spec = DomainSpec(name=name, kernel=image.kernel, initramfs=image.initramfs, args=["sleep", "-1"],
                              owner_pid=pid, owner_start=owner.start_time(os.getpid()) if pid == os.getpid() else 1,
                              owner_host=owner.hostname())
            doms.append(conn.createXML(build(spec), 0))     # not AUTODESTROY: a real leftover
        removed = sweep()
        assert f"domain {dead}" in removed
        assert f"domain {live}" not in removed and live in domain_names("qemu:///system")
        assert dead not in domain_names("qemu:///system")
    finally:
        for d in doms:
            try:
                d.destroy()
            except libvirt.libvirtError:
                pass
        conn.close()


@pytest.mark.vm
def test_sweep_kills_dead_owners_qemu_only(root):
    qemu = "qemu-system-x86_64"
    if shutil.which(qemu) is None:
        pytest.skip(f"{qemu} not found on PATH (make setup installs it)")
    procs = []
    try:
        for pid in (_dead_pid(), os.getpid()):
            name = f"cvbench-qemu-{pid}-cccccc"
            procs.append((name, subprocess.Popen([qemu, "-name", f"guest={name}", "-S", "-M", "none",
                                                  "-nodefaults", "-display", "none"])))
        assert _wait(lambda: {n for n, _ in procs} <= {n for _, n in qemu_processes()}, 10)
        removed = sweep(None)
        dead_name, live_name = procs[0][0], procs[1][0]
        assert any(dead_name in r for r in removed)
        assert not any(live_name in r for r in removed)
        assert procs[0][1].wait(timeout=5) == -signal.SIGKILL
        assert procs[1][1].poll() is None
    finally:
        for _, p in procs:
            p.kill()
            p.wait()


@pytest.mark.parametrize("uri,fix", [
    ("qemu+unix:///system?socket=/nonexistent/libvirt-sock", "libvirtd -d"),
    ("qemu+tcp://127.0.0.1:1/system", "reachable"),
])
def test_unreachable_libvirt_is_a_clear_env_error(image, uri, fix):
    vm = LibvirtVM(image.kernel, image.initramfs, ["ready"], accel="tcg", uri=uri, timeout=10)
    with pytest.raises(VMError) as e:
        vm.run()
    assert e.value.status == 2 and fix in e.value.fix and uri in e.value.why
    assert "\n" not in e.value.line()


@pytest.mark.vm
@pytest.mark.slow
def test_cli_run_prints_op_line_and_json(image, root):
    r = subprocess.run([PY, "-m", "vm_backend", "run", "--", "ops", "--iters", "5000", "getppid"],
                       cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "CVB READY"
    assert [ln for ln in lines if ln.startswith("CVB op=")][0].startswith("CVB op=getppid iters=5000 ns_per_op=")
    out = json.loads(lines[-1])
    assert out["accel"] in ("kvm", "tcg") and out["accel_reason"]
    assert 0 < out["ready_s"] < out["done_s"] < out["gone_s"] and out["ops"][0]["op"] == "getppid"


def test_cli_bad_input_is_one_line_exit_2(image):
    r = subprocess.run([PY, "-m", "vm_backend", "run", "--accel", "tcg", "--", "ops", "get'ppid"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("cvbench: vm args:")


def test_cli_detect(image, root):
    r = subprocess.run([PY, "-m", "vm_backend", "detect"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)
    assert v["accel"] in ("kvm", "tcg") and v["reason"]


def test_remote_uri_uses_the_stream_console_and_remote_paths():
    vm = LibvirtVM("/on/the/remote/vmlinuz", "/on/the/remote/initramfs", ["ready"], accel="tcg",
                   uri="qemu+ssh://127.0.0.1:1/system", timeout=10)
    assert vm.console_kind == "stream"       # QEMU there cannot reach a socket here
    with pytest.raises(VMError) as e:
        vm.run()
    assert e.value.status == 2 and "reachable" in e.value.fix


def test_kvm_trial_tells_a_refused_kvm_from_a_hung_guest(monkeypatch, tmp_path):
    """The trial branches on VMError.kind: a guest that exited because QEMU
    refused KVM is not reported as a timeout, though both messages name CVB READY."""
    from vm_backend import accel as accel_mod
    from vm_backend import qemu_vm
    from vm_backend.errors import VMError as Err

    def fake(kind, why):
        class FakeVM:
            def __init__(self, *a, **kw):
                pass

            def run(self):
                raise Err("qemu guest x", why, kind=kind)

            def stop(self):
                pass
        return FakeVM

    monkeypatch.setattr(accel_mod, "kvm_device_problem", lambda: None)
    monkeypatch.setattr(qemu_vm, "QemuVM", fake(
        "exited", "guest exited before printing CVB READY; qemu said: "
                  "qemu-system-x86_64: failed to initialize kvm: Permission denied"))
    got = accel_mod._trial("k", "i", None)
    assert got.name == "tcg" and got.reason.startswith("kvm refused by QEMU: failed to initialize kvm")
    monkeypatch.setattr(qemu_vm, "QemuVM", fake(
        "timeout", "guest did not print CVB READY within 8s (timeout); destroyed it"))
    got = accel_mod._trial("k", "i", None)
    assert got.name == "tcg" and "never reached CVB READY" in got.reason


def test_a_boot_failing_before_the_spawn_releases_the_connection(image, monkeypatch):
    """_prepare opened a connection, then _make_console raised: stop() (called
    by _boot) must still release it, with no result to destroy."""
    from vm_backend.accel import Accel
    from vm_backend.base import GuestVM

    released = []

    class Broken(GuestVM):
        backend = "fake"

        def _prepare(self):
            self._conn = object()

        def _make_console(self):
            raise OSError("no socket dir")

        def _release(self):
            released.append(self._conn)

    if not (os.path.isfile(str(image.kernel)) and os.path.isfile(str(image.initramfs))):
        pytest.skip("no guest kernel/initramfs (make setup builds them)")
    vm = Broken(image.kernel, image.initramfs, ["ready"], accel=Accel("tcg", "test"))
    with pytest.raises(OSError):
        vm.start()
    assert released and vm.result is None


def test_sweep_removes_raw_qemu_cgroups_of_dead_owners_only(root):
    from vm_backend import cgroup
    if cgroup.memory_root() is None:
        pytest.skip("no writable memory cgroup hierarchy (v1 memory or a v2 root with memory)")
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = cgroup.create(f"cvbench-qemu-{gone.pid}-dddddd")
    live = cgroup.create(f"cvbench-qemu-{os.getpid()}-eeeeee")
    try:
        assert dead and live
        removed = cgroup.sweep()
        assert f"cgroup {dead}" in removed and not os.path.exists(dead)
        assert os.path.isdir(live)
    finally:
        cgroup.remove(dead)
        cgroup.remove(live)
    assert not os.path.exists(live)
