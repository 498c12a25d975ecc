"""The probe's output format, parsed in exactly one place.

The probe (scenarios/probe/probe.c) writes ``CVB ...`` lines to stdout, which in
a VM is the serial console.  Console output can carry kernel noise and ``\\r``,
so parsing is line-oriented and tolerant of anything that is not a CVB line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

READY = "CVB READY"
DONE_PREFIX = "CVB DONE"
OPS = ("getppid", "clock_gettime", "read_zero", "open_close",
       "mmap_touch", "fork_wait", "pipe_pingpong", "cpuid")

_KV = re.compile(r"(\w+)=(\S+)")


@dataclass
class OpResult:
    op: str
    iters: int
    ns_per_op: float


@dataclass
class ProbeOutput:
    ready: bool = False
    rc: int | None = None
    ops: list[OpResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.rc is not None

    def ns_per_op(self, op: str) -> list[float]:
        return [o.ns_per_op for o in self.ops if o.op == op]


def cvb_line(raw: str) -> str | None:
    """The CVB part of a console line, or None.  Strips \\r and leading noise."""
    line = raw.replace("\r", "").strip()
    i = line.find("CVB ")
    return line[i:] if i >= 0 else None


def is_ready(raw: str) -> bool:
    return cvb_line(raw) == READY


def feed(out: ProbeOutput, raw: str) -> None:
    """Add one line of output to ``out``."""
    line = cvb_line(raw)
    if line is None:
        return
    if line == READY:
        out.ready = True
        return
    kv = dict(_KV.findall(line))
    if line.startswith(DONE_PREFIX) and "rc" in kv:
        out.rc = int(kv["rc"])
    elif "op" in kv and "error" in kv:
        # error= is always last and is free text (strerror), spaces included.
        out.errors.append(f"{kv['op']}: {line.split('error=', 1)[1]}")
    elif "op" in kv and "ns_per_op" in kv:
        out.ops.append(OpResult(kv["op"], int(kv["iters"]), float(kv["ns_per_op"])))
    else:
        out.values.update(kv)


def parse(text: str) -> ProbeOutput:
    out = ProbeOutput()
    for raw in text.splitlines():
        feed(out, raw)
    return out


def net_result(text: str) -> dict:
    """A ``probe net client`` run: its ``CVB net`` values (op, n, bytes, ns, ...)
    and, for request/response ops, ``hist``: [(bucket lower bound ns, count), ...]."""
    res: dict = {}
    for raw in text.splitlines():
        line = cvb_line(raw)
        if line is None:
            continue
        if line.startswith("CVB net "):
            res.update(_KV.findall(line))
        elif line.startswith("CVB nethist"):
            res["hist"] = [(int(a), int(b)) for a, b in
                           (w.split(":") for w in line.split()[2:])]
    return res


def hist_quantile(hist: list[tuple[int, int]], q: float) -> float:
    """The q-quantile (0..1) of an HDR-style histogram: the lower bound of the
    bucket that holds it (buckets are < 1.6% wide)."""
    total = sum(c for _, c in hist)
    if not total:
        raise ValueError("empty histogram")
    need, seen = q * total, 0
    for lower, c in sorted(hist):
        seen += c
        if seen >= need:
            return float(lower)
    return float(max(lo for lo, _ in hist))
