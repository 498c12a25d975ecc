"""libvirt: the VM backend proper, a transient domain on qemu:///system.

Its lifecycle ends when libvirtd has seen the QEMU pid vanish.  QEMU is a
daemon whose parent is PID 1, so that includes how long this host's PID 1
takes to reap an orphan; the metadata records that delay (measured once), so
a chart can tell libvirt's own teardown from the host's init.
"""
from __future__ import annotations

from .vm import VMBackend

URI = "qemu:///system"


class Libvirt(VMBackend):
    name = "libvirt"
    vm_class_name = "LibvirtVM"
    label = "libvirt transient domain, machine pc"

    def check(self) -> None:
        from vm_backend.conn import open_conn
        open_conn(URI).close()

    def metadata(self) -> dict:
        from vm_backend.libvirt_trace import orphan_reap_s
        md = super().metadata()
        md["pid1_orphan_reap_s"] = orphan_reap_s()
        return md
