"""runsc: gVisor, a user-space kernel between the probe and the host.

Started from the root network namespace it needs ``--network=none``; the
default ptrace platform is the one that works without usable KVM.
``--oci-seccomp`` makes it apply the bundle's linux.seccomp inside the sandbox,
as the other runtimes do (without it runsc ignores the profile).  Its stdout
must be a pipe (it overwrites regular files from offset 0), which is what the
shared OCI code gives it.  Killed, it leaves lock files under its --root and
empty cgroup folders: the shared cleanup removes both.
"""
from __future__ import annotations

import functools
import re
import subprocess

from .oci import OCIBackend


class Runsc(OCIBackend):
    name = binary = "runsc"
    global_flags = ["--network=none", "--oci-seccomp"]

    def metadata(self) -> dict:
        md = super().metadata()
        md["platform"] = self.platform
        return md

    @functools.cached_property
    def platform(self) -> str:
        """The platform this runsc runs the Sentry on, as runsc itself states it:
        our own --platform flag if we pass one, else the default that
        ``runsc flags`` prints (it changed from ptrace to systrap upstream)."""
        for f in self.global_flags:
            if f.startswith("--platform="):
                return f.split("=", 1)[1] + " (--platform)"
        if not self.path:
            return "unknown (runsc not installed)"
        try:
            out = subprocess.run([self.path, "flags"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"unknown (runsc flags: {e})"
        m = re.search(r'-platform string\n.*?\(default "([^"]+)"\)', out.stdout + out.stderr)
        return f"{m.group(1)} (runsc default)" if m else "unknown (runsc flags names no default platform)"

    def workload_pids(self, pids: list[int]) -> list[int]:
        # The probe runs inside the Sentry: no host process is the workload alone.
        return []
