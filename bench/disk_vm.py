"""fio in a VM: the disk scenario's virtio-blk and virtio-fs backings, for the
libvirt, raw QEMU (pc) and QEMU microvm backends.

The guest boots the I/O initramfs (bench/guest_io.py) with two devices it
mounts before anything runs: the fio layer (the very files every container
runs, as a read-only ext4 image made with ``mkfs.ext4 -d``) on virtio-blk as
its chroot root, and the backing at /data.  One guest per backing stays up
for all the profiles: the harness types ``drop`` (guest page cache) and
``run <fio argv>`` into its serial console and reads fio's JSON back, and it
drops the host's page cache before each job as for every backing, so both
sides start each job cold.  Host CPU is the VMM's (QEMU, and virtiofsd for
virtio-fs) utime+stime over the job, read from /proc.

Backings and their cache modes:

- virtio-blk: a raw file holding an ext4, ``cache=none`` (O_DIRECT on the
  host) and ``io=native``: the host page cache is not in the data path.
- virtio-fs: a host directory through virtiofsd ``cache=none`` (no guest
  caching); virtiofsd itself reads and writes the host files buffered (it drops
  the guest's O_DIRECT), so reads can be served from the host page cache: the
  row is flagged host-cache-inflated.  libvirt starts its own virtiofsd; raw
  QEMU gets one started here (serving the run folder's share, with
  CVBENCH_OWNER and PR_SET_PDEATHSIG, so bench.sweep kills it if the owner
  dies; its socket sits with the console sockets, see fs_socket()).
- 9p: not measured, the guest kernel has no 9p (see NINEP_WHY).

Under TCG every guest figure is emulation: the I/O path is QEMU's, but the
guest's CPU work (fio, the guest kernel's block and FUSE layers) is emulated.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from common.errors import CvbError, EnvError
from common.procs import cmdlines, cpu_seconds
from vm_backend.errors import VMError
from vm_backend.iodev import THREAD_POOL

from . import disk_fio, disk_watch, guest_io

NINEP_WHY = ("the guest kernel (Debian's cloud flavour) is built without 9p (CONFIG_NET_9P is not set), "
             "so a 9p share cannot be mounted in the guest")
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
ROOT_DEV, DATA_DEV = "/dev/vda", "/dev/vdb"
TAG = "cvbdata"
CACHE = {
    "virtio-blk": "virtio-blk on a raw file holding ext4, cache=none (O_DIRECT on the host), io=native: "
                  "no host page cache; guest and host caches dropped before each job",
    "virtio-fs": "virtio-fs, virtiofsd cache=none (no guest cache), but virtiofsd does buffered host I/O "
                 "(O_DIRECT dropped): host page cache in the read path; dropped before each job",
}
INFLATED = {"virtio-blk": False, "virtio-fs": True}
# QEMU microvm's vhost-user-fs-device runs with event_idx=off (vm_backend/iodev.py).
# With it on, fio jobs there hung in 3 of ~15 profile runs (the default window,
# TCG): fio in D state in fuse_get_req (io_submit -> fuse_direct_IO, the FUSE
# background queue full), while the guest vCPU, QEMU and virtiofsd all idled:
# a used-buffer notification that never arrived.  With it off: 0 of 16.  The pc
# guests (virtio-pci) keep the default; the row says so.
MICROVM_FS = ("; microvm only: vhost-user-fs-device event_idx=off (with it on, a lost completion "
              "notification hung 3 of ~15 fio profiles here)")
# A TCG guest prints READY in 2-5 s here; one that has not after this long is
# hung (seen: ~1 in 10 microvm boots under load, console empty: 2 of 10 in a
# loop, 1 of 2 in a default run) and is retried.  At 45 s such a hang cost a
# default run 45 s, so 25 s (5x a slow boot).
BOOT_TIMEOUT_S = 25.0


def cache_mode(backend: str, backing: str) -> str:
    """The cache text of ``backend``/``backing`` (and microvm's virtio-fs setting)."""
    return CACHE[backing] + (MICROVM_FS if backend == "qemu-microvm" and backing == "virtio-fs" else "")


def modules(backing: str, microvm: bool) -> list[str]:
    transport = "virtio_mmio" if microvm else "virtio_pci"
    return [transport, "virtio_blk", *(["virtiofs"] if backing == "virtio-fs" else [])]


def layer_image(layer: Path) -> Path:
    """The fio layer as a read-only ext4 image, built once next to the layer."""
    out = layer.parent / "layer.ext4"
    if out.is_file():
        return out
    used = int(subprocess.run(["du", "-sb", str(layer)], capture_output=True, text=True,
                              check=True).stdout.split()[0])
    size_mib = used * 13 // 10 // 2**20 + 32
    tmp = out.with_name(f"layer.ext4.tmp{os.getpid()}")
    try:
        r = subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "cvbench-fio", "-d", str(layer), str(tmp),
                            f"{size_mib}M"], capture_output=True, text=True)
        if r.returncode != 0:
            raise EnvError("disk", f"mkfs.ext4 -d {layer} failed: {r.stderr.strip()[-200:]}",
                           "apt-get install e2fsprogs (1.43 or newer)")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def data_image(path: Path, size_bytes: int) -> Path:
    """A sparse raw file holding a fresh ext4, for the virtio-blk backing."""
    size_mib = size_bytes // 2**20 + 128
    r = subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "cvbench-data", "-E",
                        "lazy_itable_init=0,lazy_journal_init=0", str(path), f"{size_mib}M"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise EnvError("disk", f"mkfs.ext4 {path} failed: {r.stderr.strip()[-200:]}", "apt-get install e2fsprogs")
    os.chmod(path, 0o666)   # libvirt's QEMU may run as libvirt-qemu
    return path


