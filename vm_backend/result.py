"""The timing points of one guest boot, on the host's monotonic clock.

All stamps are ``time.perf_counter_ns()`` values of the process that booted the
guest, so they compare with the container runtimes' ``t_spawn_ns``.  A stamp is
None when that point was never reached (a guest killed at a timeout).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from common.probe import ProbeOutput


@dataclass
class BootResult:
    t_spawn_ns: int                   # just before createXML / fork of qemu
    created_ns: int | None            # createXML returned / qemu process forked
    ready_ns: int | None              # "CVB READY" line complete on the console
    done_ns: int | None               # "CVB DONE" line complete
    gone_ns: int | None               # domain unknown to libvirt / qemu reaped
    console: str = ""
    probe: ProbeOutput = field(default_factory=ProbeOutput)
    accel: str = ""
    accel_reason: str = ""
    backend: str = ""
    eof_ns: int | None = None         # the VMM closed the console (it is exiting)

    def _rel(self, t: int | None) -> float | None:
        return None if t is None else (t - self.t_spawn_ns) / 1e9

    @property
    def created_s(self) -> float | None:
        return self._rel(self.created_ns)

    @property
    def ready_s(self) -> float | None:
        return self._rel(self.ready_ns)

    @property
    def done_s(self) -> float | None:
        return self._rel(self.done_ns)

    @property
    def gone_s(self) -> float | None:
        return self._rel(self.gone_ns)

    def summary(self) -> dict:
        """A JSON-friendly dict: seconds relative to spawn, accel, probe values."""
        return {
            "backend": self.backend, "accel": self.accel, "accel_reason": self.accel_reason,
            "created_s": self.created_s, "ready_s": self.ready_s, "done_s": self.done_s,
            "gone_s": self.gone_s, "rc": self.probe.rc,
            "ops": [asdict(o) for o in self.probe.ops], "errors": self.probe.errors,
        }
