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

from .oci import OCIBackend


class Runsc(OCIBackend):
    name = binary = "runsc"
    global_flags = ["--network=none", "--oci-seccomp"]

    def metadata(self) -> dict:
        md = super().metadata()
        md["platform"] = "ptrace (runsc default)"
        return md

    def workload_pids(self, pids: list[int]) -> list[int]:
        # The probe runs inside the Sentry: no host process is the workload alone.
        return []
