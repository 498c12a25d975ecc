"""The backend registry: names in isolation order, loaded lazily.

A backend module is imported only when it is used, so a worker that times crun
never imports libvirt, and a backend whose library is missing or broken shows
up as unavailable with the reason instead of breaking every other backend.
"""
from __future__ import annotations

import importlib

from common.errors import CvbError

from .base import Backend, Instance, InstanceFailed, Timings  # noqa: F401 - the public shape

# name -> (module, class); the order is the isolation axis, host to VM.
REGISTRY = {
    "host": ("host", "Host"),
    "builtin": ("builtin", "Builtin"),
    "builtin-cli": ("builtin_cli", "BuiltinCli"),
    "crun": ("crun", "Crun"),
    "runc": ("runc", "Runc"),
    "runsc": ("runsc", "Runsc"),
    "qemu-microvm": ("qemu", "QemuMicrovm"),
    "qemu": ("qemu", "Qemu"),
    "libvirt": ("libvirt", "Libvirt"),
}
NAMES = list(REGISTRY)
_cache: dict[str, Backend] = {}


class Unavailable(Backend):
    """Stands in for a backend whose module cannot even be imported."""

    def __init__(self, name: str, why: str):
        self.name, self._why = name, why

    def available(self) -> tuple[bool, str]:
        return False, self._why


def get(name: str) -> Backend:
    if name not in REGISTRY:
        raise CvbError("backend", f"unknown backend {name!r}",
                       f"choose from {', '.join(NAMES)}")
    if name not in _cache:
        mod, cls = REGISTRY[name]
        try:
            _cache[name] = getattr(importlib.import_module(f"{__name__}.{mod}"), cls)()
        except Exception as e:  # noqa: BLE001 - report, don't crash the other backends
            _cache[name] = Unavailable(name, f"{name}: cannot load ({type(e).__name__}: {e})")
    return _cache[name]


def parse(spec: str | list[str] | None) -> list[str]:
    """``"a,b"`` -> validated names in registry order; empty/None -> all."""
    if not spec:
        return list(NAMES)
    items = spec.split(",") if isinstance(spec, str) else [x for s in spec for x in s.split(",")]
    names = [s.strip() for s in items if s.strip()]
    bad = [n for n in names if n not in REGISTRY]
    if bad:
        raise CvbError("--backends", f"unknown backend {', '.join(map(repr, bad))}",
                       f"valid backends are {', '.join(NAMES)}")
    return [n for n in NAMES if n in names]


def availability(names: list[str]) -> dict[str, dict]:
    out = {}
    for n in names:
        b = get(n)
        try:
            ok, why = b.available()
        except Exception as e:  # noqa: BLE001
            ok, why = False, f"{n}: availability check failed ({type(e).__name__}: {e})"
        md = {}
        if ok:
            try:
                md = b.metadata()
            except Exception as e:  # noqa: BLE001
                md = {"error": f"{type(e).__name__}: {e}"}
        out[n] = {"available": ok, "reason": why, "metadata": md}
        if ok and b.kind == "vm":   # each VM backend's own verdict (vm.check_one_accel)
            a = b.accel()
            out[n]["accel"] = {"accel": a["name"], "why": a["reason"]}
    return out
