"""Values measured inside an instance (the probe's ns per op), as pyperf Runs.

Each instance is one pyperf "process" (a Run); the probe's ``--repeat`` values
are that Run's values.  Stored in seconds like every pyperf time, with
``cvbench_tidy_unit=ns`` so tidy.csv and the summary show nanoseconds.
"""
from __future__ import annotations

from common.probe import OPS

from . import timing


def probe_ops_args(ops: list[str], repeat: int, min_ms: int) -> list[str]:
    return ["ops", "--min-ms", str(min_ms), "--repeat", str(repeat), *ops]


def ops_benchmarks(scenario: str, backend, name: str, ops: list[str] | tuple[str, ...] = OPS, *,
                   variant: str = "", instances: int, repeat: int, min_ms: int,
                   timeout: float, md: dict | None = None, progress=None, between=None) -> list:
    """Run ``instances`` instances of ``probe ops`` and return one benchmark per op.
    ``between()`` runs after each instance (an independent check under the same load)."""
    per_op: dict[str, list[list[float]]] = {op: [] for op in ops}
    iters: dict[str, list[int]] = {op: [] for op in ops}
    errors: list[str] = []
    args = probe_ops_args(list(ops), repeat, min_ms)
    for i in range(instances):
        if progress:
            progress(f"    {name}{'/' + variant if variant else ''}: instance {i + 1}/{instances}")
        t = backend.run(args, timeout=timeout)
        if t.rc != 0 and not t.probe.ops:
            from .backends import InstanceFailed
            raise InstanceFailed(name, f"probe ops exited with rc={t.rc}", t.console)
        errors += t.probe.errors
        if between is not None:
            between()
        for op in ops:
            vals = [v * 1e-9 for v in t.probe.ns_per_op(op) if v > 0]
            if vals:
                per_op[op].append(vals)
                iters[op] += [o.iters for o in t.probe.ops if o.op == op]
    out = []
    suffix = f".{variant}" if variant else ""
    for op in ops:
        if not per_op[op]:
            continue
        meta = {"cvbench_tidy_unit": "ns", "cvbench_backend": name, "cvbench_op": op,
                "cvbench_source": "probe in-instance ns/op, one run per instance",
                "cvbench_probe_args": " ".join(args),
                "cvbench_iters": ",".join(map(str, sorted(set(iters[op])))),
                **(md or {})}
        if errors:
            meta["cvbench_probe_errors"] = "; ".join(sorted(set(errors)))[:500]
        out.append(timing.in_instance_runs(f"{scenario}.{op}.{name}{suffix}", per_op[op], "second", meta))
    return out
