"""cvbench's own container runtime: one module per kernel mechanism.

    from runtime import Isolation, spawn, sweep
    with spawn(img.bundle, ["/probe", "ready"], Isolation.full()) as c:
        line = c.stdout.readline()

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
