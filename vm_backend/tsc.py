"""The host's TSC rate as the kernel knows it, for a TCG guest's tsc_early_khz.

Under TCG a guest's rdtsc returns host ticks, so the guest TSC runs at the
host's TSC rate.  That rate is what the host kernel calibrated, not the "cpu
MHz" of /proc/cpuinfo: that field is the current core clock, which differs
from the TSC rate on CPUs with frequency scaling (and dmesg here says "TSC
doesn't count with P0 frequency").  Sources, best first: the kernel's own
sysfs file (newer kernels), then its boot log's refined calibration, then its
first estimate, then (the log rotates on a busy host) rdtsc timed against
CLOCK_MONOTONIC_RAW here.  None only if rdtsc cannot be timed: the guest then
calibrates by itself.
"""
from __future__ import annotations

import functools
import os
import re

_REFINED = re.compile(r"tsc: Refined TSC clocksource calibration: ([0-9.]+) MHz")
_DETECTED = re.compile(r"tsc: Detected ([0-9.]+) MHz processor")


def _kernel_log() -> str:
    """The kernel ring buffer through /dev/kmsg (root), read without blocking."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    out = []
    try:
        while True:
            try:
                rec = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError:        # EPIPE: a record was overwritten; keep reading
                continue
            if not rec:
                break
            out.append(rec.decode("utf-8", "replace").split(";", 1)[-1])
    finally:
        os.close(fd)
    return "".join(out)


def parse_log(text: str) -> tuple[int, str] | None:
    """(kHz, source) from a kernel log: the refined calibration wins."""
    for rx, what in ((_REFINED, "refined TSC clocksource calibration"), (_DETECTED, "boot TSC estimate")):
        m = rx.findall(text)
        if m:
            return round(float(m[-1]) * 1000), f"kernel log: {what}"
    return None


def _cache_path() -> str | None:
    """Per boot: the kernel's boot lines leave its ring buffer on a busy host
    (veth and netns churn), so a rate once read is kept until reboot."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f"/run/cvbench/tsc-{f.read().strip()}.khz"
    except OSError:
        return None


@functools.cache
def host_tsc() -> tuple[int | None, str]:
    """(kHz or None, where it came from)."""
    try:
        with open("/sys/devices/system/cpu/cpu0/tsc_freq_khz") as f:
            return int(f.read().strip()), "/sys/devices/system/cpu/cpu0/tsc_freq_khz"
    except (OSError, ValueError):
        pass
    cache = _cache_path()
    found = parse_log(_kernel_log())
    if found:
        _keep(cache, *found)
        return found
    try:
        with open(cache or "") as f:
            khz, what = f.read().split(" ", 1)
        return int(khz), f"{what} (kept for this boot in {cache})"
    except (OSError, ValueError):
        pass
    khz = measure()
    if khz is None:
        return None, ("unknown: no tsc_freq_khz in sysfs, no TSC line left in the kernel log, none kept "
                      "for this boot, and rdtsc cannot be timed here (not x86_64, or no executable memory)")
    what = f"measured: rdtsc against CLOCK_MONOTONIC_RAW over {MEASURE_S * 1000:.0f} ms (the boot log had rotated)"
    _keep(cache, khz, what)
    return khz, what


MEASURE_S = 0.2
# rdtsc; shl rdx, 32; or rax, rdx; ret
_RDTSC = bytes.fromhex("0f31" "48c1e220" "4809d0" "c3")


def _rdtsc():
    """rdtsc as a C function in an executable page: Python has no other way to
    the instruction, and /proc/cpuinfo's "cpu MHz" is not the TSC rate."""
    import ctypes
    import mmap
    import platform
    if platform.machine() != "x86_64":
        return None
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError):
        return None  # W^X policy: no executable anonymous memory
    page.write(_RDTSC)
    fn = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    fn.page = page  # kept mapped as long as the function lives
    return fn


def measure(seconds: float = MEASURE_S) -> int | None:
    """The TSC rate in kHz, timed against CLOCK_MONOTONIC_RAW (the unadjusted
    clock): the last resort when the kernel's own figure is gone.  Each end is
    the tightest of 20 clock-tsc-clock brackets, so a preemption between the
    reads does not enter; over 200 ms that leaves an error of parts per
    million, far below what the guest's clock needs.  Only meaningful with an
    invariant TSC (constant_tsc), as on every x86_64 host QEMU supports."""
    rdtsc = _rdtsc()
    if rdtsc is None:
        return None
    import time

    def pair() -> tuple[float, int]:
        best = None
        for _ in range(20):
            a = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
            t = rdtsc()
            b = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
            if best is None or b - a < best[0]:
                best = (b - a, (a + b) / 2, t)
        return best[1], best[2]
    n0, t0 = pair()
    time.sleep(seconds)
    n1, t1 = pair()
    if n1 <= n0 or t1 <= t0:
        return None
    return round((t1 - t0) * 1e6 / (n1 - n0))


def _keep(cache: str | None, khz: int, what: str) -> None:
    if not cache:
        return
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        with open(cache + ".tmp", "w") as f:
            f.write(f"{khz} {what}")
        os.replace(cache + ".tmp", cache)
    except OSError:
        pass
