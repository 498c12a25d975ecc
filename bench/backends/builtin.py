"""builtin: cvbench's own runtime (runtime/), at full isolation by default.

The isolation scenario reuses it with one rung of the ladder (bare, one
mechanism alone, or the first n cumulatively) through :meth:`with_rung`.
Startup is timed from just before the ``spawn()`` call, like every other
backend, so the runtime's own preparation (reading and checking config.json,
building its plan, cgroup creation) counts, as it does inside ``crun run``.
It is an in-process library call: no interpreter starts inside the clock.
The ``builtin-cli`` backend times the same runtime as a process
(``python -m runtime run``), so both costs are on the chart.
"""
from __future__ import annotations

import time

from .. import stream
from .base import Backend, Instance, InstanceFailed, Timings, long_lived, probe_pids, seconds


def mechanisms() -> list[str]:
    """The runtime's mechanisms in ladder order; scenarios ask the backend, not
    the runtime, so they stay one layer above it (docs/architecture.md)."""
    from runtime import Isolation
    return list(Isolation.MECHANISMS)


class BuiltinInstance(Instance):
    def __init__(self, c, args: list[str], timeout: float):
        self.backend = "builtin"
        self.c = c
        self.stream = stream.ProbeStream(c.stdout.fileno())
        try:
            deadline = time.monotonic() + timeout
            if self.stream.until_ready(deadline) is None:
                raise InstanceFailed("builtin", "exited before CVB READY", self.stream.console())
            while long_lived(args) and not self.stream.out.values and not self.stream.eof:
                if time.monotonic() > deadline:
                    raise InstanceFailed("builtin", "did not settle", self.stream.console())
                self.stream.read_once(deadline - time.monotonic())
        except BaseException:
            c.delete()
            raise

    # Its supervisor is the process that called spawn(): the harness itself
    # (bench.memory.headline counts that process's share).
    supervised_in_process = True

    def host_pids(self) -> list[int]:
        return self.c.host_pids()

    def cgroup_dirs(self) -> list[str]:
        return self.c.cgroup_dirs()

    def memory(self) -> dict:
        from .. import memory
        pids = self.host_pids()
        dirs = self.c.cgroup_dirs()
        return memory.split(pids, probe_pids(pids), memory.cgroup_charged(dirs))

    def stop(self) -> None:
        try:
            self.c.kill()
            try:
                self.c.wait(timeout=10)
            except TimeoutError:
                pass
        finally:
            self.c.delete()


LABEL = "in-process library call (no interpreter start)"


class Builtin(Backend):
    name = "builtin"
    kind = "container"

    def __init__(self, rung: str = "full"):
        self.rung = rung
        self._iso = None

    @property
    def iso(self):
        """Built once: not inside every timed spawn."""
        if self._iso is None:
            from runtime import Isolation
            self._iso = Isolation.preset(self.rung)  # the runtime owns the rung names
        return self._iso

    def with_rung(self, rung: str) -> Builtin:
        return Builtin(rung)

    def available(self) -> tuple[bool, str]:
        try:
            import runtime
            runtime.spawn  # noqa: B018 - resolves the lazy attribute, fails if missing
            runtime.Isolation  # noqa: B018
        except Exception as e:  # noqa: BLE001
            return False, f"builtin: runtime/ not usable ({type(e).__name__}: {e})"
        import os
        if os.geteuid() != 0:
            return False, "builtin: needs root"
        return True, f"cvbench runtime, isolation {self.rung}"

    def metadata(self) -> dict:
        return {"label": LABEL, "rung": self.rung, "enabled": self.iso.enabled(),
                "isolation": repr(self.iso), "bundle": f"{self.bundle}/config.json"}

    def _spawn(self, args: list[str]):
        from runtime import spawn
        return spawn(self.bundle, ["/probe", *args], self.iso)

    def run(self, args: list[str], timeout: float = 60.0) -> Timings:
        deadline = time.monotonic() + timeout
        t0 = time.perf_counter_ns()
        c = self._spawn(args)
        # which start path ran ("c": the runtime's C stage, "python": its forked
        # child): the ladder says where it switches, since the switch itself costs
        self.last_stage = getattr(c, "stage", None)
        try:
            s = stream.ProbeStream(c.stdout.fileno())
            try:
                s.until_ready(deadline)
                s.until_eof(deadline)
                rc = c.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except TimeoutError as e:
                raise InstanceFailed("builtin", f"timed out after {timeout:.0f} s ({e})", s.console()) from None
            if s.ready_ns is None:
                raise InstanceFailed("builtin", f"exited with {rc} before CVB READY", s.console())
            c.delete()
            return Timings(seconds(t0, s.ready_ns), seconds(t0, c.t_gone_ns), rc, s.out, s.console())
        finally:
            c.delete()

    def start(self, args: list[str], timeout: float = 60.0) -> Instance:
        return BuiltinInstance(self._spawn(args), args, timeout)
