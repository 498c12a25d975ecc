"""startup: how long until the workload runs, and until the instance is gone.

ready     = just before the spawn call -> the harness reads ``CVB READY``
lifecycle = just before the spawn call -> the instance has exited and every
            object of it is removed (process reaped, runtime state deleted,
            VM domain gone)

Both come from the same spawns, timed in pyperf worker processes, one spawn per
value.  For host, crun, runc and runsc, ``hyperfine -N`` times the same command
just before and just after the harness does (bench/crosscheck.py); the ratio
of the two lifecycle medians goes into meta.json and the report.
"""
from __future__ import annotations

from bench import crosscheck, estimate, timing
from bench.harness import Context, Task, progress

DESCRIPTION = "spawn -> CVB READY (ready) and spawn -> fully gone (lifecycle), per backend"


def plan(ctx: Context) -> list[Task]:
    tasks = []
    checks = ctx.meta.setdefault("crosschecks", [])
    for b in ctx.backends:
        kind = ctx.backend(b).sample_plan() if ctx.is_vm(b) and hasattr(ctx.backend(b), "sample_plan") \
            else "vm" if ctx.is_vm(b) else "fast_path"
        p = timing.plan_of(ctx.mode, kind)
        check = b in crosscheck.HYPERFINE_BACKENDS

        def run(b=b, kind=kind, check=check):
            if check:
                progress(f"    {b}: hyperfine -N before")
                before = crosscheck.hyperfine(ctx.backend(b), ["ready"], quick=ctx.quick)
            benches = timing.run_worker(
                f"startup.ready.{b}", b, "ready", mode=ctx.mode, plan=kind, quick=ctx.quick,
                timeout=ctx.timeout, lifecycle_name=f"startup.lifecycle.{b}",
                extra_md={"cvbench_pyperf_plan": kind,
                          "cvbench_plan_note": "VMs get fewer processes/values: a TCG boot takes seconds"
                          if kind == "vm" else "one spawn per value"})
            if check:
                progress(f"    {b}: hyperfine -N after")
                after = crosscheck.hyperfine(ctx.backend(b), ["ready"], quick=ctx.quick)
                life = next((x.median() for x in benches if x.get_name().startswith("startup.lifecycle.")),
                            None)
                checks.append(crosscheck.startup_record(b, before, after, life))
            return benches
        est = estimate.pyperf_task(b, p) + (8.0 if check else 0.0)
        tasks.append(Task(f"{b}: ready+lifecycle", b, est, run))
    ctx.summary_metrics = ["ready", "lifecycle"]
    return tasks