def cpu_s(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def virtiofsd_pids(share_dir: str) -> list[int]:
    """virtiofsd processes serving ``share_dir`` (libvirt's or ours)."""
    return [pid for pid, argv in cmdlines()
            if argv[0].endswith(b"virtiofsd") and any(share_dir.encode() in a for a in argv)]


class VirtioFSD:
    """A virtiofsd for raw QEMU, under the run folder, dying with its owner."""

    def __init__(self, source: Path, sock: Path):
        if not os.access(VIRTIOFSD, os.X_OK):
            raise EnvError("disk", f"{VIRTIOFSD} not found", "apt-get install qemu-system-common")
        from .sweep import OWNER_ENV
        self.sock = sock
        env = {"PATH": "/usr/bin:/bin", OWNER_ENV: str(os.getpid())}
        self.proc = subprocess.Popen(
            [VIRTIOFSD, f"--socket-path={sock}", "-o", f"source={source}", "-o", "cache=none",
             f"--thread-pool-size={THREAD_POOL}"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, env=env, preexec_fn=_die_with_parent)
        end = time.monotonic() + 10
        while not sock.exists():
            if self.proc.poll() is not None or time.monotonic() > end:
                err = self.proc.stderr.read().decode(errors="replace").strip()[-300:] if self.proc.poll() else ""
                self.stop()
                raise CvbError("disk", f"virtiofsd did not listen on {sock}: {err or 'timeout'}",
                               "see virtiofsd --help", status=1)
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.sock.unlink(missing_ok=True)


def fs_socket() -> Path:
    """virtiofsd's socket: beside the guests' console sockets (a short path:
    AF_UNIX takes 108 bytes, a run folder under a long CVBENCH_DISK_STATE can
    exceed that), named ``cvbench-fs-<owner pid>-<hex>.sock`` so vm_backend's
    sweep removes it once its owner is dead, as it does console sockets."""
    from vm_backend.console import socket_dir
    from vm_backend.owner import vm_name
    return socket_dir() / f"{vm_name('fs')}.sock"


def _tsc_note(vm) -> str:
    """Why a TCG microvm may hang at boot: it calibrates the TSC itself when the
    host's rate is unknown (no tsc_early_khz on its command line)."""
    try:
        cmd = vm.cmdline() if getattr(vm, "microvm", False) else ""
    except Exception:  # noqa: BLE001 - a note, never a second failure
        return ""
    if not cmd or "tsc_early_khz" in cmd:
        return ""
    from vm_backend.tsc import host_tsc
    return f" (its kernel command line has no tsc_early_khz: host TSC rate {host_tsc()[1]})"


def _die_with_parent() -> None:
    import ctypes
    ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)   # PR_SET_PDEATHSIG, SIGKILL


class VMRunner:
    """fio in one long-lived guest per backing (see the module docstring)."""

    speed = "vm"   # disk_watch's class for the expected length of a job
    laid_out = False   # the data file exists in this guest's backing (a fresh guest: not yet)

    def __init__(self, backend, layer: Path, workdir: Path, window: disk_fio.Window):
        self.b = backend
        self.layer = layer
        self.workdir = workdir
        self.window = window
        self.vm = None
        self.fsd: VirtioFSD | None = None
        self.backing = ""
        self.shell: guest_io.GuestShell | None = None

    # -- guest lifecycle ---------------------------------------------------------------
    def _boot(self, backing) -> None:
        from vm_backend.iodev import Disk, GuestIO, Share
        img = self.b.img
        microvm = getattr(self.b, "machine", "pc") == "microvm"
        disks = [Disk(str(layer_image(self.layer)), readonly=True)]
        shares, data = [], ""
        if backing.name == "virtio-blk":
            raw = data_image(self.workdir / "cvbench-data.raw", self.window.bytes_needed())
            disks.append(Disk(str(raw)))
            data = f"blk:{DATA_DEV}"
        elif backing.name == "virtio-fs":
            share = self.workdir / "share"
            share.mkdir(exist_ok=True)   # virtiofsd runs as root (ours, and libvirt's)
            sock = ""
            if self.b.name != "libvirt":
                self.fsd = VirtioFSD(share, fs_socket())
                sock = str(self.fsd.sock)
            shares.append(Share(TAG, str(share), sock))
            data = f"virtiofs:{TAG}"
        else:
            raise CvbError("disk", f"unknown VM backing {backing.name!r}", "choose virtio-blk or virtio-fs")
        cmd = guest_io.cmdline(img, modules(backing.name, microvm), root=ROOT_DEV, data=data)
        io = GuestIO(disks=disks, shares=shares, cmdline=cmd)
        self.vm = self.b.io_vm(guest_io.initramfs(img), ["serve"], io, timeout=BOOT_TIMEOUT_S)
        try:
            self.vm.start()
        except VMError as e:
            if e.kind != "timeout":
                raise
            raise disk_watch.Hang(f"{self.b.name}/{backing.name} boot", BOOT_TIMEOUT_S, 5.0,
                                  f"guest: {e.why}{_tsc_note(self.vm)}") from None
        self.shell = guest_io.GuestShell(self.vm, f"disk: {self.b.name}/{backing.name}")
        self.backing = backing.name

    def host_pids(self) -> list[int]:
        pids = list(self.vm.host_pids()) if self.vm else []
        if self.backing == "virtio-fs":
            pids += virtiofsd_pids(str(self.workdir / "share"))
        return pids

    def close(self) -> None:
        try:
            if self.vm is not None:
                if self.shell is not None:   # None: the boot itself failed
                    self.shell.quit()
                self.vm.stop()
        finally:
            self.vm = self.shell = None
            self.laid_out = False   # virtio-blk's disk is made anew with the next guest
            if self.fsd:
                self.fsd.stop()
                self.fsd = None

    def run(self, backing, env: dict, profile: str, section: str, limit: float,
            create_only: bool = False, expected: float = 0.0) -> tuple[str, float]:
        """One fio run in this backing's guest (booted on first use).  Past
        ``limit`` seconds it counts as hung: disk_watch.Hang with the guest's
        own account (its watch prints what fio is blocked in at 60% of the
        limit) and the host's (QEMU, virtiofsd); the caller closes this guest."""
        if self.vm is None:
            self._boot(backing)
        if not create_only:
            self.shell.drop_caches()
        words = [f"{k}={v}" for k, v in {**env, "CVB_DIR": disk_fio.DATA}.items()]
        argv = disk_fio.argv("/usr/bin/fio", disk_fio.IN_ROOT_JOBS, profile, section, create_only)
        pids = self.host_pids()
        c0 = cpu_s(pids)
        try:
            rc, out = self.shell.run(words + argv, limit, watch=max(limit * 0.6, 1))
        except guest_io.GuestTimeout as e:
            guest = " ".join(h[len(guest_io.GuestShell.HANG):] for h in e.hang) or \
                f"no report from the guest's watch; console: {self.vm.console.tail(3)!r}"
            self.shell = None   # its shell is stuck in the job: close() destroys the guest, no quit
            raise disk_watch.Hang(f"{self.b.name}/{backing.name} {section}", limit, expected,
                                  f"guest: {guest[:700]}; host: {disk_watch.host_evidence(pids)}") from None
        cpu = cpu_s(pids) - c0
        if rc != 0:
            raise CvbError("disk", f"{self.b.name}/{backing.name} {section}: fio in the guest exited with {rc}: "
                           f"{out.strip()[-400:]}", "see the output", status=1)
        return out, cpu
