"""Interleaved A/B boots: which command-line and device choices shorten boot-to-READY.

``python -m vm_backend.experiment cmdline|tbcache|machine|compare [--boots N]``
boots every variant once per round, in a fresh random order each round, so
drift on a shared host spreads over all variants instead of biasing one, and
prints the median boot-to-READY of each and its delta from the first
(baseline) variant, in wall time and in the VMM's CPU time up to READY.  A
TCG boot is one busy vCPU thread, so its CPU time barely moves when other
work on the host delays it, while its wall time does: on a shared machine the
CPU column is the one to decide on.  The winners are baked into cmdline.BOOT_OPTS and the
backends' defaults; the figures they were chosen on are in the lead's report.
Indicative only on a shared machine: publishable figures come from the
harness's startup scenario.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys

from .cmdline import BASE_OPTS, BOOT_OPTS

CMDLINE_VARIANTS = {
    "base": BASE_OPTS,
    "+cryptomgr.notests": f"{BASE_OPTS} cryptomgr.notests",
    "+tsc=reliable": f"{BASE_OPTS} tsc=reliable",
    "+edd=off": f"{BASE_OPTS} edd=off",
    "+i8042.noaux+nokbd": f"{BASE_OPTS} i8042.noaux i8042.nokbd",
    "+8250.nr_uarts=1": f"{BASE_OPTS} 8250.nr_uarts=1",
    "-quiet": "console=ttyS0 panic=-1",
    "defaults (BOOT_OPTS)": BOOT_OPTS,
}


def _vm(backend: str, image, **kw):
    from . import LibvirtVM, QemuVM
    cls = LibvirtVM if backend == "libvirt" else QemuVM
    return cls(image.kernel, image.initramfs, ["ready"], accel="tcg", timeout=120, **kw)


def variants(which: str, backend: str) -> dict[str, dict]:
    if which == "cmdline":
        return {k: {"cmdline_opts": v, **({"machine": "pc"} if backend == "qemu" else {})}
                for k, v in CMDLINE_VARIANTS.items()}
    if which == "tbcache":
        return {"default": {}, **{f"tb={n}MiB": {"tb_cache_mib": n} for n in (32, 64, 128, 256)}}
    if which == "machine":
        if backend == "qemu":
            return {"pc": {"machine": "pc"}, "microvm": {"machine": "microvm"}}
        return {"pc": {"machine": "pc"}, "q35": {"machine": "q35"}}
    raise SystemExit(f"unknown experiment {which!r}")


def cpu_s(pid: int) -> float:
    """utime+stime of a process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(vm) -> tuple[float, float, float]:
    """(wall s, VMM CPU s, VMM overhead PSS MiB) at CVB READY."""
    with vm:
        vm.start()
        cpu = cpu_s(vm.host_pids()[0])
        return vm.result.ready_s, cpu, vm.memory()["vmm_overhead"] / (1 << 20)


def measure(make, var: dict[str, dict], boots: int) -> dict[str, list[tuple[float, float, float]]]:
    res: dict[str, list[tuple[float, float, float]]] = {k: [] for k in var}
    for rnd in range(boots):
        order = list(var)
        random.shuffle(order)
        for k in order:
            wall, cpu, mib = one(make(k, var[k]))
            res[k].append((wall, cpu, mib))
            print(f"round {rnd + 1}/{boots} {k}: ready {wall:.3f}s cpu {cpu:.2f}s overhead {mib:.1f} MiB",
                  file=sys.stderr)
    return res


def table(res: dict[str, list[tuple[float, float, float]]]) -> str:
    med = {k: tuple(statistics.median(x[i] for x in v) for i in range(3)) for k, v in res.items()}
    bw, bc, _ = next(iter(med.values()))
    rows = ["| variant | n | median ready (s) | delta | median VMM CPU to READY (s) | delta "
            "| VMM overhead PSS at READY (MiB) |", "|---|---|---|---|---|---|---|"]
    for k, (w, c, m) in med.items():
        rows.append(f"| {k} | {len(res[k])} | {w:.3f} | {w - bw:+.3f} ({(w / bw - 1) * 100:+.1f}%) | "
                    f"{c:.2f} | {c - bc:+.2f} ({(c / bc - 1) * 100:+.1f}%) | {m:.1f} |")
    return "\n".join(rows)


def compare_kinds() -> dict[str, dict]:
    """libvirt (pc) vs raw QEMU on pc (libvirt's own cost) and on microvm."""
    return {"libvirt pc": {"backend": "libvirt"}, "qemu pc": {"backend": "qemu", "machine": "pc"},
            "qemu microvm": {"backend": "qemu", "machine": "microvm"}}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m vm_backend.experiment")
    p.add_argument("which", choices=["cmdline", "tbcache", "machine", "compare"])
    p.add_argument("--boots", type=int, default=5)
    p.add_argument("--backend", choices=["qemu", "libvirt"], default="qemu")
    a = p.parse_args(argv)
    from types import SimpleNamespace

    from common import manifest
    kernel, initramfs = manifest.kernel_and_initramfs()
    img = SimpleNamespace(kernel=kernel, initramfs=initramfs)
    if a.which == "compare":
        var = compare_kinds()
        res = measure(lambda k, v: _vm(v["backend"], img, **{x: y for x, y in v.items() if x != "backend"}),
                      var, a.boots)
    else:
        res = measure(lambda k, v: _vm(a.backend, img, **v), variants(a.which, a.backend), a.boots)
    print(table(res))
    return 0


if __name__ == "__main__":
    from common.errors import run_cli
    sys.exit(run_cli(main))
