"""KVM or TCG: decided by booting the guest, not by looking at /dev/kvm.

On a PVM host /dev/kvm opens and KVM_CREATE_VM succeeds, yet a stock kernel
spins forever after "Probing EDD".  Only a trial boot that reaches ``CVB
READY`` proves KVM works, so ``auto`` does exactly one (with a short timeout),
and falls back to TCG with the reason.  The verdict is cached in this process
and on disk under build_dir(), keyed by the kernel, the VMM (libvirt URI, or
raw QEMU and its machine type) and the host's boot id, so many worker
processes do not each pay for a hung trial; a file lock makes concurrent first
callers wait for one trial instead of running several.

A verdict QEMU gave (it refused KVM, or KVM booted) holds until reboot.  A TCG
verdict reached only because the trial timed out may be a loaded host rather
than a broken KVM, so it holds only for the process tree that reached it (the
harness and its pyperf workers): the next run tries KVM again.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common.paths import build_dir

from .errors import VMEnvError, VMError

KVM_TRIAL_TIMEOUT = float(os.environ.get("CVBENCH_KVM_TRIAL_S", "8"))


@dataclass(frozen=True)
class Accel:
    name: str      # "kvm" or "tcg"
    reason: str


_memo: dict[str, Accel] = {}
TIMEOUT_WHY = "kvm present but guest never reached CVB READY"


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def host_hints() -> str:
    """Why KVM may hang on this host, as far as the host can tell."""
    hints = []
    try:
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("flags")), "").split()
    except OSError:
        flags = []
    if "vmx" not in flags and "svm" not in flags:
        hints.append("no vmx/svm in /proc/cpuinfo")
    pvm = Path("/sys/module/kvm_pvm").exists()
    if pvm:
        hints.append("kvm_pvm loaded")
    if "hypervisor" in flags:
        hints.append("running under a hypervisor")
    if pvm:
        return f"PVM host: {', '.join(hints)}"
    return ", ".join(hints) or "no host hint"


def kvm_device_problem() -> str | None:
    """A reason KVM cannot even be tried here, or None."""
    if not os.path.exists("/dev/kvm"):
        return "no /dev/kvm (kvm module not loaded or no hardware virtualisation)"
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
    except OSError as e:
        return f"/dev/kvm cannot be opened: {e.strerror}"
    return None


def _key(kernel: str, uri: str | None, machine: str | None = None) -> str:
    from .conn import is_remote
    vmm = uri or f"qemu-direct:{machine or 'pc'}"
    if uri is not None and is_remote(uri):
        raw = f"{kernel}|{uri}"        # a path on that host: nothing to stat here
    else:
        st = os.stat(kernel)
        raw = f"{os.path.realpath(kernel)}|{st.st_size}|{st.st_mtime_ns}|{vmm}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _ancestors() -> set[tuple[int, int | None]]:
    """(pid, start time) of this process and every process above it."""
    from common import procs

    from .owner import start_time
    out, pid = set(), os.getpid()
    while pid > 1:
        out.add((pid, start_time(pid)))
        fields = procs.stat_fields(pid)
        if not fields:
            break
        pid = int(fields[1])
    return out


def _still_valid(cached: dict, bid: str) -> bool:
    if cached.get("boot_id") != bid:
        return False
    pinned = cached.get("valid_for")      # a timeout verdict: only for the tree that reached it
    return pinned is None or tuple(pinned) in _ancestors()


def _cache_file(key: str) -> Path:
    return build_dir() / "vm" / f"accel-{key}.json"


def _trial(kernel: str, initramfs: str, uri: str | None, machine: str | None = None) -> Accel:
    from .conn import is_remote
    from .libvirt_vm import LibvirtVM
    from .qemu_vm import QemuVM

    if uri is None or not is_remote(uri):
        problem = kvm_device_problem()
        if problem:
            return Accel("tcg", problem)
    cls = QemuVM if uri is None else LibvirtVM
    kw = {"machine": machine} if uri is None and machine else {} if uri is None else {"uri": uri}
    vm = cls(kernel, initramfs, ["ready"], accel="kvm", timeout=KVM_TRIAL_TIMEOUT, **kw)
    try:
        res = vm.run()
    except VMEnvError:
        raise
    except VMError as e:
        if e.kind == "timeout":
            return Accel("tcg", f"{TIMEOUT_WHY} within {KVM_TRIAL_TIMEOUT:g}s ({host_hints()}); "
                                "tried again next run")
        msg = e.why.splitlines()[0]
        if e.kind == "exited":
            if "; qemu said: " not in msg:
                return Accel("tcg", f"kvm trial guest exited before CVB READY ({host_hints()})")
            msg = msg.split("; qemu said: ", 1)[1].split("; the console stayed empty", 1)[0]
        # QEMU's own words, without libvirt's prefix and QEMU's timestamp.
        msg = msg.split("qemu-system-x86_64: ", 1)[-1].removeprefix("error: ")
        return Accel("tcg", f"kvm refused by QEMU: {msg} ({host_hints()})")
    finally:
        vm.stop()
    return Accel("kvm", f"kvm trial boot reached CVB READY in {res.ready_s:.2f}s")


def detect_accel(kernel, initramfs, *, uri: str | None = "qemu:///system",
                 force: str | None = None, machine: str | None = None) -> Accel:
    """The accelerator guests of this kernel should use on ``uri``, and why.

    ``uri=None`` runs the trial with raw QEMU (of ``machine``, default pc)
    instead of libvirt.  ``force`` ('kvm' or 'tcg') skips the trial and says it
    was forced."""
    if force not in (None, "auto", "kvm", "tcg"):
        raise VMError("accel", f"unknown accelerator {force!r}", "use auto, kvm or tcg", status=2)
    if force in ("kvm", "tcg"):
        return Accel(force, f"forced ({force} requested)")
    kernel, initramfs = str(kernel), str(initramfs)
    from .conn import is_remote
    if not (uri is not None and is_remote(uri)) and not os.path.exists(kernel):
        raise VMEnvError("accel", f"kernel {kernel} not found", "run 'make setup'")
    key = _key(kernel, uri, machine)
    if key in _memo:
        return _memo[key]
    path = _cache_file(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    bid = boot_id()
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # one trial per host; the others wait for it
        try:
            cached = json.loads(path.read_text())
            if _still_valid(cached, bid):
                acc = Accel(cached["name"], cached["reason"])
                _memo[key] = acc
                return acc
        except (OSError, ValueError, KeyError):
            pass
        acc = _trial(kernel, initramfs, uri, machine)
        from .owner import me
        valid_for = list(me()) if acc.reason.startswith(TIMEOUT_WHY) else None
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({**asdict(acc), "boot_id": bid, "kernel": kernel, "uri": uri,
                                   "machine": machine, "valid_for": valid_for,
                                   "decided_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
        os.replace(tmp, path)
    _memo[key] = acc
    return acc
