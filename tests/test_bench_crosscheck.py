"""The numbers check themselves: hyperfine -N on the backends' own commands,
judged against the harness's figure; a probe that leaves a gap fails loudly;
crun is timed without an nsenter per spawn."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import backends, crosscheck, inside
from bench.backends import oci
from bench.backends.host import Host
from tests.conftest import usable

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["host", "crun"])
def test_hyperfine_times_the_backends_own_command(root, image, name):
    b = usable(name)
    if not crosscheck.shutil.which("hyperfine"):
        pytest.skip("hyperfine not installed (make setup installs it)")
    w = crosscheck.hyperfine(b, ["ready"], quick=True)
    assert "error" not in w, w
    assert 0 < w["median_s"] < 5 and 3 <= w["runs"] <= 5
    assert "nsenter" not in w["command"]          # crun runs plainly, inside the masked namespace
    assert ("-L id" in w["command"]) == (name != "host")   # a runtime gets a fresh id per run
    assert not [p for p in (oci.state_root("x").parent / "bundles").glob(f"cvbench-b{os.getpid()}-*")]
    rec = crosscheck.startup_record(name, [w, w], w["median_s"] * 1.05)
    assert rec["within"] is True and abs(rec["ratio"] - 1.05) < 1e-9
    assert crosscheck.outside([rec]) == []


def test_judging_flags_a_ratio_outside_tolerance_and_an_unrun_check():
    off = crosscheck.judge("hyperfine -N", "crun", "lifecycle", "s", 0.0155, 0.0118)
    assert off["within"] is False and round(off["ratio"], 2) == 1.31
    unrun = crosscheck.startup_record("runc", [{"error": "hyperfine not installed"}, {"error": "x"}], 0.03)
    assert unrun["within"] is None and "hyperfine not installed" in unrun["error"]
    assert crosscheck.outside([off, unrun]) == [off, unrun]


class DroppingLastOp(Host):
    """A real host probe run that is not asked for the last op the caller wants."""

    def run(self, args, timeout=60.0):
        return super().run(args[:-1], timeout)


def test_a_probe_missing_a_requested_op_fails_with_its_output(root, image):
    b = DroppingLastOp()
    with pytest.raises(backends.InstanceFailed) as e:
        inside.ops_benchmarks("syscall", b, "host", ["getppid", "read_zero"], instances=1, repeat=2,
                              min_ms=1, timeout=30)
    assert "0 of 2 values for op read_zero" in e.value.why
    assert "CVB op=getppid" in e.value.why          # the probe's own output is in the error
    assert e.value.status == 1


def test_ops_are_pinned_and_the_affinity_recorded(root, image):
    b = usable("host")
    pin = inside.pinning()
    [bench] = inside.ops_benchmarks("syscall", b, "host", ["pipe_pingpong"], instances=1, repeat=1,
                                    min_ms=1, timeout=30, pin=pin)
    want = f"cpu={pin['cpu']} pingpong=" + (f"{pin['pair'][0]},{pin['pair'][1]}" if pin["pair"] else "unpinned")
    assert bench.get_metadata()["cvbench_affinity"] == want


def test_crun_worker_enters_the_masked_namespace_once(root, image):
    crun = usable("crun")
    if not crun.masked:
        pytest.skip("this host's cgroup layout needs no mask for crun")
    code = (
        "import os\n"
        "from bench import backends\n"
        "b = backends.get('crun')\n"
        "before = os.readlink('/proc/self/ns/mnt')\n"
        "b.prepare_worker()\n"
        "assert os.readlink('/proc/self/ns/mnt') != before\n"
        "assert b.popen_kw() == {} and 'nsenter' not in ' '.join(b._base())\n"
        "t = b.run(['ready'])\n"
        "assert t.rc == 0 and t.ready_s > 0, t.console\n"
        "print('ok', os.getcwd())\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ok", str(ROOT)]
    # the harness itself keeps the host's view: other backends must not see the mask
    assert crun.masked and "nsenter" in " ".join(backends.get("crun")._base())


def test_the_report_puts_failed_cross_checks_first_and_prints_every_ratio():
    from analysis import report
    ok = crosscheck.judge("perf bench syscall basic", "host", "getppid", "ns", 80.0, 79.0)
    off = crosscheck.judge("hyperfine -N", "crun", "lifecycle", "s", 0.0155, 0.0118)
    meta = {"crosschecks": [ok, off]}
    [line] = report.crosscheck_failures(meta)
    assert "crun lifecycle against hyperfine -N" in line and "1.314×" in line
    rows = report.crosscheck_rows(meta)
    assert [r[-1] for r in rows] == ["ok", "OUTSIDE ±10%"] and rows[0][5] == "1.013"


def test_the_report_names_unequal_isolation_failed_and_unobserved_backends():
    from analysis import report
    same = {"Seccomp": "2", "Seccomp_filters": "1", "CapEff": "0000000020000420", "NoNewPrivs": "1",
            "own_namespaces": ["cgroup", "ipc", "mnt", "net", "pid", "uts"]}
    meta = {"backends": {"builtin": {"observed": dict(same)}, "crun": {"observed": dict(same)},
                         "runc": {"observed": dict(same, Seccomp="0")},
                         "runsc": {"observed": {"error": "probe self ended with rc=1"}, "failed": "boom"}}}
    text = report.isolation_mismatch(meta)
    assert "Seccomp: builtin=2, crun=2, runc=0" in text and "CapEff" not in text
    assert report.isolation_mismatch({"backends": {"builtin": {"observed": same}, "crun": {"observed": same}}}) == ""

    class FakeRun:
        env: dict = {}
    FakeRun.meta = meta
    cav = report.caveats(FakeRun(), [])
    assert cav[0] == text
    assert any("runsc failed during the run" in c for c in cav)
    assert any("isolation backend runsc got could not be observed" in c for c in cav)
