"""disk: fio's standard profiles (Firecracker's, Kata's, metadata) on each
storage path: a host directory (the floor), a bind mount, overlayfs over the
image and tmpfs in each container runtime, gVisor's gofer root, and in each VM
backend (libvirt, raw QEMU pc, QEMU microvm) virtio-blk on a raw file
(cache=none) and virtio-fs through virtiofsd (bench/disk_vm.py).

One fio binary (bench.disk_fio's layer), one JSON parser, caches dropped
before each job, O_DIRECT as the profiles ask.  Per job: IOPS, bandwidth,
completion-latency p50/p99/p99.9 from fio's own percentiles, and host
CPU-seconds per GB (per 1,000 ops for metadata) from getrusage of the processes
the harness reaped (fio, and the runtime that started it).

gVisor: its gofer-mediated root and its memory overlay (--overlay2=root:memory).
VMs: one guest per backing runs every job (fio from the same layer, as a
read-only ext4 disk); host CPU is the VMM's (QEMU, virtiofsd).  Under TCG the
guest side is emulated, which the chart says.  Rows that cannot be measured
are named in meta.json's ``disk.rows`` with the reason (9p: the guest kernel
has none).

A job that overruns the limit sized from its expected length (bench.disk_watch)
is a hang: its evidence goes into the row's ``retried`` list, the profile runs
once more on a fresh instance, and a second hang fails the row.  Each row also
records its wall time (``wall_s``, ``jobs_wall_s``), so a run's budget can be
read per backing.
"""
from __future__ import annotations

import time

from bench import disk, disk_fio, disk_vm, disk_watch, timing
from bench.harness import Context, Task, progress

DESCRIPTION = "fio profiles (Firecracker, Kata, metadata) per storage backing: IOPS, bandwidth, clat p50/p99/p99.9"
REPEATS = {"quick": 1, "fast": 1, "default": 1, "rigorous": 3}
SUPPORTED = ("host", "runc", "crun", "builtin-cli", "runsc", "libvirt", "qemu", "qemu-microvm")
NOT_YET = {
    "builtin": "the in-process library backend is timed by builtin-cli here (same runtime, same bundle): "
               "fio needs a process of its own",
}
METRICS = {   # metric -> (pyperf unit, tidy unit)
    "iops": ("integer", "iops"), "bw": ("byte", "bytes_per_s"),
    "clat_p50": ("second", "s"), "clat_p99": ("second", "s"), "clat_p999": ("second", "s"),
    "cpu_s_per_gb": ("second", "cpu_s_per_gb"), "cpu_s_per_kop": ("second", "cpu_s_per_kop"),
}


def window(ctx: Context, vm: bool = False) -> disk_fio.Window:
    return (disk_fio.VM_WINDOWS if vm else disk_fio.WINDOWS)["quick" if ctx.quick else ctx.mode]


# FAST=1 is a smoke run of at most 4 minutes: the raw-QEMU pc guest (and libvirt's)
# stand for the VMs there, microvm runs in default and rigorous runs only.
FAST_SKIP = {"qemu-microvm": "skipped under FAST=1 to keep it within 4 minutes (raw QEMU pc and libvirt "
                             "are measured); a run without FAST=1 measures it"}


def plan(ctx: Context) -> list[Task]:
    from bench import image
    win, vwin = window(ctx), window(ctx, vm=True)
    repeats = REPEATS["quick" if ctx.quick else ctx.mode]
    space = disk.check_space(win if win.bytes_needed() >= vwin.bytes_needed() else vwin)
    layer = disk_fio.build_layer(image.load())
    rows: dict[str, dict] = {}
    ctx.meta["disk"] = {"fio": disk_fio.version(), "layer": str(layer), "window": vars(win),
                        "vm_window": vars(vwin),
                        "repeats": repeats, "space": space, "rows": rows,
                        "caches": "sync + echo 3 > /proc/sys/vm/drop_caches before every job (host kernel: "
                                  "the containers' cache too); files laid out by fio --create_only first",
                        "cpu": "getrusage(RUSAGE_CHILDREN) around each fio run: fio plus the runtime that "
                               "started it, fio's start and ramp included; per GB moved in the measured window",
                        "watchdog": disk_watch.describe(), "profiles": disk_fio.PROFILES}
    tasks = []
    for name in ctx.backends:
        if name not in SUPPORTED:
            rows[name] = {"status": "not measured", "why": NOT_YET.get(name, "no disk path for this backend")}
            continue
        if ctx.mode == "fast" and not ctx.quick and name in FAST_SKIP:
            rows[name] = {"status": "not measured", "why": FAST_SKIP[name]}
            continue
        b = ctx.backend(name)
        if b.kind == "vm":
            rows[f"{name}/9p"] = {"status": "not measured", "why": disk_vm.NINEP_WHY}
        w = vwin if b.kind == "vm" else win
        for backing in disk.backings_for(b):
            rows[f"{name}/{backing.name}"] = {"status": "pending", "cache": backing.cache,
                                              "direct": backing.direct, "host_cache_inflated": backing.inflated}
            # 4 timed data jobs + starts, layout and metadata: ~17 s per backing under FAST=1 here;
            # a guest adds its boot and TCG's slower fio start (~10 s)
            est = repeats * (len(disk_fio.DATA_PROFILES) * 2 * (w.ramp_s + w.runtime_s) + 6)
            est += 15 * repeats if b.kind == "vm" else 0
            tasks.append(Task(f"{name}/{backing.name}: fio x {repeats}", name, est,
                              lambda b=b, backing=backing, w=w: _one(ctx, b, backing, layer, w, repeats, rows)))
    ctx.summary_metrics = ["iops", "clat_p99"]
    return tasks


