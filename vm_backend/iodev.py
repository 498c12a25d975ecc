"""The I/O devices of a guest (disks, virtio-fs shares, tap or passt NICs), written once
as libvirt domain XML and once as the raw QEMU arguments libvirt derives from
that XML, so the libvirt and raw-QEMU rows of the disk and network scenarios
attach the same devices with the same cache modes.

The startup and memory guests have none of this (GuestIO() is empty and adds
nothing): their XML and QEMU command line stay exactly as before.

virtio-fs needs guest RAM that the virtiofsd process can map: a shared memfd
(libvirt ``<memoryBacking>``; QEMU ``memory-backend-memfd,share=on``).  libvirt
starts and stops its own virtiofsd for a ``<filesystem>``; raw QEMU is given
the socket of one the caller started (bench/disk_vm.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr

VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
# virtiofsd's worker threads, the same for libvirt's and ours (bench/disk_vm.py):
# with its default pool (64) libvirt's virtiofsd left a fio job hanging in 2 of
# about 6 full runs here; with one it serves requests in its virtqueue thread.
THREAD_POOL = 1


@dataclass
class Disk:
    path: str
    readonly: bool = False
    cache: str = "none"          # none = O_DIRECT on the host: no host page cache
    io: str = "native"           # Linux AIO; needs cache=none (or directsync)


@dataclass
class Share:
    """A virtio-fs share: ``tag`` is what the guest mounts."""
    tag: str
    source_dir: str
    socket: str = ""             # raw QEMU: a virtiofsd the caller started listens here
    cache: str = "none"          # virtiofsd's -o cache= / libvirt <cache mode>


@dataclass
class Nic:
    """A virtio-net NIC.  ``backend="tap"``: on tap ``tap``, which raw QEMU creates
    (script=no) and libvirt too (<interface type='ethernet'>); either way it is
    born in the host's netns.  ``backend="passt"``: user-mode networking by
    passt; raw QEMU connects to the passt the caller started, listening on
    ``socket`` (-netdev stream), libvirt starts its own
    (<interface type='user'><backend type='passt'/>), which assigns ``ip``
    (ADDR/LEN) to the guest."""
    tap: str
    mac: str
    mtu: int = 0
    backend: str = "tap"
    socket: str = ""
    ip: str = ""

    def __post_init__(self):
        if self.backend not in ("tap", "passt"):
            raise ValueError(f"a NIC's backend is 'tap' or 'passt', not {self.backend!r}")


@dataclass
class GuestIO:
    disks: list[Disk] = field(default_factory=list)
    shares: list[Share] = field(default_factory=list)
    nics: list[Nic] = field(default_factory=list)
    cmdline: str = ""            # cvbench.* words for the I/O /init (bench/guest_io.py)

    @property
    def shared_memory(self) -> bool:
        return bool(self.shares)

    def __bool__(self) -> bool:
        return bool(self.disks or self.shares or self.nics or self.cmdline)


def _dev(i: int) -> str:
    return "vd" + chr(ord("a") + i)


def domain_memory_xml(io: GuestIO | None) -> str:
    if not io or not io.shared_memory:
        return ""
    return "<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>"


def domain_devices_xml(io: GuestIO | None) -> str:
    """The <devices> children for ``io`` (empty for no I/O)."""
    if not io:
        return ""
    out = []
    for i, d in enumerate(io.disks):
        ro = "<readonly/>" if d.readonly else ""
        out.append(f"<disk type='file' device='disk'><driver name='qemu' type='raw' cache={quoteattr(d.cache)} "
                   f"io={quoteattr(d.io)}/><source file={quoteattr(d.path)}/>"
                   f"<target dev='{_dev(i)}' bus='virtio'/>{ro}</disk>")
    for s in io.shares:
        out.append(f"<filesystem type='mount' accessmode='passthrough'><driver type='virtiofs'/>"
                   f"<binary path='{VIRTIOFSD}'><cache mode={quoteattr(s.cache)}/>"
                   f"<thread_pool size='{THREAD_POOL}'/></binary>"
                   f"<source dir={quoteattr(s.source_dir)}/><target dir={quoteattr(s.tag)}/></filesystem>")
    for n in io.nics:
        mtu = f"<mtu size='{int(n.mtu)}'/>" if n.mtu else ""
        if n.backend == "passt":
            addr, _, plen = n.ip.partition("/")
            ip = f"<ip family='ipv4' address={quoteattr(addr)} prefix={quoteattr(plen or '32')}/>" if addr else ""
            out.append(f"<interface type='user'><backend type='passt'/><mac address={quoteattr(n.mac)}/>"
                       f"{ip}<model type='virtio'/>{mtu}</interface>")
            continue
        out.append(f"<interface type='ethernet'><mac address={quoteattr(n.mac)}/>"
                   f"<target dev={quoteattr(n.tap)} /><model type='virtio'/>{mtu}</interface>")
    return "\n    ".join(out)


def qemu_args(io: GuestIO | None, memory_mib: int, microvm: bool) -> list[str]:
    """The QEMU arguments for ``io``: what libvirt 9.0 passes for the XML above
    (virtio-*-pci on pc; the -device virtio-mmio forms on microvm)."""
    if not io:
        return []
    bus = "device" if microvm else "pci"
    # virtio-mmio is legacy (0.9) unless told otherwise, and virtiofsd's
    # libvhost-user refuses legacy devices: microvm gets modern virtio-mmio.
    args: list[str] = ["-global", "virtio-mmio.force-legacy=false"] if microvm else []
    if io.shared_memory:
        args += ["-object", f"memory-backend-memfd,id=cvbmem,size={int(memory_mib)}M,share=on",
                 "-machine", "memory-backend=cvbmem"]
    for i, d in enumerate(io.disks):
        aio = f",aio={d.io}" if d.io else ""
        direct = "on" if d.cache in ("none", "directsync") else "off"
        args += ["-blockdev", f"driver=file,node-name=cvbf{i},filename={d.path}{aio},"
                              f"cache.direct={direct},cache.no-flush=off,read-only={'on' if d.readonly else 'off'}",
                 "-blockdev", f"driver=raw,node-name=cvbd{i},file=cvbf{i},read-only={'on' if d.readonly else 'off'}",
                 "-device", f"virtio-blk-{bus},drive=cvbd{i},id={_dev(i)}"]
    # microvm: event_idx=off on virtio-fs, see bench/disk_vm.py MICROVM_FS (a lost
    # notification hung 3 of ~15 fio profiles with it on, 0 of 16 with it off)
    fs_opts = ",event_idx=off" if microvm else ""
    for i, s in enumerate(io.shares):
        args += ["-chardev", f"socket,id=cvbfs{i},path={s.socket}",
                 "-device", f"vhost-user-fs-{bus},chardev=cvbfs{i},tag={s.tag},queue-size=1024{fs_opts}"]
    for i, n in enumerate(io.nics):
        mtu = f",host_mtu={int(n.mtu)}" if n.mtu else ""
        netdev = (f"stream,id=cvbnet{i},server=off,addr.type=unix,addr.path={n.socket}" if n.backend == "passt"
                  else f"tap,id=cvbnet{i},ifname={n.tap},script=no,downscript=no")
        args += ["-netdev", netdev,
                 "-device", f"virtio-net-{bus},netdev=cvbnet{i},mac={n.mac}{mtu}"]
    return args
