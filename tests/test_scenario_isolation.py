"""isolation, end to end: the (quick) ladder from the host's bare process through builtin, with the VM as a top rung."""
from __future__ import annotations

import pytest
from scenario_run import VM, names, run_scenario, tidy_values

from runtime import Isolation


@pytest.mark.vm
@pytest.mark.slow
def test_isolation_ladder_rungs_and_top(root, image, tmp_path):
    suite, meta, tidy, _ = run_scenario("isolation", tmp_path, backends=["host", "builtin", VM])
    first = Isolation.MECHANISMS[0]
    two = "+".join(Isolation.MECHANISMS[:2])
    ladder = ["bare", f"only:{first}", f"cum:{two}", "full"]
    assert meta["ladder"] == ladder
    assert meta["ladder_top"] == [VM]
    got = names(suite)
    for variant in ladder:
        for metric in ("ready", "getppid", "read_zero"):
            assert f"isolation.{metric}.builtin.{variant}" in got, (metric, variant)
            assert tidy_values(tidy, metric=metric, backend="builtin", variant=variant)
    for metric in ("ready", "getppid", "read_zero"):
        assert f"isolation.{metric}.{VM}.top" in got
    # the floor is the host's bare fork+exec; the runtime with everything off is the next rung
    for metric in ("ready", "getppid", "read_zero"):
        assert f"isolation.{metric}.host.bare" in got
    assert {r["variant"] for r in tidy if r["backend"] == "host"} == {"bare"}
    assert suite.get_benchmark(f"isolation.ready.builtin.only:{first}").get_metadata()["cvbench_rung"] \
        == f"only:{first}"
    # the chart's ladder: bare process, then the runtime's own cost as a step, then mechanisms
    from analysis import ladder
    from analysis.load import load_run
    rs = ladder.rungs(load_run(tmp_path / "latest"), "ready")
    assert [(r.name, r.backend, r.kind) for r in rs[:2]] == [
        ("bare process (fork+exec)", "host", "bare"), ("+ cvbench runtime itself", "builtin", "step")]
    assert rs[1].delta == rs[1].median - rs[0].median
    # each rung records which start path the runtime took: the C stage for all
    # of these (user/time namespace and veth rungs take the Python child)
    assert set(meta["ladder_stage"]) == set(meta["ladder"])
    assert set(meta["ladder_stage"].values()) == {"c"}
    assert ladder.stage_note(meta, [r.variant for r in rs if r.backend == "builtin"]) == ""
    mixed = {**meta, "ladder_stage": {**meta["ladder_stage"], "cum:pidns+mountns": "python"}}
    note = ladder.stage_note(mixed, [r.variant for r in rs if r.backend == "builtin"])
    assert "C stage" in note and "Python" in note


def test_stage_note_names_the_first_python_rung():
    from analysis import ladder
    meta = {"ladder_stage": {"bare": "c", "cum:pidns": "c", "cum:pidns+mountns+pivot": "python"}}
    note = ladder.stage_note(meta, ["bare", "cum:pidns", "cum:pidns+mountns+pivot"])
    assert "'+ pivot'" in note
    # full isolation on the default bundle goes back to the C stage: the note says so
    back = {"ladder_stage": {"bare": "c", "cum:userns": "python", "cum:userns+veth": "python", "full": "c"}}
    note = ladder.stage_note(back, ["bare", "cum:userns", "cum:userns+veth", "full"])
    assert "'+ userns' to '+ veth'" in note and "C stage again from 'full'" in note
    assert ladder.stage_note({"ladder_stage": {"bare": "c", "full": "c"}}, ["bare", "full"]) == ""