def _one(ctx, b, backing, layer, win, repeats, rows) -> list:
    key = f"{b.name}/{backing.name}"
    samples: dict[tuple[str, str], list[list[float]]] = {}
    t0 = time.monotonic()
    workdir = disk.run_dir() / f"{b.name}-{backing.name}"
    workdir.mkdir(parents=True, exist_ok=True)
    jobs_s: dict[str, list[float]] = {}
    try:
        for _ in range(repeats):
            runner = disk.runner_for(b, layer, workdir, win)
            try:
                for profile in disk_fio.PROFILES:
                    for section, fig in _profile(runner, backing, win, profile, rows[key]).items():
                        jobs_s.setdefault(section, []).append(round(fig["wall_s"], 1))
                        for metric, value in _values(profile, fig).items():
                            samples.setdefault((metric, section), []).append([value])
            finally:
                if hasattr(runner, "close"):   # a VM: one guest per repeat, gone before the next
                    runner.close()
    except Exception as e:
        rows[key].update(status="failed", why=str(getattr(e, "why", e)).splitlines()[0][:1200])
        raise
    finally:
        disk.remove_run_dir(workdir)
        rows[key].update(wall_s=round(time.monotonic() - t0, 1), jobs_wall_s=jobs_s)
    rows[key]["status"] = "ok"
    out = []
    for (metric, section), vals in samples.items():
        unit, tidy = METRICS[metric]
        md = {"cvbench_tidy_unit": tidy, "cvbench_backend": b.name, "cvbench_backing": backing.name,
              "cvbench_fio_window": f"ramp {win.ramp_s} s + {win.runtime_s} s, {win.size_mib} MiB, "
                                    f"{win.nfiles} files",
              "cvbench_cache": backing.cache, "cvbench_direct": str(backing.direct),
              "cvbench_host_cache_inflated": str(backing.inflated),
              "cvbench_fio_job": section, "cvbench_source": "fio --output-format=json, one fio run per value"}
        out.append(timing.in_instance_runs(f"disk.{metric}.{b.name}.{backing.name}:{section}", vals, unit, md))
    return out


def _profile(runner, backing, win, profile: str, row: dict) -> dict[str, dict]:
    """One profile's jobs; a hung job (bench.disk_watch.Hang) is recorded in the
    row with its evidence and the whole profile (its layout too) is run once more
    on a fresh instance: a fresh guest (the hung one is destroyed) or, for
    containers, the fresh container every job gets anyway.  A second hang fails
    the row."""
    try:
        return disk.measure(runner, backing, win, profile, progress)
    except disk_watch.Hang as h:
        progress(f"    {backing.name} {profile}: {h.why}; retrying the profile once on a fresh instance")
        row.setdefault("retried", []).append(f"retried after a hang: {h.why}")
        if hasattr(runner, "close"):
            runner.close()   # the next job boots a fresh guest
        return disk.measure(runner, backing, win, profile, progress)


def _values(profile: str, fig: dict) -> dict[str, float]:
    v = {k: fig[k] for k in ("iops", "bw", "clat_p50", "clat_p99", "clat_p999")}
    if profile == "metadata":
        v.pop("bw")
        v["cpu_s_per_kop"] = fig["cpu_s"] / (fig["total_ios"] / 1000)
    elif fig["io_bytes"] > 0:
        v["cpu_s_per_gb"] = fig["cpu_s"] / (fig["io_bytes"] / 1e9)
    return {k: x for k, x in v.items() if x > 0}
