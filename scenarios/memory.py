"""memory: what one instance costs the host, and what each extra one adds.

Measured from the host side only, under one definition for every backend
(bench/memory.py): the headline ``charged`` is what the memory controller
charges to the instance's own cgroup, plus the PSS of the instance's processes
outside it, plus its share of a supervisor it shares with other instances.
The second view is PSS (smaps_rollup) summed over every host process of the
instance, split into the workload (the probe process; for a VM the guest RAM,
THP-rounded, guest kernel included) and the runtime/VMM part (monitors, shims,
gVisor's sandbox and gofer, QEMU's own memory and TCG's translation cache).
Zeros are recorded (tidy.csv rows and meta.json), not dropped.  A separate
process (bench/smaps_check.sh) re-reads the PSS of one instance per backend;
the ratio goes into meta.json.  ``ru_maxrss`` is never used: for a VM it
measures QEMU's peak, not what the guest costs.

* idle:  ``probe sleep -1``;   mem64: ``probe mem 64 -1`` (64 MiB touched)
* density: 1, 2, 4, 8 idle instances side by side (VMs capped by free RAM),
  started one after another and kept running, so each step adds instances to
  those already there; the slope of the total over n is the per-instance cost.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess

from bench import estimate, memory, timing
from bench.harness import Context, Task, progress

DESCRIPTION = "host-side PSS of idle and 64 MiB instances (workload vs overhead), density 1-8 and slope"

# mode -> (samples of idle/mem64 per backend, density samples)
SIZES = {"quick": (1, 1), "fast": (2, 1), "default": (3, 2), "rigorous": (6, 3)}
DENSITY = [1, 2, 4, 8]
VARIANTS = {"idle": ["sleep", "-1"], "mem64": ["mem", "64", "-1"]}
VM_BYTES_GUESS = 300 << 20   # TCG QEMU with 128 MiB of guest RAM: ~215-225 MB PSS measured
METRICS = ("charged", "pss_total", "workload", "overhead", "cgroup_charged", "outside_pss",
           "supervisor_share")
SMAPS_TOLERANCE = 0.05
SUPERVISOR = "the harness process (in-process runtime library): its PSS divided by the live instances"


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


def measure(inst, sharers: int = 1) -> dict:
    """One live instance under the one definition: the PSS split, then the headline."""
    rec = inst.memory()
    sup = ({"pid": os.getpid(), "sharers": sharers, "what": SUPERVISOR}
           if getattr(inst, "supervised_in_process", False) else None)
    rec.update(memory.headline(inst.host_pids(), inst.cgroup_dirs(), sup))
    return rec


def smaps_crosscheck(b: str, inst, attempts: int = 5) -> dict:
    """Re-read the instance's PSS with bench/smaps_check.sh in its own process.

    The harness reads the same processes just before and just after it.  PSS
    moves with the outside world (a runc binary's pages are shared with every
    other runc running on the host at that moment), so the comparison uses a
    window in which the harness's two readings agree (within 0.5%); up to
    ``attempts`` tries, and the record says how many it took."""
    pids = inst.host_pids()
    script = os.path.join(os.path.dirname(memory.__file__), "smaps_check.sh")
    rec = {"check": "smaps_rollup (separate process)", "backend": b, "metric": "pss_total",
           "unit": "bytes", "harness": None, "tool": None, "tolerance": SMAPS_TOLERANCE,
           "ratio": None, "within": None}
    for attempt in range(1, attempts + 1):
        try:
            before = sum(memory.pss(p) for p in pids)
            r = subprocess.run(["sh", script, *map(str, pids)], capture_output=True, text=True, timeout=30)
            after = sum(memory.pss(p) for p in pids)
            out = json.loads(r.stdout)
        except (OSError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
            rec["error"] = f"{type(e).__name__}: {e}"
            return rec
        rec.update(harness=(before + after) / 2, tool=out["pss"], missing=out["missing"],
                   harness_before=before, harness_after=after, attempts=attempt)
        if abs(before - after) <= 0.005 * max(before, 1):
            break
    else:
        rec["note"] = "the harness's readings moved around every attempt (PSS shared with other processes)"
    if rec["harness"] and rec["tool"]:
        rec["ratio"] = rec["harness"] / rec["tool"]
        rec["within"] = abs(rec["ratio"] - 1) <= SMAPS_TOLERANCE
    return rec


def _zero_rows(ctx: Context, name: str, vals: list, unit: str) -> None:
    """pyperf refuses zeros; tidy.csv still gets them (bench.results reads these rows)."""
    _, metric, backend, variant = name.split(".", 3)
    for i, v in enumerate(vals, 1):
        if v == 0:
            ctx.meta.setdefault("tidy_extra_rows", []).append(
                {"scenario": "memory", "metric": metric, "backend": backend, "variant": variant,
                 "value": "0", "unit": unit, "process": i, "run": 1})


def single(ctx: Context, b: str, samples: int) -> list:
    backend = ctx.backend(b)
    out = []
    for variant, args in VARIANTS.items():
        recs = []
        for i in range(samples):
            progress(f"    {b}/{variant}: instance {i + 1}/{samples}")
            with backend.start(args, timeout=ctx.timeout) as inst:
                recs.append(measure(inst))
                if variant == "idle" and i == 0:
                    chk = smaps_crosscheck(b, inst)
                    ctx.meta.setdefault("crosschecks", []).append(chk)
                    ctx.meta.setdefault("crosscheck", {}).setdefault("smaps", {})[b] = chk
        ctx.meta.setdefault("memory_records", {}).setdefault(b, {})[variant] = recs
        md = {"cvbench_backend": b, "cvbench_probe_args": " ".join(args),
              "cvbench_source": "charged: memory controller + outside PSS; others: host PSS from "
                                "/proc/PID/smaps_rollup; one run per instance",
              "cvbench_cgroup": ",".join(r.get("cgroup", "") for r in recs)[:400],
              "cvbench_processes": ";".join(",".join(p["exe"] for p in r.get("processes", {}).values())
                                            for r in recs)[:400]}
        if b == "runsc":
            ctx.meta.setdefault("memory_notes", {})["pss_total.runsc"] = (
                "gVisor keeps the application's memory in a memory file that no host process maps "
                "in full, so PSS undercounts it; the charged headline includes it")
        for metric in METRICS:
            vals = [r.get(metric) for r in recs]
            if all(v is None for v in vals):
                continue  # no memory cgroup of its own (host): not applicable, not zero
            vals = [v or 0 for v in vals]
            if not all(v > 0 for v in vals):
                note = {"overhead": "0: no separate runtime/VMM process",
                        "outside_pss": "0: every process of the instance is inside its cgroup",
                        "supervisor_share": "0: the instance's supervisor is its own process",
                        }.get(metric, "0: the workload has no host process of its own (runs inside the sandbox)")
                ctx.meta.setdefault("memory_notes", {})[f"{metric}.{b}.{variant}"] = note
            name = f"memory.{metric}.{b}.{variant}"
            _zero_rows(ctx, name, vals, "bytes")
            bench = _record(name, vals, "bytes", md)
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
                totals[n].append(sum(measure(i, sharers=len(live))["charged"] for i in live))
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
    ctx.summary_metrics = ["charged", "pss_total", "overhead", "density_slope"]
    ctx.meta["memory_definitions"] = {
        "charged": "headline: what the memory controller charges to the instance's own cgroup (its "
                   "container cgroup; raw QEMU's cvbench cgroup; libvirt's machine cgroup) + PSS of the "
                   "instance's processes outside that cgroup + its share of a shared supervisor",
        "pss_total": "sum of PSS over every host process of the instance",
        "workload": "PSS of the probe process; for VMs guest RAM (THP-rounded, guest kernel included)",
        "overhead": "pss_total - workload: runtime monitors/sandbox, or the VMM",
        "cgroup_charged": "the memory controller's charge to the instance's own cgroup alone",
        "outside_pss": "PSS of the instance's processes outside its cgroup (e.g. runc run in the foreground)",
        "supervisor_share": "PSS of a supervisor shared by several instances / the live instances",
        "supervisor": {"builtin": SUPERVISOR,
                       "builtin-cli": "its own 'python -m runtime run' process (counted in outside_pss)"},
        "density_total": "sum of the charged headline over n idle instances running side by side",
        "density_slope": "least-squares slope of density_total over n (bytes per added instance)",
    }
    return tasks
