"""VMs for cvbench: the probe image booted as a guest, through libvirt or raw QEMU.

``detect_accel`` decides KVM or TCG by a trial boot (and says why);
``LibvirtVM`` and ``QemuVM`` boot one guest each with the same console reader
and timing points; ``sweep`` removes what dead cvbench processes left.
"""
from __future__ import annotations

from .accel import Accel, detect_accel
from .errors import VMEnvError, VMError
from .libvirt_vm import LibvirtVM
from .qemu_vm import QemuVM
from .result import BootResult
from .sweep import sweep

__all__ = ["Accel", "BootResult", "LibvirtVM", "QemuVM", "VMEnvError", "VMError", "detect_accel", "sweep"]
