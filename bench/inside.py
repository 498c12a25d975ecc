"""Values measured inside an instance (the probe's ns per op), as pyperf Runs.

Each instance is one pyperf "process" (a Run); the probe's ``--repeat`` values
are that Run's values.  Stored in seconds like every pyperf time, with
``cvbench_tidy_unit=ns`` so tidy.csv and the summary show nanoseconds.
"""
from __future__ import annotations

import os

from common.probe import OPS

from . import timing

SELF_KEYS = ("Seccomp", "Seccomp_filters", "CapEff", "NoNewPrivs")
NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")


def probe_ops_args(ops: list[str], repeat: int, min_ms: int, pin: dict | None = None) -> list[str]:
    """``pin``: {"cpu": C, "pair": (A, B)} pins the probe and pipe_pingpong's ends."""
    extra = []
    if pin and pin.get("cpu") is not None:
        extra += ["--cpu", str(pin["cpu"])]
    if pin and pin.get("pair"):
        extra += ["--pair", ",".join(map(str, pin["pair"]))]
    return ["ops", "--min-ms", str(min_ms), "--repeat", str(repeat), *extra, *ops]


def pinning() -> dict:
    """CPUs for the probe (the last one this process may use) and for
    pipe_pingpong's two ends (the first and the last), fixed for a whole run."""
    cpus = sorted(os.sched_getaffinity(0))
    return {"cpu": cpus[-1], "pair": (cpus[0], cpus[-1]) if len(cpus) > 1 else None}


def observe(backend, timeout: float = 60.0) -> dict:
    """The isolation an instance actually got, seen from inside it (``probe self``):
    seccomp mode and filter count, effective capabilities, no_new_privs, and
    which namespaces differ from the harness's own (the host's)."""
    from .backends import InstanceFailed
    t = backend.run(["self"], timeout=timeout)
    v = t.probe.values
    if t.rc != 0 or "CapEff" not in v:
        raise InstanceFailed(backend.name, f"probe self ended with rc={t.rc} and no isolation report",
                             t.console)
    out = {k: v.get(k, "not shown") for k in SELF_KEYS}
    own = []
    for ns in NAMESPACES:
        try:
            host = os.readlink(f"/proc/self/ns/{ns}")
        except OSError:
            continue
        if v.get(f"ns_{ns}", "none") != host:
            own.append(ns)
    out["own_namespaces"] = own
    return out


def ops_benchmarks(scenario: str, backend, name: str, ops: list[str] | tuple[str, ...] = OPS, *,
                   variant: str = "", instances: int, repeat: int, min_ms: int,
                   timeout: float, md: dict | None = None, progress=None, between=None,
                   pin: dict | None = None) -> list:
    """Run ``instances`` instances of ``probe ops`` and return one benchmark per op.
    ``between()`` runs after each instance (an independent check under the same load).

    No silent gaps: an instance that exits badly, reports an error, misses a
    requested op or its repeats, or reports a non-positive time fails the whole
    backend, with the probe's output in the error."""
    from .backends import InstanceFailed
    per_op: dict[str, list[list[float]]] = {op: [] for op in ops}
    iters: dict[str, list[int]] = {op: [] for op in ops}
    affinity: set[str] = set()
    args = probe_ops_args(list(ops), repeat, min_ms, pin)
    for i in range(instances):
        if progress:
            progress(f"    {name}{'/' + variant if variant else ''}: instance {i + 1}/{instances}")
        t = backend.run(args, timeout=timeout)
        if t.rc != 0 or t.probe.errors:
            raise InstanceFailed(name, f"probe ops exited with rc={t.rc}"
                                 + (f" ({'; '.join(t.probe.errors)})" if t.probe.errors else ""), t.console)
        for op in ops:
            got = t.probe.ns_per_op(op)
            if len(got) != repeat or any(not v > 0 for v in got):
                raise InstanceFailed(name, f"probe reported {len(got)} of {repeat} values for op {op}"
                                     + (f", non-positive: {got}" if any(not v > 0 for v in got) else ""),
                                     t.console)
        if "cpu" in t.probe.values:
            affinity.add(f"cpu={t.probe.values['cpu']} pingpong={t.probe.values.get('pingpong', '?')}")
        if between is not None:
            between()
        for op in ops:
            per_op[op].append([v * 1e-9 for v in t.probe.ns_per_op(op)])
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
        if affinity:
            meta["cvbench_affinity"] = "; ".join(sorted(affinity))
        out.append(timing.in_instance_runs(f"{scenario}.{op}.{name}{suffix}", per_op[op], "second", meta))
    return out
