"""The network scenario's ``tap-virtio`` path: a guest's virtio-net NIC on a
cvbench tap, for the libvirt and raw QEMU (pc) backends (bench/netpath.py
describes the path protocol this implements).

Setup, per column:

- a cvbench netns ``cvbench-n<pid>-<slot>tap`` for the host side;
- the guest boots the I/O initramfs (bench/guest_io.py) with virtio_net and
  ``cvbench.ip=<range>.2/30``; raw QEMU creates the tap ``cvbench<pid>u``
  itself (``-netdev tap,ifname=...,script=no``), libvirt creates
  ``cvbench<pid>t`` for ``<interface type='ethernet'>``.  A tap can only be
  opened in the netns of the process that opens it, so it is born in the
  host's netns, without an address, link down; as soon as the VMM holds it, it
  is moved into the cvbench netns and only there gets ``<range>.1/30`` and is
  set up.  So no host interface ever carries an address of the range, and
  there is no route beyond the /30.  When the VMM exits, the tap goes with it;
  the sweep removes the netns (and a tap left in the host's netns, by name).
- the server (probe, host process) runs in that netns; the client (the image's
  static probe) runs in the guest, typed into its console by
  guest_io.GuestShell, so one guest per column runs every client command.

No vhost-net here (no /dev/vhost-net): virtio-net is served by QEMU's own
userspace backend; under TCG the guest side is emulated.  The host CPU of
the client side is the QEMU process's utime+stime over the command.
"""
from __future__ import annotations

import json
import os
import time

from common.errors import CvbError, EnvError

from . import guest_io
from .netpath import Path, PathEnv, PathKind, _ip, add_netns

BACKENDS = ("libvirt", "qemu")
LETTER = {"libvirt": "t", "qemu": "u"}
TAP_MAX_MTU = 65521       # a tap's max_mtu (ip -d link show); virtio-net without F_MTU takes 65535
MODULES = ["virtio_pci", "virtio_net"]


def _why_not(backend: str) -> str | None:
    if backend not in BACKENDS:
        return "tap + virtio-net is a VM path (libvirt, qemu)"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun on this host"
    from .backends import get
    b = get(backend)
    ok, why = b.available()
    if not ok:
        return why
    try:
        from . import kernel
        kernel.modules_dir(b.img.kernel)
    except EnvError as e:
        return e.line() if hasattr(e, "line") else str(e)
    return None


def mac(letter: str) -> str:
    # locally administered, unicast; the pid keeps concurrent runs apart
    pid = os.getpid()
    return f"52:54:cb:{(pid >> 8) & 0xff:02x}:{pid & 0xff:02x}:{ord(letter) & 0xff:02x}"


