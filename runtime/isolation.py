"""Which isolation mechanisms a container gets: one boolean per mechanism.

The isolation scenario prices each mechanism by switching it on alone
(:meth:`Isolation.only`) or stacking them in ladder order
(:meth:`Isolation.cumulative`), from a bare fork+exec (:meth:`Isolation.bare`)
up to what a real runtime does (:meth:`Isolation.full`).
"""
from __future__ import annotations

from common.errors import CvbError

from .record import record
from .record import replace as _replace

NAMESPACES = ("pidns", "mountns", "utsns", "ipcns", "netns", "userns", "cgroupns", "timens")
NETWORKS = ("none", "loopback", "veth")

# What each rung strictly needs besides itself, so that only(x) measures x and
# not a failure: pivot_root needs a mount namespace to keep the host's mount
# table untouched; a veth needs the network namespace it plugs into.
NEEDS = {"pivot_root": ("mountns",), "veth": ("netns",)}


@record
class Isolation:
    userns: bool = False
    pidns: bool = False
    mountns: bool = False
    utsns: bool = False
    ipcns: bool = False
    netns: bool = False
    cgroupns: bool = False
    timens: bool = False
    pivot_root: bool = False
    cgroup: bool = False
    caps: bool = False
    no_new_privs: bool = False
    seccomp: bool = False
    network: str = "none"
    memory_bytes: int | None = None
    cpu_quota_us: int | None = None
    cpu_period_us: int | None = None
    pids_max: int | None = None
    cpu_weight: int | None = None
    # user namespace without uid/gid mappings in config.json: container 0 maps
    # to this host id (65536 ids), so "root inside" is an unprivileged host id.
    host_id: int = 100000
    # full(): namespaces, mounts, seccomp etc. come from the bundle's config.json;
    # the namespace fields are then ignored, and with_()/without() adjust the
    # bundle's namespace list through `added` and `dropped`.
    follow_bundle: bool = False
    added: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()

    MECHANISMS = ["pidns", "mountns", "utsns", "ipcns", "netns", "userns",  # not a field: unannotated
                  "cgroupns", "timens", "pivot_root", "cgroup", "caps",
                  "no_new_privs", "seccomp", "veth"]

    def __post_init__(self) -> None:
        if self.network not in NETWORKS:
            raise CvbError("isolation", f"network={self.network!r} is not one of {', '.join(NETWORKS)}",
                           "use none, loopback or veth")
        for f in ("memory_bytes", "cpu_quota_us", "cpu_period_us", "pids_max", "cpu_weight"):
            v = getattr(self, f)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                raise CvbError("isolation", f"{f}={v!r} must be a positive integer", f"fix {f}")

    @classmethod
    def bare(cls) -> Isolation:
        """Nothing but fork+exec of the rootfs's binary (run from the rootfs dir)."""
        return cls()

    @classmethod
    def full(cls) -> Isolation:
        """Exactly what the bundle's config.json asks for (namespaces, mounts,
        capabilities, noNewPrivileges, seccomp profile or none), plus an own
        cgroup.  The namespace fields shown here are those of the runc spec
        bundle; spawn() takes the real list from the bundle."""
        return cls(pidns=True, mountns=True, utsns=True, ipcns=True, netns=True, pivot_root=True,
                   cgroup=True, caps=True, no_new_privs=True, seccomp=True, network="loopback",
                   follow_bundle=True)

    @classmethod
    def _with(cls, names) -> Isolation:
        iso = cls()
        for name in names:
            for n in (*NEEDS.get(name, ()), name):
                if n == "veth":
                    iso.network = "veth"
                else:
                    setattr(iso, n, True)
        return iso

    @classmethod
    def only(cls, name: str) -> Isolation:
        """bare() plus one mechanism, and what it strictly needs (see NEEDS)."""
        cls._check(name)
        return cls._with([name])

    @classmethod
    def cumulative(cls, n: int) -> Isolation:
        """The first n rungs of MECHANISMS, all on."""
        if not 0 <= n <= len(cls.MECHANISMS):
            raise CvbError("isolation", f"cumulative({n}) is outside 0..{len(cls.MECHANISMS)}",
                           "pick a rung index in range")
        return cls._with(cls.MECHANISMS[:n])

    @classmethod
    def preset(cls, name: str) -> Isolation:
        """``full``, ``bare``, ``only:<mechanism>`` or ``cum:<n>``: the names the
        CLI's --isolation and the harness's ladder rungs share."""
        if name in ("", "full"):
            return cls.full()
        if name == "bare":
            return cls.bare()
        kind, _, arg = name.partition(":")
        if kind == "only":
            return cls.only(arg)
        if kind == "cum" and arg.isdigit():
            return cls.cumulative(int(arg))
        raise CvbError("isolation", f"{name!r} is not a preset", "use full, bare, only:MECH or cum:N")

    def with_(self, *names: str) -> Isolation:
        """These mechanisms on (and what they need), also under full()."""
        iso = self
        for name in names:
            self._check(name)
            for n in (*NEEDS.get(name, ()), name):
                if n == "veth":
                    iso = iso.replace(network="veth")
                    continue
                iso = iso.replace(**{n: True})
                if n in NAMESPACES:
                    iso = iso.replace(added=tuple({*iso.added, n}), dropped=tuple(set(iso.dropped) - {n}))
        return iso

    def without(self, *names: str) -> Isolation:
        """These mechanisms off, also when full() takes them from the bundle."""
        iso = self
        for name in names:
            self._check(name)
            if name == "veth":
                iso = iso.replace(network="none")
                continue
            iso = iso.replace(**{name: False})
            if name in NAMESPACES:
                iso = iso.replace(dropped=tuple({*iso.dropped, name}), added=tuple(set(iso.added) - {name}))
        return iso

    @classmethod
    def _check(cls, name: str) -> None:
        if name not in cls.MECHANISMS:
            raise CvbError("isolation", f"unknown mechanism {name!r}",
                           f"use one of {', '.join(cls.MECHANISMS)}")

    def enabled(self) -> list[str]:
        """The ladder names switched on, in ladder order (for labels and logs)."""
        on = [m for m in self.MECHANISMS if m != "veth" and getattr(self, m)]
        return on + (["veth"] if self.netns and self.network == "veth" else [])

    def replace(self, **kw) -> Isolation:
        return _replace(self, **kw)
