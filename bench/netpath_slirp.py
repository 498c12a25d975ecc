"""The user-mode path: a container whose only network is slirp4netns's tap
(the VM's user-mode columns, passt, are in bench/netpath_passt.py).

slirp4netns runs as a host process tagged with the owner (CVBENCH_OWNER, so
bench.sweep kills it after a crash) inside a second cvbench netns, so every
socket it opens on the container's behalf lands there, never in the host's.
It gets ``--cidr`` from the range bench.netpath.pick_range checked (its upper
/25), ``--disable-host-loopback`` as rootless Podman's default, and no DNS.
The server listens on an address of that netns's lo.
"""
from __future__ import annotations

import ipaddress
import os
import select
import shutil
import subprocess

from common.errors import CvbError
from common.procs import cpu_seconds, stop_process

from .netpath import MIN_MTU, PathEnv, PathKind, _env, _ip, add_netns
from .netpath_container import ContainerClient, why_not

SLIRP_MAX_MTU = 65521   # slirp4netns --mtu's maximum


class SlirpPath(ContainerClient):
    """A container whose only network is slirp4netns's tap: slirp4netns runs
    (as a host process tagged with the owner) inside a second cvbench netns,
    so every socket it opens for the container lands there, never in the
    host's.  Its CPU over a client run counts with the container's."""

    slirp = None
    slirp_mtu = 1500

    @property
    def mtu_fixed(self) -> bool:
        return False

    def mtu(self) -> int:
        return self.slirp_mtu

    def set_mtu(self, mtu: int) -> None:
        if not MIN_MTU <= mtu <= self.max_mtu:
            raise CvbError("mtu", f"{mtu} is outside what slirp4netns can carry ({MIN_MTU}..{self.max_mtu})",
                           f"pick an MTU in {MIN_MTU}..{self.max_mtu}")
        if mtu != self.slirp_mtu or self.slirp is None:
            self.start_slirp(mtu)

    def start_slirp(self, mtu: int) -> None:
        """(Re)start slirp4netns at ``mtu`` (it sets the tap's MTU only at start)."""
        self.stop_slirp()
        r, w = os.pipe()
        try:
            self.slirp = subprocess.Popen(
                ["ip", "netns", "exec", self.server_ns, "slirp4netns", "--configure", f"--mtu={mtu}",
                 f"--cidr={self.slirp_cidr}", "--disable-host-loopback", "--disable-dns", f"--ready-fd={w}",
                 "--netns-type=path", f"/run/netns/{self.client_ns}", self.tap],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(w,),
                env=_env())
            os.close(w)
            w = -1
            ok = select.select([r], [], [], 10)[0] and os.read(r, 1) == b"1"
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
        if not ok:
            err = ""
            if self.slirp.poll() is not None:
                err = self.slirp.stderr.read().decode(errors="replace").strip()[-300:]
            self.stop_slirp()
            raise CvbError("network", f"slirp4netns did not configure {self.tap}: {err or 'no ready byte in 10 s'}",
                           "apt-get install slirp4netns (make setup does)", status=1)
        self.slirp_mtu = mtu

    def stop_slirp(self) -> None:
        if self.slirp is not None:
            p, self.slirp = self.slirp, None
            stop_process(p)
            p.stderr.close()

    def _slirp_cpu(self) -> float:
        return cpu_seconds(self.slirp.pid) if self.slirp is not None else 0.0

    def run_client(self, argv: list[str], timeout: float) -> tuple[str, float]:
        s0 = self._slirp_cpu()
        out, cpu = super().run_client(argv, timeout)
        return out, cpu + self._slirp_cpu() - s0


def user_mode(env: PathEnv, backend: str) -> SlirpPath:
    """A container in netns -c with slirp4netns's tap (its own /25 of the
    range), slirp4netns in netns -u, where the server listens on an address of
    that netns's lo."""
    c, u = env.netns("c"), env.netns("u")
    net = ipaddress.ip_network(env.rng["cidr"])
    cidr = ipaddress.ip_network(f"{net.network_address + 128}/25")
    server = env.addr(20)
    p = SlirpPath("user-mode", str(server), server_ns=u, client_ns=c, probe=env.probe, backend=backend,
                  setup=f"{backend} container in netns {c} whose tap is slirp4netns's (--cidr={cidr}, "
                        f"--disable-host-loopback), slirp4netns in netns {u} (unpinned), server on {server} "
                        f"on its lo "
                        f"({env.rng['name']})")
    p.slirp_cidr, p.tap, p.max_mtu = str(cidr), env.link("g"), SLIRP_MAX_MTU
    try:
        add_netns(p, c)
        add_netns(p, u)
        _ip("-n", u, "addr", "add", f"{server}/32", "dev", "lo")   # no dummy driver on every host
        p.cleanups.append(p.stop_slirp)
        p.start_slirp(1500)
        p.attach(env)
    except BaseException:
        p.close()
        raise
    return p


def _factory(env: PathEnv, backend: str):
    if backend in ("libvirt", "qemu"):
        from . import netpath_passt
        return netpath_passt.factory(env, backend)
    return user_mode(env, backend)


def slirp_why_not(backend: str) -> str | None:
    if backend in ("libvirt", "qemu"):
        from . import netpath_passt  # the VM's user-mode columns: passt
        return netpath_passt.why_not(backend)
    if not shutil.which("slirp4netns"):
        return "slirp4netns is not installed (apt-get install slirp4netns; make setup does)"
    return why_not(backend)


def _max_mtu(backend: str) -> int:
    return 65520 if backend in ("libvirt", "qemu") else SLIRP_MAX_MTU   # passt's (bench/netpath_passt.py)


USER_MODE = PathKind(("builtin", "crun", "libvirt", "qemu"), _factory, slirp_why_not, max_mtu=_max_mtu)
