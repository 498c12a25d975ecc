"""startup, end to end in --fast --quick mode with host, builtin and a TCG VM."""
from __future__ import annotations

import pytest
from scenario_run import BACKENDS, VM, names, run_scenario, tidy_values


@pytest.mark.vm
@pytest.mark.slow
def test_startup_writes_a_pyperf_suite_for_every_backend(root, image, tmp_path):
    suite, meta, tidy, r = run_scenario("startup", tmp_path)
    for b in BACKENDS:
        assert {f"startup.ready.{b}", f"startup.lifecycle.{b}"} <= names(suite)
        ready = tidy_values(tidy, metric="ready", backend=b)
        gone = tidy_values(tidy, metric="lifecycle", backend=b)
        assert ready and len(ready) == len(gone)
        # the same spawns give both metrics: lifecycle ends after ready, value for value
        assert all(0 < x < y for x, y in zip(ready, gone, strict=True))
        assert {row["unit"] for row in tidy if row["backend"] == b} == {"s"}
    # a VM boot is far slower than a bare fork+exec (TCG or KVM alike)
    assert min(tidy_values(tidy, metric="ready", backend=VM)) > max(tidy_values(tidy, metric="ready", backend="host"))
    bench = suite.get_benchmark(f"startup.ready.{VM}")
    assert bench.get_metadata()["cvbench_pyperf_plan"] == "vm"
    assert meta["backends"][VM]["metadata"]["accel"] == meta["env"]["accel"]["name"]
    assert "[startup]" in r.stderr and "ETA" in r.stderr
    # one clock: every value is one spawn
    for bench in suite.get_benchmarks():
        assert {run.get_metadata()["loops"] for run in bench.get_runs()} == {1}, bench.get_name()
    # the isolation each got, seen from inside; the config they read
    assert meta["backends"]["host"]["observed"]["own_namespaces"] == []
    assert meta["backends"]["builtin"]["observed"]["Seccomp"] == "2"
    assert "cgroup" in meta["bundle"]["namespaces"] and meta["bundle"]["seccomp"].startswith("seccomp")
    # hyperfine timed the host's own command in the same run, and the ratio is printed
    [hf] = [c for c in meta["crosschecks"] if c["backend"] == "host"]
    assert hf["check"] == "hyperfine -N" and hf["tool"] > 0 and hf["ratio"] > 0
    assert "cross-check hyperfine -N on host lifecycle" in r.stdout
