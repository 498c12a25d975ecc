"""isolation: the ladder, pricing each mechanism of cvbench's runtime in turn.

Rungs, bottom to top:
  host (bare)           the host backend's fork+exec of the probe: a bare process
  bare                  the cvbench runtime with every mechanism off: the runtime's own cost
  only:<mechanism>      bare + that one mechanism (+ what it strictly needs)
  cum:<m1>+...+<mk>     the first k mechanisms of Isolation.MECHANISMS, stacked
  full                  the builtin runtime as the startup scenario runs it
  top: crun, runc, runsc, libvirt (and qemu)  the real runtimes and the VM
Each rung: startup to READY (pyperf workers), getppid and read_zero (probe).
"""
from __future__ import annotations

from bench import estimate, inside, timing
from bench.harness import Context, Task, progress

DESCRIPTION = "the ladder: bare process -> runtime -> each mechanism -> full -> crun/runc/runsc/VM"

OPS = ["getppid", "read_zero"]
# mode -> (instances per rung for ops, --repeat, --min-ms)
SIZES = {"quick": (1, 2, 5), "fast": (2, 3, 20), "default": (3, 5, 30), "rigorous": (6, 5, 50)}
TOP = ["crun", "runc", "runsc", "libvirt", "qemu"]


def mechanisms() -> list[str]:
    from bench.backends.builtin import mechanisms
    return mechanisms()


def rungs(quick: bool) -> list[tuple[str, str]]:
    """(variant label, rung spec for the builtin backend), in ladder order."""
    mech = mechanisms()
    out = [("bare", "bare")]
    picked = mech[:1] if quick else mech
    out += [(f"only:{m}", f"only:{m}") for m in picked]
    counts = [2] if quick else range(1, len(mech) + 1)
    out += [("cum:" + "+".join(mech[:k]), f"cum:{k}") for k in counts]
    out.append(("full", "full"))
    return out


def _rung_task(ctx: Context, variant: str, spec: str, n: int, repeat: int, min_ms: int) -> Task:
    def run():
        p = "quick" if ctx.quick else ctx.mode
        benches = timing.run_worker(f"isolation.ready.builtin.{variant}", "builtin", "ready",
                                    mode=ctx.mode, plan="rung", quick=ctx.quick, timeout=ctx.timeout,
                                    rung=spec, extra_md={"cvbench_rung": variant, "cvbench_size": p})
        backend = ctx.backend("builtin").with_rung(spec)
        backend.run(["ready"], timeout=ctx.timeout)   # untimed: which start path this rung takes
        ctx.meta.setdefault("ladder_stage", {})[variant] = backend.last_stage
        benches += inside.ops_benchmarks("isolation", backend, "builtin", OPS, variant=variant,
                                         instances=n, repeat=repeat, min_ms=min_ms,
                                         timeout=ctx.timeout, md={"cvbench_rung": variant},
                                         progress=progress)
        return benches
    est = estimate.pyperf_task("builtin", timing.plan_of(ctx.mode, "rung")) + n * 0.3
    return Task(f"builtin rung {variant}", "builtin", est, run)


def _host_task(ctx: Context, n: int, repeat: int, min_ms: int) -> Task:
    """The floor: a bare fork+exec of the probe by the host backend, no runtime."""
    def run():
        benches = timing.run_worker("isolation.ready.host.bare", "host", "ready", mode=ctx.mode,
                                    plan="rung", quick=ctx.quick, timeout=ctx.timeout,
                                    extra_md={"cvbench_rung": "bare process"})
        benches += inside.ops_benchmarks("isolation", ctx.backend("host"), "host", OPS, variant="bare",
                                         instances=n, repeat=repeat, min_ms=min_ms, timeout=ctx.timeout,
                                         md={"cvbench_rung": "bare process"}, progress=progress)
        return benches
    est = estimate.pyperf_task("host", timing.plan_of(ctx.mode, "rung")) + n * 0.3
    return Task("host: bare process rung", "host", est, run)


def _top_task(ctx: Context, b: str, n: int, repeat: int, min_ms: int) -> Task:
    vm = ctx.is_vm(b)

    def run():
        benches = timing.run_worker(f"isolation.ready.{b}.top", b, "ready", mode=ctx.mode,
                                    plan="vm" if vm else "fast_path", quick=ctx.quick,
                                    timeout=ctx.timeout, extra_md={"cvbench_rung": "top"})
        benches += inside.ops_benchmarks("isolation", ctx.backend(b), b, OPS, variant="top",
                                         instances=1 if vm else n, repeat=repeat, min_ms=min_ms,
                                         timeout=ctx.timeout * 2, md={"cvbench_rung": "top"},
                                         progress=progress)
        return benches
    est = estimate.pyperf_task(b, timing.plan_of(ctx.mode, "vm" if vm else "fast_path"))
    return Task(f"top rung {b}", b, est, run)


def plan(ctx: Context) -> list[Task]:
    n, repeat, min_ms = SIZES["quick" if ctx.quick else ctx.mode]
    tasks = []
    ladder = []
    if "host" in ctx.backends:
        tasks.append(_host_task(ctx, n, repeat, min_ms))
    if "builtin" in ctx.backends:
        for variant, spec in rungs(ctx.quick):
            ladder.append(variant)
            tasks.append(_rung_task(ctx, variant, spec, n, repeat, min_ms))
    tops = [b for b in TOP if b in ctx.backends]
    for b in tops:
        tasks.append(_top_task(ctx, b, n, repeat, min_ms))
    skipped = [b for b in ctx.backends if b not in TOP and b not in ("builtin", "host")]
    ctx.meta["ladder"] = ladder
    ctx.meta["ladder_top"] = tops   # backends whose variant is "top", in isolation order
    ctx.meta["ladder_note"] = ("the floor is the host's bare fork+exec; then the cvbench runtime with "
                               "everything off, then its mechanisms, then the real runtimes and VMs as "
                               "top rungs (the runtimes on the same config.json as the cvbench runtime's "
                               f"'full'); not on the ladder: {', '.join(skipped) or 'none'}")
    ctx.summary_metrics = ["ready", "getppid", "read_zero"]
    return tasks
