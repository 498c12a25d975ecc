"""The lifecycle both VM backends share: boot, wait for markers, time, clean up.

A backend only says how to spawn, destroy and find its VMM (libvirt_vm.py,
qemu_vm.py); everything that makes the two comparable (the same console
reader, the same timing points, the same timeouts and the same cleanup on
error, timeout, Ctrl-C and SIGTERM) lives here once.
"""
from __future__ import annotations

import os
import signal
import threading
import time

from . import owner
from .accel import Accel, detect_accel
from .cmdline import BOOT_OPTS, check_args
from .console import Console
from .errors import VMEnvError, VMError
from .result import BootResult

MiB = 1 << 20
GONE_TIMEOUT = 30.0     # guest powered off, VMM must disappear within this
POLL_S = 0.005
DEFAULT_TB_CACHE_MIB = None   # see experiment.py; None keeps QEMU's default


def _sigterm_exits() -> None:
    """Make SIGTERM unwind (so finally/with blocks destroy the guest) instead of
    killing the process on the spot; only if nobody installed a handler."""
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        def _exit(signum, _frame):
            raise SystemExit(128 + signum)
        signal.signal(signal.SIGTERM, _exit)


def check_readable(path: str, what: str) -> str:
    """The VMM may run as an unprivileged user (libvirt-qemu): the file and every
    folder above it must be readable/searchable by others."""
    path = os.path.abspath(str(path))
    if not os.path.isfile(path):
        raise VMEnvError("vm", f"{what} {path} not found", "run 'make setup' (it builds the image and kernel)")
    if not os.stat(path).st_mode & 0o004:
        raise VMEnvError("vm", f"{what} {path} is not readable by libvirt's qemu user",
                         f"chmod o+r {path}")
    d = os.path.dirname(path)
    while d != "/":
        if not os.stat(d).st_mode & 0o001:
            raise VMEnvError("vm", f"folder {d} is not searchable by libvirt's qemu user", f"chmod o+x {d}")
        d = os.path.dirname(d)
    return path


