"""startup: how long until the workload runs, and until the instance is gone.

ready     = just before the spawn call -> the harness reads ``CVB READY``
lifecycle = just before the spawn call -> the instance has exited and every
            object of it is removed (process reaped, runtime state deleted,
            VM domain gone)

Both come from the same spawns, timed in pyperf worker processes, one spawn per
value.  For host, crun, runc and runsc, ``hyperfine -N`` times the same command
in short windows before, between chunks of, and after the harness's worker
processes (bench/crosscheck.py); the ratio of the two lifecycle medians goes
into meta.json and the report.
"""
from __future__ import annotations

from bench import crosscheck, estimate, timing
from bench.harness import Context, Task, progress

DESCRIPTION = "spawn -> CVB READY (ready) and spawn -> fully gone (lifecycle), per backend"


CHUNKS = 5   # the harness's worker processes, in this many chunks with hyperfine between them


def plan(ctx: Context) -> list[Task]:
    tasks = []
    checks = ctx.meta.setdefault("crosschecks", [])
    for b in ctx.backends:
        kind = ctx.backend(b).sample_plan() if ctx.is_vm(b) and hasattr(ctx.backend(b), "sample_plan") \
            else "vm" if ctx.is_vm(b) else "fast_path"
        p = timing.plan_of(ctx.mode, kind)
        check = b in crosscheck.HYPERFINE_BACKENDS
        md = {"cvbench_pyperf_plan": kind,
              "cvbench_plan_note": "VMs get fewer processes/values: a TCG boot takes seconds"
              if kind == "vm" else "one spawn per value"}

        def measure(b=b, kind=kind, md=md, processes=None):
            return timing.run_worker(f"startup.ready.{b}", b, "ready", mode=ctx.mode, plan=kind,
                                     quick=ctx.quick, timeout=ctx.timeout,
                                     lifecycle_name=f"startup.lifecycle.{b}", extra_md=md,
                                     processes=processes)

        def run(b=b, p=p, check=check, measure=measure):
            if not check:
                return measure()
            # hyperfine windows interleaved with chunks of the harness's worker
            # processes: both sample the same stretch of the machine's load.
            chunks = 1 if ctx.quick else min(CHUNKS, p["processes"])
            sizes = [p["processes"] // chunks + (1 if i < p["processes"] % chunks else 0) for i in range(chunks)]
            windows, benches = [], None
            for i, n in enumerate(sizes):
                progress(f"    {b}: hyperfine -N window {i + 1}/{chunks + 1}, then {n} worker processes")
                windows.append(crosscheck.hyperfine(ctx.backend(b), ["ready"], quick=ctx.quick, windows=1))
                got = measure(processes=None if ctx.quick else n)
                if benches is None:
                    benches = got
                else:
                    for mine, more in zip(benches, got, strict=True):
                        mine.add_runs(more)
            progress(f"    {b}: hyperfine -N window {chunks + 1}/{chunks + 1}")
            windows.append(crosscheck.hyperfine(ctx.backend(b), ["ready"], quick=ctx.quick, windows=1))
            life = next((x.median() for x in benches if x.get_name().startswith("startup.lifecycle.")), None)
            checks.append(crosscheck.startup_record(b, windows, life))
            return benches
        est = estimate.pyperf_task(b, p) + (6 * 0.7 if check else 0.0)   # six short hyperfine windows
        tasks.append(Task(f"{b}: ready+lifecycle", b, est, run))
    vms = [b for b in ctx.backends if ctx.is_vm(b)]
    if len(vms) > 1 and not ctx.quick:
        tasks.append(_interleaved(ctx, vms))
    ctx.summary_metrics = ["ready", "lifecycle"]
    return tasks


def _interleaved(ctx: Context, vms: list[str]) -> Task:
    """The VM backends once more, boots interleaved round by round (bench/backends/vm.py
    paired): the libvirt/raw-QEMU ratio without the drift between sequential tasks."""
    from bench.backends.vm import PAIRED_ROUNDS, paired
    rounds = PAIRED_ROUNDS.get(ctx.mode, 8)

    def run():
        progress(f"    {', '.join(vms)}: {rounds} rounds of interleaved boots")
        res = paired(vms, rounds, ctx.timeout)
        ctx.meta["vm_interleaved"] = res
        if "libvirt_over_qemu" in res:
            r = res["libvirt_over_qemu"]
            progress(f"    interleaved: libvirt / raw QEMU (same machine) ready {r['ready']:.3f}, "
                     f"lifecycle {r['lifecycle']:.3f}")
        return []
    return Task(f"{'/'.join(vms)}: interleaved boots", vms[-1], rounds * len(vms) * 3.0, run)
