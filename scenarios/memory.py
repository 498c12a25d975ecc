"""memory: what one instance costs the host, and what each extra one adds.

Measured from the host side only: PSS (smaps_rollup) summed over every host
process of the instance, split into the workload (the probe process; for a VM
the guest-RAM mappings of QEMU) and the runtime/VMM overhead (monitors, shims,
gVisor's sandbox and gofer, QEMU's own memory and TCG's translation cache),
plus the memory its cgroup is charged, kept in the metadata.  ``ru_maxrss`` is
never used: for a VM it measures QEMU's peak, not what the guest costs.

* idle:  ``probe sleep -1``;   mem64: ``probe mem 64 -1`` (64 MiB touched)
* density: 1, 2, 4, 8 idle instances side by side (VMs capped by free RAM),
  started one after another and kept running, so each step adds instances to
  those already there; the slope of the total over n is the per-instance cost.
"""
from __future__ import annotations

import contextlib

from bench import estimate, timing
from bench.harness import Context, Task, progress

DESCRIPTION = "host-side PSS of idle and 64 MiB instances (workload vs overhead), density 1-8 and slope"

# mode -> (samples of idle/mem64 per backend, density samples)
SIZES = {"quick": (1, 1), "fast": (2, 1), "default": (3, 2), "rigorous": (6, 3)}
DENSITY = [1, 2, 4, 8]
VARIANTS = {"idle": ["sleep", "-1"], "mem64": ["mem", "64", "-1"]}
VM_BYTES_GUESS = 300 << 20   # TCG QEMU with 128 MiB of guest RAM: ~215-225 MB PSS measured


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def density_steps(ctx: Context, backend: str) -> tuple[list[int], str]:
    steps = [1, 2] if ctx.quick else list(DENSITY)
    if not ctx.is_vm(backend):
        return steps, ""
    cap = max(1, mem_available() // 2 // VM_BYTES_GUESS)
    if ctx.mode == "fast" and not ctx.quick:
        cap = min(cap, 4)
        note = "fast mode: VMs capped at 4 (TCG boots take seconds)"
    else:
        note = f"VMs capped at {cap} by half of MemAvailable / {VM_BYTES_GUESS >> 20} MiB"
    kept = [n for n in steps if n <= cap] or [1]
    return kept, note


def _record(name: str, vals: list[int], unit: str, md: dict):
    vals = [[v] for v in vals if v and v > 0]
    if not vals:
        return None
    return timing.in_instance_runs(name, vals, "byte", {"cvbench_tidy_unit": unit, **md})


def single(ctx: Context, b: str, samples: int) -> list:
    backend = ctx.backend(b)
    out = []
    for variant, args in VARIANTS.items():
        recs = []
        for i in range(samples):
            progress(f"    {b}/{variant}: instance {i + 1}/{samples}")
            with backend.start(args, timeout=ctx.timeout) as inst:
                recs.append(inst.memory())
        md = {"cvbench_backend": b, "cvbench_probe_args": " ".join(args),
              "cvbench_source": "host PSS from /proc/PID/smaps_rollup; one run per instance",
              "cvbench_cgroup_charged": ",".join(str(r.get("cgroup_charged")) for r in recs),
              "cvbench_processes": ";".join(",".join(p["exe"] for p in r.get("processes", {}).values())
                                            for r in recs)[:400]}
        if b == "runsc":
            ctx.meta.setdefault("memory_notes", {})["pss_total.runsc"] = (
                "gVisor keeps the application's memory in a memory file that no host process maps "
                "in full, so PSS undercounts it; cgroup_charged shows it")
        for metric in ("pss_total", "workload", "overhead", "cgroup_charged"):
            vals = [r[metric] for r in recs]
            note = ""
            if metric == "cgroup_charged" and all(v is None for v in vals):
                continue  # no memory cgroup of its own (host, VMs)
            if not all(v is not None and v > 0 for v in vals):
                note = ("0: no separate runtime/VMM process" if metric == "overhead"
                        else "0: the workload has no host process of its own (runs inside the sandbox)")
                ctx.meta.setdefault("memory_notes", {})[f"{metric}.{b}.{variant}"] = note
            bench = _record(f"memory.{metric}.{b}.{variant}", vals, "bytes", md)
            if bench is not None:
                out.append(bench)
    return out


def density(ctx: Context, b: str, samples: int) -> list:
    backend = ctx.backend(b)
    steps, note = density_steps(ctx, b)
    totals: dict[int, list[int]] = {n: [] for n in steps}
    for s in range(samples):
        with contextlib.ExitStack() as stack:
            live = []
            for n in steps:
                while len(live) < n:
                    progress(f"    {b}/density: instance {len(live) + 1}/{steps[-1]} (sample {s + 1}/{samples})")
                    live.append(stack.enter_context(backend.start(VARIANTS["idle"], timeout=ctx.timeout)))
                totals[n].append(sum(i.memory()["pss_total"] for i in live))
    md = {"cvbench_backend": b, "cvbench_density_steps": ",".join(map(str, steps)),
          "cvbench_density_note": note or "containers: 1, 2, 4, 8"}
    out = []
    for n in steps:
        bench = _record(f"memory.density_total.{b}.n={n}", totals[n], "bytes", md)
        if bench is not None:
            out.append(bench)
    slope = _slope({n: sorted(v)[len(v) // 2] for n, v in totals.items() if v})
    ctx.meta.setdefault("density", {})[b] = {"steps": steps, "note": note, "slope_bytes": slope,
                                             "totals": totals}
    if slope is not None and slope > 0:
        out.append(timing.in_instance_runs(f"memory.density_slope.{b}", [[slope]], "byte",
                                           {"cvbench_tidy_unit": "bytes_per_instance", **md,
                                            "cvbench_source": "least-squares slope of median totals over n"}))
    return out


def _slope(points: dict[int, int]) -> float | None:
    """Least-squares slope of total PSS over instance count (no numpy here)."""
    if len(points) < 2:
        return None
    xs, ys = list(points), list(points.values())
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else None


def plan(ctx: Context) -> list[Task]:
    samples, dsamples = SIZES["quick" if ctx.quick else ctx.mode]
    tasks = []
    for b in ctx.backends:
        tasks.append(Task(f"{b}: idle and mem64", b, estimate.instances(b, 2 * samples, 0.5),
                          lambda b=b: single(ctx, b, samples)))
    for b in ctx.backends:
        steps, _ = density_steps(ctx, b)
        tasks.append(Task(f"{b}: density {','.join(map(str, steps))}", b,
                          estimate.instances(b, dsamples * steps[-1], 0.3),
                          lambda b=b: density(ctx, b, dsamples)))
    ctx.summary_metrics = ["pss_total", "overhead", "density_slope"]
    ctx.meta["memory_definitions"] = {
        "pss_total": "sum of PSS over every host process of the instance",
        "workload": "PSS of the probe process; for VMs the guest-RAM mappings of QEMU",
        "overhead": "pss_total - workload: runtime monitors/sandbox, or the VMM",
        "cgroup_charged": "memory charged to the instance's own memory cgroup (containers only)",
        "density_total": "sum of pss_total over n idle instances running side by side",
        "density_slope": "least-squares slope of density_total over n (bytes per added instance)",
    }
    return tasks
