"""The environment a result was measured in.  Every run carries it, because a
number without its kernel, CPU, mitigations and accelerator cannot be quoted."""
from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
import sys
from pathlib import Path

from common.paths import ROOT

VULN_DIR = Path("/sys/devices/system/cpu/vulnerabilities")


def _first_line(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    out = (r.stdout or r.stderr).strip()
    return out.splitlines()[0] if out else ""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mitigations() -> dict[str, str]:
    if not VULN_DIR.is_dir():
        return {}
    return {p.name: p.read_text().strip() for p in sorted(VULN_DIR.iterdir())}


def nested_virt() -> str:
    """The kvm module's nested parameter, and whether the CPU exposes vmx/svm."""
    parts = []
    for mod in ("kvm_intel", "kvm_amd"):
        p = Path(f"/sys/module/{mod}/parameters/nested")
        if p.exists():
            parts.append(f"{mod}.nested={p.read_text().strip()}")
    flags = ""
    try:
        m = re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
        flags = m.group(1) if m else ""
    except OSError:
        pass
    parts.append("cpu has " + ("vmx" if " vmx" in flags else "svm" if " svm" in flags else "no vmx/svm"))
    if Path("/sys/module/kvm_pvm").exists():
        parts.append("kvm_pvm loaded (PVM host)")
    return "; ".join(parts)


def cgroup_version() -> str:
    from runtime import cgroup_version as rt_version
    return rt_version()


def accel() -> dict:
    try:
        from common import manifest
        from vm_backend import detect_accel
        a = detect_accel(*manifest.kernel_and_initramfs())
        return {"name": a.name, "reason": a.reason}
    except Exception as e:  # noqa: BLE001
        return {"name": "unknown", "reason": f"vm_backend.detect_accel failed: {type(e).__name__}: {e}"}


def git_rev() -> str:
    rev = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"])
    dirty = _first_line(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    return rev + ("-dirty" if dirty else "") if rev else "unknown"


def versions() -> dict[str, str]:
    import pyperf

    from vm_backend.versions import libvirt_versions, qemu_version
    try:
        lv = libvirt_versions("qemu:///system")["libvirt"]   # the daemon's, as the VMs use it
    except Exception:  # noqa: BLE001 - no libvirtd running: the installed one's
        lv = _first_line(["libvirtd", "--version"])
    return {
        "qemu": qemu_version("qemu-system-x86_64"),
        "libvirt": lv,
        "crun": _first_line(["crun", "--version"]),
        "runc": _first_line(["runc", "--version"]),
        "runsc": _first_line(["runsc", "--version"]),
        "python": sys.version.split()[0],
        "pyperf": pyperf.__version__,
        "cvbench_git": git_rev(),
    }


def collect(with_accel: bool = True) -> dict:
    return {
        "hostname": socket.gethostname(),
        "kernel": f"{platform.system()} {platform.release()} {platform.version()}",
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "mitigations": mitigations(),
        "accel": accel() if with_accel else {"name": "unknown", "reason": "not probed"},
        "nested_virt": nested_virt(),
        "cgroup_version": cgroup_version(),
        "versions": versions(),
    }
