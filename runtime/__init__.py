"""cvbench's own container runtime: one module per kernel mechanism.

    from runtime import Isolation, spawn, sweep
    with spawn(img.bundle, ["/probe", "ready"], Isolation.full()) as c:
        line = c.stdout.readline()

Where each mechanism lives (crun's src/libcrun layout, in Python):

    namespaces.py    pid, mount, uts, ipc, net, user (uid/gid maps), cgroup, time; join by path
    rootfs.py        bundle mounts resolved inside the root (openat2), minimal /dev and
                     linux.devices, /proc, pivot_root (chroot fallback), masked and
                     read-only paths, read-only root, recursive options (mount_setattr)
    cgroups.py       v1 and v2 behind one interface: memory, cpu quota/period/weight, cpuset,
                     pids, device rules (v1 allow-list; v2 eBPF program: devices_bpf.py)
    capabilities.py  bounding/effective/permitted/inheritable/ambient sets, no_new_privs
    seccomp.py       OCI profiles (and the ladder rung's default), compiled per spawn by
                     libseccomp in the cvbench-seccomp process (stage/seccomp.c; ctypes on
                     a helper thread when it is not built) beside the child, sent on a pipe
    hooks.py         the six OCI hook kinds, state JSON on stdin, runc's failure semantics
    network.py       none, loopback, or a veth pair into a cvbench-made netns (pyroute2)
    lsm.py           AppArmor/SELinux: reported, never faked
    config.py        config.json reader (errors name the JSON path; unknown fields warn)
    plan.py          config + Isolation resolved before the fork
    child.py         what runs between fork and exec (ends with fds, signals and mask
                     reset: nothing of the caller's reaches the container)
    stage/           stage.c + program.c: the same steps in C, posix_spawn'd, for every
                     plan without a user/time namespace, joins, hooks or handshakes
                     (the default bundle, the ladder's lower rungs); built by make setup
    record.py        @record, the little of @dataclass these classes need (a CLI start
                     does not pay for importing dataclasses)
    container.py     spawn/wait/kill/delete and the timestamps; state.py, cleanup.py: state
                     files under /run/cvbench and sweep(); cli.py: `python -m runtime`
    isolation.py     the Isolation toggles and the ladder

Names are resolved lazily so that `import runtime` (and runtime.spec, which
the image builder uses) stays cheap in measuring worker processes.
"""
from __future__ import annotations

__all__ = ["Isolation", "spawn", "Container", "sweep", "cgroup_version"]

_WHERE = {"Isolation": "isolation", "spawn": "container", "Container": "container",
          "sweep": "cleanup"}


def cgroup_version() -> str:
    """"v1", "v2" or "hybrid", detected from the mount table."""
    from .cgroups import version
    return version()


def __getattr__(name: str):
    if name in _WHERE:
        import importlib
        mod = importlib.import_module(f"{__name__}.{_WHERE[name]}")
        value = getattr(mod, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
