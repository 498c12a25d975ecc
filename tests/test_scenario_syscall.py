"""syscall, end to end: every probe op in host, builtin and a TCG VM, in ns."""
from __future__ import annotations

import pytest
from scenario_run import BACKENDS, names, run_scenario, tidy_values

from common.probe import OPS


@pytest.mark.vm
@pytest.mark.slow
def test_syscall_records_every_op_in_every_backend(root, image, tmp_path):
    suite, meta, tidy, _ = run_scenario("syscall", tmp_path)
    for b in BACKENDS:
        for op in OPS:
            assert f"syscall.{op}.{b}" in names(suite), (op, b)
            vals = tidy_values(tidy, metric=op, backend=b)
            assert vals and all(v > 0 for v in vals)
        assert {row["unit"] for row in tidy if row["backend"] == b} == {"ns"}
    # the vDSO control never enters the kernel: cheaper than a real syscall everywhere
    for b in BACKENDS:
        assert min(tidy_values(tidy, metric="clock_gettime", backend=b)) < \
            max(tidy_values(tidy, metric="getppid", backend=b))
    # perf bench syscall basic ran on the host as the independent getppid check
    perf = meta["perf_bench_syscall_basic"]
    if perf["available"]:
        assert perf["median_ns"] > 0 and perf["ratio_probe_over_perf"] > 0
        md = suite.get_benchmark("syscall.getppid.host").get_metadata()
        assert md["cvbench_perf_bench_getppid_ns"] == round(perf["median_ns"], 3)
    # pyperf stores seconds; tidy.csv holds the same values in ns
    b = suite.get_benchmark("syscall.getppid.host")
    assert abs(b.get_values()[0] * 1e9 - tidy_values(tidy, metric="getppid", backend="host")[0]) < 1e-6
