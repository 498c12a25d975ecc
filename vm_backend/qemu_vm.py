"""The same guest booted by qemu-system-x86_64 directly, without libvirt.

It exists to separate libvirt's own cost from the hypervisor's.  With machine
``pc`` (the default, backend ``qemu``) it runs the QEMU configuration libvirt
derives from our domain XML: the same machine type, firmware (QEMU's default
SeaBIOS), CPU model, RTC, serial device, kernel command line and seccomp
sandbox, and a memory cgroup of its own like libvirt's machine cgroup.  What it
leaves out is libvirt's management: no QMP monitor, no start paused then
``cont``, no libvirtd watching for the poweroff.  So the gap between the
``qemu`` and ``libvirt`` rows is libvirt's own cost.  With machine ``microvm``
(backend ``qemu-microvm``, which libvirt 9.0 refuses) it is the minimal VMM.

The QEMU process is our child: "gone" is the moment it is reaped.  It is named
``cvbench-qemu-<ownerpid>-<hex>`` so sweep() can kill it if we die, and where
possible it gets PR_SET_PDEATHSIG so it dies with us even on SIGKILL.
"""
from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
import threading
import time

from . import cgroup
from .accel import Accel, detect_accel
from .base import GuestVM
from .cmdline import BOOT_OPTS, kernel_cmdline
from .console import socket_dir
from .domain_xml import DEFAULT_MACHINE
from .errors import VMEnvError
from .iodev import qemu_args
from .tsc import host_tsc

QEMU = os.environ.get("CVBENCH_QEMU", "qemu-system-x86_64")
PR_SET_PDEATHSIG = 1
MICROVM = "microvm"
# What libvirt 9.0 adds to the QEMU command line of our domain XML, beyond the
# devices (checked against /proc/PID/cmdline of a libvirt guest by
# tests/test_vm_boot.py::test_raw_qemu_runs_what_libvirt_runs).
LIBVIRT_LIKE = ["-overcommit", "mem-lock=off", "-rtc", "base=utc",
                "-global", "PIIX4_PM.disable_s3=1", "-global", "PIIX4_PM.disable_s4=1",
                "-boot", "strict=on",
                "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
                "-msg", "timestamp=on"]


@functools.cache
def machines(binary: str) -> dict[str, str]:
    """Machine name -> the versioned machine it stands for (itself if none)."""
    out = subprocess.run([binary, "-machine", "help"], capture_output=True, text=True).stdout
    found = {}
    for ln in out.splitlines()[1:]:
        if not ln.strip():
            continue
        name = ln.split()[0]
        alias = ln.rsplit("(alias of ", 1)[1].rstrip(")") if "(alias of " in ln else name
        found[name] = alias
    return found


def qemu_binary() -> str:
    path = shutil.which(QEMU)
    if not path:
        raise VMEnvError("qemu", f"{QEMU} not found", "apt-get install qemu-system-x86 (make setup does)")
    return path


def host_tsc_khz() -> int | None:
    """The host kernel's TSC rate, which a TCG guest's rdtsc also runs at (QEMU
    returns host ticks).  microvm has no HPET/PM timer to calibrate the TSC
    against and the PIT path fails about half the time under TCG, leaving the
    guest hung after "could not calculate TSC khz"; tsc_early_khz gives it the
    rate (see tsc.py for where the rate comes from)."""
    return host_tsc()[0]


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)


