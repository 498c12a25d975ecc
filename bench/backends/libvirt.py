"""libvirt: the VM backend proper, a transient domain on qemu:///system."""
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
