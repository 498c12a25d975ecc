"""The exposure profile of one backend (or ladder rung), from ``probe strength``.

The probe reports, from inside the instance: its capabilities and namespaces,
which x86-64 syscall numbers are reachable (probed with invalid arguments, see
scenarios/probe/probe.c), the device nodes and sensitive /proc and /sys paths it
can see, and the escape battery's results.  This module turns one report into a
profile (a vector, not a score) and checks that repeated runs agree.

A backend without a boundary (the host: a bare process) gets no battery: its
profile's ``battery`` reads "no boundary" and it has no attempt results, so no
chart or table can read the host's own power as escapes.

In a VM the namespaces and capabilities are the guest's own: "the host" is
outside the guest, behind the hardware (here: emulated) boundary, and the
profile says so instead of comparing guest namespace ids with the host's.
"""
from __future__ import annotations

import os

from .inside import NAMESPACES

ESCAPES = ("sysrq_trigger", "core_pattern", "release_agent", "raw_socket", "dev_kmsg_read",
           "proc_kcore_read", "mknod_block", "mount_tmpfs", "userns_mount", "ptrace_pid1",
           "inherited_fd", "keyctl", "bpf_map_create")
SYSCALL_KEYS = ("reachable", "enosys", "eperm", "killed", "not_probed")
# What the stability check compares: everything but free-text details.
VECTOR = ("syscalls_reachable", "syscalls_blocked", "caps_effective", "caps_bounding",
          "namespaces_shared", "devices", "paths_readable", "paths_writable", "escapes_succeeded")


NO_BOUNDARY = "not run: no boundary (a bare host process)"


class ProfileError(Exception):
    pass


def _bits(hexmask: str) -> int:
    try:
        return bin(int(hexmask, 16)).count("1")
    except ValueError:
        return -1


def _nrs(v: str) -> list[int]:
    return [] if v in ("", "-") else [int(x) for x in v.split(",")]


def args(battery: bool) -> list[str]:
    """The probe command: the battery only where there is a boundary to test."""
    return ["strength"] if battery else ["strength", "--no-battery"]


def parse(values: dict[str, str], *, vm: bool, battery: bool = True) -> dict:
    """One ``probe strength`` report -> a profile.  Raises ProfileError when a
    part is missing (no silent gaps), or when the battery ran where it was not
    asked for, or not where it was."""
    want = ("CapEff", "CapBnd", "sys_reachable", "dev_nodes", "paths_readable")
    missing = [k for k in want + (tuple(f"esc_{e}" for e in ESCAPES) if battery else ("battery",))
               if k not in values]
    if missing:
        raise ProfileError(f"probe strength did not report {', '.join(missing)}")
    if not battery and any(k.startswith("esc_") for k in values):
        raise ProfileError("probe strength ran the escape battery though --no-battery was given")
    sys = {k: int(values[f"sys_{k}"]) for k in SYSCALL_KEYS}
    escapes = {}
    for e in ESCAPES if battery else ():
        result, _, detail = values[f"esc_{e}"].partition(":")
        escapes[e] = {"result": result, "detail": detail}
    own, shared = [], []
    if not vm:
        for ns in NAMESPACES:
            try:
                host = os.readlink(f"/proc/self/ns/{ns}")
            except OSError:
                continue
            (shared if values.get(f"ns_{ns}", "none") == host else own).append(ns)
    return {
        "boundary": "hardware (guest kernel; the view is the guest's)" if vm else "host kernel",
        "syscalls": {**sys, "range": values.get("sys_range", ""),
                     "enosys_nrs": _nrs(values.get("sys_enosys_nrs", "-")),
                     "eperm_nrs": _nrs(values.get("sys_eperm_nrs", "-")),
                     "killed_nrs": _nrs(values.get("sys_killed_nrs", "-")),
                     "not_probed_why": {k[len("sys_skip_"):]: v for k, v in values.items()
                                    if k.startswith("sys_skip_")}},
        "syscalls_reachable": sys["reachable"],
        "syscalls_blocked": sys["enosys"] + sys["eperm"] + sys["killed"],
        "caps_effective": _bits(values["CapEff"]),
        "caps_bounding": _bits(values["CapBnd"]),
        "cap_eff_mask": values["CapEff"], "cap_bnd_mask": values["CapBnd"],
        "seccomp": values.get("Seccomp", "?"), "no_new_privs": values.get("NoNewPrivs", "?"),
        "namespaces_own": own,
        "namespaces_shared": len(shared) if not vm else 0,
        "namespaces_shared_names": shared,
        "devices": int(values["dev_nodes"]),
        "device_list": ",".join(sorted(values.get("dev_list", "-").split(","))),   # readdir order varies
        "paths_readable": int(values["paths_readable"]),
        "paths_writable": int(values["paths_writable"]),
        "paths": {k[len("path_"):]: v for k, v in values.items() if k.startswith("path_")},
        "battery": "run" if battery else NO_BOUNDARY,
        "escapes": escapes,
        "escapes_succeeded": sum(1 for e in escapes.values() if e["result"] == "succeeded") if battery else None,
    }


def vector(p: dict) -> dict:
    """The comparable part of a profile: the counts, and what they count (which
    syscall numbers are blocked and how, each sensitive path's access, the
    device list), and each attempt's result."""
    s = p["syscalls"]
    return {**{k: p[k] for k in VECTOR}, **{f"esc_{k}": v["result"] for k, v in p["escapes"].items()},
            **{k: s[k] for k in ("enosys_nrs", "eperm_nrs", "killed_nrs")},
            "battery": p["battery"], "paths": p["paths"], "device_list": p["device_list"]}


def differences(profiles: list[dict]) -> list[str]:
    """Keys whose values differ between repeated profiles of one backend."""
    vecs = [vector(p) for p in profiles]
    return sorted(k for k in vecs[0] if any(v.get(k) != vecs[0][k] for v in vecs[1:]))


def has_boundary(backend) -> bool:
    """A bare host process ("process" kind) has no boundary to test."""
    return backend.kind != "process"


def measure(backend, *, vm: bool, runs: int, timeout: float) -> dict:
    """``runs`` instances of ``probe strength`` (with the battery where the
    backend has a boundary); the first profile plus how the others compare.  A
    failed instance raises (the harness records the backend as failed)."""
    from .backends import InstanceFailed
    battery = has_boundary(backend)
    profiles = []
    for _ in range(runs):
        t = backend.run(args(battery), timeout=timeout)
        if t.rc != 0:
            raise InstanceFailed(backend.name, f"probe strength ended with rc={t.rc}", t.console)
        try:
            profiles.append(parse(t.probe.values, vm=vm, battery=battery))
        except ProfileError as e:
            raise InstanceFailed(backend.name, str(e), t.console) from None
    out = profiles[0]
    out["runs"] = runs
    out["differs_between_runs"] = differences(profiles)
    return out