class QemuVM(GuestVM):
    backend = "qemu"
    kind = "qemu"

    def __init__(self, kernel, initramfs, args, *, accel="auto", vcpus=1, memory_mib=128,
                 uri=None, timeout=60.0, name=None, machine=DEFAULT_MACHINE, **kw):
        super().__init__(kernel, initramfs, args, accel=accel, vcpus=vcpus, memory_mib=memory_mib,
                         timeout=timeout, name=name, **kw)
        self.binary = qemu_binary()
        self.machine = machine
        if machine not in machines(self.binary):
            raise VMEnvError("qemu", f"{self.binary} has no machine type {machine!r}",
                             f"use one of: {', '.join(sorted(machines(self.binary))[:12])}")
        self.backend = "qemu-microvm" if machine == MICROVM else "qemu"
        self.proc: subprocess.Popen | None = None
        self.argv: list[str] = []
        self.cgroup: str | None = None
        self._log = str(socket_dir() / f"{self.name}.log")

    @property
    def microvm(self) -> bool:
        return self.machine == MICROVM

    def _detect(self) -> Accel:
        return detect_accel(self.kernel, self.initramfs, uri=None, machine=self.machine)

    def _prepare(self) -> None:
        from .sweep import sweep
        if not getattr(QemuVM, "_swept", False):
            sweep(None)
            QemuVM._swept = True
        self.cgroup = cgroup.create(self.name)    # before the clock, as libvirt's is inside createXML

    def cmdline(self) -> str:
        opts = BOOT_OPTS if self.cmdline_opts is None else self.cmdline_opts
        kvm = self.accel is not None and self.accel.name == "kvm"
        khz = host_tsc_khz()
        if self.microvm and not kvm and khz and "tsc_early_khz" not in opts:
            opts = f"{opts} tsc_early_khz={khz}"
        if self.microvm and not kvm and "tsc=" not in opts:
            # Without it the clocksource watchdog, judging the TSC against
            # jiffies (themselves unreliable under TCG), drops to refined-jiffies
            # and the probe's clock ticks in 4 ms steps (ns_per_op=0.0).
            opts = f"{opts} tsc=reliable"
        return kernel_cmdline(self.args, opts)

    def qemu_argv(self, console_socket: str) -> list[str]:
        kvm = self.accel is not None and self.accel.name == "kvm"
        accel = "kvm" if kvm else "tcg" + (f",tb-size={int(self.tb_cache_mib)}" if self.tb_cache_mib else "")
        # The CPU model libvirt picks for our XML: host-passthrough under KVM, its default under TCG.
        cpu = "host" if kvm else "qemu64"
        boot = ["-kernel", self.kernel, "-initrd", self.initramfs, "-append", self.cmdline()]
        if self.microvm:
            return [self.binary, "-name", f"guest={self.name},debug-threads=on",
                    "-M", f"{MICROVM},acpi=on", "-accel", accel, "-cpu", cpu,
                    "-m", str(self.memory_mib), "-smp", str(self.vcpus),
                    "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", *boot,
                    "-chardev", f"socket,id=con0,path={console_socket}", "-serial", "chardev:con0",
                    *qemu_args(self.io, self.memory_mib, microvm=True)]
        smp = f"{self.vcpus},sockets={self.vcpus},cores=1,threads=1"
        return [self.binary, "-name", f"guest={self.name},debug-threads=on",
                "-machine", f"{self.machine},usb=off,dump-guest-core=off", "-accel", accel, "-cpu", cpu,
                "-m", str(self.memory_mib), "-smp", smp,
                "-display", "none", "-no-user-config", "-nodefaults", "-no-reboot", *LIBVIRT_LIKE, *boot,
                "-chardev", f"socket,id=charserial0,path={console_socket}",
                "-device", "isa-serial,chardev=charserial0,id=serial0,index=0",
                "-audiodev", "none,id=audio1", *qemu_args(self.io, self.memory_mib, microvm=False)]

    def _spawn(self) -> None:
        self.argv = self.qemu_argv(self.console.path)
        main = threading.current_thread() is threading.main_thread()
        cg = self.cgroup

        def child() -> None:
            _die_with_parent()
            if cg:
                cgroup.join_self(cg)
        with open(self._log, "wb") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         close_fds=True, preexec_fn=child if main else None)
        if cg and not main:
            cgroup.move(cg, self.proc.pid)

    def _gone(self) -> bool:
        if self.proc is None:
            return True
        return self.proc.poll() is not None

    def _wait_gone(self, limit: float) -> bool:
        # Our child: block in waitpid instead of polling, for a precise "gone".
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            return False
        if self.result.gone_ns is None:
            self.result.gone_ns = time.perf_counter_ns()
        return True

    def _destroy(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def _fail(self, why: str, kind: str = "") -> None:
        log = self.log_text()
        if log.strip():
            why = f"{why}; qemu said: {log.strip().splitlines()[-1]}"
        super()._fail(why, kind)

    def log_text(self) -> str:
        try:
            with open(self._log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def _release(self) -> None:
        try:
            os.unlink(self._log)
        except FileNotFoundError:
            pass
        if self.proc is None or self.proc.poll() is not None:
            if cgroup.remove(self.cgroup):
                self.cgroup = None

    def host_pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None and self.proc.poll() is None else []

    def metadata(self) -> dict:
        from .versions import qemu_version
        khz, src = host_tsc()
        return {"backend": self.backend, "qemu": qemu_version(self.binary),
                "accel": self.accel.name if self.accel else None,
                "accel_reason": self.accel.reason if self.accel else None,
                "machine": self.machine, "machine_resolved": machines(self.binary).get(self.machine),
                "tsc_khz": khz if self.microvm else None, "tsc_source": src if self.microvm else None,
                "vcpus": self.vcpus, "memory_mib": self.memory_mib,
                "tb_cache_mib": self.tb_cache_mib, "cmdline": self.cmdline(),
                "argv": self.argv, "kernel": os.path.basename(self.kernel)}
