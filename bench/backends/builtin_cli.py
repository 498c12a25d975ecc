"""builtin-cli: cvbench's runtime as a process, ``python -m runtime run``.

The ``builtin`` backend times an in-process library call, which skips what a
user of the runtime pays first: starting the Python interpreter and importing
the runtime.  This backend times exactly what a shell user runs, on the same
bundle, the way crun and runc are timed: from just before the spawn of the
runtime's process to CVB READY, and to the process being gone.
"""
from __future__ import annotations

import os
import subprocess
import sys

from common import procs
from common.paths import ROOT, state_dir

from .base import Backend, CrossCommand, Instance, PopenInstance, Timings, long_lived, probe_pids, timed_popen
from .oci import container_id

LABEL = "python -m runtime run (interpreter start included)"


class BuiltinCli(Backend):
    name = "builtin-cli"
    kind = "container"

    def _cmd(self, args: list[str]) -> list[str]:
        return [sys.executable, "-m", "runtime", "run", "--bundle", self.bundle, container_id(),
                "--", "/probe", *args]

    def _env(self) -> dict:
        return dict(os.environ, PYTHONPATH=str(ROOT))

    def available(self) -> tuple[bool, str]:
        if os.geteuid() != 0:
            return False, "builtin-cli: needs root"
        try:
            import runtime
            runtime.spawn  # noqa: B018 - the CLI's own entry point must import
        except Exception as e:  # noqa: BLE001
            return False, f"builtin-cli: runtime/ not usable ({type(e).__name__}: {e})"
        return True, f"{sys.executable} -m runtime run"

    def metadata(self) -> dict:
        return {"label": LABEL, "command": f"{sys.executable} -m runtime run --bundle BUNDLE ID -- /probe ARGS",
                "bundle": f"{self.bundle}/config.json", "isolation": "full (the bundle's config)"}

    def _cleanup(self, cid: str) -> None:
        """The CLI deletes its container on exit; a killed one leaves state that
        ``delete -f`` removes (outside the timed interval)."""
        subprocess.run([sys.executable, "-m", "runtime", "delete", "-f", cid], capture_output=True,
                       timeout=30, cwd=str(ROOT), env=self._env())

    def command_for(self, args: list[str], runs: int) -> CrossCommand:
        """The runtime CLI as one process per run, each with a fresh container
        id (the strength scenario traces it: bench/strength_host.py)."""
        ids = [container_id() for _ in range(runs)]
        argv = [sys.executable, "-m", "runtime", "run", "--bundle", self.bundle, "{id}", "--", "/probe", *args]
        return CrossCommand(argv, kw={"cwd": str(ROOT), "env": self._env()}, ids=ids,
                            cleanup=lambda: [self._cleanup_if_left(cid) for cid in ids])

    def run(self, args: list[str], timeout: float = 60.0) -> Timings:
        cmd = self._cmd(args)
        cid = cmd[cmd.index("--") - 1]
        return timed_popen(self.name, cmd, timeout, cwd=str(ROOT), env=self._env(),
                           cleanup=lambda: self._cleanup_if_left(cid))

    def _cleanup_if_left(self, cid: str) -> None:
        # The runtime keeps a container's state in <state dir>/containers/<id>
        # (runtime/state.py); checking for it costs no interpreter start.
        if (state_dir() / "containers" / cid).exists():
            self._cleanup(cid)

    def start(self, args: list[str], timeout: float = 60.0) -> Instance:
        cmd = self._cmd(args)
        cid = cmd[cmd.index("--") - 1]
        holder: list[PopenInstance] = []
        inst = PopenInstance(self.name, cmd, timeout, cwd=str(ROOT), env=self._env(),
                             on_stop=lambda: self._cleanup_if_left(cid), workload_pids=probe_pids,
                             cgroup_dirs=lambda: self._probe_cgroups(holder), settle=long_lived(args))
        holder.append(inst)
        return inst

    @staticmethod
    def _probe_cgroups(holder: list) -> list[str]:
        """The container's cgroup, found from its probe: the runtime CLI names
        the cgroup itself, so it is read back rather than guessed."""
        from .. import memory
        if not holder:
            return []
        probes = probe_pids(procs.descendants(holder[0].proc.pid))
        return memory.pid_cgroup_dirs(probes[0]) if probes else []
