"""disk scenario: a short real fio job on every backing (host directory; bind
mount, overlayfs over the image and tmpfs in crun), through the real CLI; the
chart and report; the parser's refusals; and a run SIGKILLed mid-job whose
leftovers the sweep removes."""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import time

import pytest
from scenario_run import ROOT, require_backends, run_scenario, tidy_values

from bench import disk, disk_fio
from bench.backends import oci
from common.errors import CvbError

JOBS = [s for secs in disk_fio.PROFILES.values() for s in secs]
BACKINGS = {"host": ["dir"], "crun": ["bind", "overlay", "tmpfs"]}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (containers, drop_caches)")


@pytest.fixture
def state(tmp_path, monkeypatch):
    d = tmp_path / "disk-state"
    monkeypatch.setenv(disk.STATE_ENV, str(d))
    return d


def test_every_backing_runs_fio(tmp_path, state):
    if not disk_fio.FIO.is_file():
        pytest.skip("fio not installed (make setup installs it)")
    suite, meta, tidy, r = run_scenario("disk", tmp_path / "out", backends=list(BACKINGS))
    rows = meta["disk"]["rows"]
    for backend, backings in BACKINGS.items():
        for backing in backings:
            key = f"{backend}/{backing}"
            assert rows[key]["status"] == "ok", rows[key]
            assert rows[key]["cache"], key
            for job in JOBS:
                v = f"{backing}:{job}"
                iops = tidy_values(tidy, metric="iops", backend=backend, variant=v)
                p50, p99, p999 = (tidy_values(tidy, metric=m, backend=backend, variant=v)
                                  for m in ("clat_p50", "clat_p99", "clat_p999"))
                assert iops and iops[0] > 0, (key, job)
                assert 0 < p50[0] <= p99[0] <= p999[0], (key, job, p50, p99, p999)
                cpu = "cpu_s_per_kop" if job.startswith("meta-") else "cpu_s_per_gb"
                assert tidy_values(tidy, metric=cpu, backend=backend, variant=v)[0] > 0, (key, job)
                if not job.startswith("meta-"):
                    assert tidy_values(tidy, metric="bw", backend=backend, variant=v)[0] > 0
    assert meta["disk"]["window"]["runtime_s"] == disk_fio.WINDOWS["quick"].runtime_s
    assert not list(state.glob("cvbench-d*")), "the run's disk state was not removed"
    # chart and report
    from analysis.render import render
    folder = (tmp_path / "out" / "latest").resolve()
    _, files, (md, _) = render(folder, log=lambda *_: None)
    assert {"disk_iops.png", "disk_latency.png"} <= {f.name for f in files}
    text = md.read_text()
    assert "## Disk: fio per backing and job" in text and "crun/overlay" in text and "overlayfs" in text


def test_parser_refuses_what_fio_did_not_measure():
    with pytest.raises(CvbError, match="not JSON"):
        disk_fio.parse("fio: something broke {", "fc-randread")
    empty = '{"fio version": "fio-3.33", "jobs": [{"jobname": "fc-randread", "error": 0,' \
            ' "read": {"total_ios": 0}, "write": {"total_ios": 0}}]}'
    with pytest.raises(CvbError, match="no I/O completed"):
        disk_fio.parse(empty, "fc-randread")
    no_pct = empty.replace('"read": {"total_ios": 0}', '"read": {"total_ios": 5, "iops": 5.0, "bw_bytes": 20480,'
                           ' "io_bytes": 20480, "runtime": 1000, "clat_ns": {}}')
    with pytest.raises(CvbError, match="percentile"):
        disk_fio.parse(no_pct, "fc-randread")


def test_space_check_exits_2(state, monkeypatch):
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda p: type("U", (), {"free": 1024})())
    with pytest.raises(CvbError) as e:
        disk.check_space(disk_fio.WINDOWS["default"])
    assert e.value.status == 2 and "MiB free" in e.value.why


