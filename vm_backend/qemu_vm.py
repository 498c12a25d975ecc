"""The same guest booted by qemu-system-x86_64 directly, without libvirt.

It exists to separate libvirt's own cost from the hypervisor's: same kernel,
initramfs, command line, console reader and timing points as LibvirtVM, but
``-M microvm`` (which libvirt 9.0 refuses) where this QEMU has it.  The QEMU
process is our child: "gone" is the moment it is reaped.  It is named
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

from .accel import Accel, detect_accel
from .base import GuestVM
from .cmdline import BOOT_OPTS, kernel_cmdline
from .console import socket_dir
from .errors import VMEnvError

QEMU = os.environ.get("CVBENCH_QEMU", "qemu-system-x86_64")
PR_SET_PDEATHSIG = 1


@functools.cache
def machines(binary: str) -> frozenset[str]:
    out = subprocess.run([binary, "-machine", "help"], capture_output=True, text=True).stdout
    return frozenset(ln.split()[0] for ln in out.splitlines()[1:] if ln.strip())


def qemu_binary() -> str:
    path = shutil.which(QEMU)
    if not path:
        raise VMEnvError("qemu", f"{QEMU} not found", "apt-get install qemu-system-x86 (make setup does)")
    return path


def default_machine(binary: str) -> str:
    return "microvm" if "microvm" in machines(binary) else "pc"


def host_tsc_khz() -> int | None:
    """The host's TSC rate, which a TCG guest's rdtsc also runs at (QEMU returns
    host ticks).  microvm has no HPET/PM timer to calibrate the TSC against and
    the PIT path fails about half the time under TCG, leaving the guest hung
    after "could not calculate TSC khz"; tsc_early_khz gives it the rate."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return int(float(line.split(":")[1]) * 1000)
    except (OSError, ValueError):
        pass
    return None


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)


class QemuVM(GuestVM):
    backend = "qemu"
    kind = "qemu"

    def __init__(self, kernel, initramfs, args, *, accel="auto", vcpus=1, memory_mib=128,
                 uri=None, timeout=60.0, name=None, machine=None, **kw):
        super().__init__(kernel, initramfs, args, accel=accel, vcpus=vcpus, memory_mib=memory_mib,
                         timeout=timeout, name=name, **kw)
        self.binary = qemu_binary()
        self.machine = machine or default_machine(self.binary)
        self.proc: subprocess.Popen | None = None
        self.argv: list[str] = []
        self._log = str(socket_dir() / f"{self.name}.log")

    def _detect(self) -> Accel:
        return detect_accel(self.kernel, self.initramfs, uri=None)

    def _prepare(self) -> None:
        from .sweep import sweep
        if not getattr(QemuVM, "_swept", False):
            sweep(None)
            QemuVM._swept = True

    def cmdline(self) -> str:
        opts = BOOT_OPTS if self.cmdline_opts is None else self.cmdline_opts
        kvm = self.accel is not None and self.accel.name == "kvm"
        khz = host_tsc_khz()
        if self.machine.startswith("microvm") and not kvm and khz and "tsc_early_khz" not in opts:
            opts = f"{opts} tsc_early_khz={khz}"
        if self.machine.startswith("microvm") and not kvm and "tsc=" not in opts:
            # Without it the clocksource watchdog, judging the TSC against
            # jiffies (themselves unreliable under TCG), drops to refined-jiffies
            # and the probe's clock ticks in 4 ms steps (ns_per_op=0.0).
            opts = f"{opts} tsc=reliable"
        return kernel_cmdline(self.args, opts)

    def qemu_argv(self, console_socket: str) -> list[str]:
        kvm = self.accel is not None and self.accel.name == "kvm"
        accel = "kvm" if kvm else "tcg" + (f",tb-size={int(self.tb_cache_mib)}" if self.tb_cache_mib else "")
        machine = self.machine + (",acpi=on" if self.machine == "microvm" else "")
        return [self.binary, "-name", f"guest={self.name},debug-threads=on",
                "-M", machine, "-accel", accel, "-cpu", "host" if kvm else "qemu64",
                "-m", str(self.memory_mib), "-smp", str(self.vcpus),
                "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                "-kernel", self.kernel, "-initrd", self.initramfs,
                "-append", self.cmdline(),
                "-chardev", f"socket,id=con0,path={console_socket}", "-serial", "chardev:con0"]

    def _spawn(self) -> None:
        self.argv = self.qemu_argv(self.console.path)
        main = threading.current_thread() is threading.main_thread()
        with open(self._log, "wb") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         close_fds=True, preexec_fn=_die_with_parent if main else None)

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

    def host_pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None and self.proc.poll() is None else []

    def metadata(self) -> dict:
        from .versions import qemu_version
        return {"backend": self.backend, "qemu": qemu_version(self.binary),
                "accel": self.accel.name if self.accel else None,
                "accel_reason": self.accel.reason if self.accel else None,
                "machine": self.machine, "vcpus": self.vcpus, "memory_mib": self.memory_mib,
                "tb_cache_mib": self.tb_cache_mib, "cmdline": self.cmdline(),
                "argv": self.argv, "kernel": os.path.basename(self.kernel)}
