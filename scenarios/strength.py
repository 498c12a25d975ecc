"""strength: what each backend and ladder rung leaves of the host reachable,
next to what it costs (to start, and per syscall).

Per backend (and per rung of the builtin runtime's ladder), ``probe strength``
runs RUNS times in fresh instances (bench.strength): syscall reachability,
capabilities, namespaces shared with the host, device nodes, sensitive paths,
and the escape battery (every attempt harmless by construction, see
scenarios/probe/probe.c).  The profiles go to meta.json ("strength"); the cost
axes are the startup-to-READY time and the null syscall (getppid, ns per op in
the instance, as the isolation scenario measures it), both measured in the same
run (tidy.csv).

The host row has no boundary, so the battery does not run there: the row reads
"no boundary" (bench.strength.has_boundary).  The ladder's bare rung is the
unfenced reference instead: the builtin runtime with every mechanism off, a
root process with all capabilities in the host's namespaces.
"""
from __future__ import annotations

from bench import estimate, inside, strength, strength_host, timing
from bench.harness import Context, Task, progress

DESCRIPTION = "exposure profile (syscalls, caps, namespaces, devices, paths, escapes) next to startup cost"

RUNS = 3   # profiles per backend; they must agree
COST_OP = "getppid"   # the syscall cost axis: the null syscall
# mode -> (instances per row for the syscall cost (a VM: one), --repeat, --min-ms), as the isolation scenario's
SIZES = {"quick": (1, 2, 5), "fast": (2, 3, 20), "default": (3, 5, 30), "rigorous": (6, 5, 50)}

HOST_SIDE_NOTE = ("per backend row (profile 'host_syscalls'): distinct syscalls entered, by name, by the "
                  "backend's command running a fixed probe workload, from strace -f's event log (perf trace "
                  "where strace cannot follow; bench/strength_host.py); rows without one say why")


def _task(ctx: Context, label: str, b: str, rung: str = "", variant: str = "") -> Task:
    vm = ctx.is_vm(b)

    def run():
        backend = ctx.backend(b).with_rung(rung) if rung else ctx.backend(b)
        progress(f"    {label}: {RUNS} x probe strength")
        prof = strength.measure(backend, vm=vm, runs=RUNS, timeout=ctx.timeout * 3)
        prof["backend"], prof["rung"] = b, variant
        progress(f"    {label}: the workload under a syscall tracer (host syscalls)")
        prof["host_syscalls"] = strength_host.host_syscalls(backend, ctx.timeout, rung=rung)
        side = ctx.meta["strength_host_side"]
        if not side["kernel_functions"]["checks"]:
            side["kernel_functions"] = strength_host.kernel_functions()
        ctx.meta.setdefault("strength", {})[label] = prof
        name = f"strength.ready.{b}" + (f".{variant}" if variant else "")
        md = {"cvbench_rung": variant or "backend"}
        benches = timing.run_worker(name, b, "ready", mode=ctx.mode,
                                    plan="rung" if rung else ("vm" if vm else "fast_path"),
                                    quick=ctx.quick, timeout=ctx.timeout, rung=rung, extra_md=md)
        return benches + inside.ops_benchmarks("strength", backend, b, [COST_OP], variant=variant,
                                               instances=1 if vm else n, repeat=repeat, min_ms=min_ms,
                                               timeout=ctx.timeout, md=md, progress=progress)
    n, repeat, min_ms = SIZES["quick" if ctx.quick else ctx.mode]
    plan = timing.plan_of(ctx.mode, "rung" if rung else ("vm" if vm else "fast_path"))
    est = estimate.pyperf_task(b, plan) + estimate.instances(b, RUNS + (1 if vm else n), 0.5)
    return Task(f"{label}: profile x{RUNS} + startup", b, est, run)


def plan(ctx: Context) -> list[Task]:
    from scenarios.isolation import rungs
    tasks = [_task(ctx, b, b) for b in ctx.backends]
    ladder = []
    if "builtin" in ctx.backends:
        for variant, spec in rungs(ctx.quick):
            if variant == "full":   # the builtin row itself
                continue
            ladder.append(variant)
            tasks.append(_task(ctx, f"builtin/{variant}", "builtin", spec, variant))
    ctx.meta["strength_ladder"] = ladder
    ctx.meta["strength_runs"] = RUNS
    # checked in the first task (it mounts tracefs in a private mount namespace:
    # root, not at plan time); until then it says so
    ctx.meta["strength_host_side"] = {"host_syscalls": HOST_SIDE_NOTE,
                                      "kernel_functions": {"measured": False, "checks": {},
                                                           "why": "not checked: no row ran"}}
    ctx.meta["strength_note"] = ("syscalls: x86-64 numbers probed with invalid arguments in a throw-away "
                                 "child; 'blocked' = ENOSYS or EPERM (from a filter, a capability check, "
                                 "or the syscall itself, as on the host) or the child was killed; "
                                 "VM rows are the guest kernel's view, behind a hardware boundary")
    ctx.summary_metrics = ["ready", COST_OP]
    return tasks
