"""The results folder: complete or absent, pyperf-loadable, tidy.csv consistent
with suite.json, and results/latest moved atomically."""
from __future__ import annotations

import csv
import json
import os

import pyperf
import pytest

from bench import results, timing


def suite_of(*benches):
    return pyperf.BenchmarkSuite(list(benches))


def ready_bench(backend="host", values=((0.001, 0.002), (0.0015,))):
    return timing.in_instance_runs(f"startup.ready.{backend}", [list(v) for v in values], "second", {})


def test_write_run_is_complete_and_loadable(tmp_path):
    ns = timing.in_instance_runs("syscall.getppid.host", [[80e-9, 82e-9]], "second",
                                 {"cvbench_tidy_unit": "ns"})
    mem = timing.in_instance_runs("memory.density_total.runc.n=2", [[3 << 20]], "byte",
                                  {"cvbench_tidy_unit": "bytes"})
    folder = results.write_run(tmp_path, "startup", suite_of(ready_bench(), ns, mem),
                               {"scenario": "startup", "mode": "fast"})
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "suite.json", "tidy.csv"]
    assert (tmp_path / "latest").resolve() == folder.resolve()
    loaded = pyperf.BenchmarkSuite.load(str(folder / "suite.json"))
    assert loaded.get_benchmark("startup.ready.host").get_nvalue() == 3
    rows = list(csv.DictReader(open(folder / "tidy.csv")))
    assert list(rows[0]) == results.TIDY_COLUMNS
    ready = [r for r in rows if r["metric"] == "ready"]
    assert [(r["process"], r["run"]) for r in ready] == [("1", "1"), ("1", "2"), ("2", "1")]
    assert {r["unit"] for r in ready} == {"s"}
    getppid = [r for r in rows if r["metric"] == "getppid"]
    assert [float(r["value"]) for r in getppid] == pytest.approx([80.0, 82.0])
    assert {r["unit"] for r in getppid} == {"ns"}
    dens = [r for r in rows if r["metric"] == "density_total"]
    assert dens[0]["variant"] == "n=2" and dens[0]["backend"] == "runc" and dens[0]["unit"] == "bytes"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["run_id"] == folder.name


def test_a_failed_write_leaves_no_folder_and_keeps_latest(tmp_path, monkeypatch):
    first = results.write_run(tmp_path, "startup", suite_of(ready_bench()), {"scenario": "startup"})

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(results, "tidy_rows", boom)
    with pytest.raises(OSError):
        results.write_run(tmp_path, "startup", suite_of(ready_bench()), {"scenario": "startup"})
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [first.name]
    assert (tmp_path / "latest").resolve() == first.resolve()


def test_same_second_runs_get_distinct_folders(tmp_path):
    a = results.write_run(tmp_path, "startup", suite_of(ready_bench()), {}, rid="20260101T000000Z_h_startup")
    b = results.write_run(tmp_path, "startup", suite_of(ready_bench()), {}, rid="20260101T000000Z_h_startup")
    assert a != b and a.exists() and b.exists()
    assert os.readlink(tmp_path / "latest") == os.path.join("runs", b.name)


def test_stale_staging_of_a_dead_harness_is_removed(tmp_path):
    import subprocess
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "runs" / f".x.tmp-{dead.pid}").mkdir(parents=True)
    (tmp_path / "runs" / f".y.tmp-{os.getpid()}").mkdir()
    removed = results.remove_stale_staging(tmp_path)
    assert len(removed) == 1 and removed[0].endswith(f"-{dead.pid}")
    assert (tmp_path / "runs" / f".y.tmp-{os.getpid()}").exists()


def test_benchmark_names_must_have_three_parts():
    assert results.split_name("isolation.ready.builtin.cum:pidns+mountns") == \
        ("isolation", "ready", "builtin", "cum:pidns+mountns")
    with pytest.raises(ValueError):
        results.split_name("startup.ready")
