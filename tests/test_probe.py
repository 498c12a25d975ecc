"""The probe, run for real on the host, and the one parser for its output."""
from __future__ import annotations

import os
import subprocess

import pytest

from common import probe


def run(img, *args, check_rc=0):
    r = subprocess.run([img.probe, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == check_rc, r.stderr
    return r


def test_ready_prints_marker_first_and_done_last(image):
    r = run(image, "ready")
    lines = r.stdout.splitlines()
    assert lines[0] == probe.READY
    assert lines[-1] == "CVB DONE rc=0"


@pytest.mark.parametrize("op", probe.OPS)
def test_every_op_runs_and_parses(image, op):
    r = run(image, "ops", "--min-ms", "5", op)
    out = probe.parse(r.stdout)
    assert out.ready and out.rc == 0 and not out.errors
    [res] = out.ops
    assert res.op == op and res.iters >= 1
    assert 0 < res.ns_per_op < 1e9


def test_fixed_iters_and_repeat(image):
    out = probe.parse(run(image, "ops", "--iters", "1000", "--repeat", "3", "getppid").stdout)
    assert [o.iters for o in out.ops] == [1000, 1000, 1000]


def test_vdso_clock_is_cheaper_than_a_syscall(image):
    """The control op never enters the kernel; if it costs as much as getppid the
    probe is measuring something else (or the vDSO is missing)."""
    out = probe.parse(run(image, "ops", "--min-ms", "20", "clock_gettime", "getppid").stdout)
    assert out.ns_per_op("clock_gettime")[0] < out.ns_per_op("getppid")[0]


def test_unknown_op_is_a_clear_error(image):
    r = run(image, "ops", "getppid", "nosuchop", check_rc=2)
    assert "nosuchop: unknown op" in r.stderr
    assert "valid ops: getppid" in r.stderr
    out = probe.parse(r.stdout)
    assert out.rc == 2 and out.ops == []  # nothing measured before the typo was found


@pytest.mark.parametrize("args,needle", [
    (["ops", "--iters", "0", "getppid"], "--iters: needs a positive whole number"),
    (["ops", "--bogus", "1", "getppid"], "--bogus: unknown option"),
    (["mem", "lots"], "mem: needs a size in MiB"),
    (["frobnicate"], "frobnicate: unknown command"),
    (["ops", "--cpu", "x", "getppid"], "--cpu: needs a CPU number"),
    (["ops", "--pair", "0", "getppid"], "--pair: needs two CPU numbers"),
])
def test_bad_arguments(image, args, needle):
    r = run(image, *args, check_rc=2)
    assert needle in r.stderr


def test_self_reports_the_isolation_the_process_got(image):
    out = probe.parse(run(image, "self").stdout)
    with open("/proc/self/status") as f:
        mine = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    assert out.values["Seccomp"] == mine["Seccomp"].strip() == "0"
    assert out.values["CapEff"] == mine["CapEff"].strip()
    assert out.values["ns_mnt"] == os.readlink("/proc/self/ns/mnt")


def test_pinning_is_reported_and_a_missing_cpu_fails_the_run(image):
    cpus = sorted(os.sched_getaffinity(0))
    out = probe.parse(run(image, "ops", "--iters", "100", "--cpu", str(cpus[-1]), "--pair",
                          f"{cpus[0]},{cpus[-1]}", "pipe_pingpong").stdout)
    assert out.values["cpu"] == str(cpus[-1]) and out.values["pingpong"] == f"{cpus[0]},{cpus[-1]}"
    assert out.ns_per_op("pipe_pingpong")[0] > 0
    bad = probe.parse(run(image, "ops", "--iters", "10", "--cpu", "1000", "getppid", check_rc=1).stdout)
    assert bad.errors and "cpu 1000" in bad.errors[0] and not bad.ops


def test_mem_touches_and_exits(image):
    out = probe.parse(run(image, "mem", "8", "0").stdout)
    assert out.values["mem_touched_mib"] == "8" and out.rc == 0


def test_parser_tolerates_console_noise():
    text = ("[    0.2] PCI: something\r\nCVB READY\r\n"
            "junk CVB op=getppid iters=10 ns_per_op=4.5\r\n"
            "CVB op=read_zero error=Bad address\nCVB DONE rc=1\r\n")
    out = probe.parse(text)
    assert out.ready and out.rc == 1
    assert out.ops[0].op == "getppid" and out.ops[0].ns_per_op == 4.5
    assert out.errors == ["read_zero: Bad address"]
