"""startup: how long until the workload runs, and until the instance is gone.

ready     = just before the spawn call -> the harness reads ``CVB READY``
lifecycle = just before the spawn call -> the instance has exited and every
            object of it is removed (process reaped, runtime state deleted,
            VM domain gone)

Both come from the same spawns, timed in pyperf worker processes.
"""
from __future__ import annotations

from bench import estimate, timing
from bench.harness import Context, Task

DESCRIPTION = "spawn -> CVB READY (ready) and spawn -> fully gone (lifecycle), per backend"


def plan(ctx: Context) -> list[Task]:
    tasks = []
    for b in ctx.backends:
        kind = "vm" if ctx.is_vm(b) else "fast_path"
        p = timing.plan_of(ctx.mode, kind)

        def run(b=b, kind=kind, p=p):
            return timing.run_worker(
                f"startup.ready.{b}", b, "ready", mode=ctx.mode, plan=kind, quick=ctx.quick,
                timeout=ctx.timeout, lifecycle_name=f"startup.lifecycle.{b}",
                extra_md={"cvbench_pyperf_plan": kind,
                          "cvbench_plan_note": "VMs get fewer processes/values: a TCG boot takes seconds"
                          if kind == "vm" else "pyperf defaults for the mode"})
        tasks.append(Task(f"{b}: ready+lifecycle", b, estimate.pyperf_task(b, p), run))
    ctx.summary_metrics = ["ready", "lifecycle"]
    return tasks
