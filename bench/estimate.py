"""Rough durations, only for the progress line's ETA (never recorded as data)."""
from __future__ import annotations

# seconds per instance, spawn to gone, on a small TCG-only machine
PER_INSTANCE = {"host": 0.001, "builtin": 0.035, "builtin-cli": 0.11, "crun": 0.025, "runc": 0.045,
                "runsc": 0.15, "qemu": 2.5, "libvirt": 5.0}
PYTHON_START = 0.4


def pyperf_task(backend: str, plan: dict) -> float:
    t = PER_INSTANCE.get(backend, 1.0)
    per_proc = PYTHON_START + (plan["warmups"] + plan["values"]) * t   # one spawn per value
    return plan["processes"] * per_proc + (0 if t > 1 else per_proc)


def instances(backend: str, n: int, extra_s: float = 0.0) -> float:
    return n * (PER_INSTANCE.get(backend, 1.0) + extra_s)
