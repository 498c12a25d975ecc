"""qemu and qemu-microvm: raw qemu-system-x86_64, no libvirt.

``qemu`` boots the machine type, firmware, CPU model, clock setup and kernel
command line of the libvirt domain, so the libvirt row minus this row is
libvirt's own cost.  ``qemu-microvm`` is the minimal VMM: QEMU's microvm
machine (no PCI, no firmware tables but ACPI), which libvirt cannot run.
"""
from __future__ import annotations

from .vm import VMBackend


class Qemu(VMBackend):
    name = "qemu"
    vm_class_name = "QemuVM"
    machine = "pc"
    label = "raw QEMU, same machine as libvirt"

    def vm_kwargs(self) -> dict:
        return {"machine": self.machine}

    def check(self) -> None:
        from vm_backend.qemu_vm import qemu_binary
        qemu_binary()


class QemuMicrovm(Qemu):
    name = "qemu-microvm"
    machine = "microvm"
    label = "minimal VMM (QEMU microvm)"
