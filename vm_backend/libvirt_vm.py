"""A probe guest as a transient libvirt domain.

The domain is created with VIR_DOMAIN_START_AUTODESTROY, so libvirtd itself
destroys it when the connection that made it closes, even if this process is
SIGKILLed; the owner pid in its name and <metadata> lets sweep() catch the
rest.  A transient domain disappears when it stops, so "Domain not found" on a
lookup is the "gone" timing point, not an error.

What libvirt adds over raw QEMU of the same configuration (``python -m
vm_backend trace-libvirt`` reads it from libvirtd's debug log; one TCG boot
on the 2-core development host): about 20 ms to start QEMU, 16 ms of cgroup
setup, 44 ms waiting for QEMU's QMP monitor, then about 270 ms reading the
guest CPU's features with roughly 400 ``qom-get`` QMP calls, a few ms more of
QMP, and ``cont``: the guest starts about 0.37 s after createXML began.
After poweroff, libvirtd kills QEMU at once and then waits for the pid to
vanish; QEMU is a daemon whose parent is PID 1, so that wait is PID 1's
reaping delay (about 1.9 s on a host whose PID 1 reaps orphans slowly).
"""
from __future__ import annotations

import os
import time

from . import owner
from .accel import Accel, detect_accel
from .base import GuestVM
from .cmdline import kernel_cmdline
from .conn import create_error, is_gone, is_remote, libvirt_module, open_conn
from .console import Console, StreamConsole
from .domain_xml import DEFAULT_MACHINE, DomainSpec, build
from .errors import VMError

_swept: set[str] = set()


class LibvirtVM(GuestVM):
    backend = "libvirt"
    kind = "vm"

    def __init__(self, kernel, initramfs, args, *, accel="auto", vcpus=1, memory_mib=128,
                 uri="qemu:///system", timeout=60.0, name=None, machine=DEFAULT_MACHINE,
                 console: str | None = None, **kw):
        remote = is_remote(uri)
        super().__init__(kernel, initramfs, args, accel=accel, vcpus=vcpus, memory_mib=memory_mib,
                         timeout=timeout, name=name, local_files=not remote, **kw)
        self.uri, self.machine = uri, machine
        # "socket": QEMU connects to our unix socket (local, sub-ms stamps);
        # "stream": a pty relayed by libvirt, the only way to a remote host's guest.
        self.console_kind = console or ("stream" if remote else "socket")
        if self.console_kind not in ("socket", "stream"):
            raise VMError("vm", f"console={console!r}", "use 'socket' or 'stream'", status=2)
        self._conn = None
        self._dom = None
        self._uuid: str | None = None
        self.xml = ""

    def _detect(self) -> Accel:
        return detect_accel(self.kernel, self.initramfs, uri=self.uri)

    def _prepare(self) -> None:
        if self.uri not in _swept:
            from .sweep import sweep
            sweep(self.uri)
            _swept.add(self.uri)
        self._conn = open_conn(self.uri)

    def _make_console(self) -> Console:
        return StreamConsole(self.name) if self.console_kind == "stream" else Console(self.name)

    def domain_spec(self, console_socket: str = "") -> DomainSpec:
        pid, start = owner.me()
        return DomainSpec(name=self.name, kernel=self.kernel, initramfs=self.initramfs, args=self.args,
                          accel=self.accel.name if self.accel else "tcg", vcpus=self.vcpus,
                          memory_mib=self.memory_mib, machine=self.machine, tb_cache_mib=self.tb_cache_mib,
                          console_socket=console_socket, console_pty=self.console_kind == "stream",
                          owner_pid=pid, owner_start=start,
                          owner_host=owner.hostname(), extra_cmdline=self.cmdline_opts, io=self.io)

    def _spawn(self) -> None:
        libvirt = libvirt_module()
        stream = isinstance(self.console, StreamConsole)
        self.xml = build(self.domain_spec("" if stream else self.console.path))
        flags = libvirt.VIR_DOMAIN_START_AUTODESTROY
        if stream:
            # QEMU drops pty output while nobody has it open: attach first, then run.
            flags |= libvirt.VIR_DOMAIN_START_PAUSED
        try:
            self._dom = self._conn.createXML(self.xml, flags)
        except libvirt.libvirtError as e:
            raise create_error(self.uri, e) from None
        self.result.created_ns = time.perf_counter_ns()
        self._uuid = self._dom.UUIDString()
        if stream:
            try:
                self.console.attach(self._conn, self._dom)
                self._dom.resume()
            except libvirt.libvirtError as e:
                raise VMError("libvirt", f"cannot attach the console of {self.name}: "
                              f"{e.get_error_message()}", "see /var/log/libvirt/libvirtd.log") from None

    def _gone(self) -> bool:
        if self._dom is None or self._conn is None:
            return True
        libvirt = libvirt_module()
        try:
            self._conn.lookupByUUIDString(self._uuid)
            return False
        except libvirt.libvirtError as e:
            if is_gone(e):
                return True
            raise VMError("libvirt", f"cannot look up {self.name}: {e.get_error_message()}",
                          "is libvirtd still running?") from None

    def _destroy(self) -> None:
        if self._dom is None:
            return
        libvirt = libvirt_module()
        try:
            self._dom.destroy()
        except libvirt.libvirtError as e:
            if not is_gone(e):
                raise VMError("libvirt", f"cannot destroy {self.name}: {e.get_error_message()}",
                              f"virsh -c {self.uri} destroy {self.name}") from None

    def _release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def host_pids(self) -> list[int]:
        """The QEMU process of the domain (local URIs only: PSS is read from /proc)."""
        if is_remote(self.uri):
            raise VMError("memory", f"{self.uri} is a remote host", "host-side memory needs a local URI",
                          status=2)
        try:
            with open(f"/run/libvirt/qemu/{self.name}.pid") as f:
                pid = int(f.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f"guest={self.name}".encode() in f.read():
                    return [pid]
        except (OSError, ValueError):
            pass
        from .sweep import qemu_processes
        return [p for p, n in qemu_processes() if n == self.name]

    def memory(self) -> dict:
        mem = super().memory()
        stats = {}
        if self._dom is not None:
            libvirt = libvirt_module()
            try:
                stats = {k: v * 1024 for k, v in self._dom.memoryStats().items()}  # KiB -> bytes
            except libvirt.libvirtError as e:
                stats = {"error": e.get_error_message()}
        mem["libvirt"] = stats
        return mem

    def metadata(self) -> dict:
        from .versions import libvirt_versions
        return {"backend": self.backend, "uri": self.uri, **libvirt_versions(self.uri),
                "accel": self.accel.name if self.accel else None,
                "accel_reason": self.accel.reason if self.accel else None,
                "machine": self.machine, "vcpus": self.vcpus, "memory_mib": self.memory_mib,
                "tb_cache_mib": self.tb_cache_mib, "cmdline": kernel_cmdline(self.args, self.cmdline_opts),
                "kernel": os.path.basename(self.kernel)}
