"""memory, end to end: host-side PSS of idle and 64 MiB instances, and density."""
from __future__ import annotations

import pytest
from scenario_run import BACKENDS, VM, names, run_scenario, tidy_values

MiB = 1 << 20


@pytest.mark.vm
@pytest.mark.slow
def test_memory_splits_workload_and_overhead_and_fits_a_slope(root, image, tmp_path):
    suite, meta, tidy, _ = run_scenario("memory", tmp_path)
    got = names(suite)
    for b in BACKENDS:
        for v in ("idle", "mem64"):
            assert f"memory.pss_total.{b}.{v}" in got
        idle = tidy_values(tidy, metric="pss_total", backend=b, variant="idle")[0]
        mem64 = tidy_values(tidy, metric="pss_total", backend=b, variant="mem64")[0]
        if b == VM:
            # a booted guest has already touched most of its RAM (the kernel zeroes and
            # caches pages), so 64 MiB more inside costs at most the untouched rest
            assert mem64 >= idle * 0.95, (b, idle, mem64)
            ram = meta["backends"][VM]["metadata"]["memory_mib"] * MiB
            assert tidy_values(tidy, metric="workload", backend=b, variant="mem64")[0] <= ram * 1.05
        else:
            # touching 64 MiB costs the host at least most of 64 MiB more than idling
            assert mem64 - idle > 48 * MiB, (b, idle, mem64)
        for n in (1, 2):
            assert f"memory.density_total.{b}.n={n}" in got
        d1 = tidy_values(tidy, metric="density_total", backend=b, variant="n=1")[0]
        d2 = tidy_values(tidy, metric="density_total", backend=b, variant="n=2")[0]
        if b == "builtin":
            # the whole supervisor (the harness, ~30 MiB) is in every total and a
            # container adds ~0.05 MiB, less than the supervisor's own PSS moves
            # between readings: the total must not grow by a supervisor per instance
            assert abs(d2 - d1) < 0.05 * d1, (b, d1, d2)
        else:
            assert d2 > d1, (b, d1, d2)
            assert meta["density"][b]["slope_bytes"] > 0
        assert {r["unit"] for r in tidy if r["backend"] == b and r["metric"] == "density_slope"} \
            == {"bytes_per_instance"}
    # the probe process is the whole of a bare host instance
    assert "memory.overhead.host.idle" not in got
    # a VM: guest RAM is the workload, QEMU's own memory is the overhead
    assert tidy_values(tidy, metric="overhead", backend=VM, variant="idle")[0] > 10 * MiB
    assert tidy_values(tidy, metric="workload", backend=VM, variant="idle")[0] > 1 * MiB
    assert tidy_values(tidy, metric="pss_total", backend=VM, variant="idle")[0] > \
        10 * tidy_values(tidy, metric="pss_total", backend="host", variant="idle")[0]
    # the builtin container has a memory cgroup, and it is charged the touched memory
    assert tidy_values(tidy, metric="cgroup_charged", backend="builtin", variant="mem64")[0] > 48 * MiB
    assert {r["unit"] for r in tidy if r["metric"] == "pss_total"} == {"bytes"}
    # one definition: the charged headline for every backend, its parts in meta.json
    for b in BACKENDS:
        for v in ("idle", "mem64"):
            charged = tidy_values(tidy, metric="charged", backend=b, variant=v)
            assert charged and charged[0] > 0, (b, v)
            for r in meta["memory_records"][b][v]:
                assert r["charged"] == (r["cgroup_charged"] or 0) + r["outside_pss"] + r["supervisor_share"]
    # raw QEMU runs in a cvbench memory cgroup, which is charged its guest's RAM
    assert "/cvbench-qemu-" in meta["memory_records"][VM]["idle"][0]["cgroup"]
    assert tidy_values(tidy, metric="cgroup_charged", backend=VM, variant="mem64")[0] > 64 * MiB
    assert meta["memory_records"][VM]["idle"][0]["vm"]["guest_ram_size"] == 128 * MiB
    # the builtin runtime's supervisor is the harness: its share is counted and named
    assert tidy_values(tidy, metric="supervisor_share", backend="builtin", variant="idle")[0] > 1 * MiB
    assert "harness" in meta["memory_definitions"]["supervisor"]["builtin"]
    # zeros are rows in tidy.csv, not gaps
    assert tidy_values(tidy, metric="overhead", backend="host", variant="idle") == [0.0]
    assert all(r["accel"] in ("kvm", "tcg") for r in tidy if r["backend"] == VM)
    # the separate smaps_rollup reader agrees within 5% for one instance of each backend
    for b in BACKENDS:
        chk = meta["crosscheck"]["smaps"][b]
        assert chk["within"] is True and abs(chk["ratio"] - 1) <= 0.05, chk
