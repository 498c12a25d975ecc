"""qemu: raw qemu-system-x86_64 (no libvirt), to separate libvirt's own cost."""
from __future__ import annotations

from .vm import VMBackend


class Qemu(VMBackend):
    name = "qemu"
    vm_class_name = "QemuVM"

    def check(self) -> None:
        from vm_backend.qemu_vm import qemu_binary
        qemu_binary()