class GuestClient(Path):
    """The client side in a guest: one guest per column runs every client
    command through its serial console (guest_io.GuestShell); its host CPU is
    the VMM's (plus ``extra_cpu_pids``: a user-mode network process)."""

    vm = None
    shell: guest_io.GuestShell | None = None

    def boot(self, backend: str, nic, guest_ip: str) -> None:
        from vm_backend.iodev import GuestIO

        from .backends import get
        b = get(backend)
        cmd = guest_io.cmdline(b.img, MODULES, ip=guest_ip)
        self.vm = b.io_vm(guest_io.initramfs(b.img), ["serve"], GuestIO(nics=[nic], cmdline=cmd), timeout=90.0)
        self.vm.start(after_spawn=self.after_spawn)
        self.shell = guest_io.GuestShell(self.vm, f"network: {self.name}/{backend}")

    def after_spawn(self) -> None:
        """Runs once the VMM exists, before the guest is READY."""

    def extra_cpu_s(self) -> float:
        return 0.0

    def set_guest_mtu(self, mtu: int, max_mtu: int) -> None:
        rc, out = self.shell.run(["ip", "link", "set", "eth0", "mtu", str(mtu)], 30)
        if rc != 0:
            raise CvbError("mtu", f"the guest's eth0 refused MTU {mtu}: {out.strip()[-200:]}",
                           f"pick an MTU the virtio-net driver takes (68..{max_mtu})")

    def _pin(self) -> None:
        if self.client_cpu is None:
            return
        for pid in self.vm.host_pids():
            for tid in os.listdir(f"/proc/{pid}/task"):
                try:
                    os.sched_setaffinity(int(tid), {self.client_cpu})
                except OSError:
                    pass

    def run_client(self, argv: list[str], timeout: float) -> tuple[str, float]:
        if argv[0] not in self.client_tools:
            raise CvbError("network", f"the {self.name} path's client side ({self.backend} guest) cannot run "
                           f"{argv[0]}", "run it on a path whose client_tools has it")
        from .disk_vm import cpu_s
        self._pin()
        pids = self.vm.host_pids()
        c0, e0 = cpu_s(pids), self.extra_cpu_s()
        rc, out = self.shell.run(["/probe", *argv[1:]], timeout)
        cpu = cpu_s(pids) - c0 + self.extra_cpu_s() - e0
        if rc != 0:
            raise CvbError("network", f"{' '.join(argv[:4])} in the {self.backend} guest failed (exit {rc}): "
                           f"{out.strip()[-300:]}", "see the message", status=1)
        return out, cpu

    def stop_guest(self) -> None:
        try:
            if self.vm is not None:
                if self.shell is not None:
                    self.shell.quit()
                self.vm.stop()
        finally:
            self.vm = self.shell = None


class VMPath(GuestClient):
    """A guest on a tap; the server side in a cvbench netns (module docstring)."""

    def __init__(self, env: PathEnv, backend: str):
        from vm_backend.iodev import Nic
        ns, tap = env.netns("tap"), env.link(LETTER[backend])
        host, guest = env.addr(1), env.addr(2)
        super().__init__("tap-virtio", str(host), server_ns=ns, links=[(ns, tap)], backend=backend,
                         probe=env.probe, client_tools=frozenset({"probe"}), max_mtu=TAP_MAX_MTU,
                         setup=f"{backend} guest, virtio-net on tap {tap} (QEMU userspace, no vhost-net) in netns "
                               f"{ns}: {host}/30 <-> guest {guest}/30 ({env.rng['name']})")
        self.tap = tap
        self.mtu_set = 0
        try:
            add_netns(self, ns)
            self.boot(backend, Nic(tap, mac(LETTER[backend])), f"{guest}/30")
        except BaseException:
            self.close()
            raise

    def after_spawn(self) -> None:
        """Move the VMM's tap from the host's netns into ours, address it there."""
        end = time.monotonic() + 20
        while _ip("link", "show", self.tap, check=False).returncode != 0:
            if time.monotonic() > end or self.vm._gone():
                raise CvbError("network", f"the VMM did not create tap {self.tap}",
                               "see the VMM's log", status=1)
            time.sleep(0.01)
        _ip("link", "set", self.tap, "netns", self.server_ns)
        _ip("-n", self.server_ns, "addr", "add", f"{self.server_addr}/30", "dev", self.tap)
        _ip("-n", self.server_ns, "link", "set", self.tap, "up")

    def mtu(self) -> int:
        info = json.loads(_ip("-n", self.server_ns, "-j", "link", "show", self.tap).stdout)[0]
        return int(info["mtu"])

    def set_mtu(self, mtu: int) -> None:
        if mtu == self.mtu_set:
            return              # a command typed into a TCG guest costs ~0.1 s; the scenario asks often
        super().set_mtu(mtu)    # checks the range, sets the tap's
        self.set_guest_mtu(mtu, TAP_MAX_MTU)
        self.mtu_set = mtu

    def close(self) -> None:
        try:
            self.stop_guest()
        finally:
            _ip("link", "del", self.tap, check=False)   # still in the host's netns if the move failed
            super().close()


def _factory(env: PathEnv, backend: str) -> Path:
    return VMPath(env, backend)


KIND = PathKind(BACKENDS, _factory, _why_not, max_mtu=lambda backend: TAP_MAX_MTU)
