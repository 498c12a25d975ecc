"""AppArmor and SELinux: detected, reported, and never faked.

cvbench's runtime applies no label.  A config.json that asks for one is
refused before anything starts (fail closed, naming the field); with
ignore_unsupported it becomes a warning on Container.warnings.  `python -m
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


def unsupported(apparmor_profile: str | None, selinux_label: str | None) -> list[tuple[str, str]]:
    """(field, why) for labels config.json asks for: cvbench applies none, so
    each is refused before the container starts (runc refuses an AppArmor
    profile it cannot apply too), unless the caller passes ignore_unsupported."""
    out = []
    if apparmor_profile:
        ok, why = apparmor()
        out.append(("process.apparmorProfile", "AppArmor " + ("is enabled but cvbench's runtime does not apply profiles"
                                                              if ok else f"is unavailable ({why})")))
    if selinux_label:
        ok, why = selinux()
        out.append(("process.selinuxLabel", "SELinux " + ("is enabled but cvbench's runtime does not apply labels"
                                                          if ok else f"is unavailable ({why})")))
    return out
