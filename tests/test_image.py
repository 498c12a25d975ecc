"""The shared image: one tree, two forms, the same probe bytes in both."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from bench import cpio
from bench import image as image_mod
from common.errors import CvbError

ROOT = Path(__file__).resolve().parent.parent


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_bundle_and_initramfs_hold_the_same_probe(image):
    in_rootfs = sha((Path(image.rootfs) / "probe").read_bytes())
    entries = cpio.names(Path(image.initramfs))
    assert sha(entries["probe"]) == in_rootfs == image.probe_sha256


def test_initramfs_has_init_console_and_busybox(image):
    entries = cpio.names(Path(image.initramfs))
    assert "init" in entries and b"/probe $args" in entries["init"]
    assert "dev/console" in entries
    assert len(entries["bin/busybox"]) > 100_000


def test_busybox_links_are_relative_and_resolve(image):
    rootfs = Path(image.rootfs)
    sh = rootfs / "bin" / "sh"
    assert sh.is_symlink() and not os.readlink(sh).startswith("/")
    assert sh.resolve() == (rootfs / "bin" / "busybox").resolve()
    assert not (rootfs / "bin" / "busybox").is_symlink()


def test_bundle_config_is_an_oci_spec(image):
    spec = json.loads((Path(image.bundle) / "config.json").read_text())
    assert spec["root"]["path"] == "rootfs"
    assert spec["process"]["args"][0] == "/probe"
    assert spec["process"]["terminal"] is False


def test_build_is_cached_by_input_hash(image):
    t0 = time.monotonic()
    again = image_mod.build(log=lambda m: pytest.fail(f"rebuilt although nothing changed: {m}"))
    assert again.hash == image.hash and time.monotonic() - t0 < 5
    assert image_mod.load().kernel == image.kernel, "a rebuild must not blank the kernel path"


def test_cpio_round_trip(tmp_path):
    tree = tmp_path / "t"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "f").write_bytes(b"abc")
    (tree / "l").symlink_to("d/f")
    out = tmp_path / "a.cpio"
    cpio.write(tree, out)
    first = out.read_bytes()
    cpio.write(tree, out)
    assert out.read_bytes() == first, "archive is not reproducible"
    assert cpio.names(out) == {"d": b"", "d/f": b"abc", "l": b"d/f"}


def test_missing_kernel_override_is_a_clear_error(monkeypatch):
    from bench import kernel
    monkeypatch.setenv("KERNEL", "/nonexistent/vmlinuz")
    with pytest.raises(CvbError) as e:
        kernel.kernel_path()
    assert "KERNEL" in e.value.line() and "/nonexistent/vmlinuz" in e.value.line()


def test_missing_kernel_via_cli_exits_2():
    env = dict(os.environ, KERNEL="/nonexistent/vmlinuz")
    r = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "bench", "kernel"], cwd=ROOT,
                       env=env, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith("cvbench: KERNEL: /nonexistent/vmlinuz: no such file;")
    assert "Traceback" not in r.stderr


@pytest.mark.vm
def test_initramfs_boots_under_qemu_tcg_microvm(image):
    """Direct QEMU, TCG, microvm: the image's /init must reach the probe and power off.

    Booted through vm_backend.QemuVM so the test uses the one QEMU command line
    the benchmarks use (microvm needs tsc_early_khz under TCG on a loaded host:
    it has no HPET or PM timer to calibrate the TSC against, and hangs)."""
    from vm_backend import QemuVM

    vm = QemuVM(image.kernel, image.initramfs, ["ops", "--min-ms", "5", "getppid"],
                accel="tcg", timeout=120, machine="microvm")
    assert vm.machine.startswith("microvm")
    res = vm.run()
    assert res.probe.ready, res.console[-2000:]
    assert res.probe.ns_per_op("getppid"), res.console[-2000:]
    assert res.probe.rc == 0
    assert res.gone_ns is not None  # the guest powered off by itself
