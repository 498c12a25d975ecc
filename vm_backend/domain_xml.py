"""libvirt domain XML for one probe guest: direct kernel boot, nothing else.

Every device a guest does not need costs boot time (firmware and kernel probe
it) and host memory, and makes the VM look worse than it is, so the device set
is the minimum that boots the image and powers it off: no VGA, USB, balloon,
NIC or disks (the disk and network scenarios add theirs, and only theirs,
through iodev.GuestIO).  ACPI stays on because without it libvirt passes ``-no-acpi`` and
``poweroff -f`` only halts the CPU instead of ending the domain.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from .cmdline import kernel_cmdline
from .iodev import GuestIO, domain_devices_xml, domain_memory_xml

# Namespace of cvbench's <metadata> element: the owner pid (and its start time,
# so a reused pid is not mistaken for a live owner) let sweep() tell a live
# concurrent run's domains from a killed run's leftovers.
META_NS = "https://cvbench.invalid/vm/1"

# libvirt 9.0 refuses microvm ("No PCI buses available"): pc is the smallest
# machine it accepts.  QemuVM uses microvm.
DEFAULT_MACHINE = "pc"


@dataclass
class DomainSpec:
    name: str
    kernel: str
    initramfs: str
    args: list[str]
    accel: str = "tcg"                 # "kvm" or "tcg"
    vcpus: int = 1
    memory_mib: int = 128
    machine: str = DEFAULT_MACHINE
    tb_cache_mib: int | None = None    # TCG translation cache; None keeps QEMU's default
    console_socket: str = ""           # unix socket cvbench listens on; QEMU connects to it
    console_pty: bool = False          # else a pty relayed by libvirt (remote hosts)
    owner_pid: int = field(default_factory=os.getpid)
    owner_start: int = 0               # /proc/<pid>/stat starttime of the owner
    owner_host: str = ""               # a sweep on another host must not judge this owner
    extra_cmdline: str | None = None   # replaces the default cmdline options (experiments)
    io: GuestIO | None = None          # disks, virtio-fs, NICs of the I/O scenarios (iodev.py)
    # a wrapper that execs QEMU (bench/strength_host.py puts it under strace); "": libvirt's default
    emulator: str = field(default_factory=lambda: os.environ.get("CVBENCH_LIBVIRT_EMULATOR", ""))


def _domain_type(accel: str) -> str:
    if accel == "kvm":
        return "kvm"
    if accel == "tcg":
        return "qemu"
    raise ValueError(f"accel must be 'kvm' or 'tcg', not {accel!r}")


def build(spec: DomainSpec) -> str:
    """The domain XML for ``spec``."""
    if spec.vcpus < 1 or spec.memory_mib < 16:
        raise ValueError("vcpus must be >= 1 and memory_mib >= 16")
    dtype = _domain_type(spec.accel)
    cmdline = kernel_cmdline(spec.args, spec.extra_cmdline)
    cpu = ("<cpu mode='host-passthrough' check='none' migratable='off'/>" if spec.accel == "kvm" else "")
    tcg = ""
    if spec.accel == "tcg" and spec.tb_cache_mib:
        tcg = f"<tcg><tb-cache unit='MiB'>{int(spec.tb_cache_mib)}</tb-cache></tcg>"
    if spec.console_socket:
        src = f"<source mode='connect' path={quoteattr(spec.console_socket)}/>"
        serial = (f"<serial type='unix'>{src}<target type='isa-serial' port='0'/></serial>"
                  f"<console type='unix'>{src}<target type='serial' port='0'/></console>")
    elif spec.console_pty:
        serial = ("<serial type='pty'><target type='isa-serial' port='0'/></serial>"
                  "<console type='pty'><target type='serial' port='0'/></console>")
    else:
        serial = ""
    return f"""<domain type='{dtype}'>
  <name>{escape(spec.name)}</name>
  <metadata>
    <cvbench:owner xmlns:cvbench='{META_NS}' pid='{spec.owner_pid}' start='{spec.owner_start}' host={quoteattr(spec.owner_host)}/>
  </metadata>
  <memory unit='MiB'>{int(spec.memory_mib)}</memory>{domain_memory_xml(spec.io)}
  <vcpu placement='static'>{int(spec.vcpus)}</vcpu>
  <os>
    <type arch='x86_64' machine={quoteattr(spec.machine)}>hvm</type>
    <kernel>{escape(spec.kernel)}</kernel>
    <initrd>{escape(spec.initramfs)}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features><acpi/><apic/>{tcg}</features>
  {cpu}
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <pm><suspend-to-mem enabled='no'/><suspend-to-disk enabled='no'/></pm>
  <devices>{f"<emulator>{escape(spec.emulator)}</emulator>" if spec.emulator else ""}
    <controller type='usb' model='none'/>
    {serial}
    {domain_devices_xml(spec.io)}
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
  <seclabel type='none' model='dac'/>
</domain>
"""


def owner_from_xml(xml: str) -> tuple[int, int, str] | None:
    """(pid, starttime, host) recorded in a domain's cvbench metadata, or None."""
    import xml.etree.ElementTree as ET
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    el = root.find(f"metadata/{{{META_NS}}}owner")
    if el is None:
        return None
    try:
        return int(el.get("pid", "")), int(el.get("start", "0")), el.get("host", "")
    except ValueError:
        return None