class GuestVM:
    backend = ""
    kind = "vm"

    def __init__(self, kernel, initramfs, args, *, accel="auto", vcpus=1, memory_mib=128,
                 timeout=60.0, name=None, tb_cache_mib=DEFAULT_TB_CACHE_MIB, cmdline_opts=None,
                 local_files=True, io=None):
        if not isinstance(accel, Accel) and accel not in ("auto", "kvm", "tcg"):
            raise VMError("vm", f"unknown accel {accel!r}", "use auto, kvm or tcg", status=2)
        if int(vcpus) < 1 or int(memory_mib) < 32:
            raise VMError("vm", f"vcpus={vcpus} memory_mib={memory_mib}",
                          "need at least 1 vCPU and 32 MiB", status=2)
        # On a remote host the paths name that host's files: nothing to check here.
        self.kernel = check_readable(kernel, "kernel") if local_files else str(kernel)
        self.initramfs = check_readable(initramfs, "initramfs") if local_files else str(initramfs)
        self.args = check_args(list(args))
        self.accel_req = accel
        self.vcpus, self.memory_mib, self.timeout = int(vcpus), int(memory_mib), float(timeout)
        self.tb_cache_mib = tb_cache_mib
        self.cmdline_opts = cmdline_opts
        # The I/O scenarios' devices (iodev.GuestIO) and the cvbench.* words
        # that tell the I/O /init what to load and mount; None for the rest.
        self.io = io
        if io is not None and io.cmdline:
            self.cmdline_opts = f"{BOOT_OPTS if cmdline_opts is None else cmdline_opts} {io.cmdline}"
        self.name = name or owner.vm_name(self.kind)
        if not self.name.startswith("cvbench"):
            raise VMError("vm", f"name {self.name!r} must start with 'cvbench'",
                          "leave name=None or prefix it", status=2)
        self.accel: Accel | None = None
        self.console: Console | None = None
        self.result: BootResult | None = None
        self._deadline = 0.0
        self._closed = False

    # -- hooks -----------------------------------------------------------------------
    def _detect(self) -> Accel:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Everything before the spawn clock starts (connections, sweeps)."""

    def _make_console(self) -> Console:
        return Console(self.name)

    def _spawn(self) -> None:
        """Start the VMM; may set result.created_ns itself (before any extra step)."""
        raise NotImplementedError

    def _destroy(self) -> None:
        raise NotImplementedError

    def _gone(self) -> bool:
        raise NotImplementedError

    def _release(self) -> None:
        """Close connections after the VMM is gone."""

    def host_pids(self) -> list[int]:
        raise NotImplementedError

    # -- lifecycle -------------------------------------------------------------------
    def _boot(self) -> None:
        if self.result is not None:
            raise VMError("vm", f"{self.name} was already started", "make a new instance per boot", status=2)
        _sigterm_exits()
        if isinstance(self.accel_req, Accel):      # a verdict detect_accel() gave the caller
            self.accel = self.accel_req
        elif self.accel_req == "auto":
            self.accel = self._detect()
        else:
            self.accel = detect_accel(self.kernel, self.initramfs, force=self.accel_req)
        try:
            self._prepare()
            self.console = self._make_console()
        except BaseException:
            self.stop()     # releases what _prepare opened
            raise
        t0 = time.perf_counter_ns()
        self.result = BootResult(t_spawn_ns=t0, created_ns=None, ready_ns=None, done_ns=None,
                                 gone_ns=None, accel=self.accel.name, accel_reason=self.accel.reason,
                                 backend=self.backend)
        self._deadline = time.monotonic() + self.timeout
        try:
            self._spawn()
        except BaseException:
            self.stop()
            raise
        if self.result.created_ns is None:
            self.result.created_ns = time.perf_counter_ns()

    def _await(self, event: threading.Event, marker: str) -> None:
        con = self.console
        while not event.is_set():
            left = self._deadline - time.monotonic()
            if left <= 0:
                self._fail(f"guest did not print {marker} within {self.timeout:g}s (timeout); destroyed it",
                           kind="timeout")
            # A VMM that is gone (e.g. QEMU refused KVM before connecting the
            # console, so no EOF ever comes) will never print the marker.
            if (con.eof.is_set() or self._gone()) and not event.is_set():
                con.eof.wait(0.5)   # a VMM that did connect: its last bytes are still coming
                time.sleep(0.05)    # let the reader thread finish the last line
                if event.is_set():
                    break
                self._fail(f"guest exited before printing {marker}", kind="exited")
            event.wait(min(left, 0.05))

    def _fail(self, why: str, kind: str = "") -> None:
        tail = self.console.tail() if self.console else ""
        if not tail:
            why += "; the console stayed empty (the kernel boots with 'quiet')"
        self.stop()
        raise VMError(f"{self.backend} guest {self.name}", why,
                      "see the console lines; a larger timeout= helps on a slow TCG host",
                      console_tail=tail, kind=kind)

    def _sync_result(self) -> BootResult:
        r, c = self.result, self.console
        r.ready_ns, r.done_ns, r.eof_ns = c.ready_ns, c.done_ns, c.eof_ns
        r.console, r.probe = c.text(), c.probe
        return r

    def start(self, after_spawn=None):
        """Boot and return once ``CVB READY`` was seen (a long-lived guest).
        ``after_spawn()`` runs once the VMM exists, before READY (e.g. to move
        the tap it opened into a cvbench netns)."""
        self._boot()
        try:
            if after_spawn is not None:
                after_spawn()
            self._await(self.console.ready, "CVB READY")
        except BaseException:
            self.stop()
            raise
        self._sync_result()
        return self

    def run(self) -> BootResult:
        """Boot, wait for ``CVB DONE`` and for the VMM to be gone."""
        self._boot()
        try:
            self._await(self.console.ready, "CVB READY")
            self._await(self.console.done, "CVB DONE")
            if not self._wait_gone(GONE_TIMEOUT):
                self._destroy()
                self._wait_gone(GONE_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        r = self._sync_result()
        self._cleanup()
        return r

    def wait_value(self, key: str, timeout: float | None = None) -> str:
        """Wait for a ``CVB key=value`` line (e.g. ``mem_touched_mib`` after
        ``mem 64``: READY comes before the memory is touched)."""
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        while key not in self.console.probe.values:
            if time.monotonic() > end:
                self._fail(f"guest did not print {key}= in time", kind="timeout")
            if self.console.eof.is_set():
                time.sleep(0.05)
                if key in self.console.probe.values:
                    break
                self._fail(f"guest exited before printing {key}=", kind="exited")
            time.sleep(0.01)
        return self.console.probe.values[key]

    def _wait_gone(self, limit: float) -> bool:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if self._gone():
                if self.result.gone_ns is None:
                    self.result.gone_ns = time.perf_counter_ns()
                return True
            time.sleep(POLL_S)
        return False

    def stop(self) -> None:
        """Destroy the guest and wait until it is gone; idempotent, never raises
        on an already-gone guest."""
        if self.result is None or self._closed:
            if self.console:
                self.console.close()
            if self.result is None:
                # The boot failed before the spawn (e.g. _make_console raised
                # after _prepare opened a connection): nothing to destroy, but
                # what _prepare opened must still be released (idempotent).
                self._release()
            return
        try:
            if not self._gone():
                self._destroy()
            if not self._wait_gone(GONE_TIMEOUT):
                self._destroy()
        finally:
            if self.console:
                self._sync_result()
            self._cleanup()

    def _cleanup(self) -> None:
        self._closed = True
        if self.console:
            self.console.close()
        self._release()

    def cgroup_dirs(self) -> list[str]:
        """The memory cgroup the VMM runs in (libvirt's machine cgroup, or the
        one raw QEMU gets), read from the running QEMU process."""
        from .cgroup import of_pid
        pids = self.host_pids()
        return of_pid(pids[0]) if pids else []

    def memory(self) -> dict:
        from .memory import qemu_memory
        return qemu_memory(self.host_pids(), self.memory_mib * MiB)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
