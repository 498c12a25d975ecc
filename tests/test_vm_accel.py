"""The accelerator per VM backend: verdicts, their lifetime, the TSC rate, and
the refusal to mix kvm and tcg rows in one run.  No guest is booted here except
by the KVM test, which skips with the detected reason where KVM cannot boot."""
from __future__ import annotations

import json

import pytest

from common.errors import CvbError
from vm_backend import accel as accel_mod
from vm_backend import tsc
from vm_backend.accel import Accel


def _avail(**accels):
    return {n: {"available": True, "reason": "ok", "metadata": {},
                "accel": {"accel": a, "why": f"{a} because"}} for n, a in accels.items()}


def test_mixed_accelerators_are_refused_with_exit_2():
    from bench.backends.vm import check_one_accel
    check_one_accel({**_avail(qemu="tcg", libvirt="tcg"), "host": {"available": True}})
    with pytest.raises(CvbError) as e:
        check_one_accel(_avail(qemu="kvm", libvirt="tcg"))
    assert e.value.status == 2
    assert "qemu=kvm" in e.value.why and "libvirt=tcg" in e.value.why


def test_a_run_with_mixed_accelerators_stops_before_measuring(tmp_path, monkeypatch):
    """Through the harness: exit 2, nothing measured, no run folder written."""
    from bench import backends, harness

    monkeypatch.setattr(backends, "availability", lambda names: _avail(**{
        n: ("kvm" if n == "qemu" else "tcg") for n in names}))
    monkeypatch.setattr(harness.registry, "availability", backends.availability)
    with pytest.raises(CvbError) as e:
        harness.run("startup", backend_spec="qemu,libvirt", mode="fast", out=tmp_path, command=["test"])
    assert e.value.status == 2 and "different accelerators" in e.value.why
    assert not list((tmp_path / "runs").iterdir())


@pytest.fixture
def fake_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("CVBENCH_BUILD", str(tmp_path / "build"))
    monkeypatch.setattr(accel_mod, "_memo", {})
    k = tmp_path / "vmlinuz"
    k.write_bytes(b"kernel")
    return str(k)


def _trials(monkeypatch, verdict: Accel) -> list:
    calls = []

    def trial(*a):
        calls.append(a)
        return verdict
    monkeypatch.setattr(accel_mod, "_trial", trial)
    return calls


def test_a_timeout_verdict_is_retried_by_the_next_run(fake_kernel, monkeypatch):
    hung = Accel("tcg", f"{accel_mod.TIMEOUT_WHY} within 8s (test); tried again next run")
    calls = _trials(monkeypatch, hung)
    assert accel_mod.detect_accel(fake_kernel, "i", uri=None) == hung
    accel_mod._memo.clear()           # a worker process of the same run: reuses it
    assert accel_mod.detect_accel(fake_kernel, "i", uri=None) == hung and len(calls) == 1
    cache = next((accel_mod.build_dir() / "vm").glob("accel-*.json"))
    rec = json.loads(cache.read_text())
    assert rec["valid_for"] is not None
    rec["valid_for"] = [1 << 22, 1]   # the run that reached it is over
    cache.write_text(json.dumps(rec))
    accel_mod._memo.clear()
    accel_mod.detect_accel(fake_kernel, "i", uri=None)
    assert len(calls) == 2


def test_a_refused_kvm_verdict_holds_until_reboot(fake_kernel, monkeypatch):
    refused = Accel("tcg", "kvm refused by QEMU: failed to set MSR 0x10a (test)")
    calls = _trials(monkeypatch, refused)
    accel_mod.detect_accel(fake_kernel, "i", uri=None)
    cache = next((accel_mod.build_dir() / "vm").glob("accel-*.json"))
    assert json.loads(cache.read_text())["valid_for"] is None
    accel_mod._memo.clear()
    accel_mod.detect_accel(fake_kernel, "i", uri=None)
    assert len(calls) == 1


def test_each_vmm_gets_its_own_verdict(fake_kernel, monkeypatch):
    calls = _trials(monkeypatch, Accel("tcg", "test"))
    for machine in ("pc", "microvm"):
        accel_mod.detect_accel(fake_kernel, "i", uri=None, machine=machine)
    accel_mod.detect_accel(fake_kernel, "i", uri="qemu:///system")
    assert [(c[2], c[3]) for c in calls] == [(None, "pc"), (None, "microvm"), ("qemu:///system", None)]


def test_tsc_rate_comes_from_the_kernel_not_cpu_mhz():
    log = ("tsc: Detected 2596.120 MHz processor\nclocksource: tsc-early\n"
           "tsc: Refined TSC clocksource calibration: 2595.991 MHz\n")
    assert tsc.parse_log(log) == (2595991, "kernel log: refined TSC clocksource calibration")
    assert tsc.parse_log("tsc: Detected 2596.120 MHz processor") == (2596120, "kernel log: boot TSC estimate")
    assert tsc.parse_log("cpu MHz : 1800.000") is None
    khz, source = tsc.host_tsc()
    assert "cpuinfo" not in source
    assert khz is None or 100_000 < khz < 10_000_000, (khz, source)


def test_measured_tsc_rate_agrees_with_the_kernels_and_is_kept_per_boot(tmp_path, monkeypatch):
    """The last resort, rdtsc timed here, must give the kernel's own figure
    where the kernel still offers one (sysfs or its boot log), and the same
    rate twice; with every other source gone it is what host_tsc() returns."""
    a, b = tsc.measure(0.1), tsc.measure(0.1)
    if a is None:
        pytest.skip("rdtsc cannot be timed here (not x86_64, or no executable memory)")
    assert abs(a - b) / a < 1e-3, (a, b)
    try:
        with open("/sys/devices/system/cpu/cpu0/tsc_freq_khz") as f:
            kernel = int(f.read())
    except (OSError, ValueError):
        found = tsc.parse_log(tsc._kernel_log())
        kernel = found[0] if found else None
    if kernel is not None:
        assert abs(a - kernel) / kernel < 2e-3, (a, kernel)
    real_open = open

    def no_sysfs(path, *args, **kw):
        if str(path).endswith("tsc_freq_khz"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kw)
    tsc.host_tsc.cache_clear()
    monkeypatch.setattr(tsc, "_kernel_log", lambda: "")
    monkeypatch.setattr(tsc, "_cache_path", lambda: str(tmp_path / "tsc-boot.khz"))
    monkeypatch.setattr("builtins.open", no_sysfs)
    try:
        khz, source = tsc.host_tsc()
    finally:
        monkeypatch.undo()
        tsc.host_tsc.cache_clear()
    assert source.startswith("measured: rdtsc against CLOCK_MONOTONIC_RAW"), source
    assert abs(khz - a) / a < 1e-3
    assert (tmp_path / "tsc-boot.khz").read_text().startswith(f"{khz} measured")
