"""Capabilities: the five sets of the OCI process, and no_new_privs.

Order matters and follows runc: drop from the bounding set while CAP_SETPCAP
is still effective, switch uid/gid (with keep-caps), then capset() the
effective/permitted/inheritable sets and raise the ambient ones last.
"""
from __future__ import annotations

from . import syscalls as sc
from .spec import DEFAULT_CAPS

NAMES = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
         "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
         "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
         "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
         "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
         "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
         "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
         "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
         "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"]
BY_NAME = {n: i for i, n in enumerate(NAMES)}

# The OCI/runc default (runc spec): what a container keeps when config.json
# gives no capabilities object but caps are switched on.
OCI_DEFAULT = DEFAULT_CAPS


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(NAMES) - 1


LAST_CAP = _last_cap()


def mask(names) -> int:
    m = 0
    for n in names:
        m |= 1 << BY_NAME[n]
    return m


def plan(caps: dict[str, list[str]] | None) -> dict[str, int]:
    """Bitmasks of the five sets; computed in the parent, applied in the child."""
    if caps is None:
        caps = {s: OCI_DEFAULT for s in ("bounding", "effective", "permitted", "ambient")}
    return {s: mask(caps.get(s, ())) for s in ("bounding", "effective", "permitted",
                                               "inheritable", "ambient")}


def drop_bounding(bounding: int) -> None:
    for cap in range(LAST_CAP + 1):
        if not bounding & (1 << cap):
            sc.prctl(sc.PR_CAPBSET_DROP, cap)


def keep_caps() -> None:
    """Keep permitted caps across a switch from uid 0 to another uid."""
    sc.prctl(sc.PR_SET_KEEPCAPS, 1)


def apply_sets(p: dict[str, int]) -> None:
    sc.capset(p["effective"], p["permitted"], p["inheritable"])
    sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in range(LAST_CAP + 1):
        if p["ambient"] & (1 << cap):
            try:
                sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, cap)
            except OSError:
                # An ambient cap must also be permitted and inheritable; the
                # runc spec lists ambient caps without inheritable ones, and
                # runc too only warns here.
                pass


def set_no_new_privs() -> None:
    sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)

