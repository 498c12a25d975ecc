"""AppArmor and SELinux: detected, reported, and never faked.

Applying a label needs the LSM enabled in the running kernel.  Where it is
not, a config.json that asks for one gets a clear warning, and `python -m
runtime features` (and the harness's metadata) says "unavailable" with why.
"""
from __future__ import annotations

import os


def apparmor() -> tuple[bool, str]:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            if f.read().strip() == "Y":
                return True, "enabled"
            return False, "the apparmor module is loaded but disabled"
    except FileNotFoundError:
        return False, "not in this kernel (no /sys/module/apparmor)"


def selinux() -> tuple[bool, str]:
    if os.path.exists("/sys/fs/selinux/enforce"):
        return True, "enabled"
    try:
        with open("/sys/kernel/security/lsm") as f:
            lsms = f.read().strip().split(",")
    except OSError:
        lsms = []
    if "selinux" in lsms:
        return False, "compiled in but selinuxfs is not mounted"
    return False, "not enabled in this kernel (boot with security=selinux)"


def report() -> dict[str, dict]:
    out = {}
    for name, fn in (("apparmor", apparmor), ("selinux", selinux)):
        ok, why = fn()
        out[name] = {"available": ok, "reason": why}
    return out


def warn_labels(apparmor_profile: str | None, selinux_label: str | None) -> list[str]:
    """Warnings for labels config.json asks for; labels are not applied."""
    out = []
    if apparmor_profile:
        ok, why = apparmor()
        out.append(f"process.apparmorProfile: AppArmor is {'available but labels are not applied by cvbench' if ok else 'unavailable: ' + why}; ignored")
    if selinux_label:
        ok, why = selinux()
        out.append(f"process.selinuxLabel: SELinux is {'available but labels are not applied by cvbench' if ok else 'unavailable: ' + why}; ignored")
    return out
