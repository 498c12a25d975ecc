"""host: a bare fork+exec of the rootfs's probe, the no-isolation baseline."""
from __future__ import annotations

import os
import platform

from .base import Backend, CrossCommand, Instance, PopenInstance, Timings, long_lived, timed_popen


class Host(Backend):
    name = "host"
    kind = "process"

    def _cmd(self, args: list[str]) -> list[str]:
        return [os.path.join(self.img.rootfs, "probe"), *args]

    def available(self) -> tuple[bool, str]:
        try:
            p = os.path.join(self.img.rootfs, "probe")
        except Exception as e:  # noqa: BLE001 - any image problem makes the backend unavailable
            return False, str(e)
        if not os.access(p, os.X_OK):
            return False, f"{p} is not executable; run 'make setup'"
        return True, "fork+exec of the rootfs probe"

    def metadata(self) -> dict:
        return {"spawn": "subprocess.Popen (fork+exec), no namespaces", "kernel": platform.release()}

    def _env(self) -> dict:
        # The owner pid lets a sweep kill probes orphaned by a killed harness.
        return {"PATH": "/bin:/usr/bin", "CVBENCH_OWNER": str(os.getpid())}

    def command_for(self, args: list[str], runs: int) -> CrossCommand:
        return CrossCommand(self._cmd(args), kw={"env": self._env()})

    def run(self, args: list[str], timeout: float = 60.0) -> Timings:
        # No working directory: the probe needs none (absolute paths only), and
        # without one the harness can posix_spawn it, as hyperfine does.
        return timed_popen(self.name, self._cmd(args), timeout, env=self._env())

    def start(self, args: list[str], timeout: float = 60.0) -> Instance:
        return PopenInstance(self.name, self._cmd(args), timeout, cwd=self.img.rootfs, env=self._env(),
                             settle=long_lived(args))
