"""The host's TSC rate as the kernel knows it, for a TCG guest's tsc_early_khz.

Under TCG a guest's rdtsc returns host ticks, so the guest TSC runs at the
host's TSC rate.  That rate is what the host kernel calibrated, not the "cpu
MHz" of /proc/cpuinfo: that field is the current core clock, which differs
from the TSC rate on CPUs with frequency scaling (and dmesg here says "TSC
doesn't count with P0 frequency").  Sources, best first: the kernel's own
sysfs file (newer kernels), then its boot log's refined calibration, then its
first estimate.  None (no guess) if neither is there: the guest then
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
        if cache:
            try:
                os.makedirs(os.path.dirname(cache), exist_ok=True)
                with open(cache + ".tmp", "w") as f:
                    f.write(f"{found[0]} {found[1]}")
                os.replace(cache + ".tmp", cache)
            except OSError:
                pass
        return found
    try:
        with open(cache or "") as f:
            khz, what = f.read().split(" ", 1)
        return int(khz), f"{what} (kept for this boot in {cache})"
    except (OSError, ValueError):
        pass
    return None, "unknown: no tsc_freq_khz in sysfs, no TSC line left in the kernel log, none kept for this boot"