def test_kill_mid_job_then_sweep(tmp_path, state):
    """SIGKILL the harness while fio runs in a crun container on the bind
    mount: its state folder, container, bundle and cgroup stay behind until a
    sweep, which removes them all."""
    require_backends(["crun"])
    if not disk_fio.FIO.is_file():
        pytest.skip("fio not installed")
    p = subprocess.Popen([sys.executable, "-m", "bench", "run", "disk", "--backends", "crun", "--fast",
                          "--out", str(tmp_path / "out")], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 120
        while not glob.glob(f"{state}/cvbench-d{p.pid}-*/crun-bind/bind/cvbench-fc.dat"):
            assert p.poll() is None and time.monotonic() < deadline, "fio never started"
            time.sleep(0.2)
        time.sleep(0.5)   # fio is inside its job now
    finally:
        p.kill()
        p.wait()
    left = glob.glob(f"{state}/cvbench-d{p.pid}-*")
    assert left, "the killed run left no state: the test did not kill it mid-job"
    from bench import sweep
    removed = sweep.sweep_all()
    assert any(f"cvbench-d{p.pid}-" in x for x in removed), removed
    assert not glob.glob(f"{state}/cvbench-d{p.pid}-*")
    head = f"cvbench-b{p.pid}-"
    from bench import backends
    assert not [c for c in backends.get("crun").list_ids() if c.startswith(head)]
    assert not glob.glob(f"/sys/fs/cgroup/*/{head}*")
    assert not glob.glob(str(oci.state_root("x").parent / "bundles" / f"{head}*"))
    assert not disk._mounts_under(str(state))


def test_sweep_keeps_a_live_owner(state):
    live = state / f"cvbench-d{os.getpid()}-{disk.owner.start_time(os.getpid())}"
    live.mkdir(parents=True)
    dead = state / "cvbench-d999999999-1"
    dead.mkdir()
    (dead / "f").write_text("x")
    removed = disk.sweep()
    assert live.is_dir() and not dead.exists() and removed == [f"disk state {dead}"]


def test_runsc_backings_run_fio(state):
    """gVisor's gofer root and its memory overlay, one short real fio job each
    through bench.disk (the full profile set runs in the CLI test's backends)."""
    require_backends(["runsc"])
    from bench import backends, image
    b = backends.get("runsc")
    layer = disk_fio.build_layer(image.load())
    win = disk_fio.WINDOWS["quick"]
    workdir = disk.run_dir() / "runsc-test"
    workdir.mkdir()
    try:
        for backing in disk.backings_for(b):
            runner = disk.runner_for(b, layer, workdir)
            env = win.env(disk_fio.DATA, backing.direct)
            runner.run(backing, env, "firecracker", "fc-randwrite", 120, create_only=True)
            text, cpu = runner.run(backing, env, "firecracker", "fc-randwrite", 120)
            fig = disk_fio.parse(text, "fc-randwrite")
            assert fig["iops"] > 0 and fig["io_bytes"] > 0 and cpu > 0, (backing.name, fig, cpu)
    finally:
        disk.remove_run_dir(workdir.parent)
    assert not any(layer.joinpath("data").iterdir()), "gVisor's root backings wrote into the shared layer"


def test_a_backing_that_fails_is_a_failed_row(state, tmp_path):
    """fio that cannot start (a layer without it) fails the backing: the error
    propagates to the harness (which names the backend as failed, exit 1) and
    the row says failed and why; its state folder is removed."""
    from bench import backends
    from scenarios import disk as scenario
    empty_layer = tmp_path / "no-fio"
    empty_layer.mkdir()
    rows = {"host/dir": {"status": "pending"}}
    with pytest.raises(OSError):
        scenario._one(None, backends.get("host"), disk.HOST_BACKINGS[0], empty_layer,
                      disk_fio.WINDOWS["quick"], 1, rows)
    assert rows["host/dir"]["status"] == "failed" and "fio" in rows["host/dir"]["why"], rows
    assert not list(state.glob("cvbench-d*/host-dir"))


def _fio_env_procs(marker: str) -> list[int]:
    """Processes whose environment holds ``marker`` (this test's fio runs)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker.encode() in f.read():
                    out.append(int(pid))
        except OSError:
            pass
    return out


def test_a_hung_job_is_killed_with_evidence(state):
    """A real fio job that overruns its limit (a 30 s job given 2 s) is a
    Hang (exit status 1) within seconds, carrying its process tree's CPU and
    thread states as evidence, and no fio of it is left running."""
    if not disk_fio.FIO.is_file():
        pytest.skip("fio not installed")
    from bench import disk_watch, image
    layer = disk_fio.build_layer(image.load())
    workdir = disk.run_dir() / "host-hang"
    workdir.mkdir()
    win = disk_fio.Window(0, 30, 8, 50)
    env = win.env("unused", True)
    t0 = time.monotonic()
    try:
        with pytest.raises(disk_watch.Hang) as e:
            disk.HostRunner(layer, workdir).run(disk.HOST_BACKINGS[0], env, "firecracker", "fc-randread", 2.0,
                                                expected=1.0)
        took = time.monotonic() - t0
        assert not _fio_env_procs(f"CVB_DIR={workdir}/data"), "the hung fio was left running"
    finally:
        disk.remove_run_dir(workdir)
    assert took < 10, took
    assert e.value.status == 1 and "fio[" in e.value.evidence and "s CPU in" in e.value.evidence, e.value.why
    assert "hung: no result within its 2 s limit (expected ~1 s)" in e.value.why


def test_a_hang_is_retried_once_then_fails(state, monkeypatch):
    """A profile whose job hangs runs once more (the row says 'retried after a
    hang' with the evidence); a second hang propagates, which fails the row.
    The hang is real: fio asked for 30 s under a 1 s limit."""
    if not disk_fio.FIO.is_file():
        pytest.skip("fio not installed")
    from bench import disk_watch, image
    from scenarios import disk as scenario

    class Hangs(disk.HostRunner):
        hangs = 0

        def run(self, backing, env, profile, section, limit, create_only=False, expected=0.0):
            if self.hangs and not create_only:
                self.hangs -= 1
                env, limit = {**env, "CVB_RUNTIME": "30"}, 1.0
            return super().run(backing, env, profile, section, limit, create_only, expected)

    layer = disk_fio.build_layer(image.load())
    workdir = disk.run_dir() / "host-retry"
    workdir.mkdir()
    win = disk_fio.WINDOWS["quick"]
    try:
        once = Hangs(layer, workdir)
        once.hangs = 1
        row: dict = {}
        figs = scenario._profile(once, disk.HOST_BACKINGS[0], win, "firecracker", row)
        assert set(figs) == {"fc-randread", "fc-randwrite"} and figs["fc-randread"]["iops"] > 0
        assert len(row["retried"]) == 1 and row["retried"][0].startswith("retried after a hang: host/dir fc-randread")
        assert "fio[" in row["retried"][0]
        twice = Hangs(layer, workdir)
        twice.hangs = 2
        row = {}
        with pytest.raises(disk_watch.Hang):
            scenario._profile(twice, disk.HOST_BACKINGS[0], win, "firecracker", row)
        assert len(row["retried"]) == 1
    finally:
        disk.remove_run_dir(workdir)


def test_report_and_chart_note_name_a_retried_row(tmp_path):
    """A row retried after a hang keeps its figures, and the report table and
    the chart note both say so, with the evidence in the table."""
    import pandas as pd

    from analysis import disk_charts
    from analysis.load import Run
    why = "retried after a hang: runsc/gofer-overlay fc-randread: hung: no result within its 38 s limit"
    tidy = pd.DataFrame([{"scenario": "disk", "backend": "runsc", "variant": "gofer-overlay:fc-randread",
                          "metric": m, "value": v}
                         for m, v in (("iops", 9000.0), ("clat_p50", 1e-3), ("clat_p99", 8e-3), ("clat_p999", 9e-3))])
    meta = {"disk": {"rows": {"runsc/gofer-overlay": {"status": "ok", "cache": "gVisor memory overlay",
                                                      "retried": [why]}}}}
    run = Run(tmp_path, meta, tidy)
    _, body = disk_charts.table(run)
    assert ["runsc/gofer-overlay", "fc-randread", "9000"] == body[0][:3]
    assert any(r[0] == "runsc/gofer-overlay" and r[-1] == why for r in body), body
    assert "retried after a hang (a fresh instance ran the profile again" in disk_charts.notes(run)
